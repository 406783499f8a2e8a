"""Login and roles: users with argon2 hashes, what each user sees, and the CLI's checks."""

from __future__ import annotations

import os
import time

import pytest
from argon2 import PasswordHasher
from click.testing import CliRunner

from alignment import runs
from assistant.login import auth
from assistant.login.auth import (
    LoginFailed,
    NotAllowed,
    TooManyAttempts,
    UserError,
    UserStore,
    issue_token,
    verify_token,
)
from assistant.bootstrap import open_database
from assistant.cli import main
from assistant.errors import ComparisonNotFound, ConversationNotFound, MessageNotFound
from assistant.storage import ConversationStore
from assistant.storage.comparisons import ComparisonStore
from assistant.storage.conversations import AnswerRecord
from assistant.storage.pairs import delete_pair, list_pairs
from assistant.storage.stats import feedback_stats

pytestmark = pytest.mark.both_databases  # SQLite and PostgreSQL (tests/conftest.py)

PASSWORD = "correct horse"
RECORD = AnswerRecord("m", "base", {}, 1, 1, 1.0, None)


@pytest.fixture
def users(db) -> UserStore:
    return UserStore(db)


@pytest.fixture
def people(users):
    return (users.add("root", PASSWORD, "admin"), users.add("alice", PASSWORD),
            users.add("bob", PASSWORD))


# -- users and passwords ---------------------------------------------------------------------
def test_passwords_are_stored_as_argon2id_hashes(users, db):
    from assistant.storage.schema import User as Row

    users.add("alice", PASSWORD)
    with db.read() as s:
        [row] = s.query(Row).all()
    assert row.password_hash.startswith("$argon2id$")
    assert PASSWORD not in row.password_hash
    assert users.authenticate("alice", PASSWORD).name == "alice"
    assert users.authenticate("ALICE", PASSWORD).name == "alice"  # names are case-blind


def test_wrong_password_and_unknown_user_fail_alike(users):
    users.add("alice", PASSWORD)
    with pytest.raises(LoginFailed) as wrong:
        users.authenticate("alice", "wrong horse")
    with pytest.raises(LoginFailed) as unknown:
        users.authenticate("mallory", PASSWORD)
    assert str(wrong.value) == str(unknown.value)


def test_repeated_failures_are_throttled_even_for_the_right_password(users, monkeypatch):
    users.add("alice", PASSWORD)
    for _ in range(auth.MAX_FAILURES):
        with pytest.raises(LoginFailed):
            users.authenticate("alice", "guess")
    with pytest.raises(TooManyAttempts):
        users.authenticate("alice", PASSWORD)
    # The window passes: the right password works again, and clears the count.
    now = time.time()
    monkeypatch.setattr(auth, "_now", lambda: now + auth.WINDOW_S + 1)
    assert users.authenticate("alice", PASSWORD).name == "alice"


@pytest.mark.parametrize("name, password, role, message", [
    ("alice", "short", "user", "too short"),
    ("alice", " padded pass", "user", "space"),
    ("al ice", PASSWORD, "user", "not a valid user name"),
    ("<script>", PASSWORD, "user", "not a valid user name"),
    ("alice", PASSWORD, "owner", "Unknown role"),
])
def test_bad_users_are_refused(users, name, password, role, message):
    with pytest.raises(UserError, match=message):
        users.add(name, password, role)
    assert users.count() == 0


def test_names_are_unique_regardless_of_case(users):
    users.add("alice", PASSWORD)
    with pytest.raises(UserError, match="exists"):
        users.add("Alice", PASSWORD)


def test_disabled_users_cannot_log_in_and_the_last_admin_stays(users, people):
    users.set_disabled("alice", True)
    with pytest.raises(LoginFailed):
        users.authenticate("alice", PASSWORD)
    with pytest.raises(UserError, match="last admin"):
        users.set_role("root", "user")
    with pytest.raises(UserError, match="last admin"):
        users.set_disabled("root", True)
    users.set_role("bob", "admin")
    assert users.set_role("root", "user").role == "user"


