"""Shared, never-mutated resources for every session (``st.cache_resource``) and bounded caches
of derived results (``st.cache_data``).

DuckDB lets one process write a database file at a time. The app process opens the cache once
(:func:`cache`) and every session shares that connection (each operation takes its own cursor),
so the app also serves that workspace on a loopback port (see :func:`_serve`): ``softmap runs``,
``embed`` and ``search`` on the same file go through the app; other commands still need the
file (stop the app, or give them another ``--db``). If another process already holds the file,
:func:`cache` raises ``CacheLockedError`` naming it, and the app shows that instead.

With ``SOFTMAP_BACKEND_URL`` set (and ``SOFTMAP_BACKEND_TOKEN`` when the service has a token)
the app opens no workspace at all: :func:`operations` is the service's client, and views that
still need the workspace itself say they are not available through the service.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import streamlit as st

from app.operations import InProcess, NotThroughServiceError, Operations, ThroughService
from backend.imagery.preview import (
    Composite,
    encode_png,
    png_data_url,
    scene_preview,
    tile_thumbnail,
)
from backend.imagery.sources import SourceCatalog, demo_catalog
from backend.models import EmbeddingModel
from backend.models.inference import EmbeddingEngine, describe_device, select_device
from backend.server.locator import TOKEN_ENV, URL_ENV
from backend.service import Workspace
from backend.settings import get_settings
from backend.store.cache import CacheStats, EmbeddingCache


def db_path() -> Path:
    """The configured cache file (``SOFTMAP_DB_PATH``), made absolute."""
    return get_settings().db_path.resolve()


def catalog() -> SourceCatalog:
    """The bundled scenes plus those registered in the cache (read once per process); through
    a service, the service's scenes that this app has too."""
    return operations().catalog()


def service_url() -> str | None:
    """The service the app goes through (``SOFTMAP_BACKEND_URL``), or None: in-process."""
    return os.environ.get(URL_ENV, "").strip() or None


def _close_client(ops: ThroughService) -> None:
    ops.client.close()


@st.cache_resource(show_spinner=False, max_entries=2, on_release=_close_client)
def _through_service(url: str, token: str | None) -> ThroughService:
    from backend.client import SoftMapClient

    return ThroughService(SoftMapClient(url, token=token), demo_catalog())


def operations() -> Operations:
    """The backend calls of the main path: the service's client with ``SOFTMAP_BACKEND_URL``
    set, else the application layer on this process's workspace (same methods, same types)."""
    url = service_url()
    if url is not None:
        return _through_service(url, os.environ.get(TOKEN_ENV) or None)
    return InProcess(workspace())


#: The loopback HTTP service of each open workspace (see :func:`_serve`), by ``id``.
_SERVICES: dict[int, Any] = {}


def _close_workspace(ws: Workspace) -> None:
    running = _SERVICES.pop(id(ws), None)
    if running is not None:
        running.stop()
    ws.close()


@st.cache_resource(show_spinner=False, max_entries=2, on_release=_close_workspace)
def _workspace(path: str) -> Workspace:
    ws = Workspace(db_path=path, keep_open=True)
    _SERVICES[id(ws)] = _serve(ws)
    return ws


def _serve(ws: Workspace) -> Any:
    """Serve the workspace on loopback, so `softmap runs/embed/search` on the same cache go
    through the app instead of failing on its lock (a locator file next to the cache tells
    them where). Off with ``SOFTMAP_APP_SERVICE=0``; skipped without the ``server`` extra."""
    try:
        from backend.server.run import serve_workspace
    except ImportError:
        return None
    return serve_workspace(ws)


def workspace() -> Workspace:
    """The process's workspace over the configured cache: one writable connection shared by
    every session (each operation takes its own cursor), models built once.

    Raises:
        NotThroughServiceError: the app goes through a service (it never opens the cache).
    """
    url = service_url()
    if url is not None:
        raise NotThroughServiceError(
            f"The app goes through the SoftMap service at {url} (SOFTMAP_BACKEND_URL), which "
            "does not serve this view yet: unset SOFTMAP_BACKEND_URL to run it in-process."
        )
    return _workspace(str(db_path()))


def model(model_id: str) -> EmbeddingModel:
    """A model, built once per process (weights on the selected device by the engine)."""
    return workspace().model(model_id)


def engine(model_id: str) -> EmbeddingEngine:
    """The embedding engine of a model (device, batch size and precision from the settings)."""
    return workspace().engine(model_id)


def device_label() -> str:
    """The device embeddings run on: the GPU's name, or ``cpu`` (the service's, through one).

    Raises:
        SoftMapError: through a service, when it cannot be reached or refuses the token.
    """
    ops = operations()
    if isinstance(ops, ThroughService):
        return f"{ops.client.health().device} (service {ops.where})"
    return _local_device()


@st.cache_resource(show_spinner=False)
def _local_device() -> str:
    return describe_device(select_device(get_settings().device))


def cache() -> EmbeddingCache:
    """The one writable cache connection of this process.

    Raises:
        CacheLockedError: another process (a CLI run, another app) holds the file; not cached,
            so the next rerun tries again.
        CacheError: the file is not a usable cache.
    """
    return workspace().shared_cache()


def cache_stats() -> CacheStats:
    """Size and row counts of the cache (cheap: a few ``count(*)``)."""
    return operations().cache_stats()


#: Scene quicklooks are written here and served by Streamlit at ``/app/static/previews/``:
#: a URL keeps megabytes of PNG out of the map's script, which is rebuilt on every rerun.
PREVIEW_DIR = Path(__file__).resolve().parent / "static" / "previews"
PREVIEW_URL = "/app/static/previews"


@st.cache_data(show_spinner=False, max_entries=8)
def overlay_url(source_id: str, composite: Composite, root: str) -> tuple[str, tuple[float, ...]]:
    """A scene quicklook's URL (a PNG written once) and its lon/lat bounds.

    ``root`` (the scene folder) is part of the key and the file name, so a re-registered source
    is never served stale. Where the folder cannot be written, the PNG is inlined instead.
    """
    preview = scene_preview(catalog().get(source_id), composite, max_size=1024)
    tag = hashlib.sha256(f"{source_id}|{root}|{composite}".encode()).hexdigest()[:16]
    name = f"{tag}.png"
    try:
        PREVIEW_DIR.mkdir(parents=True, exist_ok=True)
        path = PREVIEW_DIR / name
        if not path.exists():
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(encode_png(preview.rgba))
            tmp.replace(path)
    except OSError:
        return png_data_url(preview.rgba), preview.bounds
    return f"{PREVIEW_URL}/{name}", preview.bounds


@st.cache_data(show_spinner=False, max_entries=256)
def thumbnail(
    source_id: str, tile_id: str, composite: Composite = "true", size: int = 160
) -> bytes:
    """A tile's thumbnail as PNG bytes."""
    return tile_thumbnail(catalog().get(source_id), tile_id, composite, size)
