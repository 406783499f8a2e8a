"""Optional login: users, roles and password checks (``auth``) and the CLI's login and
``assistant users`` commands (``cli_auth``).

May import: ``assistant.storage`` (its account store), ``assistant.config``,
``assistant.errors``. Nothing else in the library depends on it but the CLI and the UI.
"""
