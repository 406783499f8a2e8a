"""Login in the browser (``ASSISTANT_AUTH=password``): the form, the session's user, and
what the user's role lets each page show.

``gate()`` runs first on every page run (``ui/app.py``): with login off it does nothing;
with login on it shows the form and stops the page until the session has a user. The
user is read again from the database on every run, so a role change or a disabled login
takes effect at the next click. Pages ask :func:`may` before showing admin actions, and
the stores they get are scoped to the user (``assistant.storage.ownership``).
"""

from __future__ import annotations

import streamlit as st

from assistant.login.auth import MIN_PASSWORD, AuthError, LoginFailed, User, UserStore
from assistant.login.auth import may as _may
from ui import resources
from ui.text import plain

USER = "_user_name"  # session state: the logged-in user's name
#: Set by ui/server.py: logins go through /auth/session and last across reloads (an HttpOnly
#: cookie naming a server-side session). Off (``streamlit run ui/app.py``, AppTest): the
#: login lasts for the tab's session.
COOKIE_LOGIN = False
_LOGGED_OUT = "_logged_out"  # session state: this tab just logged out (no "ended" notice)


@st.cache_resource(show_spinner=False)
def users() -> UserStore:
    # Failed logins and the login switch are in the database: every process shares them.
    return UserStore(resources.database())


def enabled() -> bool:
    """Login is on when the database records it (whatever ASSISTANT_AUTH says here), or
    when this app's settings ask for it."""
    return users().login_enabled(resources.settings().auth)


def client() -> str:
    """Where this browser connects from, for throttling failed logins (None: localhost)."""
    try:
        address = st.context.ip_address
    except Exception:  # noqa: BLE001 - outside a browser session (tests)
        address = None
    return f"browser:{address or 'localhost'}"


def gate() -> User | None:
    """The logged-in user (None with login off); otherwise show the form and stop."""
    if not enabled():
        return None
    if COOKIE_LOGIN:
        return _cookie_gate()
    name = st.session_state.get(USER)
    if name is not None:
        try:
            user = users().get(name)
        except AuthError:
            user = None
        if user is not None and not user.disabled:
            _account(user)
            return user
        st.session_state.pop(USER, None)
        st.warning("Your login was disabled or removed: log in again.")
    _form()
    st.stop()
    return None  # unreachable: st.stop() raises


def current_user() -> User | None:
    """The session's user for pages (None with login off). Fails closed: with login on and
    no user, the page stops (``gate`` shows the form)."""
    if not enabled():
        return None
    name = st.session_state.get(USER)
    if name is None:
        st.stop()
    return users().get(name)


def may(action: str) -> bool:
    """Whether this session may do an admin action (always, with login off)."""
    return _may(current_user(), action)


def feedback_owner() -> User | None:
    """Whose feedback the Feedback page shows: all (None) for admins and with login off,
    the user's own otherwise."""
    user = current_user()
    return None if user is None or user.is_admin else user


def _form() -> None:
    st.title("Log in")
    if users().count() == 0:
        st.info(
            "No users yet: add the first admin in a terminal with "
            "`assistant users add NAME --role admin`, then log in here.",
            icon=":material/person_add:",
        )
    with st.form("login_form"):
        name = st.text_input("User name", key="login_name", autocomplete="username")
        password = st.text_input("Password", type="password", key="login_password",
                                 autocomplete="current-password")
        go = st.form_submit_button("Log in", icon=":material/login:", type="primary")
    if go:
        try:
            user = users().authenticate(name.strip(), password, client=client())
        except AuthError as err:
            st.error(str(err))
            return
        st.session_state.clear()  # nothing of a previous login carries over
        st.session_state[USER] = user.name
        st.rerun()


def _session_token() -> str | None:
    from ui.session_routes import COOKIE

    try:
        return st.context.cookies.get(COOKIE)
    except Exception:  # noqa: BLE001 - no browser connection (tests)
        return None


def _cookie_gate() -> User:
    token = _session_token()
    user = users().session_user(token)
    if user is not None:
        if st.session_state.get(USER) != user.name:
            st.session_state.clear()  # nothing of another login carries over
            st.session_state[USER] = user.name
        _account(user)
        return user
    if not st.session_state.pop(_LOGGED_OUT, False) and (
        st.session_state.pop(USER, None) is not None or token
    ):
        st.warning("Your login has ended (logged out, expired, or your account changed): "
                   "log in again.")
    _cookie_form()
    st.stop()
    raise AssertionError("unreachable: st.stop() raises")


def _cookie_form() -> None:
    from ui.session_routes import ERRORS, SESSION_PATH

    st.title("Log in")
    error = st.query_params.get("login_error")
    if error:
        st.error(ERRORS.get(error, ERRORS["error"]))
    if users().count() == 0:
        st.info(
            "No users yet: add the first admin in a terminal with "
            "`assistant users add NAME --role admin`, then log in here.",
            icon=":material/person_add:",
        )
    # A plain form: the browser posts it to the server, which answers with the HttpOnly
    # cookie. Field names that are no property of a form (DOMPurify drops "name").
    st.html(f"""
<style>
.assistant-login label {{ display: block; margin: 0 0 0.8rem; }}
.assistant-login input {{ display: block; width: 100%; padding: 0.45rem; margin-top: 0.25rem;
  box-sizing: border-box; border: 1px solid rgba(128,128,128,.5); border-radius: 0.5rem;
  font: inherit; color: inherit; background: transparent; }}
.assistant-login button {{ padding: 0.45rem 1rem; border-radius: 0.5rem; font: inherit;
  border: 1px solid rgba(128,128,128,.5); cursor: pointer; }}
</style>
<form class="assistant-login" method="post" action="{SESSION_PATH}">
  <label>User name <input name="user_name" autocomplete="username" required></label>
  <label>Password <input name="user_password" type="password" autocomplete="current-password" required></label>
  <button type="submit">Log in</button>
</form>""")


def _account(user: User) -> None:
    with st.sidebar:
        row = st.container(horizontal=True, vertical_alignment="center")
        row.caption(f":material/person: {plain(user.name)} · {user.role}")
        row.button("Log out", key="logout", icon=":material/logout:", on_click=_logout)
        with st.expander("Change password", icon=":material/key:"):
            with st.form("password_form", clear_on_submit=True, border=False):
                old = st.text_input("Current password", type="password", key="pw_old",
                                    autocomplete="current-password")
                new = st.text_input("New password", type="password", key="pw_new",
                                    autocomplete="new-password", help=f"At least {MIN_PASSWORD} characters.")
                again = st.text_input("New password again", type="password", key="pw_again",
                                      autocomplete="new-password")
                go = st.form_submit_button("Change password")
            if go:
                _change_password(user, old, new, again)


def _change_password(user: User, old: str, new: str, again: str) -> None:
    if new != again:
        st.error("The new passwords differ: type the same one twice.")
        return
    try:
        users().authenticate(user.name, old, client=client())
        users().set_password(user.name, new)
    except AuthError as err:
        st.error("The current password is wrong." if isinstance(err, LoginFailed) else str(err))
        return
    st.success("Password changed: log in again with the new one." if COOKIE_LOGIN
               else "Password changed.")


def _logout() -> None:
    if COOKIE_LOGIN:
        users().end_session(_session_token())  # the cookie left behind names nothing now
    st.session_state.clear()
    st.session_state[_LOGGED_OUT] = True
