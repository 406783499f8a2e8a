"""Users, browser login sessions, failed logins and the settings every process must agree on
(``app_settings``): the only code that reads and writes those tables. The rules (password
hashes, throttling, who may do what) are :mod:`assistant.login.auth`'s; this stores what it decides.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import delete, func, select

from assistant.errors import UserError
from assistant.storage.db import Database
from assistant.storage.schema import AppSetting, LoginFailure, LoginSession
from assistant.storage.schema import User as UserRow

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

#: (count, oldest ``at``) of failed logins; oldest is None when there are none.
Failures = tuple[int, float | None]


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


class AccountStore:
    """The rows behind :class:`assistant.login.auth.UserStore`, as plain values."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # -- settings --------------------------------------------------------------------------
    def setting(self, key: str) -> str | None:
        with self.db.read() as s:
            row = s.get(AppSetting, key)
            return row.value if row is not None else None

    def set_setting(self, key: str, value: str) -> None:
        with self.db.write() as s:
            row = s.get(AppSetting, key)
            if row is None:
                s.add(AppSetting(key=key, value=value))
            else:
                row.value = value

    # -- users -----------------------------------------------------------------------------
    def admin_exists(self) -> bool:
        """Whether an admin that is not disabled exists."""
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
        """The user named exactly ``name``; :class:`UserError` when there is none."""
        with self.db.read() as s:
            return _user(self._row(s, name))

    def credentials(self, lowered: str) -> tuple[User, str] | None:
        """The user whose lower-cased name is ``lowered``, with their password hash."""
        with self.db.read() as s:
            row = s.scalar(select(UserRow).where(func.lower(UserRow.name) == lowered))
            return (_user(row), row.password_hash) if row is not None else None

    def add(self, name: str, password_hash: str, role: str) -> User:
        """A new user; :class:`UserError` when the name is taken (whatever its case)."""
        with self.db.write() as s:
            if s.scalar(select(UserRow.id).where(func.lower(UserRow.name) == name.lower())):
                raise UserError(f"The user {name!r} exists already.")
            row = UserRow(name=name, password_hash=password_hash, role=role)
            s.add(row)
            s.flush()
            return _user(row)

    def set_password_hash(self, name: str, password_hash: str, end_sessions: bool = True) -> None:
        """Store a new hash (``end_sessions``: and end the user's browser sessions)."""
        with self.db.write() as s:
            row = self._row(s, name)
            row.password_hash = password_hash
            if end_sessions:
                _end_sessions(s, row.id)

    def set_role(self, name: str, role: str) -> User:
        """Change the role (ending the sessions when it changes); the last active admin keeps
        theirs (:class:`UserError`)."""
        with self.db.write() as s:
            row = self._row(s, name)
            if row.role == "admin" and role != "admin":
                self._keep_an_admin(s, row)
            if row.role != role:
                _end_sessions(s, row.id)
            row.role = role
            return _user(row)

    def set_disabled(self, name: str, disabled: bool) -> User:
        """Disable (ending the sessions) or enable; the last active admin stays enabled."""
        with self.db.write() as s:
            row = self._row(s, name)
            if disabled and row.role == "admin":
                self._keep_an_admin(s, row)
            if disabled:
                _end_sessions(s, row.id)
            row.disabled = disabled
            return _user(row)

    # -- failed logins ---------------------------------------------------------------------
    def record_failure(self, name: str, client: str, at: float, forget_before: float) -> None:
        """Record a failed login at ``at``, forgetting those older than ``forget_before``."""
        with self.db.write() as s:
            s.execute(delete(LoginFailure).where(LoginFailure.at < forget_before))
            s.add(LoginFailure(name=name, client=client, at=at))

    def forget_failures(self, name: str | None = None, client: str | None = None) -> int:
        """Forget the failed logins of ``name`` and/or ``client`` (both: of that name on that
        client; neither: all); returns how many were forgotten."""
        cond = []
        if name is not None:
            cond.append(LoginFailure.name == name)
        if client is not None:
            cond.append(LoginFailure.client == client)
        with self.db.write() as s:
            return s.execute(delete(LoginFailure).where(*cond)).rowcount or 0

    def recent_failures(self, client: str, name: str, since: float) -> tuple[Failures, Failures]:
        """Failed logins after ``since`` from ``client``, and of ``name`` from ``client``."""
        recent = (LoginFailure.client == client) & (LoginFailure.at > since)
        with self.db.read() as s:
            by_client = s.execute(select(func.count(), func.min(LoginFailure.at)).where(recent)).one()
            by_name = s.execute(
                select(func.count(), func.min(LoginFailure.at)).where(recent, LoginFailure.name == name)
            ).one()
        return (by_client[0], by_client[1]), (by_name[0], by_name[1])

    def failure_groups(self, since: float, per_client: int, per_name: int
                       ) -> tuple[list[tuple[str, int, float]], list[tuple[str, str, int, float]]]:
        """Failed logins after ``since``: (client, count, oldest) of the clients with at least
        ``per_client``, and (name, client, count, oldest) of the names with at least
        ``per_name`` on one client."""
        with self.db.read() as s:
            clients = s.execute(
                select(LoginFailure.client, func.count(), func.min(LoginFailure.at))
                .where(LoginFailure.at > since).group_by(LoginFailure.client)
                .having(func.count() >= per_client)
            ).all()
            names = s.execute(
                select(LoginFailure.name, LoginFailure.client, func.count(), func.min(LoginFailure.at))
                .where(LoginFailure.at > since)
                .group_by(LoginFailure.name, LoginFailure.client)
                .having(func.count() >= per_name)
            ).all()
        return [tuple(r) for r in clients], [tuple(r) for r in names]

    # -- browser sessions ------------------------------------------------------------------
    def add_session(self, token_hash: str, user_id: int, now: datetime, expires_at: datetime) -> None:
        """Store a session (by its token's hash), dropping those expired before ``now``."""
        with self.db.write() as s:
            s.execute(delete(LoginSession).where(LoginSession.expires_at < now))
            s.add(LoginSession(token_hash=token_hash, user_id=user_id, created_at=now,
                               expires_at=expires_at))

    def session_user(self, token_hash: str, now: datetime) -> User | None:
        """The user of the session, unless it is unknown, expired by ``now`` or the user is
        disabled."""
        with self.db.read() as s:
            row = s.scalar(select(LoginSession).where(LoginSession.token_hash == token_hash))
            if row is None or row.expires_at <= now:
                return None
            user = s.get(UserRow, row.user_id)
            return None if user is None or user.disabled else _user(user)

    def end_session(self, token_hash: str) -> None:
        with self.db.write() as s:
            s.execute(delete(LoginSession).where(LoginSession.token_hash == token_hash))

    # -- helpers ---------------------------------------------------------------------------
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


def _end_sessions(s: Session, user_id: int) -> None:
    s.execute(delete(LoginSession).where(LoginSession.user_id == user_id))
