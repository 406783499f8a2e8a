"""Login state that holds outside the app: the login switch lives in the database, failed
logins are counted there per name and per client, and browser sessions are stored hashed
and revoked when the user changes."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from assistant.login import auth
from assistant.login.auth import (
    MAX_CLIENT_FAILURES,
    MAX_FAILURES,
    LoginFailed,
    TooManyAttempts,
    UserError,
    UserStore,
)
from assistant.bootstrap import open_database
from assistant.cli import main
from assistant.storage.migrate import downgrade
from assistant.storage.schema import LoginSession

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "correct horse"


@pytest.fixture
def users(db) -> UserStore:
    return UserStore(db)


@pytest.fixture
def cli(env_settings, monkeypatch):
    for var in ("ASSISTANT_AUTH", "ASSISTANT_USER", "ASSISTANT_PASSWORD", auth.TOKEN_ENV):
        monkeypatch.delenv(var, raising=False)
    runner = CliRunner()

    def invoke(*args: str, env: dict[str, str] | None = None):
        return runner.invoke(main, list(args), env=env, catch_exceptions=False)

    return invoke


def fail(users: UserStore, name: str, client: str, times: int) -> None:
    for _ in range(times):
        with pytest.raises(LoginFailed):
            users.authenticate(name, "wrong guess", client=client)


# -- the login switch --------------------------------------------------------------------------
def test_login_turned_on_once_is_enforced_whatever_the_environment(cli, env_settings):
    """The probe: a user with ASSISTANT_AUTH unset made themselves admin."""
    users = UserStore(open_database(env_settings))
    users.add("root", PASSWORD, "admin")
    users.add("alice", PASSWORD)
    assert not users.login_enabled("off")  # nobody turned it on yet
    assert users.login_enabled("password") and users.login_recorded()  # recorded now

    r = cli("users", "set-role", "alice", "admin")
    assert r.exit_code == 1 and "Login is on" in r.output
    r = cli("--user", "alice", "users", "set-role", "alice", "admin",
            env={"ASSISTANT_PASSWORD": PASSWORD, "ASSISTANT_AUTH": "off"})
    assert r.exit_code == 1 and "Only an admin may manage users" in r.output
    assert users.get("alice").role == "user"
    for args in (["search", "x"], ["documents", "list"], ["models", "list"], ["users", "list"],
                 ["data", "export", "--out", "x.jsonl"], ["users", "login", "off"]):
        r = cli(*args, env={"ASSISTANT_AUTH": "off"})
        assert r.exit_code == 1 and "Login is on" in r.output, (args, r.output)
    # backup and doctor work on the files and need no login, as documented.
    assert cli("doctor").exit_code == 0
    assert cli("backup", str(env_settings.data_dir.parent / "bk")).exit_code == 0

    r = cli("--user", "alice", "users", "login", "off", env={"ASSISTANT_PASSWORD": PASSWORD})
    assert r.exit_code == 1 and "Only an admin" in r.output and users.login_recorded()
    r = cli("--user", "root", "users", "login", "off", env={"ASSISTANT_PASSWORD": PASSWORD})
    assert r.exit_code == 0 and not users.login_enabled("off")
    assert cli("users", "list").exit_code == 0  # off: open again
    r = cli("users", "login", "on")
    assert r.exit_code == 0 and users.login_recorded()


def test_login_cannot_be_turned_on_without_an_admin(users):
    users.add("alice", PASSWORD)
    with pytest.raises(UserError, match="Add an admin first"):
        users.set_login(True)
    assert users.login_enabled("password") and not users.login_recorded()


def test_the_login_state_migration_from_the_previous_revision(db, users):
    users.add("root", PASSWORD, "admin")
    users.set_login(True)
    downgrade(db, "0005")
    from assistant.storage import upgrade

    upgrade(db)
    assert users.get("root").is_admin and not users.login_recorded()


# -- throttling ----------------------------------------------------------------------------------
def test_a_locked_name_is_locked_only_on_the_client_that_failed(users):
    users.add("root", PASSWORD, "admin")
    fail(users, "root", "browser:10.0.0.66", MAX_FAILURES)
    with pytest.raises(TooManyAttempts, match="for this user from this client"):
        users.authenticate("root", PASSWORD, client="browser:10.0.0.66")
    # The admin, elsewhere, is not locked out by someone else's guesses.
    assert users.authenticate("root", PASSWORD, client="browser:10.0.0.5").name == "root"
    assert users.authenticate("root", PASSWORD, client="cli:root").name == "root"


def test_a_client_trying_many_names_is_locked(users):
    users.add("root", PASSWORD, "admin")
    for i in range(MAX_CLIENT_FAILURES):
        with pytest.raises(LoginFailed):
            users.authenticate(f"name{i}", "guess", client="browser:10.0.0.66")
    with pytest.raises(TooManyAttempts, match="from this client:"):
        users.authenticate("root", PASSWORD, client="browser:10.0.0.66")
    assert users.authenticate("root", PASSWORD, client="browser:10.0.0.5")


def test_failures_are_shared_by_every_process(settings, db, users):
    """Another process (a second app server, the CLI) counts in the same table."""
    users.add("root", PASSWORD, "admin")
    fail(users, "root", "browser:10.0.0.66", MAX_FAILURES - 1)
    script = (
        "import sys; from assistant.login.auth import UserStore, LoginFailed; "
        "from assistant.storage import Database; "
        f"u = UserStore(Database({settings.resolved_database_url!r}))\n"
        "try: u.authenticate('root', 'guess', client='browser:10.0.0.66')\n"
        "except LoginFailed: sys.exit(0)\nsys.exit(1)")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    assert subprocess.run([sys.executable, "-c", script], env=env, timeout=120).returncode == 0
    with pytest.raises(TooManyAttempts):
        users.authenticate("root", PASSWORD, client="browser:10.0.0.66")


def test_the_cli_throttles_like_the_app(cli, env_settings):
    users = UserStore(open_database(env_settings))
    users.add("root", PASSWORD, "admin")
    users.set_login(True)
    for _ in range(MAX_FAILURES):
        r = cli("--user", "root", "users", "list", env={"ASSISTANT_PASSWORD": "nope nope"})
        assert "Wrong user name or password" in r.output
    r = cli("--user", "root", "users", "list", env={"ASSISTANT_PASSWORD": PASSWORD})
    assert r.exit_code == 1 and "Too many failed logins" in r.output
    # The app, from a browser that has not failed, still lets root in.
    assert users.authenticate("root", PASSWORD, client="browser:localhost")


def test_an_admin_sees_and_clears_locks(cli, env_settings):
    users = UserStore(open_database(env_settings))
    users.add("root", PASSWORD, "admin")
    users.add("alice", PASSWORD)
    users.set_login(True)
    fail(users, "alice", "browser:10.0.0.66", MAX_FAILURES)
    for i in range(MAX_CLIENT_FAILURES):
        with pytest.raises((LoginFailed, TooManyAttempts)):
            users.authenticate(f"n{i}", "guess", client="browser:10.0.0.77")
    as_root = {"ASSISTANT_PASSWORD": PASSWORD}
    r = cli("--user", "root", "users", "locks", env=as_root)
    assert r.exit_code == 0, r.output
    assert "alice from browser:10.0.0.66: 5 failed logins" in r.output
    assert "client browser:10.0.0.77: 20 failed logins" in r.output
    r = cli("--user", "alice", "users", "locks", env=as_root)
    assert "Only an admin" in r.output
    assert cli("--user", "root", "users", "unlock", "alice", env=as_root).exit_code == 0
    assert users.authenticate("alice", PASSWORD, client="browser:10.0.0.66")
    r = cli("--user", "root", "users", "unlock", "--client", "browser:10.0.0.77", env=as_root)
    assert "20 failed login(s) forgotten" in r.output
    assert cli("--user", "root", "users", "locks", env=as_root).output.strip() == "No locks."


# -- sessions ------------------------------------------------------------------------------------
def test_sessions_are_stored_hashed_and_revoked(users, db):
    root = users.add("root", PASSWORD, "admin")
    alice = users.add("alice", PASSWORD)
    token = users.start_session(alice)
    assert users.session_user(token).name == "alice"
    with db.read() as s:
        [row] = s.query(LoginSession).all()
    assert row.token_hash == hashlib.sha256(token.encode()).hexdigest() and token not in row.token_hash
    assert users.session_user("forged") is None and users.session_user(None) is None

    users.end_session(token)  # logout
    assert users.session_user(token) is None
    for change in (lambda: users.set_password("alice", "another pass"),
                   lambda: users.set_role("alice", "admin"),
                   lambda: users.set_disabled("alice", True)):
        token = users.start_session(alice)
        other = users.start_session(root)
        change()
        assert users.session_user(token) is None
        assert users.session_user(other).name == "root"  # others' sessions stay
    users.set_disabled("alice", False)
    expired = users.start_session(alice, ttl=timedelta(seconds=-1))
    assert users.session_user(expired) is None
