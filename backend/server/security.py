"""What keeps the service safe to run: loopback by default, a bearer token off loopback, request
body limits, and every server-side path confined to the service's data folder."""

from __future__ import annotations

import hmac
import ipaddress
import secrets
from pathlib import Path, PurePosixPath

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from backend.errors import SoftMapError


class PathNotAllowedError(SoftMapError):
    title = "Path not allowed"


class TokenRequiredError(SoftMapError):
    title = "Token required"


def is_loopback(host: str) -> bool:
    """Whether binding to ``host`` keeps the service on this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None) -> None:
    """Refuse to listen off loopback without a token.

    Raises:
        TokenRequiredError: ``host`` is not a loopback address and no token is set.
    """
    if not is_loopback(host) and not token:
        raise TokenRequiredError(
            f"Binding to {host} exposes the cache and the models to the network: pass "
            "--token TOKEN (or set SOFTMAP_SERVER_TOKEN); clients send it as "
            "'Authorization: Bearer TOKEN'."
        )


def new_token() -> str:
    return secrets.token_urlsafe(32)


def token_matches(header: str | None, token: str) -> bool:
    """Whether an ``Authorization`` header carries the bearer token (constant-time compare)."""
    if not header:
        return False
    scheme, _, value = header.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(value.strip(), token)


def confine(root: Path, name: str | Path, *, what: str = "path") -> Path:
    """``name`` as a path inside ``root``; anything that would leave ``root`` is refused.

    Absolute paths, ``..`` parts and symlinks pointing out of ``root`` are all refused, so a
    request can never read or write an arbitrary file of the server.

    Raises:
        PathNotAllowedError: the path is absolute, empty or escapes ``root``.
    """
    text = str(name).replace("\\", "/")
    parts = PurePosixPath(text).parts
    if not text.strip() or text.startswith("/") or ".." in parts or ":" in text.split("/")[0]:
        raise PathNotAllowedError(
            f"The {what} '{name}' must be a relative path inside the service's data folder "
            "(no absolute paths, no '..')."
        )
    base = root.resolve()
    target = (base / PurePosixPath(text)).resolve()
    if target != base and base not in target.parents:
        raise PathNotAllowedError(f"The {what} '{name}' leads outside the service's data folder.")
    return target


class BodyLimitMiddleware:
    """Answer 413 to any request whose body is larger than ``max_bytes``.

    Checks ``Content-Length`` up front and counts streamed (chunked) bodies as they arrive.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for key, value in scope.get("headers", []):
            if key == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    length = 0
                if length > self.max_bytes:
                    await self._refuse(send)
                    return
        seen = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _BodyTooLargeError
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except _BodyTooLargeError:
            if not started:
                await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        import json

        body = json.dumps(
            {
                "title": "Request too large",
                "message": f"The request body exceeds {self.max_bytes} bytes "
                "(SOFTMAP_SERVER_MAX_BODY_BYTES).",
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


class _BodyTooLargeError(Exception):
    pass
