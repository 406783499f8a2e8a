"""Login for the CLI (when ``ASSISTANT_AUTH=password``) and ``assistant users ...``.

    assistant users add NAME [--role admin]    # the first user needs no login: an admin
    assistant users list | set-role NAME ROLE | disable NAME | enable NAME | passwd [NAME]
    assistant users login on|off               # off: admins only
    assistant users locks | unlock [NAME] [--client CLIENT]
    assistant --user alice train dpo          # the password is prompted (or ASSISTANT_PASSWORD)

Commands that need a role are decorated with :func:`needs`. With login off everything is
allowed, as in the UI. Whether login is on is read from the database (where it is recorded
once an admin exists), not only from ASSISTANT_AUTH: a caller cannot switch it off by
leaving that variable out. Failed logins count as in the app, per name and per client
(here the client is the local account: ``cli:NAME``). The CLI runs where the data files are: the operating system's
permissions on the data directory are what guard the files themselves (``doctor``,
``backup`` and ``restore`` work on files and are not behind the login, so that a broken
database can still be repaired).
"""

from __future__ import annotations

import functools
import getpass
import os
import sys
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import click

from assistant.login.auth import (
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
_P = ParamSpec("_P")
_R = TypeVar("_R")


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
    users = _users()
    if not users.login_enabled(settings.auth):
        return None
    token = os.environ.get(TOKEN_ENV)
    if token:
        return verify_token(settings.data_dir, users, token)
    if not name:
        raise LoginRequired()
    return users.authenticate(name, _password(), client=cli_client())


def cli_client() -> str:
    """Where a CLI login comes from, for throttling: the local account."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return f"cli:uid {os.getuid()}"


def needs(action: str | None = None) -> Callable[[Callable[_P, _R]], Callable[_P, _R]]:
    """Decorator (under the ``@click`` ones): log in, and refuse unless the user may do
    ``action`` (None: any logged-in user)."""

    def wrap(f: Callable[_P, _R]) -> Callable[_P, _R]:
        @functools.wraps(f)
        def inner(*args: _P.args, **kwargs: _P.kwargs) -> _R:
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
    if not store.login_enabled(get_settings().auth):
        click.echo("Login is off: turn it on with `assistant users login on` (or "
                   "ASSISTANT_AUTH=password).", err=True)


@users.command("login")
@click.argument("state", type=click.Choice(["on", "off"]))
def users_login(state: str) -> None:
    """Turn login on or off for every process on this data (recorded in the database).
    Turning it off needs an admin's login."""
    store = _users()
    if state == "off":
        if store.login_enabled(get_settings().auth):
            login("manage users")
        store.set_login(False)
        click.echo("Login is off: everyone with access to the app can do everything."
                   + (" ASSISTANT_AUTH=password still asks for it in this environment."
                      if get_settings().auth != "off" else ""))
        return
    store.set_login(True)
    click.echo("Login is on, for the app and the CLI, whatever ASSISTANT_AUTH says.")


@users.command("locks")
@needs("manage users")
def users_locks() -> None:
    """Names and clients locked by failed logins right now."""
    locks = _users().locks()
    if not locks:
        click.echo("No locks.")
    for lock in locks:
        who = f"{lock.name} from {lock.client}" if lock.name else f"client {lock.client}"
        click.echo(f"{who}: {lock.failures} failed logins, unlocks in {round(lock.wait_s)} s")


@users.command("unlock")
@click.argument("name", required=False)
@click.option("--client", help="Unlock this client (as shown by `assistant users locks`).")
@needs("manage users")
def users_unlock(name: str | None, client: str | None) -> None:
    """Forget the failed logins of NAME (on every client) and/or of --client."""
    n = _users().unlock(name, client)
    click.echo(f"Unlocked: {n} failed login(s) forgotten.")


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
