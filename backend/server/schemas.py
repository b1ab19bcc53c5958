"""Request and response models of the HTTP API, shared by the service and the typed client.

Requests are the application layer's own typed requests (``backend.service``): the HTTP layer
only confines their server-side paths to the data folder (see ``state``). Results of analyses
that already have a JSON form in the backend (land cover, change, reports, projections,
classes) travel as that form in :class:`Payload`; the service's own objects (health, jobs,
runs, sources, models, search results) have models of their own here.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from backend.service import (
    AddSourceRequest,
    ChangeRequest,
    ClassifyRequest,
    EmbedRequest,
    ExportRequest,
    LandCoverRequest,
    ProjectRequest,
    ReportRequest,
    SearchRequest,
    SuggestRequest,
    TileSelection,
)

__all__ = [
    "AddSourceRequest",
    "ChangeRequest",
    "ClassifyRequest",
    "EmbedRequest",
    "ExportRequest",
    "LandCoverRequest",
    "ProjectRequest",
    "ReportRequest",
    "SearchRequest",
    "SuggestRequest",
    "TileSelection",
]


class Model(BaseModel):
    """Base of request bodies: unknown fields are refused (a typo never passes silently)."""

    model_config = ConfigDict(extra="forbid")


class Response(BaseModel):
    """Base of responses: newer services may add fields, older clients ignore them."""

    model_config = ConfigDict(extra="ignore")


# --- errors, health ----------------------------------------------------------------------------
class ErrorBody(Response):
    title: str
    message: str


class Health(Response):
    status: Literal["ok"] = "ok"
    version: str
    pid: int
    db: str
    data_dir: str
    device: str
    uptime_s: float
    jobs_running: int
    jobs_queued: int
    auth: bool = Field(description="whether requests need a bearer token")


# --- catalogue, models, runs -------------------------------------------------------------------
class SourceInfo(Response):
    model_config = ConfigDict(extra="allow")
    id: str
    title: str
    registered: bool


class SourceList(Response):
    sources: list[SourceInfo]


class SourceRemoved(Response):
    removed: str
    tiles_dropped: int


class ModelInfo(Response):
    model_config = ConfigDict(extra="allow", protected_namespaces=())
    id: str
    title: str
    architecture: str
    sensor: str
    bands: list[str]
    chip_size: int
    embed_dim: int
    weights: str


class ModelList(Response):
    models: list[ModelInfo]


class CacheStatsOut(Response):
    path: str
    size_bytes: int
    sources: int
    tiles: int
    embeddings: int
    runs: int


class RunInfo(Response):
    model_config = ConfigDict(extra="allow")
    run_id: str
    started_at: datetime | None
    finished_at: datetime | None
    status: str
    source_id: str | None
    model_id: str | None
    tiles_total: int | None
    computed: int | None
    cached: int | None
    skipped: int | None
    seconds: float | None
    tiles_per_s: float | None
    device: str | None
    error: str | None


class RunList(Response):
    cache: CacheStatsOut
    runs: list[RunInfo]


# --- jobs --------------------------------------------------------------------------------------
JobKind = Literal["embed", "landcover", "change", "compare", "report"]
JobState = Literal["queued", "running", "completed", "failed", "cancelled", "interrupted"]
TERMINAL_STATES: tuple[str, ...] = ("completed", "failed", "cancelled")


class JobProgress(Response):
    done: int = 0
    total: int = 0
    tiles_per_s: float = 0.0
    eta_s: float | None = None
    elapsed_s: float = 0.0


class JobInfo(Response):
    id: str
    kind: JobKind
    state: JobState
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    progress: JobProgress = Field(default_factory=JobProgress)
    resumes: int = Field(default=0, description="times resumed after an interruption")
    request: dict[str, Any]
    result: dict[str, Any] | None = None
    error: ErrorBody | None = None

    @property
    def finished(self) -> bool:
        return self.state in TERMINAL_STATES


class JobList(Response):
    jobs: list[JobInfo]


# --- requests of the application layer, as the API takes them ------------------------------
class LabelRequest(TileSelection):
    """Tiles to mark for a class (ids, points, a region), positive unless ``negative``."""

    negative: bool = False
    origin: str | None = Field(default=None, description="recorded origin (default: how chosen)")

    def selection(self) -> TileSelection:
        return TileSelection.model_validate(self.model_dump(exclude={"negative", "origin"}))


class RenameRequest(Model):
    name: str = Field(min_length=1)


class SearchHit(Response):
    tile_id: str
    score: float
    lon: float
    lat: float
    footprint: dict[str, Any]
    rank: int
    source_id: str


class SearchOut(Response):
    model_config = ConfigDict(extra="ignore", protected_namespaces=())
    model_id: str
    preprocessing_hash: str
    scope: str
    method: str
    engine: str
    query_tile_ids: list[str]
    negative_tile_ids: list[str]
    candidates: int
    suppressed: int
    seconds: float
    results: list[SearchHit]
    query_vector: list[float] | None = Field(
        default=None, description="the vector searched with (for a result's match heatmap)"
    )


class Payload(Response):
    """An analysis result in the backend's own JSON form (``…to_json()``)."""

    model_config = ConfigDict(extra="allow")


class FileInfo(Response):
    path: str = Field(description="relative to the data folder")
    bytes: int


class FileList(Response):
    files: list[FileInfo]
