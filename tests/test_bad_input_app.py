"""The app's page boundary: an unexpected exception is one line with an id, logged with it."""

from __future__ import annotations

import logging
import re

import pytest
from streamlit.testing.v1 import AppTest


def _page_that_fails() -> None:
    from app.errors import page_boundary

    with page_boundary("broken"):
        raise RuntimeError("a bug deep in the page")


def _page_with_user_mistake() -> None:
    from app.errors import page_boundary
    from backend.errors import InvalidRegionError

    with page_boundary("mistake"):
        raise InvalidRegionError("Draw a smaller rectangle.")


def _page_that_stops() -> None:
    import streamlit as st

    from app.errors import page_boundary

    with page_boundary("stops"):
        st.write("before")
        st.stop()
    st.write("never")


def test_unexpected_error_shows_an_id_and_logs_the_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.ERROR, logger="softmap.app.errors"):
        at = AppTest.from_function(_page_that_fails).run(timeout=30)
    assert not at.exception  # no Streamlit traceback on the page
    (shown,) = at.error
    assert "a bug deep in the page" not in shown.value  # the user sees no internals
    error_id = re.search(r"error id `([0-9a-f]{8})`", shown.value)
    assert error_id is not None, shown.value
    (record,) = [r for r in caplog.records if error_id.group(1) in r.getMessage()]
    assert "broken" in record.getMessage() and record.exc_info is not None
    assert record.exc_info[0] is RuntimeError


def test_user_mistake_keeps_its_own_message() -> None:
    at = AppTest.from_function(_page_with_user_mistake).run(timeout=30)
    assert not at.exception
    assert [w.value for w in at.warning] == ["**Invalid region** — Draw a smaller rectangle."]


def test_streamlit_control_flow_passes_through() -> None:
    at = AppTest.from_function(_page_that_stops).run(timeout=30)
    assert not at.exception and not at.error
    assert [m.value for m in at.markdown] == ["before"]
