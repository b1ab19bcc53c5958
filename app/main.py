"""SoftMap's Streamlit entry point: page config, the shared sidebar, page navigation, URL state.

Run from the repository root: ``streamlit run app/main.py`` (or ``make run``). Pages are listed
in ``app/pages_registry.py``.
"""

from __future__ import annotations

import streamlit as st

from app.errors import page_boundary
from app.pages_registry import navigation_pages
from app.sidebar import sidebar
from app.state import set_selection
from app.timing import timed
from app.url_state import read_url_once
from backend.service.warmup import warm_up_in_background

st.set_page_config(page_title="SoftMap", page_icon="🛰️", layout="wide")
warm_up_in_background()  # UMAP's JIT code, loaded once per process before a user asks for it

url = read_url_once()
pages = navigation_pages()
page = st.navigation(pages)
if url is not None and url.page and url.page != page.url_path:
    # A link to another page: go there, keeping the link's parameters.
    target = next((p for p in pages if p.url_path == url.page), None)
    if target is not None:
        params = {k: st.query_params.get_all(k) for k in st.query_params}
        st.session_state["app.url_seed"] = url  # the sidebar seeds from it after the switch
        st.switch_page(target, query_params=params)
selection = sidebar(url or st.session_state.pop("app.url_seed", None))
if selection is None:
    st.stop()
set_selection(selection)
with timed(page.url_path or "explore"), page_boundary(page.url_path or "explore"):
    page.run()