def test_an_old_hash_is_upgraded_at_login(users, db):
    from assistant.storage.schema import User as Row

    weak = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash(PASSWORD)
    users.add("alice", PASSWORD)
    with db.write() as s:
        s.query(Row).filter_by(name="alice").one().password_hash = weak
    users.authenticate("alice", PASSWORD)
    with db.read() as s:
        upgraded = s.query(Row).filter_by(name="alice").one().password_hash
    assert upgraded != weak and "m=65536" in upgraded


def test_roles():
    admin = auth.User(1, "root", "admin", False, None)
    user = auth.User(2, "alice", "user", False, None)
    for action in auth.ADMIN_ACTIONS:
        assert auth.may(None, action) and auth.may(admin, action) and not auth.may(user, action)
    with pytest.raises(NotAllowed, match="Only an admin may train"):
        auth.require(user, "train")
    with pytest.raises(ValueError):
        auth.may(admin, "fly")


def test_tokens(tmp_path, users, people):
    root = people[0]
    token = issue_token(tmp_path, root)
    assert verify_token(tmp_path, users, token).name == "root"
    assert oct((tmp_path / "auth_secret").stat().st_mode & 0o777) == "0o600"
    name, expiry, sig = token.split("|")
    for forged in (f"alice|{expiry}|{sig}", f"root|{int(expiry) + 10**6}|{sig}", "root", ""):
        with pytest.raises(auth.AuthError, match="not a valid token"):
            verify_token(tmp_path, users, forged)
    expired = issue_token(tmp_path, root, ttl_s=-1)
    with pytest.raises(auth.AuthError, match="expired"):
        verify_token(tmp_path, users, expired)


# -- who sees what ---------------------------------------------------------------------------
def _chat(store: ConversationStore, text: str):
    q = store.add_user_message(None, text)
    a = store.add_assistant_message(q.conversation_id, f"answer to {text}", RECORD, reply_to_id=q.id)
    b = store.add_assistant_message(q.conversation_id, f"again: {text}", RECORD, reply_to_id=q.id)
    return q, a, b


def test_users_see_only_their_own_conversations(store, people):
    root, alice, bob = people
    legacy = _chat(store, "made while login was off")  # no owner
    mine = _chat(store.for_owner(alice), "alice's question")
    as_bob = store.for_owner(bob)

    assert [c.title for c in as_bob.list_conversations()] == []
    assert [c.title for c in store.for_owner(alice).list_conversations()] == ["alice's question"]
    # Admins see their own and the ownerless ones, not the users'.
    assert [c.title for c in store.for_owner(root).list_conversations()] == ["made while login was off"]
    assert len(store.list_conversations()) == 2  # unscoped (login off)

    conv, answer = mine[0].conversation_id, mine[1].id
    for attempt in (
        lambda: as_bob.get_conversation(conv),
        lambda: as_bob.messages(conv),
        lambda: as_bob.add_user_message(conv, "let me in"),
        lambda: as_bob.add_assistant_message(conv, "x", RECORD),
        lambda: as_bob.rename_conversation(conv, "mine now"),
        lambda: as_bob.delete_conversation(conv),
        lambda: as_bob.set_document_choice(conv, None),
    ):
        with pytest.raises(ConversationNotFound):
            attempt()
    for attempt in (
        lambda: as_bob.get_message(answer),
        lambda: as_bob.rate(answer, -1),
        lambda: as_bob.choose(answer),
        lambda: as_bob.edit(answer, "vandalised"),
        lambda: as_bob.set_active(answer),
        lambda: as_bob.feedback_history(answer),
        lambda: store.for_owner(bob).history_before(mine[0].id),
    ):
        with pytest.raises(MessageNotFound):
            attempt()
    with pytest.raises(MessageNotFound):
        store.for_owner(alice).rate(legacy[1].id, 1)  # nor the admins' old chats
    # Nothing bob tried changed alice's conversation.
    after = store.for_owner(alice).messages(conv, include_inactive=True)
    assert [m.content for m in after] == ["alice's question", "answer to alice's question",
                                          "again: alice's question"]
    assert all(m.rating is None and m.edited is None and not m.chosen for m in after)
    assert store.for_owner(alice).get_conversation(conv).title == "alice's question"


