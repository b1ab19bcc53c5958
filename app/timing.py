"""Server time per rerun: how long each page script took, logged and kept for the sidebar."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import streamlit as st

log = logging.getLogger("softmap.app.timing")
_KEY = "app.timings"
#: Renders kept per session (the newest last).
KEEP = 50


@dataclass(frozen=True)
class RenderTime:
    """One rerun of one page."""

    page: str
    seconds: float


@contextmanager
def timed(page: str) -> Iterator[None]:
    """Measure the block (a page's script) and record it, also when it stops early."""
    start = time.perf_counter()
    try:
        yield
    finally:
        seconds = time.perf_counter() - start
        history: list[RenderTime] = st.session_state.setdefault(_KEY, [])
        history.append(RenderTime(page, seconds))
        del history[:-KEEP]
        log.info("rendered %s in %.1f ms", page, seconds * 1000)


def render_times() -> list[RenderTime]:
    """This session's recent renders, oldest first."""
    return list(st.session_state.get(_KEY, []))
