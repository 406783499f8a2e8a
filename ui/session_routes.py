"""The HTTP side of browser logins that last across reloads (``streamlit run ui/server.py``).

Streamlit talks to the page over a websocket, which cannot set a cookie; a cookie that
JavaScript sets (what the cookie components on PyPI do) cannot be HttpOnly, so a script
injected into the page could read it. Here the login form is a plain HTML form posting to
``/auth/session``, a route of Streamlit's own ASGI app (``st.App(routes=...)``): it checks the
password (with the same throttling as everywhere), starts a session
(:meth:`assistant.login.auth.UserStore.start_session`: a random token, only its hash stored, with
an expiry) and answers with the token in an HttpOnly, SameSite=Strict cookie and a redirect
to the app. Every page run then reads the cookie (``st.context.cookies``) and asks the
database whose session it is, so a logout, a password, role or state change, or the expiry
ends it at once, in every tab.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from urllib.parse import parse_qs

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse
from starlette.routing import Route

from assistant.login.auth import SESSION_TTL, AuthError, LoginFailed, TooManyAttempts, UserStore
from assistant.bootstrap import open_database
from assistant.config import get_settings

log = logging.getLogger(__name__)

COOKIE = "assistant_session"
SESSION_PATH = "/auth/session"
#: ?login_error= codes the login page explains (never free text from the URL).
ERRORS = {
    "wrong": "Wrong user name or password.",
    "locked": "Too many failed logins from this browser: try again in a few minutes "
              "(or ask an admin: `assistant users unlock`).",
    "error": "Logging in failed: try again.",
}
_MAX_BODY = 4096


@lru_cache(maxsize=1)
def _users() -> UserStore:
    return UserStore(open_database(get_settings()))


async def start_session(request: Request) -> RedirectResponse:
    body = await request.body()
    form = parse_qs(body[:_MAX_BODY].decode("utf-8", "replace"))
    name = (form.get("user_name") or [""])[0].strip()
    password = (form.get("user_password") or [""])[0]
    client = f"browser:{request.client.host if request.client else 'unknown'}"
    try:
        user = await run_in_threadpool(_users().authenticate, name, password, client)
        token = await run_in_threadpool(_users().start_session, user)
    except LoginFailed:
        return RedirectResponse("/?login_error=wrong", status_code=303)
    except TooManyAttempts:
        return RedirectResponse("/?login_error=locked", status_code=303)
    except AuthError as err:
        log.warning("Login failed: %s", err)
        return RedirectResponse("/?login_error=error", status_code=303)
    response = RedirectResponse("/", status_code=303)
    response.set_cookie(
        COOKIE, token, max_age=int(SESSION_TTL.total_seconds()), path="/", httponly=True,
        samesite="strict", secure=request.url.scheme == "https",
    )
    return response


ROUTES = [Route(SESSION_PATH, start_session, methods=["POST"])]