def test_feedback_pairs_and_votes_are_scoped(db, store, people):
    root, alice, bob = people
    a_store, b_store = store.for_owner(alice), store.for_owner(bob)
    qa, a1, a2 = _chat(a_store, "alice asks")
    qb, b1, b2 = _chat(b_store, "bob asks")
    a_store.rate(a1.id, 1)
    b_store.rate(b1.id, -1)
    b_store.rate(b2.id, -1)
    a_store.choose(a2.id)
    b_store.edit(b1.id, "better")
    cmp_a = ComparisonStore(db, alice).create(qa.id, a1.id, a2.id)
    with pytest.raises(ComparisonNotFound):
        ComparisonStore(db, bob).create(qa.id, a1.id, a2.id)
    with pytest.raises(ComparisonNotFound):
        ComparisonStore(db, bob).vote(cmp_a.id, "b")
    assert ComparisonStore(db, bob).for_conversation(qa.conversation_id) == {}
    ComparisonStore(db, alice).vote(cmp_a.id, "a")

    mine, theirs, everyone = (feedback_stats(db, alice), feedback_stats(db, bob),
                              feedback_stats(db))
    def kinds(stats):
        return {k: n for k, n in stats.by_kind.items() if n}

    assert kinds(mine) == {"thumbs up": 1, "best-of choices": 2, "compare votes": 1}
    assert kinds(theirs) == {"thumbs down": 2, "edits": 1}
    assert kinds(everyone) == {"thumbs up": 1, "thumbs down": 2, "best-of choices": 2,
                               "compare votes": 1, "edits": 1}
    assert ComparisonStore(db, bob).outcomes() == []
    assert len(ComparisonStore(db, alice).outcomes()) == 1

    assert {p.question for p in list_pairs(db, owner=alice)} == {"alice asks"}
    [bobs_edit] = list_pairs(db, owner=bob)
    assert bobs_edit.kind == "edit"
    assert not delete_pair(db, "edit", bobs_edit.id, owner=alice)  # not hers: kept
    assert len(list_pairs(db, owner=bob)) == 1
    assert delete_pair(db, "edit", bobs_edit.id, owner=bob)
    assert list_pairs(db, owner=bob) == []


# -- the CLI ---------------------------------------------------------------------------------
@pytest.fixture
def cli(env_settings, monkeypatch):
    for var in ("ASSISTANT_USER", "ASSISTANT_PASSWORD", auth.TOKEN_ENV, "ASSISTANT_AUTH"):
        monkeypatch.delenv(var, raising=False)
    runner = CliRunner()

    def invoke(*args: str, env: dict[str, str] | None = None, input: str | None = None):
        return runner.invoke(main, list(args), env=env, input=input, catch_exceptions=False)

    return invoke


