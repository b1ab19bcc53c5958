"""Embed a region: validate it, plan tiles, compute only what the cache lacks, record the run."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from backend.errors import SoftMapError
from backend.imagery.normalization import neutral_value
from backend.imagery.reader import ResamplingName, SceneReader, check_band_count
from backend.imagery.regions import Region, validate_region
from backend.imagery.sources import SceneSource, SourceCatalog
from backend.imagery.tiling import Tile, TilePlan, plan_tiles
from backend.models import EmbeddingModel
from backend.models.inference import EmbeddingEngine, Progress, ProgressCallback
from backend.settings import Settings, get_settings
from backend.store.cache import EmbeddingCache, EmbeddingSet

#: Bands a model may ask for that a product legitimately lacks, filled with the training mean.
FILLABLE_BANDS = ("B10",)


@dataclass(frozen=True)
class EmbedResult:
    """What an embedding run did (the CLI's ``--json`` output)."""

    run_id: str
    source: str
    model: str
    preprocessing_hash: str
    tiles: int
    computed: int
    cached: int
    skipped: int
    seconds: float
    tiles_per_s: float
    device: str
    db: str
    tile_ids: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["tile_ids"] = list(self.tile_ids)
        return out


def band_fill(model: EmbeddingModel) -> dict[str, float]:
    """Constant fills for bands the imagery may lack (L2A has no B10): the band's training mean."""
    norm = model.meta.normalization
    return {
        b: neutral_value(norm, i) for i, b in enumerate(model.meta.bands) if b in FILLABLE_BANDS
    }


@dataclass(frozen=True)
class PreparedRun:
    """One source's share of an embedding job, planned and recorded as a started run.

    Everything the compute loop (local or on a cluster) needs, and nothing it must decide:
    the tiles still missing from the cache, how to read them and where to write them.
    """

    source: SceneSource
    plan: TilePlan
    eset: EmbeddingSet
    preprocessing_hash: str
    fill: dict[str, float]
    resampling: ResamplingName
    cached: frozenset[str]
    todo: tuple[Tile, ...]
    run_id: str
    device: str

    @property
    def tile_ids(self) -> tuple[str, ...]:
        return tuple(t.tile_id for t in self.plan.tiles)


def prepare_run(
    region: Region,
    source: SceneSource,
    model: EmbeddingModel,
    cache: EmbeddingCache,
    *,
    settings: Settings,
    device: str | Callable[[], str],
    batch_size: int,
    precision: str,
    catalog: SourceCatalog | None = None,
    chip: int | None = None,
    stride: int | None = None,
    max_nodata_fraction: float | None = None,
    max_cloud_fraction: float | None = None,
    resampling: ResamplingName = "nearest",
) -> PreparedRun:
    """Validate, plan the tiles, find what the cache lacks and record the run as started.

    ``device`` may be a callable, asked only once the region passed its checks (joining a
    cluster to describe it takes seconds).

    Raises:
        SoftMapError: any user-facing problem (region, bands, chip size, cache).
    """
    validate_region(region, source, max_km2=settings.max_region_km2, catalog=catalog)
    fill = band_fill(model) if source.product_level == "L2A" else {}
    check_band_count(source, model.meta.bands, fill)
    chip = chip or model.meta.chip_size
    # A chip override without a stride override keeps tiles edge to edge.
    stride = stride or (model.meta.tile_stride if chip == model.meta.chip_size else chip)
    patch = model.meta.patch_size
    if patch and chip % patch:
        raise SoftMapError(
            f"Chip size {chip} is not a multiple of {model.meta.id}'s patch size {patch}.",
            title="Invalid chip size",
        )
    limit = settings.max_nodata_fraction if max_nodata_fraction is None else max_nodata_fraction
    with SceneReader(source, resampling=resampling) as reader:
        plan = plan_tiles(
            region,
            source,
            reader,
            chip=chip,
            stride=stride,
            max_nodata_fraction=limit,
            max_cloud_fraction=max_cloud_fraction,
        )
        # Everything that changes the pixels given to the model, and the weights that embed
        # them, is part of the cache key.
        reading: dict[str, object] = {
            **reader.settings(),
            "chip": chip,
            "fill": fill,
            "weights": model.weights_id,
        }
    prep_hash = model.meta.preprocessing_hash(reading)
    preprocessing = {**model.meta.preprocessing(), **reading}
    cache.upsert_source(source)
    cache.upsert_tiles(plan.tiles + plan.skipped)
    eset = cache.embedding_set(model.meta.id, prep_hash, model.meta.embed_dim, preprocessing)
    assert eset is not None
    cached = cache.cached_tile_ids(eset, [t.tile_id for t in plan.tiles])
    device = device if isinstance(device, str) else device()
    run_id = cache.start_run(
        source_id=source.id,
        model_id=model.meta.id,
        preprocessing_hash=prep_hash,
        region=region.to_geojson(),
        params={
            "chip": plan.chip,
            "stride": plan.stride,
            "batch_size": batch_size,
            "precision": precision,
            "max_nodata_fraction": plan.max_nodata_fraction,
            "max_cloud_fraction": plan.max_cloud_fraction,
            "resampling": resampling,
        },
        tiles_total=plan.total,
        cached=len(cached),
        skipped=len(plan.skipped),
        device=device,
    )
    return PreparedRun(
        source=source,
        plan=plan,
        eset=eset,
        preprocessing_hash=prep_hash,
        fill=fill,
        resampling=resampling,
        cached=frozenset(cached),
        todo=tuple(t for t in plan.tiles if t.tile_id not in cached),
        run_id=run_id,
        device=device,
    )


def record_failure(
    cache: EmbeddingCache, run: PreparedRun, error: BaseException, computed: int, elapsed: float
) -> None:
    """Mark a run failed (or interrupted, on Ctrl-C); what it committed stays."""
    status = "interrupted" if isinstance(error, KeyboardInterrupt) else "failed"
    message = error.one_line() if isinstance(error, SoftMapError) else repr(error)
    cache.finish_run(
        run.run_id,
        status=status,
        computed=computed,
        seconds=elapsed,
        tiles_per_s=computed / elapsed if elapsed > 0 else 0.0,
        error=message,
    )


def record_success(
    cache: EmbeddingCache, model: EmbeddingModel, run: PreparedRun, computed: int, elapsed: float
) -> EmbedResult:
    """Mark a run completed and describe it."""
    rate = computed / elapsed if elapsed > 0 and computed else 0.0
    cache.finish_run(
        run.run_id, status="completed", computed=computed, seconds=elapsed, tiles_per_s=rate
    )
    return EmbedResult(
        run_id=run.run_id,
        source=run.source.id,
        model=model.meta.id,
        preprocessing_hash=run.preprocessing_hash,
        tiles=len(run.plan.tiles),
        computed=computed,
        cached=len(run.cached),
        skipped=len(run.plan.skipped),
        seconds=round(elapsed, 3),
        tiles_per_s=round(rate, 2),
        device=run.device,
        db=str(cache.path),
        tile_ids=run.tile_ids,
    )


def embed_region(
    region: Region,
    source: SceneSource,
    model: EmbeddingModel,
    cache: EmbeddingCache,
    *,
    engine: EmbeddingEngine | None = None,
    settings: Settings | None = None,
    catalog: SourceCatalog | None = None,
    chip: int | None = None,
    stride: int | None = None,
    max_nodata_fraction: float | None = None,
    max_cloud_fraction: float | None = None,
    resampling: ResamplingName = "nearest",
    progress: ProgressCallback | None = None,
) -> EmbedResult:
    """Embed every tile of ``region`` that ``cache`` lacks for this model and preprocessing.

    Each batch is committed on its own, so an interrupted run keeps what it finished and a re-run
    computes only the rest. Tiles over ``max_nodata_fraction`` nodata or ``max_cloud_fraction``
    cloud (None: no cloud limit; see :mod:`backend.imagery.quality`) are skipped; the cloud
    fraction of every tile is stored with it either way. :mod:`backend.embedding.distributed`
    runs the same job on a Ray cluster.

    Raises:
        SoftMapError: any user-facing problem (region, bands, weights, cache, raster).
    """
    settings = settings or get_settings()
    engine = engine or EmbeddingEngine.from_settings(model, settings)
    run = prepare_run(
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
    computed = 0

    def write(tile_ids: list[str], vectors: Any, _tokens: Any) -> None:
        nonlocal computed
        computed += len(tile_ids)
        cache.write_embeddings(
            run.eset, tile_ids, vectors, run_id=run.run_id, run_progress=computed
        )

    start = time.perf_counter()
    if progress is not None:
        progress(Progress(0, len(run.todo), 0.0))
    try:
        with cache.single_threaded():
            engine.embed_tiles(
                run.todo,
                source,
                on_batch=write,
                progress=progress,
                fill=run.fill,
                resampling=resampling,
            )
    except BaseException as e:
        record_failure(cache, run, e, computed, time.perf_counter() - start)
        raise
    return record_success(cache, model, run, computed, time.perf_counter() - start)
