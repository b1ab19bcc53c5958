"""Embed regions of one or many scenes on a Ray cluster, into the same cache as the local path.

The driver plans exactly as :func:`~backend.embedding.pipeline.embed_region` does (the same
:func:`~backend.embedding.pipeline.prepare_run`: validation, tiles, nodata and cloud skipping,
cache keys, one run record per source), then hands the missing tiles of every source to one Ray
Data job (:mod:`backend.embedding.ray_cluster`). The driver stays the only writer of the DuckDB
cache and commits each batch as it arrives, so an interrupted run keeps what it finished and a
re-run computes only what is missing. :class:`RayEmbeddingEngine` is the same job behind the
local engine's interface, for every operation that embeds tiles (land cover, head fitting).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
from numpy.typing import NDArray

from backend.embedding.pipeline import (
    EmbedResult,
    PreparedRun,
    prepare_run,
    record_failure,
    record_success,
)
from backend.embedding.ray_cluster import (
    ClusterPlan,
    RayOptions,
    TileJob,
    connect,
    plan_cluster,
    require_ray,
    run_cluster_job,
    user_error,
)
from backend.errors import SoftMapError
from backend.imagery.reader import ResamplingName
from backend.imagery.regions import Region, validate_region
from backend.imagery.sources import SceneSource, SourceCatalog
from backend.imagery.tiling import Tile
from backend.models import EmbeddingModel
from backend.models.inference import (
    BatchCallback,
    EmbeddingEngine,
    Precision,
    Progress,
    ProgressCallback,
)
from backend.settings import Settings, get_settings
from backend.store.cache import EmbeddingCache


@dataclass(frozen=True)
class DistributedResult:
    """What a multi-source job did: one :class:`EmbedResult` per source, and the totals."""

    runs: tuple[EmbedResult, ...]
    device: str
    workers: int | None
    seconds: float

    @property
    def computed(self) -> int:
        return sum(r.computed for r in self.runs)

    @property
    def tiles_per_s(self) -> float:
        rate = self.computed / self.seconds if self.seconds > 0 and self.computed else 0.0
        return round(rate, 2)

    def to_json(self) -> dict[str, Any]:
        runs = []
        for r in self.runs:
            out = r.to_json()
            out.pop("tile_ids")
            runs.append(out)
        return {
            "runs": runs,
            "sources": [r.source for r in self.runs],
            "tiles": sum(r.tiles for r in self.runs),
            "computed": self.computed,
            "cached": sum(r.cached for r in self.runs),
            "skipped": sum(r.skipped for r in self.runs),
            "seconds": round(self.seconds, 3),
            "tiles_per_s": self.tiles_per_s,
            "device": self.device,
            "workers": self.workers,
            "db": self.runs[0].db if self.runs else None,
        }


def covering_sources(region: Region, catalog: SourceCatalog) -> list[SceneSource]:
    """Every source whose footprint the region touches (a region that spans scenes).

    Raises:
        SoftMapError: no source covers the region.
    """
    found = catalog.covering(region.geometry)
    if not found:
        raise SoftMapError(
            f"No source covers {region.describe()}. Available: "
            + ", ".join(s.id for s in catalog.list()),
            title="Region outside the imagery",
        )
    return found


class RayEmbeddingEngine(EmbeddingEngine):
    """An engine whose :meth:`embed_tiles` runs on a Ray cluster's pool of model replicas.

    A drop-in for :class:`EmbeddingEngine` wherever tiles are embedded (``embed_region``,
    land-cover maps, head fitting): the caller's ``on_batch`` still runs on the driver, so the
    cache keeps one writer. The cluster is joined on first use, so a refused region costs
    nothing. :meth:`forward` (a single batch, e.g. patch tokens) stays on the driver's CPU.
    """

    def __init__(self, model: EmbeddingModel, options: RayOptions | None = None) -> None:
        self.options = options or RayOptions()
        super().__init__(model, device="cpu", batch_size=self.options.batch_size, readers=0)
        self._cluster: ClusterPlan | None = None
        self._ray: Any = None
        # "auto" until the cluster is joined (bf16 on GPU replicas, fp32 on CPU ones); the
        # driver's own forward() treats it as fp32, as the local engine does on a CPU.
        self.precision = self.options.precision

    @property
    def cluster(self) -> ClusterPlan:
        """The replica pool (joins or starts the cluster the first time)."""
        if self._cluster is None:
            self._ray = connect(self.options)
            self._cluster = plan_cluster(self.options, self._ray.cluster_resources())
            if self.options.precision == "auto":
                self.precision = "bf16" if self._cluster.gpus_per_actor else "fp32"
        return self._cluster

    def describe(self) -> str:
        return self.cluster.describe()

    def embed_tiles(
        self,
        tiles: Sequence[Tile],
        source: SceneSource,
        *,
        on_batch: BatchCallback,
        progress: ProgressCallback | None = None,
        fill: Mapping[str, float] | None = None,
        resampling: ResamplingName = "nearest",
        return_tokens: bool = False,
    ) -> Progress:
        """Embed ``tiles`` on the cluster; ``on_batch`` gets each batch once, on the driver."""
        if return_tokens:
            raise ValueError("patch tokens are not returned from the cluster; use forward()")
        cluster = self.cluster
        start = time.perf_counter()
        if tiles:
            run_cluster_job(
                self._ray,
                [TileJob(source, tuple(tiles), dict(fill or {}))],
                self.model,
                cluster,
                batch_size=self.batch_size,
                precision=self.precision,
                resampling=resampling,
                on_batch=lambda _job, ids, vectors: on_batch(ids, vectors, None),
                progress=progress,
            )
        return Progress(len(tiles), len(tiles), time.perf_counter() - start, cluster.actors, 0)


#: ``--ray`` without an address: RAY_ADDRESS if set, else a cluster started on this machine.
LOCAL_CLUSTER = "local"


def ray_engine(
    model: EmbeddingModel,
    *,
    address: str | None = LOCAL_CLUSTER,
    actors: int | None = None,
    batch_size: int = 32,
    precision: Precision = "auto",
) -> RayEmbeddingEngine:
    """The engine for a ``--ray [ADDRESS]`` option; the cluster is joined when tiles are due.

    Raises:
        RayUnavailableError: Ray is not installed (one line: how to install it).
    """
    require_ray()  # say so before any planning, not after it
    options = RayOptions(
        address=None if address in (None, "", LOCAL_CLUSTER) else address,
        actors=actors,
        batch_size=batch_size,
        precision=precision,
    )
    return RayEmbeddingEngine(model, options)


def embed_distributed(
    region: Region,
    sources: Sequence[SceneSource],
    model: EmbeddingModel,
    cache: EmbeddingCache,
    *,
    options: RayOptions | None = None,
    settings: Settings | None = None,
    catalog: SourceCatalog | None = None,
    chip: int | None = None,
    stride: int | None = None,
    max_nodata_fraction: float | None = None,
    max_cloud_fraction: float | None = None,
    resampling: ResamplingName = "nearest",
    progress: ProgressCallback | None = None,
) -> DistributedResult:
    """Embed ``region`` in every one of ``sources`` together on a Ray cluster.

    Same tiles, cache keys, skipping and run records as :func:`embed_region` (one run per
    source); the missing tiles of all sources form one Ray Data job, written batch by batch.

    Raises:
        RayUnavailableError: Ray is not installed (the message says how to install it).
        ClusterError: the cluster is unreachable or too small for the pool asked for.
        SoftMapError: the same user-facing problems as the local path, raised on the driver
            or on a worker (a corrupt raster names its tile).
    """
    settings = settings or get_settings()
    if not sources:
        raise SoftMapError("Give at least one source to embed.", title="No source")
    if len({s.id for s in sources}) != len(sources):
        raise SoftMapError("A source is listed twice.", title="Duplicate source")
    for source in sources:  # refuse a bad region before starting or joining a cluster
        validate_region(region, source, max_km2=settings.max_region_km2, catalog=catalog)
    engine = RayEmbeddingEngine(model, options)
    engine.cluster  # noqa: B018 -- join now, so the runs record the replicas' precision
    return embed_together(
        region,
        sources,
        model,
        cache,
        engine=engine,
        settings=settings,
        catalog=catalog,
        chip=chip,
        stride=stride,
        max_nodata_fraction=max_nodata_fraction,
        max_cloud_fraction=max_cloud_fraction,
        resampling=resampling,
        progress=progress,
    )


def embed_together(
    region: Region,
    sources: Sequence[SceneSource],
    model: EmbeddingModel,
    cache: EmbeddingCache,
    *,
    engine: EmbeddingEngine,
    settings: Settings,
    catalog: SourceCatalog | None = None,
    chip: int | None = None,
    stride: int | None = None,
    max_nodata_fraction: float | None = None,
    max_cloud_fraction: float | None = None,
    resampling: ResamplingName = "nearest",
    progress: ProgressCallback | None = None,
) -> DistributedResult:
    """Plan every source, then embed all their missing tiles as one job (Ray or local).

    With a :class:`RayEmbeddingEngine` the sources share one Ray Data job; with a local
    engine they run one after the other under one progress bar.
    """
    runs = [
        prepare_run(
            region,
            source,
            model,
            cache,
            settings=settings,
            device=engine.describe,
            batch_size=engine.batch_size,
            precision=engine.precision,
            catalog=catalog,
            chip=chip,
            stride=stride,
            max_nodata_fraction=max_nodata_fraction,
            max_cloud_fraction=max_cloud_fraction,
            resampling=resampling,
        )
        for source in sources
    ]
    writer = _Writer(cache, runs)
    total = sum(len(r.todo) for r in runs)
    workers = engine.cluster.actors if isinstance(engine, RayEmbeddingEngine) else None
    start = time.perf_counter()
    if progress is not None:
        progress(Progress(0, total, 0.0, workers, 0 if workers else None))
    try:
        with cache.single_threaded():
            if isinstance(engine, RayEmbeddingEngine) and total:
                run_cluster_job(
                    engine._ray,
                    [TileJob(r.source, r.todo, r.fill) for r in runs],
                    model,
                    engine.cluster,
                    batch_size=engine.batch_size,
                    precision=engine.precision,
                    resampling=resampling,
                    on_batch=writer.write,
                    progress=progress,
                )
            elif total:
                _embed_locally(engine, runs, writer, total, progress)
    except BaseException as e:
        error = user_error(e)
        elapsed = time.perf_counter() - start
        for run in runs:
            record_failure(cache, run, error, writer.computed[run.run_id], elapsed)
        if error is e:
            raise
        raise error from None
    elapsed = time.perf_counter() - start
    results = tuple(
        record_success(cache, model, run, writer.computed[run.run_id], elapsed) for run in runs
    )
    return DistributedResult(runs=results, device=engine.describe(), workers=workers,
                             seconds=elapsed)  # fmt: skip


def _embed_locally(
    engine: EmbeddingEngine,
    runs: Sequence[PreparedRun],
    writer: _Writer,
    total: int,
    progress: ProgressCallback | None,
) -> None:
    start = time.perf_counter()
    for i, run in enumerate(runs):
        before = writer.done

        def report(p: Progress, before: int = before) -> None:
            if progress is not None:
                progress(Progress(before + p.done, total, time.perf_counter() - start))

        engine.embed_tiles(
            run.todo,
            run.source,
            on_batch=partial(_write_job, writer, i),
            progress=report,
            fill=run.fill,
            resampling=run.resampling,
        )


def _write_job(
    writer: _Writer, job: int, ids: list[str], vectors: NDArray[np.float32], _tokens: Any
) -> None:
    writer.write(job, ids, vectors)


class _Writer:
    """The one writer: commits each batch with the run's progress, at most once per tile."""

    def __init__(self, cache: EmbeddingCache, runs: Sequence[PreparedRun]) -> None:
        self.cache = cache
        self.runs = list(runs)
        self.computed = {r.run_id: 0 for r in runs}
        self.done = 0

    def write(self, job: int, tile_ids: list[str], vectors: NDArray[np.float32]) -> None:
        run = self.runs[job]
        self.computed[run.run_id] += len(tile_ids)
        self.done += len(tile_ids)
        self.cache.write_embeddings(
            run.eset, tile_ids, vectors, run_id=run.run_id, run_progress=self.computed[run.run_id]
        )


__all__ = [
    "DistributedResult",
    "RayEmbeddingEngine",
    "covering_sources",
    "embed_distributed",
    "embed_together",
    "ray_engine",
]
