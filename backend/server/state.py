"""What the service holds for its life: one workspace (the writable cache connection and the
models), the catalogue, the job queue and the data folder every request's paths must stay in."""

from __future__ import annotations

import threading
import time
from pathlib import Path, PurePath
from typing import Any, TypeVar

from pydantic import BaseModel

from backend.errors import NotFoundError, SoftMapError
from backend.imagery.regions import Region, validate_region
from backend.imagery.sources import SceneSource, SourceCatalog, demo_catalog
from backend.server.config import ServerConfig
from backend.server.jobs import JobManager
from backend.server.landcover_arrays import LandCoverShelf
from backend.server.security import PathNotAllowedError, confine
from backend.service.workspace import RegionSpec, Workspace
from backend.settings import Settings, get_settings
from backend.store.cache import EmbeddingCache
from backend.store.catalog import registered_sources

R = TypeVar("R", bound=BaseModel)

#: Path fields of requests that name files to read (must exist in the data folder) and files
#: to write (go under ``outputs/``); any other path field is refused.
INPUT_FIELDS = frozenset({"path", "checkpoint", "labels"})
OUTPUT_FIELDS = frozenset({"out", "map", "areas"})


class ServiceWorkspace(Workspace):
    """The service's workspace: one writable connection, and the catalogue read through it.

    (``open_catalog`` would open the file a second time in this process, and a second writable
    open runs the cache's start-up, which marks running embedding runs as interrupted.)
    """

    def __init__(self, settings: Settings, db_path: Path) -> None:
        super().__init__(settings, db_path, keep_open=True)
        self._catalog_lock = threading.Lock()
        self._service_catalog: SourceCatalog | None = None

    def catalog(self) -> SourceCatalog:
        with self._catalog_lock:
            if self._service_catalog is None:
                bundled = demo_catalog(self.settings.assets_dir).list()
                ids = {s.id for s in bundled}
                extra = [s for s in registered_sources(self.shared_cache()) if s.id not in ids]
                self._service_catalog = SourceCatalog([*bundled, *extra])
            return self._service_catalog

    def catalog_changed(self) -> None:
        with self._catalog_lock:
            self._service_catalog = None
        super().catalog_changed()


UPLOADS = "uploads"
OUTPUTS = "outputs"


