"""Login for the CLI (when ``ASSISTANT_AUTH=password``) and ``assistant users ...``.

    assistant users add NAME [--role admin]    # the first user needs no login: an admin
    assistant users list | set-role NAME ROLE | disable NAME | enable NAME | passwd [NAME]
    assistant --user alice train dpo          # the password is prompted (or ASSISTANT_PASSWORD)

Commands that need a role are decorated with :func:`needs`. With login off everything is
allowed, as in the UI. The CLI runs where the data files are: the operating system's
permissions on the data directory are what guard the files themselves (``doctor``,
``backup`` and ``restore`` work on files and are not behind the login, so that a broken
database can still be repaired).
"""

from __future__ import annotations

import functools
import os
import sys

import click

from assistant.auth import (
    ROLES,
    TOKEN_ENV,
    LoginRequired,
    User,
    UserError,
    UserStore,
    require,
    verify_token,
)
from assistant.config import get_settings

_USER_KEY = "assistant.user"  # ctx.meta: the logged-in user (None: login off)
PASSWORD_ENV = "ASSISTANT_PASSWORD"


def _users() -> UserStore:
    from assistant.bootstrap import open_database

    return UserStore(open_database(get_settings()))


def _password() -> str:
    if os.environ.get(PASSWORD_ENV):
        return os.environ[PASSWORD_ENV]
    if not sys.stdin.isatty():
        raise LoginRequired()
    return click.prompt("Password", hide_input=True)


def _new_password(name: str) -> str:
    """A new password for ``name``: ASSISTANT_NEW_PASSWORD, or typed twice. Never the
    login password (ASSISTANT_PASSWORD is the caller's own)."""
    return os.environ.get("ASSISTANT_NEW_PASSWORD") or click.prompt(
        f"New password for {name}", hide_input=True, confirmation_prompt=True
    )


def login(action: str | None = None) -> User | None:
    """The logged-in user (None with login off), checked against ``action``'s role."""
    ctx = click.get_current_context()
    root = ctx.find_root()
    if _USER_KEY not in root.meta:
        root.meta[_USER_KEY] = _authenticate(root.params.get("user"))
    user = root.meta[_USER_KEY]
    if action is not None:
        require(user, action)
    return user


def _authenticate(name: str | None) -> User | None:
    settings = get_settings()
    if settings.auth == "off":
        return None
    users = _users()
    token = os.environ.get(TOKEN_ENV)
    if token:
        return verify_token(settings.data_dir, users, token)
    if not name:
        raise LoginRequired()
    return users.authenticate(name, _password())


def needs(action: str | None = None):  # noqa: ANN201
    """Decorator (under the ``@click`` ones): log in, and refuse unless the user may do
    ``action`` (None: any logged-in user)."""

    def wrap(f):  # noqa: ANN001, ANN202
        @functools.wraps(f)
        def inner(*args, **kwargs):  # noqa: ANN202
            login(action)
            return f(*args, **kwargs)

        return inner

    return wrap


# -- assistant users ---------------------------------------------------------------------
@click.group("users")
def users() -> None:
    """Logins and roles (used when ASSISTANT_AUTH=password)."""


@users.command("add")
@click.argument("name")
@click.option("--role", type=click.Choice(ROLES), default="user", show_default=True)
def users_add(name: str, role: str) -> None:
    """Add a user; the password is prompted (or ASSISTANT_PASSWORD). The first user needs
    no login and must be an admin."""
    store = _users()
    if store.count() == 0:
        if role != "admin":
            raise UserError("The first user must be an admin: add it with --role admin.")
    else:
        login("manage users")
    password = _new_password(name)
    user = store.add(name, password, role)
    click.echo(f"Added {user.role} {user.name}.")
    if get_settings().auth == "off":
        click.echo("Login is off: set ASSISTANT_AUTH=password to require it.", err=True)


@users.command("list")
@needs("manage users")
def users_list() -> None:
    """Every user, with role and state."""
    for u in _users().list():
        state = "disabled" if u.disabled else "active"
        click.echo(f"{u.name:24} {u.role:6} {state:9} since {u.created_at:%Y-%m-%d}")


@users.command("set-role")
@click.argument("name")
@click.argument("role", type=click.Choice(ROLES))
@needs("manage users")
def users_set_role(name: str, role: str) -> None:
    """Make NAME a user or an admin (the last admin stays one)."""
    user = _users().set_role(name, role)
    click.echo(f"{user.name} is now {user.role}.")


@users.command("disable")
@click.argument("name")
@needs("manage users")
def users_disable(name: str) -> None:
    """Refuse NAME's logins (their conversations are kept)."""
    _users().set_disabled(name, True)
    click.echo(f"{name} can no longer log in.")


@users.command("enable")
@click.argument("name")
@needs("manage users")
def users_enable(name: str) -> None:
    _users().set_disabled(name, False)
    click.echo(f"{name} can log in again.")


@users.command("passwd")
@click.argument("name", required=False)
def users_passwd(name: str | None) -> None:
    """Change your password (or, as an admin, NAME's). The new one is prompted (or
    ASSISTANT_NEW_PASSWORD)."""
    user = login()
    target = name or (user.name if user else None)
    if target is None:
        raise UserError("Login is off: name the user whose password to set.")
    if user is not None and target != user.name:
        require(user, "manage users")
    _users().set_password(target, _new_password(target))
    click.echo(f"Password of {target} changed.")
