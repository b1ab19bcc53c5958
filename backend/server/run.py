"""``softmap serve``: run the API with uvicorn on a socket bound here, so the URL written to the
locator file is the real one (also with ``--port 0``), and remove the locator on a clean exit."""

from __future__ import annotations

import contextlib
import logging
import signal
import socket
import threading
from dataclasses import dataclass
from pathlib import Path

import uvicorn
from pydantic import ValidationError

from backend.server.app import create_app
from backend.server.config import ServerConfig
from backend.server.security import check_bind
from backend.service import Workspace
from backend.settings import Settings


def bind(host: str, port: int) -> socket.socket:
    """A listening socket (IPv6 when ``host`` is an IPv6 address)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as e:
        sock.close()
        from backend.errors import SoftMapError

        raise SoftMapError(
            f"Cannot listen on {host}:{port} ({e.strerror}): choose another --port or --host.",
            title="Cannot start the service",
        ) from e
    sock.listen(128)
    return sock


def url_of(host: str, sock: socket.socket) -> str:
    port = sock.getsockname()[1]
    shown = "127.0.0.1" if host in ("0.0.0.0", "localhost") else host
    if host == "::":
        shown = "::1"
    if ":" in shown:
        shown = f"[{shown.strip('[]')}]"
    return f"http://{shown}:{port}"


@dataclass
class Running:
    """A service started by :func:`start_in_thread`."""

    url: str
    server: uvicorn.Server
    thread: threading.Thread

    def stop(self, timeout: float = 30.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)


def _uvicorn(
    config: ServerConfig,
    settings: Settings | None,
    sock: socket.socket,
    workspace: Workspace | None = None,
) -> uvicorn.Server:
    app = create_app(config, settings, url=url_of(config.host, sock), workspace=workspace)
    uv = uvicorn.Config(
        app,
        log_level="info",
        access_log=False,
        timeout_graceful_shutdown=10,
        lifespan="on",
    )
    return uvicorn.Server(uv)


def serve(config: ServerConfig, settings: Settings | None = None) -> None:
    """Run until interrupted (SIGINT/SIGTERM: the running job stops after its batch).

    Raises:
        TokenRequiredError: a non-loopback address without a token.
        CacheLockedError: another process holds the cache (the service exits at start-up).
    """
    check_bind(config.host, config.token)
    _check_cache_free(config, settings)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    sock = bind(config.host, config.port)
    server = _uvicorn(config, settings, sock)
    # uvicorn re-raises the signal that stopped it once it has shut down cleanly; a stop on
    # request (Ctrl-C, `docker stop`) is a clean exit, not an interruption.
    signal.signal(signal.SIGTERM, lambda *_: None)
    with contextlib.suppress(KeyboardInterrupt):
        server.run(sockets=[sock])
    if not server.started:
        from backend.errors import SoftMapError

        raise SoftMapError(
            "The service did not start (see the log above: is the cache in use?).",
            title="Cannot start the service",
        )


def _check_cache_free(config: ServerConfig, settings: Settings | None) -> None:
    """Fail in one line, before uvicorn starts, when another process holds the cache.

    Raises:
        SoftMapError: a service already serves it (named), or CacheLockedError.
    """
    from backend.errors import SoftMapError
    from backend.server.locator import read_locator
    from backend.settings import get_settings
    from backend.store.cache import EmbeddingCache

    db = Path(config.db_path or (settings or get_settings()).db_path)
    found = read_locator(db)
    if found is not None:
        raise SoftMapError(
            f"A SoftMap service (process {found.pid}) already serves {db} at {found.url}.",
            title="Cannot start the service",
        )
    EmbeddingCache(db).close()  # CacheLockedError names whoever else holds it


def start_in_thread(
    config: ServerConfig, settings: Settings | None = None, workspace: Workspace | None = None
) -> Running:
    """Start the service in a background thread of this process (the app, tests).

    With ``workspace`` the service shares it (its connection, models and catalogue) instead of
    opening the cache itself: that is how the app, which holds the file, lets the CLI in.
    Returns once it accepts requests.

    Raises:
        SoftMapError: it could not start (the port is taken, the cache is held elsewhere).
    """
    import time

    check_bind(config.host, config.token)
    sock = bind(config.host, config.port)
    server = _uvicorn(config, settings, sock, workspace)
    server.config.install_signal_handlers = False  # type: ignore[attr-defined]
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="softmap-service", daemon=True
    )
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            from backend.errors import SoftMapError

            raise SoftMapError("The service did not start.", title="Cannot start the service")
        time.sleep(0.05)
    return Running(url_of(config.host, sock), server, thread)


def serve_workspace(workspace: Workspace) -> Running | None:
    """Serve a process's workspace on loopback in the background (the app does this), so that
    ``softmap`` commands on the same cache go through this process instead of failing on the
    lock; stopped at exit. None when it cannot start (logged): the process works without it.

    ``SOFTMAP_SERVER_PORT`` picks the port (default: any free one); ``SOFTMAP_APP_SERVICE=0``
    turns it off.
    """
    import atexit
    import os

    from backend.errors import SoftMapError

    if os.environ.get("SOFTMAP_APP_SERVICE", "1").strip().lower() in ("0", "false", "no"):
        return None
    try:
        base = ServerConfig()
    except ValidationError as e:
        logging.getLogger(__name__).warning("No service for the CLI: SOFTMAP_SERVER_*: %s", e)
        return None
    port = base.port if "SOFTMAP_SERVER_PORT" in os.environ else 0
    config = base.model_copy(update={"port": port, "db_path": workspace.db_path})
    try:
        running = start_in_thread(config, workspace=workspace)
    except SoftMapError as e:
        logging.getLogger(__name__).warning("No service for the CLI: %s", e.one_line())
        return None
    atexit.register(running.stop, 10.0)
    return running
