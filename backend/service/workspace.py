"""The workspace every operation runs in: settings, the cache file, the catalogue and models.

A CLI command makes a :class:`Workspace` for one call (the cache is opened per operation and
closed again, read-only where the operation only reads). The app and the HTTP service keep one
per process with ``keep_open=True``: one writable DuckDB connection shared by every session
(each operation takes its own cursor) and models built once.

Requests name things the way a user does (a source id, a bbox or GeoJSON, a model id); the
shared parts of requests live here: :class:`RegionSpec` and :class:`EngineOptions`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from backend.errors import CacheError, InvalidRegionError
from backend.imagery.regions import Region, load_aoi, parse_bbox, parse_geojson
from backend.imagery.sources import SceneSource, SourceCatalog
from backend.settings import Settings, get_settings
from backend.store.cache import EmbeddingCache
from backend.store.catalog import cache_catalog, open_catalog

if TYPE_CHECKING:  # torch comes with the models: imported when a model is first needed
    from backend.models import EmbeddingModel
    from backend.models.inference import EmbeddingEngine

#: As :data:`backend.models.inference.Precision` (equal by a test; not imported, see above).
Precision = Literal["auto", "fp32", "bf16"]


class Request(BaseModel):
    """Base of every request: immutable, unknown fields refused."""

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)


class RegionSpec(Request):
    """A region as a user gives it: exactly one of a bbox, a GeoJSON object or a GeoJSON file."""

    bbox: str | None = Field(default=None, description="W,S,E,N in lon/lat degrees")
    geojson: dict[str, Any] | None = Field(default=None, description="GeoJSON in EPSG:4326")
    path: Path | None = Field(default=None, description="a GeoJSON file")

    @model_validator(mode="after")
    def _one(self) -> RegionSpec:
        given = [v for v in (self.bbox, self.geojson, self.path) if v is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of bbox, geojson or path")
        return self

    @classmethod
    def of(cls, region: Region) -> RegionSpec:
        """The spec of a region already parsed (a drawn or restored one, in the app)."""
        return cls(geojson=region.to_geojson())

    def resolve(self) -> Region:
        """The validated region.

        Raises:
            InvalidRegionError: a malformed bbox or GeoJSON (with what to fix).
        """
        if self.bbox is not None:
            return parse_bbox(self.bbox)
        if self.geojson is not None:
            return parse_geojson(self.geojson)
        if self.path is not None:
            return load_aoi(self.path)
        raise InvalidRegionError("No region given.")  # unreachable: validated above


def region_spec(
    bbox: str | None = None, path: Path | str | None = None, region: Region | None = None
) -> RegionSpec | None:
    """A :class:`RegionSpec` from whichever of the three is given, or None for none."""
    if region is not None:
        return RegionSpec.of(region)
    if bbox:
        return RegionSpec(bbox=bbox)
    if path:
        return RegionSpec(path=Path(path))
    return None


class EngineOptions(Request):
    """How a model runs: device, batch size, precision, reader threads; None = the settings."""

    checkpoint: Path | None = Field(default=None, description="weights file (overrides lookup)")
    device: str | None = Field(default=None, description="auto, cuda, cuda:N, mps or cpu")
    batch_size: int | None = Field(default=None, ge=1, description="tiles per batch")
    precision: Precision = "auto"
    readers: int | None = Field(default=None, ge=0, description="reader threads (0 = in line)")
    ray_address: str | None = Field(
        default=None,
        description="embed on a Ray cluster: 'local' (RAY_ADDRESS, else a cluster started "
        "here), 'auto', HOST:PORT or ray://HOST:10001; None embeds in this process",
    )
    ray_actors: int | None = Field(
        default=None, ge=1, description="model replicas on the cluster (default: one per GPU)"
    )

    @property
    def is_default(self) -> bool:
        return self == EngineOptions()


class Workspace:
    """Settings, the cache file and the resources built from them.

    Args:
        settings: defaults to the process settings (``SOFTMAP_*``).
        db_path: the DuckDB cache (default: ``settings.db_path``).
        keep_open: keep one writable cache connection and the models for the workspace's life
            (the app, the HTTP service); otherwise each operation opens and closes the cache.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        db_path: Path | str | None = None,
        *,
        keep_open: bool = False,
    ) -> None:
        self.settings = settings or get_settings()
        self.db_path = Path(db_path) if db_path is not None else self.settings.db_path
        self.keep_open = keep_open
        self._lock = threading.Lock()
        self._cache: EmbeddingCache | None = None
        self._catalog: SourceCatalog | None = None
        self._models: dict[tuple[str, str | None], EmbeddingModel] = {}
        self._engines: dict[tuple[str, str | None, EngineOptions], EmbeddingEngine] = {}

    # --- cache ---------------------------------------------------------------------------
    @contextmanager
    def cache(self, *, read_only: bool = False) -> Iterator[EmbeddingCache]:
        """The cache for one operation (the shared connection when ``keep_open``).

        Raises:
            CacheLockedError: another process holds the file.
            CacheError: the file is not a usable cache.
        """
        if self.keep_open:
            yield self.shared_cache()
            return
        with EmbeddingCache(self.db_path, read_only=read_only) as cache:
            yield cache

    def shared_cache(self) -> EmbeddingCache:
        """The workspace's one writable connection, opened on first use."""
        with self._lock:
            if self._cache is None:
                self._cache = EmbeddingCache(self.db_path)
            return self._cache

    def close(self) -> None:
        """Close the shared connection (if any)."""
        with self._lock:
            if self._cache is not None:
                self._cache.close()
                self._cache = None

    # --- catalogue -----------------------------------------------------------------------
    def catalog(self) -> SourceCatalog:
        """The bundled scenes plus the sources registered in the cache."""
        if self._catalog is not None:
            return self._catalog
        if not self.keep_open:
            return open_catalog(self.db_path)
        try:
            catalog = cache_catalog(self.shared_cache())
        except CacheError:
            # Held by another process (or unusable): the bundled scenes still work; not kept,
            # so the next call tries the cache again.
            return open_catalog(self.db_path)
        self._catalog = catalog
        return catalog

    def source(self, source_id: str) -> SceneSource:
        """A source by id.

        Raises:
            UnknownSourceError: listing the ids that exist.
        """
        return self.catalog().get(source_id)

    def catalog_changed(self) -> None:
        """Forget the catalogue (after a source was added or removed)."""
        self._catalog = None

    # --- models --------------------------------------------------------------------------
    def model(self, model_id: str, checkpoint: Path | None = None) -> EmbeddingModel:
        """A model with its weights (built once per workspace when ``keep_open``).

        Raises:
            UnknownModelError, WeightsNotFoundError, CheckpointMismatchError: as create_model.
        """
        key = (model_id, str(checkpoint) if checkpoint else None)
        if key in self._models:
            return self._models[key]
        from backend.models import create_model

        model = create_model(model_id, checkpoint=checkpoint)
        if self.keep_open:
            self._models[key] = model
        return model

    def engine(self, model_id: str, options: EngineOptions | None = None) -> EmbeddingEngine:
        """The model in an engine shaped by ``options`` (unset fields: the settings)."""
        opts = options or EngineOptions()
        key = (model_id, str(opts.checkpoint) if opts.checkpoint else None, opts)
        if key in self._engines:
            return self._engines[key]
        engine: EmbeddingEngine
        if opts.ray_address is not None:
            from backend.embedding.distributed import ray_engine

            engine = ray_engine(
                self.model(model_id, opts.checkpoint),
                address=opts.ray_address,
                actors=opts.ray_actors,
                batch_size=opts.batch_size or self.settings.batch_size,
                precision=opts.precision,
            )
        else:
            from backend.models.inference import EmbeddingEngine

            engine = EmbeddingEngine.from_settings(
                self.model(model_id, opts.checkpoint),
                self.settings,
                device=opts.device,
                batch_size=opts.batch_size,
                readers=opts.readers,
                precision=opts.precision,
            )
        if self.keep_open:
            self._engines[key] = engine
        return engine
