"""The one place where backend errors become what the user sees.

Every :class:`~backend.errors.SoftMapError` carries a short title and a message that says what to
do; :data:`PRESENTATION` decides whether it shows as a warning (a choice the user can simply
change) or an error (something to fix outside the app). No traceback reaches the page: anything
else a page raises is caught at the page boundary (:func:`page_boundary`), shown as one line with an
id the user can quote, and logged with its traceback under that id.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

import streamlit as st

from backend.errors import (
    BandMismatchError,
    CacheError,
    CacheLockedError,
    CheckpointMismatchError,
    ConfigurationError,
    DeviceError,
    InvalidRegionError,
    NotFoundError,
    RasterReadError,
    SoftMapError,
    UnknownHeadError,
    UnknownModelError,
    UnknownSourceError,
    WeightsNotFoundError,
)

Level = Literal["warning", "error"]
log = logging.getLogger("softmap.app.errors")

#: Error class → how it is shown; the most specific class listed wins (checked in order).
PRESENTATION: tuple[tuple[type[SoftMapError], Level, str], ...] = (
    (InvalidRegionError, "warning", ":material/crop_free:"),
    (WeightsNotFoundError, "warning", ":material/download:"),
    (CacheLockedError, "warning", ":material/lock:"),
    (UnknownSourceError, "warning", ":material/satellite_alt:"),
    (UnknownModelError, "warning", ":material/model_training:"),
    (UnknownHeadError, "warning", ":material/layers:"),
    (NotFoundError, "warning", ":material/search_off:"),
    (DeviceError, "warning", ":material/memory:"),
    (CheckpointMismatchError, "error", ":material/error:"),
    (BandMismatchError, "error", ":material/error:"),
    (RasterReadError, "error", ":material/broken_image:"),
    (CacheError, "error", ":material/database:"),
    (ConfigurationError, "error", ":material/settings:"),
    (SoftMapError, "error", ":material/error:"),
)


def presentation(error: SoftMapError) -> tuple[Level, str]:
    """(level, icon) for an error: the first entry of :data:`PRESENTATION` it is an instance of."""
    for cls, level, icon in PRESENTATION:
        if isinstance(error, cls):
            return level, icon
    return "error", ":material/error:"


#: Backend messages are written for the CLI too; in the app a command-line flag means nothing.
#: Each pattern (regex) is replaced by what to do in the app instead; "" drops the hint.
UI_WORDING: tuple[tuple[str, str], ...] = (
    (r"\s*\(`softmap [^`]*`\)", ""),
    (r"\s*\(or pass --checkpoint PATH\)", ""),
    (r"pass --checkpoint PATH to load one", "put a checkpoint in the models folder"),
    (r"softmap embed --model \S+ --source … --bbox …", "analyse a region on Explore"),
    (r"\bor pass --db to use another file\b", "or start the app on another SOFTMAP_DB_PATH"),
    (r"\bor pass --db\b", "or set SOFTMAP_DB_PATH to another file"),
    (r"\banother --db\b", "another SOFTMAP_DB_PATH"),
    (r"\s*\((?:--\w+(?: \S+)?(?:, | or )?)+\)", ""),
)


def ui_message(message: str) -> str:
    """A backend message for the page: on one line, without command-line flags."""
    text = " ".join(message.split())
    for pattern, replacement in UI_WORDING:
        text = re.sub(pattern, replacement, text)
    return text


def error_text(error: SoftMapError) -> str:
    """The title in bold, then the message on one line (worded for the app, not the CLI)."""
    return f"**{error.title}** — {ui_message(error.message)}"


def show_error(error: SoftMapError, *, where: object = None) -> None:
    """Render a backend error as a short title and an actionable message.

    Args:
        error: the error.
        where: a container (``st.sidebar``, a column…); the main area when None.
    """
    level, icon = presentation(error)
    target = where if where is not None else st
    render = target.warning if level == "warning" else target.error  # type: ignore[attr-defined]
    render(error_text(error), icon=icon)


@contextmanager
def user_errors(where: object = None) -> Iterator[None]:
    """Show any :class:`SoftMapError` raised inside the block instead of a traceback."""
    try:
        yield
    except SoftMapError as e:
        show_error(e, where=where)


def unexpected_error_text(error_id: str) -> str:
    """What the user sees for a failure that is not theirs to fix."""
    return (
        "**Something went wrong** — SoftMap hit an unexpected problem on this page. Try again, or "
        f"report it quoting error id `{error_id}` (the details are in the app's log)."
    )


@contextmanager
def page_boundary(page: str) -> Iterator[None]:
    """Run a page: a :class:`SoftMapError` is shown as usual; any other exception as one line.

    The line carries a short id; the traceback is logged (logger ``softmap.app.errors``) with the
    same id and the page name, so a report can be matched to it. Streamlit's own control flow
    (``st.stop``, ``st.rerun``, ``st.switch_page``) is not an ``Exception`` and passes through.
    """
    try:
        yield
    except SoftMapError as e:
        show_error(e)
    except Exception as e:  # the page boundary: the one place a broad catch belongs
        error_id = uuid.uuid4().hex[:8]
        log.error("error id %s on page %s: %s", error_id, page, e, exc_info=e)
        st.error(unexpected_error_text(error_id), icon=":material/bug_report:")
