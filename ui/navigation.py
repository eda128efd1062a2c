"""Getting to a page: deep links routed through app.py, and links between pages."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

ENTRY_FLAG = "_entered_through_app"
DEEP_LINK = "_deep_link_page"


def entry_guard(page_file: str) -> None:
    """Send a page that runs without app.py (a deep link right after a restart) through app.py.

    Streamlit runs a pages/ file on its own until some session has called
    st.navigation; app.py sets ENTRY_FLAG before it runs any page, so a page
    that finds the flag missing was not reached through it. app.py then opens
    the page that was asked for (DEEP_LINK), now with navigation and sidebar.
    """
    if not st.session_state.get(ENTRY_FLAG):
        # The query string too: switching pages clears it, and the Lesson's ?step=4 must survive.
        st.session_state[DEEP_LINK] = (Path(page_file).name, st.query_params.to_dict())
        st.switch_page("app.py")


def link_to_train() -> None:
    st.page_link("pages/2_train.py", label="Go to Train to start a run", icon=":material/model_training:")
