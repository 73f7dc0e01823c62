"""Dashboard logins: `require_login()` at the top of the entry point (once per script run).

Beyond loopback (dashboard/login_rule.py) nothing but the login form is drawn until a
researcher logs in: with a name and secret from `coordinator researcher add`
(radfed.researchers: scrypt hashes, rate-limited per name), or, where the hospital
configured an identity provider in .streamlit/secrets.toml [auth], through Streamlit's
own st.login for an account added with `--oidc`. On loopback without a login, reading
stays open as before (`require_login()` returns None); submitting always needs a login.

A password login lives in this browser session's server-side state: it ends with
"Log out", when the tab is closed or reloaded, after SESSION_MAX_AGE_S, or at the next
page update once the coordinator disables the account. Logins, refusals, logouts and
downloads (`record_download`, a download button's on_click) land in the audit trail
under the researcher's name.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import streamlit as st

from dashboard.login_rule import database_url, is_loopback, oidc_in
from radfed.researchers import NAME, LoginRefused, Researcher, Researchers
from radfed.store import Store, StoreError

SESSION_KEY = "radfed.researcher"
OIDC_SEEN_KEY = "radfed.oidc-login-recorded"
SESSION_MAX_AGE_S = 12 * 3600
ANONYMOUS = "anonymous (loopback)"
LOGIN_FORM = "radfed-login"

__all__ = [
    "Researcher",
    "current_researcher",
    "login_form",
    "login_required",
    "logout",
    "record_download",
    "require_login",
]


@st.cache_resource(show_spinner=False)
def _accounts(url: str) -> Researchers:
    """One accounts handle (and connection pool) per database for the whole server."""
    return Researchers(Store(url))


def accounts() -> Researchers:
    """The accounts of the database the dashboard shows (its `--db`)."""
    return _accounts(database_url(sys.argv[1:]))


def login_required() -> bool:
    """True when this server listens beyond loopback (or on every interface)."""
    return not is_loopback(st.get_option("server.address"))


def oidc_auth() -> dict[str, Any] | None:
    """The [auth] table of Streamlit's secrets when it configures OIDC, else None."""
    try:
        auth = st.secrets.get("auth")
    except Exception:  # no secrets file at all (StreamlitSecretNotFoundError) or an unreadable one
        return None
    auth = auth.to_dict() if hasattr(auth, "to_dict") else auth
    return auth if oidc_in(auth) else None


def oidc_identity() -> str | None:
    """The e-mail address the identity provider vouched for in this browser, or None."""
    if not st.user.get("is_logged_in", False):
        return None
    if st.user.get("email_verified") is False:
        return None
    email = st.user.get("email")
    return str(email) if isinstance(email, str) and NAME.match(email) else None


def current_researcher() -> Researcher | None:
    """Who is logged in to this session, checked against the account now (disabled or
    gone ends the session); draws nothing."""
    registry = accounts()
    state = st.session_state.get(SESSION_KEY)
    if state:
        who = registry.active(state["name"])
        if who is not None and who.kind == state["kind"] and time.time() - state["since"] < SESSION_MAX_AGE_S:
            return who
        st.session_state.pop(SESSION_KEY, None)
    if oidc_auth() is None:
        return None
    email = oidc_identity()
    who = registry.active(email) if email else None
    if who is None or who.kind != "oidc":
        return None
    if st.session_state.get(OIDC_SEEN_KEY) != email:  # once per browser session, not per page update
        registry.logged_in(email, "oidc")
        st.session_state[OIDC_SEEN_KEY] = email
    return who


def login_form(key: str = LOGIN_FORM) -> Researcher | None:
    """The login form (and the identity provider's button when OIDC is configured)."""
    st.subheader("Log in")
    auth = oidc_auth()
    email = oidc_identity() if auth else None
    if email:
        st.error(
            f"{email} has no active radfed account; ask the coordinator: `coordinator researcher add {email} --oidc`"
        )
    with st.form(key, clear_on_submit=True):
        name = st.text_input("Name", key=f"{key}.name")
        secret = st.text_input("Secret", type="password", key=f"{key}.secret")
        submitted = st.form_submit_button("Log in")
    if submitted:
        try:
            who = accounts().login(name.strip(), secret)
        except LoginRefused as e:
            st.error(e.message)
        else:
            st.session_state[SESSION_KEY] = {"name": who.name, "kind": who.kind, "since": time.time()}
            st.rerun()
    if auth:
        providers = [k for k, v in auth.items() if isinstance(v, dict)]
        for provider in providers or [None]:
            label = f"Log in with {provider}" if provider else "Log in with the hospital's identity provider"
            if not st.button(label, key=f"{key}.oidc.{provider or 'default'}"):
                continue
            if provider:
                st.login(provider)
            else:
                st.login()
    return None


def logout(who: Researcher) -> None:
    """End this session's login (and the identity provider's cookie for an OIDC login)."""
    st.session_state.pop(SESSION_KEY, None)
    st.session_state.pop(OIDC_SEEN_KEY, None)
    accounts().audit.event("logout", researcher=who.name, detail=who.kind)
    if who.kind == "oidc":
        st.logout()
    st.rerun()


def require_login(required: bool = False) -> Researcher | None:
    """The logged-in researcher, with "Log out" in the sidebar; else, beyond loopback (or
    when `required`), the login form and st.stop(). On loopback: None for an anonymous reader.

    Call it once per script run, before any page draws (the st.navigation entry point).
    """
    try:
        who = current_researcher()
    except StoreError as e:
        st.error(str(e))
        st.stop()
    if who is not None:
        with st.sidebar:
            st.caption(f"Logged in as **{who.name}**")
            if st.button("Log out", key="radfed-logout"):
                logout(who)
        return who
    if required or login_required():
        st.caption(
            "Every page of this dashboard needs a login: accounts come from the coordinator "
            "(`coordinator researcher add NAME`)."
        )
        login_form()
        st.stop()
    return None


def record_download(what: str) -> None:
    """A download button's on_click: '`who` downloaded `what`' in the audit trail.

    Example: `st.download_button(..., on_click=record_download, args=("checkpoint of run 42, round 3",))`
    """
    state = st.session_state.get(SESSION_KEY) or {}
    name = state.get("name") or st.session_state.get(OIDC_SEEN_KEY) or ANONYMOUS
    accounts().audit.event("downloaded", researcher=name, detail=what)
