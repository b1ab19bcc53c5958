"""``softmap serve``: run the API with uvicorn on a socket bound here, so the URL written to the
locator file is the real one (also with ``--port 0``), and remove the locator on a clean exit."""

from __future__ import annotations

import contextlib
import logging
import signal
import socket
import threading
from dataclasses import dataclass

import uvicorn

from backend.server.app import create_app
from backend.server.config import ServerConfig
from backend.server.security import check_bind
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
    config: ServerConfig, settings: Settings | None, sock: socket.socket
) -> uvicorn.Server:
    app = create_app(config, settings, url=url_of(config.host, sock))
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


def start_in_thread(config: ServerConfig, settings: Settings | None = None) -> Running:
    """Start the service in a background thread of this process (the app, tests).

    Returns once it accepts requests.
    """
    import time

    check_bind(config.host, config.token)
    sock = bind(config.host, config.port)
    server = _uvicorn(config, settings, sock)
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
