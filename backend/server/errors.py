"""The one table that maps SoftMap's errors to HTTP status codes, and the handlers using it.

Every error leaves the service as ``{"title": …, "message": …}`` (the same title and message the
CLI prints), with 4xx for what the user can fix and 5xx only for what they cannot. No traceback
is ever sent: an unexpected exception is logged here and answered with a generic 500.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from backend.errors import (
    BandMismatchError,
    CacheError,
    CacheLockedError,
    CatalogueUnreachableError,
    ChangeError,
    CheckpointMismatchError,
    ConfigurationError,
    DeviceError,
    EmptyScopeError,
    EmptySearchError,
    InvalidRegionError,
    NotEnoughLabelsError,
    NotFoundError,
    RasterReadError,
    RegionTooLargeError,
    SceneImportError,
    SoftMapError,
    StacItemError,
    UnknownClassError,
    UnknownHeadError,
    UnknownMappingError,
    UnknownModelError,
    UnknownSourceError,
    WeightsNotFoundError,
)

_log = logging.getLogger(__name__)

#: Most specific first: the first class an error is an instance of decides its status.
STATUS_BY_ERROR: tuple[tuple[type[SoftMapError], int], ...] = (
    (CacheLockedError, 409),
    (RegionTooLargeError, 413),
    (InvalidRegionError, 422),
    (UnknownClassError, 404),
    (NotFoundError, 404),  # includes NoEmbeddingsError
    (UnknownSourceError, 404),
    (UnknownModelError, 404),
    (UnknownHeadError, 404),
    (UnknownMappingError, 404),
    (WeightsNotFoundError, 409),
    (CheckpointMismatchError, 422),
    (BandMismatchError, 422),
    (RasterReadError, 422),
    (SceneImportError, 422),
    (StacItemError, 422),
    (NotEnoughLabelsError, 422),
    (EmptyScopeError, 422),
    (EmptySearchError, 404),
    (ChangeError, 422),
    (ConfigurationError, 422),
    (CatalogueUnreachableError, 502),
    (DeviceError, 503),
    (CacheError, 500),
    (SoftMapError, 400),
)


def status_for(error: SoftMapError) -> int:
    """The HTTP status of a SoftMap error (see :data:`STATUS_BY_ERROR`)."""
    for cls, status in STATUS_BY_ERROR:
        if isinstance(error, cls):
            return status
    return 400


def error_body(title: str, message: str) -> dict[str, str]:
    """The one JSON shape of every error response."""
    return {"title": title, "message": " ".join(message.split())}


def error_response(status: int, title: str, message: str) -> JSONResponse:
    return JSONResponse(error_body(title, message), status_code=status)


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path"))
        msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
        parts.append(f"{where}: {msg}" if where else msg)
    return "; ".join(parts) + "."


_HTTP_TITLES = {
    400: "Bad request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Request too large",
    415: "Unsupported media type",
}


def install_error_handlers(app: FastAPI) -> None:
    """Route every exception through the table above."""

    @app.exception_handler(SoftMapError)
    async def _softmap(_: Request, exc: SoftMapError) -> JSONResponse:
        status = status_for(exc)
        if status >= 500:
            _log.warning("%s: %s", exc.title, exc.message)
        return error_response(status, exc.title, exc.message)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(422, "Invalid request", _validation_message(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        title = _HTTP_TITLES.get(exc.status_code, "HTTP error")
        response = error_response(exc.status_code, title, str(exc.detail))
        for key, value in (exc.headers or {}).items():
            response.headers[key] = value
        return response

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        _log.exception("Unexpected error in %s %s", request.method, request.url.path)
        return error_response(
            500,
            "Internal error",
            f"The service failed on {request.method} {request.url.path} "
            f"({type(exc).__name__}); see the service's log.",
        )
