"""Typed accessors for session state shared between the sidebar and the pages."""

from __future__ import annotations

from dataclasses import dataclass

import streamlit as st

_SELECTION = "app.selection"


@dataclass(frozen=True)
class Selection:
    """What the sidebar selected."""

    source_id: str
    model_id: str


def set_selection(selection: Selection) -> None:
    st.session_state[_SELECTION] = selection


def get_selection() -> Selection | None:
    value = st.session_state.get(_SELECTION)
    return value if isinstance(value, Selection) else None
