"""SoftMap's HTTP service (``softmap serve``): FastAPI over the backend.

The service maps requests to backend calls and backend errors to status codes (one table in
``errors``); it owns the DuckDB cache for its life (one writer, a cursor per request thread),
runs long work as persisted, resumable jobs, and advertises itself to other processes on the
same cache with a locator file. Import :func:`create_app` or use ``backend.server.run``.
"""

from backend.server.app import create_app
from backend.server.config import ServerConfig

__all__ = ["ServerConfig", "create_app"]