class ServiceState:
    """The service's resources; one per process, shared by every request thread."""

    def __init__(
        self,
        config: ServerConfig,
        settings: Settings | None = None,
        workspace: Workspace | None = None,
    ) -> None:
        self.config = config
        if workspace is not None:  # the app's own: the service shares its connection
            self.settings = workspace.settings
            self.db_path = workspace.db_path.resolve()
            self.workspace: Workspace = workspace
        else:
            self.settings = settings or get_settings()
            self.db_path = Path(config.db_path or self.settings.db_path).resolve()
            self.workspace = ServiceWorkspace(self.settings, self.db_path)
        #: Whether the service closes the workspace when it stops (not when it was lent one).
        self.owns_workspace = workspace is None
        self.data_dir = Path(config.data_dir or self.db_path.parent / "service").resolve()
        self.started = time.monotonic()
        self.url: str | None = None
        self._jobs: JobManager | None = None
        self._device: str | None = None
        #: Small writes from request threads (labels, sources) take this; long work runs on
        #: the job thread. DuckDB would refuse two transactions touching the same rows anyway.
        self.write_lock = threading.Lock()
        #: The last land-cover maps with their arrays, for ``GET /jobs/{id}/landcover.npz``.
        self.landcover_maps = LandCoverShelf()

    # --- lifecycle --------------------------------------------------------------------------
    def open(self) -> EmbeddingCache:
        """Take the cache file (DuckDB's one writer); raises CacheLockedError when it is held."""
        for sub in (UPLOADS, OUTPUTS):
            (self.data_dir / sub).mkdir(parents=True, exist_ok=True)
        return self.workspace.shared_cache()

    def close(self) -> None:
        if self.owns_workspace:
            self.workspace.close()

    @property
    def jobs(self) -> JobManager:
        assert self._jobs is not None, "the service has not started"
        return self._jobs

    @jobs.setter
    def jobs(self, manager: JobManager) -> None:
        self._jobs = manager

    def cache(self) -> EmbeddingCache:
        return self.workspace.shared_cache()

    # --- catalogue --------------------------------------------------------------------------
    def catalog(self) -> SourceCatalog:
        return self.workspace.catalog()

    def source(self, source_id: str) -> SceneSource:
        return self.catalog().get(source_id)

    def device_label(self) -> str:
        """The device models run on (``cpu`` or the GPU's name), worked out once."""
        if self._device is None:
            from backend.models.inference import describe_device, select_device

            self._device = describe_device(select_device(self.settings.device))
        return self._device

    # --- requests ---------------------------------------------------------------------------
    def region(self, spec: RegionSpec) -> Region:
        """The region of a request already through :meth:`confine_request`."""
        return spec.resolve()

    def checked_region(self, spec: RegionSpec, source: SceneSource) -> Region:
        """The region, validated against the source as the CLI does before any work."""
        region = self.region(spec)
        validate_region(
            region, source, max_km2=self.settings.max_region_km2, catalog=self.catalog()
        )
        return region

    def confine_request(self, req: R) -> R:
        """The request with every server-side path checked and made absolute in the data folder.

        Inputs (a GeoJSON file, a checkpoint, a label raster, imagery) must exist in the data
        folder; outputs go under ``outputs/``. Nested requests (regions, engine options,
        scopes) are walked too.

        Raises:
            PathNotAllowedError: an absolute path, ``..``, or a path field of unknown use.
        """
        updates: dict[str, Any] = {}
        for name in type(req).model_fields:
            value = getattr(req, name)
            if isinstance(value, BaseModel):
                new = self.confine_request(value)
                if new is not value:
                    updates[name] = new
            elif isinstance(value, PurePath):
                if name in INPUT_FIELDS:
                    updates[name] = self.input_path(str(value))
                elif name in OUTPUT_FIELDS:
                    updates[name] = self.output_path(str(value))
                else:
                    raise PathNotAllowedError(f"The field '{name}' cannot name a server path.")
        return req.model_copy(update=updates) if updates else req

    def public(self, obj: Any) -> Any:
        """A result with paths in the data folder shown relative to it (as requests name them)."""
        if isinstance(obj, dict):
            return {k: self.public(v) for k, v in obj.items()}
        if isinstance(obj, list | tuple):
            return [self.public(v) for v in obj]
        if isinstance(obj, PurePath):
            obj = str(obj)
        if isinstance(obj, str) and obj.startswith(f"{self.data_dir}/"):
            return obj[len(str(self.data_dir)) + 1 :]
        return obj

    def input_path(self, name: str) -> Path:
        """A file a request names for reading: inside the data folder, and existing."""
        path = confine(self.data_dir, name, what="input path")
        if not path.exists():
            raise NotFoundError(
                f"No file '{name}' in the service's data folder: upload it first "
                f"(PUT /files/{UPLOADS}/NAME).",
                title="File not found",
            )
        return path

    def output_path(self, name: str, suffixes: tuple[str, ...] = ()) -> Path:
        """Where a result named by a request is written: under ``outputs/`` of the data folder.

        ``name`` is relative to ``outputs/`` (a leading ``outputs/`` is accepted too).
        """
        if suffixes and not name.lower().endswith(suffixes):
            raise SoftMapError(
                f"The output '{name}' must end with {' or '.join(suffixes)}.",
                title="Invalid option",
            )
        name = name.removeprefix(f"{OUTPUTS}/")
        path = confine(self.data_dir / OUTPUTS, name, what="output path")
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def relative(self, path: Path) -> str:
        return str(Path(path).resolve().relative_to(self.data_dir))
