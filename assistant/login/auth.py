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

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from assistant.errors import AuthError, UserError
from assistant.storage.db import Database
from assistant.storage.users import AccountStore, User

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


@dataclass(frozen=True)
class Lock:
    """A name locked on one client, or a whole client (``name`` None)."""

    name: str | None
    client: str
    failures: int
    wait_s: float


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
    """Users, their logins and sessions, by the rules above (the rows: ``AccountStore``)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.accounts = AccountStore(db)

    # -- login on or off (in the database, shared by every process) -------------------------
    def login_recorded(self) -> bool:
        return self.accounts.setting(LOGIN_SETTING) == "on"

    def login_enabled(self, configured: str = "off") -> bool:
        """Whether login is on: recorded in the database, or asked for by this process's
        configuration (``configured``: ``Settings.auth``). The latter is recorded once an
        admin exists, so that no other environment can switch it off again."""
        if self.login_recorded():
            return True
        if configured == "off":
            return False
        if self.accounts.admin_exists():
            self.set_login(True)
        return True

    def set_login(self, on: bool) -> None:
        """Record login on or off. Turning it on needs an active admin (or nobody could log
        in); callers check that the one turning it off is an admin."""
        if on and not self.accounts.admin_exists():
            raise UserError("Add an admin first (`assistant users add NAME --role admin`): "
                            "with login on and no admin, nobody could manage the users.")
        self.accounts.set_setting(LOGIN_SETTING, "on" if on else "off")

    def count(self) -> int:
        return self.accounts.count()

    def list(self) -> list[User]:
        return self.accounts.list()

    def get(self, name: str) -> User:
        return self.accounts.get(name)

    def add(self, name: str, password: str, role: str = "user") -> User:
        if not NAME.match(name):
            raise UserError(
                f"{name!r} is not a valid user name: up to 64 letters, digits and _ . @ -, "
                "starting with a letter or digit."
            )
        if role not in ROLES:
            raise UserError(f"Unknown role {role!r}: use one of {', '.join(ROLES)}.")
        check_password(password)
        return self.accounts.add(name, _hasher.hash(password), role)

    def set_password(self, name: str, password: str) -> None:
        check_password(password)
        self.accounts.set_password_hash(name, _hasher.hash(password))

    def set_role(self, name: str, role: str) -> User:
        if role not in ROLES:
            raise UserError(f"Unknown role {role!r}: use one of {', '.join(ROLES)}.")
        return self.accounts.set_role(name, role)

    def set_disabled(self, name: str, disabled: bool) -> User:
        return self.accounts.set_disabled(name, disabled)

    def authenticate(self, name: str, password: str, client: str = "local") -> User:
        """The user, if the password is theirs and they are not disabled. Wrong names and
        wrong passwords fail alike (same message, same argon2 cost). ``client`` is where the
        attempt comes from (the browser's address, or the CLI's account): MAX_FAILURES
        failures for a name from one client within WINDOW_S seconds, or MAX_CLIENT_FAILURES
        from the client for any names, refuse that client until the oldest expires."""
        key = name.lower()[:64]
        client = client[:200]
        self._check_throttle(key, client)
        found = self.accounts.credentials(key)
        user, stored = found if found is not None else (None, _DUMMY_HASH)
        try:
            _hasher.verify(stored, password)
            ok = user is not None and not user.disabled
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            ok = False
        if not ok:
            now = _now()
            self.accounts.record_failure(key, client, now, forget_before=now - WINDOW_S)
            raise LoginFailed()
        self.accounts.forget_failures(key, client)
        if _hasher.check_needs_rehash(stored):
            self.accounts.set_password_hash(user.name, _hasher.hash(password), end_sessions=False)
        return user

    def _check_throttle(self, key: str, client: str) -> None:
        since = _now() - WINDOW_S
        (by_client, client_oldest), (by_name, name_oldest) = self.accounts.recent_failures(
            client, key, since)
        if by_client >= MAX_CLIENT_FAILURES:
            raise TooManyAttempts(client_oldest - since, client=True)
        if by_name >= MAX_FAILURES:
            raise TooManyAttempts(name_oldest - since)

    def locks(self) -> list[Lock]:
        """Names locked on a client, and clients locked as a whole, right now."""
        since = _now() - WINDOW_S
        clients, names = self.accounts.failure_groups(since, MAX_CLIENT_FAILURES, MAX_FAILURES)
        return ([Lock(None, client, count, oldest - since) for client, count, oldest in clients]
                + [Lock(name, client, count, oldest - since) for name, client, count, oldest in names])

    def unlock(self, name: str | None = None, client: str | None = None) -> int:
        """Forget the failed logins of ``name`` (on every client) and/or of ``client``;
        returns how many were forgotten."""
        if name is None and client is None:
            raise UserError("Name the user or the client to unlock.")
        return self.accounts.forget_failures(name.lower() if name is not None else None, client)

    # -- browser sessions -------------------------------------------------------------------
    def start_session(self, user: User, ttl: timedelta = SESSION_TTL) -> str:
        """A new random session token for ``user`` (only its hash is stored)."""
        token = secrets.token_urlsafe(32)
        now = datetime.now(UTC)
        self.accounts.add_session(_token_hash(token), user.id, now, now + ttl)
        return token

    def session_user(self, token: str | None) -> User | None:
        """The user of a live session, or None (unknown, expired or revoked token, or a
        disabled user)."""
        if not token:
            return None
        return self.accounts.session_user(_token_hash(token), datetime.now(UTC))

    def end_session(self, token: str | None) -> None:
        if token:
            self.accounts.end_session(_token_hash(token))


def _now() -> float:
    """Seconds since the epoch: failed logins are compared across processes."""
    return time.time()


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


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
