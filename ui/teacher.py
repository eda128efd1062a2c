"""Classroom mode: the class looks, the teacher acts.

When a teacher key is configured (CXR_TEACHER_KEY, else `teacher_key` in .streamlit/secrets.toml;
the environment wins), every control that changes shared state (train, stop, queue a scoring,
delete) is locked for a browser session until the key is typed into the sidebar's "Teacher key"
field. Without a key nothing is locked: one person on a laptop is the teacher.

    may_act()          the one decision: may this browser session change shared state?
    allowed(action)    may_act(); when locked, a one-line caption says how to unlock `action`
    sidebar()          the "Teacher key" field (app.py draws it next to the data set chooser)

The engine (cxr_core.jobs) knows nothing of sessions, and the CLI is not locked: whoever has the
machine's shell can do everything anyway. The key is never shown, logged or put in a URL: the
field is emptied as soon as it is checked, and the session keeps only a keyed hash of it.
"""

from __future__ import annotations

import hashlib
import hmac
import os

import streamlit as st

from cxr_core import config
from cxr_core.config import UserError

LABEL = "Teacher key"
SECRET_NAME = "teacher_key"
_ENTRY = "_teacher_key_entry"  # the field's state, emptied by _check_entry
_UNLOCKED = "_teacher_unlocked"  # _fingerprint(key) once this session entered the key
_WRONG = "_teacher_key_wrong"


def configured_key() -> str | None:
    """The teacher key, or None when none is configured (then everybody may act).

    A secrets file that exists but cannot be parsed raises UserError: the pages then stay
    locked rather than open to the class because of a typo in the file.
    """
    key = config.teacher_key_from_env()
    if key:
        return key
    try:
        value = st.secrets.get(SECRET_NAME)
    except FileNotFoundError as error:  # Streamlit's StreamlitSecretNotFoundError: missing or unreadable
        if not any(os.path.exists(path) for path in st.get_option("secrets.files")):
            return None
        raise UserError(f"the secrets file cannot be read ({error}); fix it and restart the dashboard") from None
    return str(value) if value not in (None, "") else None


def _fingerprint(key: str) -> str:
    return hmac.new(b"cxr-teacher-session", key.encode("utf-8"), hashlib.sha256).hexdigest()


def may_act() -> bool:
    """True when this browser session may change shared state: no key is configured, or it was entered."""
    try:
        key = configured_key()
    except UserError:
        return False
    if key is None:
        return True
    return hmac.compare_digest(st.session_state.get(_UNLOCKED, ""), _fingerprint(key))


def allowed(action: str, where=None) -> bool:
    """may_act(); when locked, a caption in `where` (default: here) says how to unlock `action`."""
    if may_act():
        return True
    (where or st).caption(f":material/lock: Enter the teacher key in the sidebar to {action}.")
    return False


def _check_entry() -> None:
    typed = st.session_state.get(_ENTRY) or ""
    st.session_state[_ENTRY] = ""  # the key does not stay in the field, nor in the session
    if not typed:
        return
    try:
        key = configured_key()
    except UserError:
        key = None
    right = key is not None and hmac.compare_digest(typed.encode("utf-8"), key.encode("utf-8"))
    st.session_state[_WRONG] = not right
    if right:
        st.session_state[_UNLOCKED] = _fingerprint(key)


def _lock() -> None:
    st.session_state.pop(_UNLOCKED, None)


def sidebar() -> None:
    """The sidebar's "Teacher key" field when a key is configured; nothing at all otherwise."""
    try:
        key = configured_key()
    except UserError as error:
        st.sidebar.error(f"Training, stopping and queueing are locked: {error}.", icon=":material/lock:")
        return
    if key is None:
        return
    if may_act():
        st.sidebar.success("Teacher: this browser may train, stop, queue and delete.", icon=":material/lock_open:")
        st.sidebar.button("Lock this browser", icon=":material/lock:", key="_teacher_lock", on_click=_lock)
        return
    st.sidebar.text_input(LABEL, type="password", key=_ENTRY, on_change=_check_entry, autocomplete="off",
                          help="Set by whoever started the dashboard (CXR_TEACHER_KEY or .streamlit/secrets.toml). "
                               "Without it everything can be looked at; training, stopping, queueing and "
                               "deleting are for the teacher.")
    if st.session_state.get(_WRONG):
        st.sidebar.error("Wrong teacher key: nothing was unlocked. Type it again exactly as it was set.",
                         icon=":material/key_off:")
