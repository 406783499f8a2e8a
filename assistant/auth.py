"""Optional login: users, roles and password checks (``ASSISTANT_AUTH=password``).

Passwords are stored as argon2id hashes (argon2-cffi, with its default parameters; a hash
made with older parameters is upgraded at the next login). With login off, the default,
there are no users and everything is open: a single-user install on one's own machine.

Two roles: ``user`` chats, rates and reads the shared documents, and sees only their own
conversations and feedback; ``admin`` also uploads shared documents, exports the data,
trains, evaluates and activates versions, and manages users. What each role may do is
:data:`ADMIN_ACTIONS`, checked by :func:`require` in the UI and the CLI alike.

Whether login is on is kept in the database once an admin exists and login was turned on
(``ASSISTANT_AUTH=password`` in any process, or ``assistant users login on``): from then on
every process enforces it whatever its own environment, and only an admin turns it off.

Failed logins are recorded in the database, so that every process (app servers, the CLI)
counts them together: MAX_FAILURES for one name from one client within WINDOW_S lock that
name on that client only (the user can still log in from elsewhere), and
MAX_CLIENT_FAILURES from one client, whatever the names, lock that client. An admin sees
and clears the locks (``assistant users locks`` / ``unlock``).

A browser login lasts across reloads through a session: a random token kept by the browser
(an HttpOnly cookie), of which the database stores only the SHA-256, with an expiry. It is
revoked at logout and when the user's password, role or state changes.

Processes the app starts for a logged-in admin (a training run from the Models page) get
a short-lived token instead of a password: an HMAC of the user's name and an expiry,
keyed by a secret file in the data directory (``auth_secret``, mode 0600).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import delete, func, select

from assistant.errors import AssistantError
from assistant.storage.db import Database
from assistant.storage.schema import AppSetting, LoginFailure, LoginSession
from assistant.storage.schema import User as UserRow

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

ROLES = ("user", "admin")
#: What only admins may do (the UI hides these, the CLI refuses them, for users).
ADMIN_ACTIONS = {
    "upload": "upload or delete shared documents",
    "export": "export the feedback data",
    "import": "import preference data",
    "train": "train models",
    "evaluate": "evaluate model versions",
    "activate": "activate or roll back model versions",
    "manage users": "manage users",
    "maintain": "back up, restore or repair the data",
}
MIN_PASSWORD = 8
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
#: Failed logins of one name from one client within WINDOW_S before that client's further
#: tries for the name wait out the window.
MAX_FAILURES, WINDOW_S = 5, 300.0
#: Failed logins from one client, whatever the names, before the client waits out the window.
MAX_CLIENT_FAILURES = 20
#: How long a browser login lasts without logging in again.
SESSION_TTL = timedelta(days=7)
LOGIN_SETTING = "login"
TOKEN_ENV = "ASSISTANT_AUTH_TOKEN"

_hasher = PasswordHasher()
# Verified when the name is unknown, so that a wrong name costs as long as a wrong password.
_DUMMY_HASH = _hasher.hash(secrets.token_hex(16))


class AuthError(AssistantError):
    """Base class of login and permission errors."""


class LoginFailed(AuthError):
    def __init__(self) -> None:
        super().__init__("Wrong user name or password.")


class TooManyAttempts(AuthError):
    def __init__(self, wait_s: float, client: bool = False) -> None:
        self.wait_s = wait_s
        who = "from this client" if client else "for this user from this client"
        super().__init__(
            f"Too many failed logins {who}: try again in {max(1, round(wait_s))} s "
            "(or ask an admin: `assistant users unlock`)."
        )


class NotAllowed(AuthError):
    def __init__(self, user: str, action: str) -> None:
        super().__init__(
            f"Only an admin may {ADMIN_ACTIONS.get(action, action)}; {user} is a user. "
            "Ask an admin (`assistant users set-role NAME admin`)."
        )


class LoginRequired(AuthError):
    def __init__(self) -> None:
        super().__init__(
            "Login is on (recorded in the database, whatever ASSISTANT_AUTH says): give "
            "--user NAME (or ASSISTANT_USER) and the password (prompted, or ASSISTANT_PASSWORD)."
        )


class UserError(AuthError):
    """A user could not be added or changed (the message says why)."""


@dataclass(frozen=True)
class Lock:
    """A name locked on one client, or a whole client (``name`` None)."""

    name: str | None
    client: str
    failures: int
    wait_s: float


@dataclass(frozen=True)
class User:
    id: int
    name: str
    role: str
    disabled: bool
    created_at: datetime

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


def _user(row: UserRow) -> User:
    return User(row.id, row.name, row.role, bool(row.disabled), row.created_at)


def may(user: User | None, action: str) -> bool:
    """Whether ``user`` may do ``action``; ``None`` is login off, where everything is allowed."""
    if action not in ADMIN_ACTIONS:
        raise ValueError(f"unknown action {action!r}")
    return user is None or user.is_admin


def require(user: User | None, action: str) -> None:
    if not may(user, action):
        raise NotAllowed(user.name, action)  # type: ignore[union-attr]


def check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise UserError(f"The password is too short: use at least {MIN_PASSWORD} characters.")
    if password != password.strip():
        raise UserError("The password starts or ends with a space: remove it.")


class UserStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # -- login on or off (in the database, shared by every process) -------------------------
    def login_recorded(self) -> bool:
        with self.db.read() as s:
            row = s.get(AppSetting, LOGIN_SETTING)
            return row is not None and row.value == "on"

    def login_enabled(self, configured: str = "off") -> bool:
        """Whether login is on: recorded in the database, or asked for by this process's
        configuration (``configured``: ``Settings.auth``). The latter is recorded once an
        admin exists, so that no other environment can switch it off again."""
        if self.login_recorded():
            return True
        if configured == "off":
            return False
        if self._admin_exists():
            self.set_login(True)
        return True

    def set_login(self, on: bool) -> None:
        """Record login on or off. Turning it on needs an active admin (or nobody could log
        in); callers check that the one turning it off is an admin."""
        if on and not self._admin_exists():
            raise UserError("Add an admin first (`assistant users add NAME --role admin`): "
                            "with login on and no admin, nobody could manage the users.")
        with self.db.write() as s:
            row = s.get(AppSetting, LOGIN_SETTING)
            if row is None:
                s.add(AppSetting(key=LOGIN_SETTING, value="on" if on else "off"))
            else:
                row.value = "on" if on else "off"

    def _admin_exists(self) -> bool:
        with self.db.read() as s:
            return bool(s.scalar(select(func.count()).select_from(UserRow).where(
                UserRow.role == "admin", UserRow.disabled.is_(False)
            )))

    def count(self) -> int:
        with self.db.read() as s:
            return s.scalar(select(func.count()).select_from(UserRow)) or 0

    def list(self) -> list[User]:
        with self.db.read() as s:
            return [_user(r) for r in s.scalars(select(UserRow).order_by(UserRow.id))]

    def get(self, name: str) -> User:
        with self.db.read() as s:
            row = s.scalar(select(UserRow).where(UserRow.name == name))
            if row is None:
                raise UserError(f"There is no user {name!r} (`assistant users list`).")
            return _user(row)

    def add(self, name: str, password: str, role: str = "user") -> User:
        if not NAME.match(name):
            raise UserError(
                f"{name!r} is not a valid user name: up to 64 letters, digits and _ . @ -, "
                "starting with a letter or digit."
            )
        if role not in ROLES:
            raise UserError(f"Unknown role {role!r}: use one of {', '.join(ROLES)}.")
        check_password(password)
        hashed = _hasher.hash(password)
        with self.db.write() as s:
            if s.scalar(select(UserRow.id).where(func.lower(UserRow.name) == name.lower())):
                raise UserError(f"The user {name!r} exists already.")
            row = UserRow(name=name, password_hash=hashed, role=role)
            s.add(row)
            s.flush()
            return _user(row)

    def set_password(self, name: str, password: str) -> None:
        check_password(password)
        hashed = _hasher.hash(password)
        with self.db.write() as s:
            row = self._row(s, name)
            row.password_hash = hashed
            _revoke_all(s, row.id)

    def set_role(self, name: str, role: str) -> User:
        if role not in ROLES:
            raise UserError(f"Unknown role {role!r}: use one of {', '.join(ROLES)}.")
        with self.db.write() as s:
            row = self._row(s, name)
            if row.role == "admin" and role != "admin":
                self._keep_an_admin(s, row)
            if row.role != role:
                _revoke_all(s, row.id)
            row.role = role
            return _user(row)

    def set_disabled(self, name: str, disabled: bool) -> User:
        with self.db.write() as s:
            row = self._row(s, name)
            if disabled and row.role == "admin":
                self._keep_an_admin(s, row)
            if disabled:
                _revoke_all(s, row.id)
            row.disabled = disabled
            return _user(row)

    def authenticate(self, name: str, password: str, client: str = "local") -> User:
        """The user, if the password is theirs and they are not disabled. Wrong names and
        wrong passwords fail alike (same message, same argon2 cost). ``client`` is where the
        attempt comes from (the browser's address, or the CLI's account): MAX_FAILURES
        failures for a name from one client within WINDOW_S seconds, or MAX_CLIENT_FAILURES
        from the client for any names, refuse that client until the oldest expires."""
        key = name.lower()[:64]
        client = client[:200]
        self._check_throttle(key, client)
        with self.db.read() as s:
            row = s.scalar(select(UserRow).where(func.lower(UserRow.name) == key))
            stored = row.password_hash if row is not None else _DUMMY_HASH
        try:
            _hasher.verify(stored, password)
            ok = row is not None and not row.disabled
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            ok = False
        if not ok:
            now = _now()
            with self.db.write() as s:
                s.execute(delete(LoginFailure).where(LoginFailure.at < now - WINDOW_S))
                s.add(LoginFailure(name=key, client=client, at=now))
            raise LoginFailed()
        with self.db.write() as s:
            s.execute(delete(LoginFailure).where(
                LoginFailure.name == key, LoginFailure.client == client))
        if _hasher.check_needs_rehash(stored):
            with self.db.write() as s:
                self._row(s, row.name).password_hash = _hasher.hash(password)
        return _user(row)

    def _check_throttle(self, key: str, client: str) -> None:
        since = _now() - WINDOW_S
        recent = (LoginFailure.client == client) & (LoginFailure.at > since)
        with self.db.read() as s:
            count, oldest = s.execute(
                select(func.count(), func.min(LoginFailure.at)).where(recent)
            ).one()
            if count >= MAX_CLIENT_FAILURES:
                raise TooManyAttempts(oldest - since, client=True)
            count, oldest = s.execute(
                select(func.count(), func.min(LoginFailure.at)).where(
                    recent, LoginFailure.name == key)
            ).one()
            if count >= MAX_FAILURES:
                raise TooManyAttempts(oldest - since)

    def locks(self) -> list[Lock]:
        """Names locked on a client, and clients locked as a whole, right now."""
        since = _now() - WINDOW_S
        out: list[Lock] = []
        with self.db.read() as s:
            for client, count, oldest in s.execute(
                select(LoginFailure.client, func.count(), func.min(LoginFailure.at))
                .where(LoginFailure.at > since).group_by(LoginFailure.client)
                .having(func.count() >= MAX_CLIENT_FAILURES)
            ):
                out.append(Lock(None, client, count, oldest - since))
            for name, client, count, oldest in s.execute(
                select(LoginFailure.name, LoginFailure.client, func.count(),
                       func.min(LoginFailure.at))
                .where(LoginFailure.at > since)
                .group_by(LoginFailure.name, LoginFailure.client)
                .having(func.count() >= MAX_FAILURES)
            ):
                out.append(Lock(name, client, count, oldest - since))
        return out

    def unlock(self, name: str | None = None, client: str | None = None) -> int:
        """Forget the failed logins of ``name`` (on every client) and/or of ``client``;
        returns how many were forgotten."""
        if name is None and client is None:
            raise UserError("Name the user or the client to unlock.")
        cond = []
        if name is not None:
            cond.append(LoginFailure.name == name.lower())
        if client is not None:
            cond.append(LoginFailure.client == client)
        with self.db.write() as s:
            return s.execute(delete(LoginFailure).where(*cond)).rowcount or 0

    # -- browser sessions -------------------------------------------------------------------
    def start_session(self, user: User, ttl: timedelta = SESSION_TTL) -> str:
        """A new random session token for ``user`` (only its hash is stored)."""
        token = secrets.token_urlsafe(32)
        now = datetime.now(UTC)
        with self.db.write() as s:
            s.execute(delete(LoginSession).where(LoginSession.expires_at < now))
            s.add(LoginSession(token_hash=_token_hash(token), user_id=user.id,
                               created_at=now, expires_at=now + ttl))
        return token

    def session_user(self, token: str | None) -> User | None:
        """The user of a live session, or None (unknown, expired or revoked token, or a
        disabled user)."""
        if not token:
            return None
        with self.db.read() as s:
            row = s.scalar(select(LoginSession).where(
                LoginSession.token_hash == _token_hash(token)))
            if row is None or row.expires_at <= datetime.now(UTC):
                return None
            user = s.get(UserRow, row.user_id)
            return None if user is None or user.disabled else _user(user)

    def end_session(self, token: str | None) -> None:
        if token:
            with self.db.write() as s:
                s.execute(delete(LoginSession).where(
                    LoginSession.token_hash == _token_hash(token)))

    @staticmethod
    def _row(s: Session, name: str) -> UserRow:
        row = s.scalar(select(UserRow).where(UserRow.name == name))
        if row is None:
            raise UserError(f"There is no user {name!r} (`assistant users list`).")
        return row

    @staticmethod
    def _keep_an_admin(s: Session, row: UserRow) -> None:
        others = s.scalar(
            select(func.count()).select_from(UserRow).where(
                UserRow.role == "admin", UserRow.disabled.is_(False), UserRow.id != row.id
            )
        )
        if not others:
            raise UserError(f"{row.name} is the last admin: make another user admin first.")


def _now() -> float:
    """Seconds since the epoch: failed logins are compared across processes."""
    return time.time()


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def _revoke_all(s: Session, user_id: int) -> None:
    s.execute(delete(LoginSession).where(LoginSession.user_id == user_id))


# -- tokens for processes the app starts -------------------------------------------------
def _secret(data_dir: Path) -> bytes:
    path = data_dir / "auth_secret"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process made it first
            pass
        else:
            with os.fdopen(fd, "wb") as f:
                f.write(secrets.token_bytes(32))
    secret = path.read_bytes()
    if len(secret) < 32:
        raise AuthError(f"{path} is damaged: delete it (running processes lose their tokens).")
    return secret


def _sign(secret: bytes, payload: str) -> str:
    return hmac.new(secret, payload.encode(), hashlib.sha256).hexdigest()


def issue_token(data_dir: Path, user: User, ttl_s: float = 300.0) -> str:
    """A token that logs ``user`` in for ``ttl_s`` seconds: for a process the app starts,
    which checks it once, at its start."""
    payload = f"{user.name}|{int(time.time() + ttl_s)}"
    return f"{payload}|{_sign(_secret(data_dir), payload)}"


def verify_token(data_dir: Path, users: UserStore, token: str) -> User:
    try:
        name, expiry, signature = token.rsplit("|", 2)
        valid = hmac.compare_digest(signature, _sign(_secret(data_dir), f"{name}|{expiry}"))
        expired = int(expiry) < time.time()
    except ValueError:
        valid, expired = False, False
    if not valid:
        raise AuthError(f"{TOKEN_ENV} is not a valid token.")
    if expired:
        raise AuthError(f"{TOKEN_ENV} has expired: start the run again.")
    user = users.get(name)
    if user.disabled:
        raise LoginFailed()
    return user
