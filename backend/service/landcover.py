"""Land cover of a region: map it with a head, fit a head on labels, list the heads."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from backend.landcover.evaluation import LandCoverEvaluation, evaluate_landcover
from backend.landcover.fit_reference import ReferenceFit, fit_reference_head
from backend.landcover.heads import LandCoverHead
from backend.landcover.labels import MIN_LABELLED_FRACTION, get_mapping, user_label_raster
from backend.landcover.maps import FitResult, LandCoverResult, fit_head, predict_landcover
from backend.landcover.store import list_heads as stored_heads
from backend.landcover.store import resolve_head
from backend.landcover.worldcover import fetch_worldcover
from backend.models.inference import ProgressCallback
from backend.service.workspace import EngineOptions, RegionSpec, Request, Workspace


class LandCoverRequest(Request):
    """Map a region's land cover (``softmap landcover``)."""

    source: str
    region: RegionSpec
    model: str
    head: str | None = Field(default=None, description="default: newest fitted, else bundled")
    tokens: bool = Field(default=True, description="sub-tile (token) map where the head has one")
    out: Path | None = Field(default=None, description="also write the map as a COG (.tif)")
    engine: EngineOptions = EngineOptions()


def map_landcover(
    ws: Workspace, req: LandCoverRequest, progress: ProgressCallback | None = None
) -> LandCoverResult:
    """Embed what the cache lacks, predict every tile (and cell) with the head, sum the areas.

    The head is resolved before anything is embedded, so a model without a head fails at once.
    With ``req.out`` the map is also written as a COG.

    Raises:
        UnknownHeadError: no head for the model (fit one with ``softmap landcover fit``).
    """
    source = ws.source(req.source)
    region = req.region.resolve()
    engine = ws.engine(req.model, req.engine)
    with ws.cache() as cache:
        head = resolve_head(cache, engine.model.meta.id, req.head)
        result = predict_landcover(
            region,
            source,
            engine.model,
            cache,
            engine=engine,
            settings=ws.settings,
            head=head,
            progress=progress,
            tokens=req.tokens,
        )
    if req.out is not None:
        result.write_cog(req.out)
    return result


class FitHeadRequest(Request):
    """Train a land-cover head on a scene's labels or the user's own raster."""

    source: str
    model: str
    region: RegionSpec | None = None
    labels: Path | None = Field(default=None, description="a categorical land-cover raster")
    mapping: str | None = Field(default=None, description="class mapping of the labels")
    min_labelled: float = Field(default=MIN_LABELLED_FRACTION, gt=0, le=1)
    bundle: bool = Field(default=False, description="write the head to assets/models/heads/")
    engine: EngineOptions = EngineOptions()


def fit_landcover_head(
    ws: Workspace, req: FitHeadRequest, progress: ProgressCallback | None = None
) -> FitResult:
    """Embed the labelled tiles, fit tile (and token) heads, evaluate them held out, store them."""
    mapping = get_mapping(req.mapping) if req.mapping else None
    source = ws.source(req.source)
    region = req.region.resolve() if req.region else None
    labels = user_label_raster(req.labels) if req.labels else None
    engine = ws.engine(req.model, req.engine)
    with ws.cache() as cache:
        return fit_head(
            source,
            engine.model,
            cache,
            region=region,
            labels=labels,
            mapping=mapping,
            engine=engine,
            settings=ws.settings,
            min_labelled=req.min_labelled,
            bundle=req.bundle,
            progress=progress,
        )


def landcover_heads(ws: Workspace, model_id: str | None = None) -> list[LandCoverHead]:
    """The bundled heads plus those fitted in the cache (for one model, or all)."""
    if not ws.keep_open and not ws.db_path.exists():
        return stored_heads(None, model_id)
    with ws.cache(read_only=True) as cache:
        return stored_heads(cache, model_id)


class ReferenceFitRequest(Request):
    """Fit a model's land-cover head on the bundled scenes' reference labels."""

    model: str
    sources: list[str] = Field(
        default_factory=lambda: ["demo/virginia", "demo/brandenburg"],
        description="scenes with reference polygons",
    )
    embedding: bool = Field(
        default=False, description="read the embedding too (default: spectral features only)"
    )
    bundle: bool = Field(default=False, description="write the head to assets/models/heads/")
    engine: EngineOptions = EngineOptions()


def fit_reference_landcover_head(
    ws: Workspace, req: ReferenceFitRequest, progress: ProgressCallback | None = None
) -> ReferenceFit:
    """Fit tile and cell heads on the reference labels of whole scenes (the bundled head)."""
    sources = [ws.source(s) for s in req.sources]
    engine = ws.engine(req.model, req.engine)
    with ws.cache() as cache:
        return fit_reference_head(
            sources,
            engine.model,
            cache,
            engine=engine,
            settings=ws.settings,
            embedding=req.embedding,
            bundle=req.bundle,
            progress=progress,
        )


class WorldCoverFitRequest(Request):
    """Fit a head on ESA WorldCover labels read over HTTP for a region of a scene."""

    source: str
    model: str
    region: RegionSpec | None = None
    min_labelled: float = Field(default=MIN_LABELLED_FRACTION, gt=0, le=1)
    bundle: bool = False
    engine: EngineOptions = EngineOptions()


def fit_worldcover_head(
    ws: Workspace, req: WorldCoverFitRequest, progress: ProgressCallback | None = None
) -> FitResult:
    """Read WorldCover for the region (range requests), then fit a head as ``fit`` does.

    Raises:
        WorldCoverUnavailableError: offline or the server is unreachable (one line).
    """
    from backend.imagery.regions import Region

    source = ws.source(req.source)
    region = req.region.resolve() if req.region else Region(source.footprint_lonlat)
    labels = fetch_worldcover(region, ws.db_path.parent / "worldcover", offline=ws.settings.offline)
    engine = ws.engine(req.model, req.engine)
    with ws.cache() as cache:
        return fit_head(
            source,
            engine.model,
            cache,
            region=region if req.region else None,
            labels=labels,
            mapping="esa-worldcover",
            engine=engine,
            settings=ws.settings,
            min_labelled=req.min_labelled,
            bundle=req.bundle,
            progress=progress,
        )


class LandCoverEvalRequest(Request):
    """Evaluate a model's land-cover map on the held-out reference polygons."""

    model: str = "softmap-default"
    head: str | None = None
    sources: list[str] = Field(default_factory=lambda: ["demo/virginia", "demo/brandenburg"])
    tokens: bool = True
    engine: EngineOptions = EngineOptions()


def evaluate_landcover_map(
    ws: Workspace, req: LandCoverEvalRequest, progress: ProgressCallback | None = None
) -> LandCoverEvaluation:
    """Overall accuracy, per-class precision/recall and the confusion matrix of the map."""
    sources = [ws.source(s) for s in req.sources]
    engine = ws.engine(req.model, req.engine)
    with ws.cache() as cache:
        head = resolve_head(cache, engine.model.meta.id, req.head)
        return evaluate_landcover(
            sources,
            engine.model,
            cache,
            head=head,
            engine=engine,
            settings=ws.settings,
            tokens=req.tokens,
            progress=progress,
        )
