"""The one place where backend errors become what the user sees."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import streamlit as st

from backend.errors import (
    CacheLockedError,
    InvalidRegionError,
    SoftMapError,
    WeightsNotFoundError,
)

#: Errors that describe a choice the user can simply change are warnings; the rest are errors.
_WARNINGS = (InvalidRegionError, WeightsNotFoundError, CacheLockedError)


def show_error(error: SoftMapError) -> None:
    """Render a backend error as a short title and an actionable message."""
    text = f"**{error.title}** — {error.message}"
    if isinstance(error, _WARNINGS):
        st.warning(text, icon="⚠️")
    else:
        st.error(text, icon="🛑")


@contextmanager
def user_errors() -> Iterator[None]:
    """Show any :class:`SoftMapError` raised inside the block instead of a traceback."""
    try:
        yield
    except SoftMapError as e:
        show_error(e)
