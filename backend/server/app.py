"""The FastAPI application: routers per resource over the backend, one error table, security.

``create_app`` builds it; the lifespan takes the cache file (DuckDB's one writer for this
process), loads and resumes jobs, starts the job thread, and writes the locator file next to
the cache when the service knows its URL (see ``backend.server.run``).
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import Depends, FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from backend import __version__
from backend.server.config import ServerConfig
from backend.server.deps import require_token
from backend.server.errors import install_error_handlers
from backend.server.jobs import JobManager
from backend.server.locator import remove_locator, write_locator
from backend.server.routes import analysis, classes, files, jobs, search, sources, system
from backend.server.schemas import ErrorBody
from backend.server.security import BodyLimitMiddleware
from backend.server.state import ServiceState
from backend.server.work import job_types
from backend.service import Workspace
from backend.settings import Settings

_log = logging.getLogger(__name__)

_ERRORS: dict[int | str, dict[str, object]] = {
    code: {"model": ErrorBody, "description": text}
    for code, text in (
        (400, "a request the service cannot act on"),
        (401, "missing or wrong bearer token"),
        (404, "unknown source, model, class, tile, job or file"),
        (409, "a state conflict (weights missing, job already finished)"),
        (413, "region or request body too large"),
        (422, "invalid request, region, imagery or option"),
    )
}


def _swagger_assets() -> Path | None:
    """Swagger UI's files from the ``swagger-ui-py`` wheel: /docs then works offline (FastAPI's
    own /docs loads them from a CDN)."""
    spec = importlib.util.find_spec("swagger_ui")
    if spec is None or spec.origin is None:
        return None
    folder = Path(spec.origin).parent / "static"
    return folder if (folder / "swagger-ui-bundle.js").is_file() else None


_SWAGGER_ASSETS = _swagger_assets()


def _offline_docs(app: FastAPI, assets: Path) -> None:
    app.mount("/docs/assets", StaticFiles(directory=assets), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} API",
            swagger_js_url="/docs/assets/swagger-ui-bundle.js",
            swagger_css_url="/docs/assets/swagger-ui.css",
            swagger_favicon_url="/docs/assets/favicon-32x32.png",
        )


def create_app(
    config: ServerConfig | None = None,
    settings: Settings | None = None,
    *,
    url: str | None = None,
    workspace: Workspace | None = None,
) -> FastAPI:
    """The SoftMap HTTP API.

    Args:
        config: how the service runs (default: ``SOFTMAP_SERVER_*``).
        settings: SoftMap's settings (default: ``SOFTMAP_*``).
        url: where clients reach it; when given, the locator file is written next to the cache.
        workspace: a workspace to share (the app's, ``keep_open``); default: the service's own.
    """
    config = config or ServerConfig()
    state = ServiceState(config, settings, workspace)
    state.url = url

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        cache = state.open()
        state.jobs = JobManager(cache, job_types(state), keep=config.keep_jobs)
        resumed = state.jobs.start(resume=config.resume_interrupted)
        if resumed:
            _log.info("Resuming %d interrupted job(s): %s", len(resumed), ", ".join(resumed))
        if url is not None:
            write_locator(state.db_path, url, config.token)
        try:
            yield
        finally:
            if url is not None:
                remove_locator(state.db_path)
            state.jobs.stop()
            state.close()

    app = FastAPI(
        title="SoftMap",
        version=__version__,
        description="Embeddings, land-cover maps, similarity search, projections, your own "
        "classes, change and reports over Sentinel imagery. Long work runs as jobs "
        "(`POST` answers 202 with a job; follow `GET /jobs/{id}` or its `/events` stream). "
        'Every error is `{"title", "message"}`.',
        lifespan=lifespan,
        responses=_ERRORS,
        docs_url=None if _SWAGGER_ASSETS else "/docs",
    )
    if _SWAGGER_ASSETS is not None:
        _offline_docs(app, _SWAGGER_ASSETS)
    app.state.softmap = state
    install_error_handlers(app)
    app.add_middleware(BodyLimitMiddleware, max_bytes=config.max_body_bytes)

    @app.get("/health/live", tags=["system"], include_in_schema=True)
    def live() -> dict[str, str]:
        """Liveness without a token (for container health checks): says nothing else."""
        return {"status": "ok"}

    secured = [Depends(require_token)]
    for module in (system, sources, jobs, search, analysis, classes, files):
        app.include_router(module.router, dependencies=secured)
    return app
