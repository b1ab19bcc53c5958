"""Work done ahead of the user: compiled code the first analysis would otherwise wait for."""

from __future__ import annotations

import threading

from backend.analysis.projection import start_background_warm_up
from backend.settings import get_settings


def warm_up_in_background() -> threading.Thread | None:
    """Load (or, the first time after install, compile) UMAP's JIT code on a daemon thread.

    Idempotent per process: the app calls it at every start; the thread runs once. Off with
    ``SOFTMAP_WARM_UP=0`` (the tests, whose app runs must not share the CPU with a compiler).
    """
    if not get_settings().warm_up:
        return None
    return start_background_warm_up()
