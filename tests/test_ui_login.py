"""Login in the app (AppTest), with ``ASSISTANT_AUTH=password``: the form, two users who do
not see each other's chats, and the admin-only parts of each page.

The app's own wiring with the FakeGenerator for the model (the login is the subject)."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from assistant.login.auth import UserStore
from tests.fake_app import APP, run_ok, fake_app
from ui import login
from ui.state import CONV

PASSWORD = "correct horse"


@pytest.fixture
def users(env_settings, monkeypatch):
    monkeypatch.setenv("ASSISTANT_AUTH", "password")
    settings = env_settings.model_copy(update={"auth": "password"})
    with fake_app(settings, monkeypatch, fingerprint="fake") as svc:
        yield UserStore(svc.store.db)


@pytest.fixture
def people(users):
    return (users.add("root", PASSWORD, "admin"), users.add("alice", PASSWORD),
            users.add("bob", PASSWORD))


def session() -> AppTest:
    return run_ok(AppTest.from_file(APP, default_timeout=60))


def log_in(name: str, password: str = PASSWORD) -> AppTest:
    at = session()
    at.text_input(key="login_name").set_value(name)
    at.text_input(key="login_password").set_value(password)
    at.button[0].click()
    return run_ok(at)


def conversations(at: AppTest) -> list[str]:
    return [b.label for b in at.sidebar.button if b.key and b.key.startswith("conv_")]


def test_the_form_comes_first(users):
    at = session()
    assert at.title[0].value == "Log in"
    assert "assistant users add NAME --role admin" in at.info[0].value  # no users yet
    assert not at.chat_input  # nothing of the app before a login


def test_wrong_password_shows_an_error_and_nothing_else(people):
    at = log_in("alice", "not her password")
    assert at.error[0].value == "Wrong user name or password."
    assert at.title[0].value == "Log in" and not at.chat_input
    assert login.USER not in at.session_state


def test_two_users_do_not_see_each_others_conversations(people):
    alice = log_in("alice")
    assert alice.title[0].value != "Log in"
    assert any("alice · user" in c.value for c in alice.sidebar.caption)
    alice.chat_input(key="chat_input").set_value("alice's secret plan").run()
    assert conversations(alice) == ["alice's secret plan"]
    her_conv = alice.session_state[CONV]

    bob = log_in("bob")
    assert conversations(bob) == []
    bob.session_state[CONV] = her_conv  # a stale or forged id: not shown, and forgotten
    run_ok(bob)
    assert CONV not in bob.session_state or bob.session_state[CONV] is None
    assert not any("secret plan" in m.value for cm in bob.chat_message for m in cm.markdown)
    bob.chat_input(key="chat_input").set_value("bob's question").run()
    assert conversations(bob) == ["bob's question"]
    run_ok(alice)
    assert conversations(alice) == ["alice's secret plan"]

    root = log_in("root")  # admins chat in their own conversations too
    assert conversations(root) == []


def test_users_cannot_upload_export_or_manage_models(people):
    alice = log_in("alice")
    assert alice.chat_input(key="chat_input").proto.placeholder == "Ask anything"
    alice.switch_page("views/documents.py")
    run_ok(alice)
    assert "Only an admin can add or remove documents" in alice.caption[0].value
    assert not alice.get("file_uploader")
    alice.switch_page("views/feedback.py")
    run_ok(alice)
    headers = [h.value for h in alice.subheader]
    assert "Export training data" not in headers and "Leaderboard" not in headers
    with pytest.raises(ValueError, match="Could not find a navigation page"):
        alice.switch_page("views/models.py")  # not in a user's navigation at all

    root = log_in("root")
    assert "+ attaches documents" in root.chat_input(key="chat_input").proto.placeholder
    root.switch_page("views/documents.py")
    run_ok(root)
    assert root.get("file_uploader")
    root.switch_page("views/feedback.py")
    run_ok(root)
    assert "Export training data" in [h.value for h in root.subheader]
    root.switch_page("views/models.py")
    run_ok(root)
    assert root.title[0].value == "Models" and not root.error


def test_log_out_and_disabled_logins(people, users):
    alice = log_in("alice")
    alice.chat_input(key="chat_input").set_value("hello").run()
    alice.button(key="logout").click()
    run_ok(alice)
    assert alice.title[0].value == "Log in"
    assert CONV not in alice.session_state  # nothing of the session stays behind

    bob = log_in("bob")
    users.set_disabled("bob", True)  # an admin disables bob while he is logged in
    run_ok(bob)
    assert bob.title[0].value == "Log in"
    assert "disabled" in bob.warning[0].value


def test_change_password(people, users):
    alice = log_in("alice")

    def change(old: str, new: str, again: str | None = None) -> AppTest:
        alice.text_input(key="pw_old").set_value(old)
        alice.text_input(key="pw_new").set_value(new)
        alice.text_input(key="pw_again").set_value(new if again is None else again)
        next(b for b in alice.button if b.label == "Change password").click()
        return run_ok(alice)

    assert "differ" in change(PASSWORD, "new horse 1", "new horse 2").error[0].value
    assert "current password is wrong" in change("guess guess", "new horse 1").error[0].value
    assert "too short" in change(PASSWORD, "short").error[0].value
    users.authenticate("alice", PASSWORD)  # none of these changed it
    assert change(PASSWORD, "new horse 1").success[0].value == "Password changed."
    users.authenticate("alice", "new horse 1")
    assert log_in("alice", PASSWORD).error[0].value == "Wrong user name or password."
