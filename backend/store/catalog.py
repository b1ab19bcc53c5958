"""The catalogue the user picks from: bundled scenes plus the sources registered in the cache.

The imagery stage describes sources (:mod:`backend.imagery.sources`) and knows nothing of the
cache; registering a source (``softmap sources add``), listing and removing registered ones, and
assembling the full catalogue happen here, on top of the DuckDB cache.
"""

from __future__ import annotations

import builtins
import logging
from pathlib import Path

from backend.errors import (
    CacheError,
    CacheLockedError,
    RasterReadError,
    SceneImportError,
    UnknownSourceError,
)
from backend.imagery.sources import (
    BUNDLED_PREFIX,
    SceneSource,
    SourceCatalog,
    demo_catalog,
    source_from_manifest,
    source_manifest,
)
from backend.settings import get_settings
from backend.store.cache import EmbeddingCache

_log = logging.getLogger(__name__)


def open_catalog(db_path: Path | None = None) -> SourceCatalog:
    """Every source the user can pick: the bundled scenes plus sources registered in the cache.

    ``db_path`` is the DuckDB cache whose registered sources (``softmap sources add``) join the
    bundled ones; ``None`` means the configured cache. A cache that does not exist yet or is
    locked by another process contributes nothing rather than failing.
    """
    path = db_path or get_settings().db_path
    return _with_bundled(_registered_in_file(path))


def cache_catalog(cache: EmbeddingCache) -> SourceCatalog:
    """The bundled scenes plus the sources registered in an open cache.

    For a process that holds the cache open already (the app, the HTTP service): a second
    connection to the same file would run the cache's start-up again.
    """
    return _with_bundled(registered_sources(cache))


def _with_bundled(registered: builtins.list[SceneSource]) -> SourceCatalog:
    bundled = demo_catalog()
    ids = {b.id for b in bundled}
    return SourceCatalog([*bundled, *(s for s in registered if s.id not in ids)])


def register_source(cache: EmbeddingCache, source: SceneSource) -> None:
    """Persist a source in the cache so every later catalogue (CLI, app) offers it.

    Registering the same description again is a no-op.

    Raises:
        SceneImportError: the id is a bundled one, or is registered with another description
            (remove it first: cached tiles of the old imagery would be reused otherwise).
        CacheError: the cache cannot be written.
    """
    if source.id.startswith(BUNDLED_PREFIX):
        raise SceneImportError(
            f"Source ids starting with '{BUNDLED_PREFIX}' are reserved for the bundled scenes; "
            "choose another id (--id)."
        )
    manifest = source_manifest(source)
    existing = cache.registered_source_manifests().get(source.id)
    if existing is not None and existing != manifest:
        raise SceneImportError(
            f"A source '{source.id}' is already registered (from {existing.get('root')}). "
            f"Remove it first (softmap sources remove {source.id}) or choose another id (--id)."
        )
    cache.register_source(source, manifest)


def registered_sources(cache: EmbeddingCache) -> builtins.list[SceneSource]:
    """The sources registered in a cache (not the bundled ones), by id.

    A stored description that no longer validates is left out (and logged).
    """
    out: list[SceneSource] = []
    for source_id, raw in sorted(cache.registered_source_manifests().items()):
        try:
            out.append(source_from_manifest(raw))
        except RasterReadError as e:
            _log.warning("Registered source %s skipped: %s", source_id, e.message)
    return out


def remove_source(cache: EmbeddingCache, source_id: str) -> int:
    """Unregister a source and drop its cached tiles and embeddings; returns the tiles dropped.

    Raises:
        UnknownSourceError: the id is not registered (bundled sources cannot be removed).
    """
    if source_id not in cache.registered_source_manifests():
        known = ", ".join(sorted(cache.registered_source_manifests())) or "none"
        raise UnknownSourceError(
            f"'{source_id}' is not a registered source (registered: {known}); bundled sources "
            "cannot be removed."
        )
    return cache.remove_source(source_id)


def _registered_in_file(path: Path) -> builtins.list[SceneSource]:
    """Registered sources of a cache file; nothing when it is missing, locked or unusable."""
    if not Path(path).exists():
        return []
    # Read-only first; if this process already holds the file for writing, DuckDB refuses a
    # connection with another configuration, and a writable one shares the open database.
    for read_only in (True, False):
        try:
            with EmbeddingCache(path, read_only=read_only) as cache:
                return registered_sources(cache)
        except CacheLockedError as e:
            _log.info("Registered sources of %s not read: %s", path, e.message)
            return []
        except CacheError as e:
            _log.info("Registered sources of %s not read (read_only=%s): %s", path, read_only, e)
    return []
