"""The route that sets the session cookie (ui/session_routes.py), without a browser."""

from __future__ import annotations

import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient

from assistant.login.auth import MAX_FAILURES, UserStore
from assistant.bootstrap import open_database
from ui import session_routes

PASSWORD = "correct horse"


@pytest.fixture
def client(env_settings):
    session_routes._users.cache_clear()
    users = UserStore(open_database(env_settings))
    users.add("root", PASSWORD, "admin")
    yield TestClient(Starlette(routes=session_routes.ROUTES), follow_redirects=False), users
    session_routes._users.cache_clear()


def post(client: TestClient, name: str, password: str):
    return client.post(session_routes.SESSION_PATH,
                       data={"user_name": name, "user_password": password})


def test_a_login_sets_an_httponly_cookie_naming_a_stored_session(client):
    http, users = client
    r = post(http, "root", PASSWORD)
    assert r.status_code == 303 and r.headers["location"] == "/"
    cookie = r.headers["set-cookie"]
    assert cookie.startswith(f"{session_routes.COOKIE}=")
    for flag in ("HttpOnly", "SameSite=strict", "Path=/", "Max-Age=604800"):
        assert flag in cookie
    token = cookie.split(";")[0].split("=", 1)[1]
    assert users.session_user(token).name == "root"


def test_wrong_passwords_and_locks_redirect_with_a_code_and_no_cookie(client):
    http, users = client
    r = post(http, "root", "nope nope")
    assert r.headers["location"] == "/?login_error=wrong" and "set-cookie" not in r.headers
    for _ in range(MAX_FAILURES - 1):
        post(http, "root", "nope nope")
    r = post(http, "root", PASSWORD)
    assert r.headers["location"] == "/?login_error=locked" and "set-cookie" not in r.headers
    assert set(session_routes.ERRORS) == {"wrong", "locked", "error"}
