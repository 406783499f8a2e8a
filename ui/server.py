"""The app with logins that last across reloads: ``streamlit run ui/server.py`` (``make run``).

Streamlit's own ASGI app (``st.App``) serving ``ui/app.py`` plus the route that sets the
HttpOnly session cookie (:mod:`ui.session_routes`). ``streamlit run ui/app.py`` still works:
there a login lasts for the browser tab.
"""

import streamlit as st

from assistant.operations.permissions import private_umask
from ui import login
from ui.session_routes import ROUTES

private_umask()  # before the route can open the database (ui/app.py sets it too)
login.COOKIE_LOGIN = True
app = st.App("app.py", routes=ROUTES)
