"""Embed a region: plan its tiles, compute what the cache lacks, record the run."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import Field

from backend.embedding.pipeline import EmbedResult, embed_region
from backend.models.inference import ProgressCallback
from backend.service.workspace import EngineOptions, RegionSpec, Request, Workspace


class TileOptions(Request):
    """How a region is cut into tiles and which tiles are skipped (every embed request)."""

    chip: int | None = Field(default=None, ge=8, description="tile size (default: the model's)")
    stride: int | None = Field(default=None, ge=1, description="tile step (default: the chip)")
    max_nodata: float | None = Field(default=None, ge=0, le=1, description="skip emptier tiles")
    max_cloud: float | None = Field(default=None, ge=0, le=1, description="skip cloudier tiles")


class EmbedRequest(TileOptions):
    """Which region of which source to embed with which model (``softmap embed``)."""

    source: str = Field(description="source id, e.g. demo/virginia")
    region: RegionSpec
    model: str = Field(description="model id (see `softmap models`)")
    engine: EngineOptions = EngineOptions()


def embed(
    ws: Workspace, req: EmbedRequest, progress: ProgressCallback | None = None
) -> EmbedResult:
    """Embed every tile of the region that the cache lacks; a re-run computes nothing.

    Raises:
        InvalidRegionError, UnknownSourceError, UnknownModelError, WeightsNotFoundError,
        CacheLockedError, RasterReadError: each with what to do next.
    """
    source = ws.source(req.source)
    region = req.region.resolve()
    engine = ws.engine(req.model, req.engine)
    with ws.cache() as cache:
        return embed_region(
            region,
            source,
            engine.model,
            cache,
            engine=engine,
            settings=ws.settings,
            catalog=ws.catalog(),
            chip=req.chip,
            stride=req.stride,
            max_nodata_fraction=req.max_nodata,
            max_cloud_fraction=req.max_cloud,
            progress=progress,
        )


def tile_records(ws: Workspace, tile_ids: Sequence[str]) -> list[dict[str, Any]]:
    """The cached tiles' records (id, source, grid position, footprint, quality)."""
    with ws.cache(read_only=True) as cache:
        return cache.tiles(list(tile_ids))
