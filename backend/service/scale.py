"""Past one machine: embed on a Ray cluster, several sources in one job, Parquet embedding sets.

Every operation that embeds (``embed``, land-cover maps, head fitting) runs on a cluster when its
:class:`~backend.service.workspace.EngineOptions` carry a ``ray_address``: the workspace's engine
is then a :class:`~backend.embedding.distributed.RayEmbeddingEngine`. :func:`embed_sources`
plans a region over several sources (a list, or every scene it touches) and embeds them as one
job, on the cluster or locally. :func:`write_parquet_set` and :func:`attach_parquet_set` move
embedding sets too big for one DuckDB file to partitioned GeoParquet and back into searches.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from backend.embedding.distributed import DistributedResult, covering_sources, embed_together
from backend.imagery.regions import validate_region
from backend.models.inference import ProgressCallback
from backend.service.embedding import TileOptions
from backend.service.workspace import EngineOptions, RegionSpec, Request, Workspace
from backend.store.parquet_sets import (
    ParquetSetInfo,
    attach_parquet_sets,
    parquet_sets,
    write_parquet_set,
)


class EmbedSourcesRequest(TileOptions):
    """A region over several sources, embedded as one job (``softmap embed --source A,B``)."""

    sources: list[str] = Field(
        default_factory=list, description="source ids; empty: every source the region touches"
    )
    region: RegionSpec
    model: str = Field(description="model id (see `softmap models`)")
    engine: EngineOptions = EngineOptions()


def embed_sources(
    ws: Workspace, req: EmbedSourcesRequest, progress: ProgressCallback | None = None
) -> DistributedResult:
    """Plan the region in every source, then embed what the cache lacks as one job.

    One run is recorded per source. With ``engine.ray_address`` the tiles of all sources share
    one Ray Data job; otherwise they are embedded here one source after the other.

    Raises:
        UnknownSourceError, InvalidRegionError, RegionOutsideSourceError (a listed source the
        region misses), RayUnavailableError, ClusterError, RasterReadError: each in one line.
    """
    region = req.region.resolve()
    catalog = ws.catalog()
    if req.sources:
        sources = [catalog.get(s) for s in dict.fromkeys(req.sources)]
    else:
        sources = covering_sources(region, catalog)
    for source in sources:  # every refusal before a model is built or a cluster joined
        validate_region(region, source, max_km2=ws.settings.max_region_km2, catalog=catalog)
    engine = ws.engine(req.model, req.engine)
    with ws.cache() as cache:
        return embed_together(
            region,
            sources,
            engine.model,
            cache,
            engine=engine,
            settings=ws.settings,
            catalog=catalog,
            chip=req.chip,
            stride=req.stride,
            max_nodata_fraction=req.max_nodata,
            max_cloud_fraction=req.max_cloud,
            progress=progress,
        )


class ParquetExportRequest(Request):
    """Which embedding set to write as partitioned GeoParquet, and where."""

    model: str = Field(description="model id whose embeddings to write")
    out: Path = Field(description="folder of the Parquet dataset (partitions appear under it)")
    sources: list[str] = Field(default_factory=list, description="only these sources")


def export_parquet_set(ws: Workspace, req: ParquetExportRequest) -> ParquetSetInfo:
    """Write a model's cached embeddings as GeoParquet partitioned by source and model.

    Raises:
        NoEmbeddingsError: the cache holds no embeddings of the model (or of those sources).
    """
    with ws.cache(read_only=True) as cache:
        return write_parquet_set(cache, req.model, req.out, sources=req.sources or None)


def attach_parquet_set(ws: Workspace, path: Path) -> list[ParquetSetInfo]:
    """Register a Parquet embedding dataset with the cache, so searches read it directly.

    Raises:
        NotFoundError: the folder holds no SoftMap Parquet embeddings.
    """
    with ws.cache() as cache:
        return attach_parquet_sets(cache, path)


def list_parquet_sets(ws: Workspace) -> list[ParquetSetInfo]:
    """The Parquet embedding datasets attached to the cache."""
    with ws.cache(read_only=True) as cache:
        return parquet_sets(cache)


__all__ = [
    "EmbedSourcesRequest",
    "ParquetExportRequest",
    "attach_parquet_set",
    "embed_sources",
    "export_parquet_set",
    "list_parquet_sets",
]