def test_cli_first_admin_then_roles(cli, env_settings):
    new = {"ASSISTANT_NEW_PASSWORD": PASSWORD}
    r = cli("users", "add", "alice", env=new)
    assert r.exit_code == 1 and "first user must be an admin" in r.output
    assert cli("users", "add", "root", "--role", "admin", env=new).exit_code == 0

    on = {"ASSISTANT_AUTH": "password"}
    r = cli("users", "add", "alice", env={**on, **new})
    assert r.exit_code == 1 and "Login is on" in r.output
    as_root = {**on, "ASSISTANT_USER": "root", "ASSISTANT_PASSWORD": PASSWORD}
    assert cli("users", "add", "alice", env={**as_root, **new}).exit_code == 0
    r = cli("users", "list", env=as_root)
    assert "alice" in r.output and "admin" in r.output
    # The admin's own ASSISTANT_PASSWORD never becomes the new user's: that one is typed.
    r = cli("users", "add", "carol", env=as_root, input="carol's own pw\ncarol's own pw\n")
    assert r.exit_code == 0, r.output
    users = UserStore(open_database(env_settings))
    assert users.authenticate("carol", "carol's own pw").name == "carol"
    with pytest.raises(LoginFailed):
        users.authenticate("carol", PASSWORD)

    as_alice = {**on, "ASSISTANT_PASSWORD": PASSWORD}
    for args in (["--user", "alice", "data", "export", "--out", "x"],
                 ["--user", "alice", "train", "dpo"],
                 ["--user", "alice", "models", "rollback"],
                 ["--user", "alice", "models", "activate", "v1"],
                 ["--user", "alice", "eval", "v1"],
                 ["--user", "alice", "ingest", "README.md"],
                 ["--user", "alice", "documents", "delete", "1"],
                 ["--user", "alice", "data", "import", "hh-rlhf", "x.jsonl"],
                 ["--user", "alice", "users", "list"]):
        r = cli(*args, env=as_alice)
        assert r.exit_code == 1 and "Only an admin may" in r.output, (args, r.output)
    r = cli("--user", "alice", "models", "list", env=as_alice)
    assert r.exit_code == 0 and "base" in r.output
    r = cli("--user", "alice", "models", "list", env={**on, "ASSISTANT_PASSWORD": "nope nope"})
    assert r.exit_code == 1 and "Wrong user name or password" in r.output
    # The admin gets past the role check (and on to the command's own answer).
    r = cli("models", "rollback", env=as_root)
    assert "Only an admin" not in r.output and "roll back" in r.output.lower()
    # Login stays on without ASSISTANT_AUTH (the database remembers); an admin turns it off,
    # and then the same command needs no user.
    r = cli("models", "rollback")
    assert r.exit_code == 1 and "Login is on" in r.output
    assert cli("users", "login", "off", env={"ASSISTANT_PASSWORD": PASSWORD}).exit_code == 1
    r = cli("--user", "root", "users", "login", "off", env={"ASSISTANT_PASSWORD": PASSWORD})
    assert r.exit_code == 0, r.output
    r = cli("models", "rollback")
    assert "Login is on" not in r.output and "Only an admin" not in r.output


def test_cli_token_from_the_app(cli, env_settings):
    users = UserStore(open_database(env_settings))
    root = users.add("root", PASSWORD, "admin")
    alice = users.add("alice", PASSWORD)
    on = {"ASSISTANT_AUTH": "password"}
    r = cli("models", "rollback", env={**on, auth.TOKEN_ENV: issue_token(env_settings.data_dir, root)})
    assert "Only an admin" not in r.output and "Login is on" not in r.output
    r = cli("models", "rollback", env={**on, auth.TOKEN_ENV: issue_token(env_settings.data_dir, alice)})
    assert "Only an admin may" in r.output
    r = cli("models", "rollback", env={**on, auth.TOKEN_ENV: "root|99999999999|00"})
    assert "not a valid token" in r.output


def test_background_runs_get_a_token_not_a_password(settings, db, monkeypatch):
    root = UserStore(db).add("root", PASSWORD, "admin")
    monkeypatch.setenv("ASSISTANT_PASSWORD", "leaked")
    monkeypatch.setenv(auth.TOKEN_ENV, "stale")
    env = runs._child_env(settings, root)
    assert "ASSISTANT_PASSWORD" not in env
    assert verify_token(settings.data_dir, UserStore(db), env[auth.TOKEN_ENV]).name == "root"
    assert auth.TOKEN_ENV not in runs._child_env(settings, None)
    assert os.environ["ASSISTANT_PASSWORD"] == "leaked"  # the app's own env is untouched
