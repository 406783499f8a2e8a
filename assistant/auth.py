"""Optional login: users, roles and password checks (``ASSISTANT_AUTH=password``).

Passwords are stored as argon2id hashes (argon2-cffi, with its default parameters; a hash
made with older parameters is upgraded at the next login). With login off, the default,
there are no users and everything is open: a single-user install on one's own machine.

Two roles: ``user`` chats, rates and reads the shared documents, and sees only their own
conversations and feedback; ``admin`` also uploads shared documents, exports the data,
trains, evaluates and activates versions, and manages users. What each role may do is
:data:`ADMIN_ACTIONS`, checked by :func:`require` in the UI and the CLI alike.

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
import threading
import time
from collections import deque
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import func, select

from assistant.errors import AssistantError
from assistant.storage.db import Database
from assistant.storage.schema import User as UserRow

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
#: Failed logins of one name within WINDOW_S before further tries wait out the window.
MAX_FAILURES, WINDOW_S = 5, 300.0
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
    def __init__(self, wait_s: float) -> None:
        super().__init__(
            f"Too many failed logins for this user: try again in {max(1, round(wait_s))} s."
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
            "Login is on (ASSISTANT_AUTH=password): give --user NAME (or ASSISTANT_USER) and "
            "the password (prompted, or ASSISTANT_PASSWORD)."
        )


class UserError(AuthError):
    """A user could not be added or changed (the message says why)."""


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
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

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
            self._row(s, name).password_hash = hashed

    def set_role(self, name: str, role: str) -> User:
        if role not in ROLES:
            raise UserError(f"Unknown role {role!r}: use one of {', '.join(ROLES)}.")
        with self.db.write() as s:
            row = self._row(s, name)
            if row.role == "admin" and role != "admin":
                self._keep_an_admin(s, row)
            row.role = role
            return _user(row)

    def set_disabled(self, name: str, disabled: bool) -> User:
        with self.db.write() as s:
            row = self._row(s, name)
            if disabled and row.role == "admin":
                self._keep_an_admin(s, row)
            row.disabled = disabled
            return _user(row)

    def authenticate(self, name: str, password: str) -> User:
        """The user, if the password is theirs and they are not disabled. Wrong names and
        wrong passwords fail alike (same message, same argon2 cost); a name with
        MAX_FAILURES failures in WINDOW_S seconds is refused until the oldest expires."""
        key = name.lower()
        self._check_throttle(key)
        with self.db.read() as s:
            row = s.scalar(select(UserRow).where(func.lower(UserRow.name) == key))
            stored = row.password_hash if row is not None else _DUMMY_HASH
        try:
            _hasher.verify(stored, password)
            ok = row is not None and not row.disabled
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            ok = False
        if not ok:
            with self._lock:
                self._failures.setdefault(key, deque()).append(time.monotonic())
            raise LoginFailed()
        with self._lock:
            self._failures.pop(key, None)
        if _hasher.check_needs_rehash(stored):
            with self.db.write() as s:
                self._row(s, row.name).password_hash = _hasher.hash(password)
        return _user(row)

    def _check_throttle(self, key: str) -> None:
        now = time.monotonic()
        with self._lock:
            times = self._failures.get(key)
            while times and now - times[0] > WINDOW_S:
                times.popleft()
            if times and len(times) >= MAX_FAILURES:
                raise TooManyAttempts(WINDOW_S - (now - times[0]))

    @staticmethod
    def _row(s, name: str) -> UserRow:  # noqa: ANN001
        row = s.scalar(select(UserRow).where(UserRow.name == name))
        if row is None:
            raise UserError(f"There is no user {name!r} (`assistant users list`).")
        return row

    @staticmethod
    def _keep_an_admin(s, row: UserRow) -> None:  # noqa: ANN001
        others = s.scalar(
            select(func.count()).select_from(UserRow).where(
                UserRow.role == "admin", UserRow.disabled.is_(False), UserRow.id != row.id
            )
        )
        if not others:
            raise UserError(f"{row.name} is the last admin: make another user admin first.")


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
