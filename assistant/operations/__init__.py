"""Keeping the stored data whole and private: ``doctor`` (checks and repairs), ``backup``
and ``backup_pg`` (back up and restore, SQLite or PostgreSQL), ``permissions`` (files
private to the account) and their commands (``cli_ops``).

May import any part of the library (it checks them all); no part imports it except the CLI
(and ``permissions``, which the CLI and backups use).
"""
