"""SoftMap's HTTP service (``softmap serve``): FastAPI over the backend.

The service maps requests to backend calls and backend errors to status codes (one table in
``errors``); it owns the DuckDB cache for its life (one writer, a cursor per request thread),
runs long work as persisted, resumable jobs, and advertises itself to other processes on the
same cache with a locator file. Import :func:`create_app` or use ``backend.server.run``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from backend.server.app import create_app
    from backend.server.config import ServerConfig

__all__ = ["ServerConfig", "create_app"]


def __getattr__(name: str) -> Any:
    # Lazy: the CLI reads the locator file (``backend.server.locator``) on every command, and
    # must not pay for importing FastAPI and the whole backend to learn there is no service.
    if name == "create_app":
        from backend.server.app import create_app

        return create_app
    if name == "ServerConfig":
        from backend.server.config import ServerConfig

        return ServerConfig
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
