"""Sentinel-1 with Sentinel-2: which sources pair up, and fused S2 + S1 embedding sets.

``list_pairs`` finds, for a source (or every source), the sources of the other sensor over the
same ground within a date window (:mod:`backend.imagery.pairing`). ``fuse_region`` embeds a
region with an S2 model on the S2 side and an S1 model on the S1 side of the pairs (only what
the cache lacks) and writes the pair's fused set (:mod:`backend.embedding.fusion`), which search,
projections, user classes and exports then use under the model id ``"<s2 model>+<s1 model>"``.
``fusion_choices`` lists the "S2 + S1" model choices the app offers for a source.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import Field

from backend.embedding.fusion import (
    DEFAULT_S1_WEIGHT,
    MIN_TILE_OVERLAP,
    FusionResult,
    FusionSpec,
    TileMatch,
    coverage_counts,
    fuse_embeddings,
    fused_coverage,
    fused_model_id,
    split_fused_model_id,
)
from backend.embedding.pipeline import EmbedResult, embed_region
from backend.errors import BandMismatchError, NotFoundError, SoftMapError, UnknownModelError
from backend.imagery.pairing import (
    DEFAULT_WINDOW_DAYS,
    MIN_OVERLAP,
    SourcePair,
    all_pairs,
    find_partners,
    is_s1,
)
from backend.imagery.regions import Region, validate_region
from backend.imagery.sources import SceneSource
from backend.models import ModelMeta, list_models
from backend.models.inference import EmbeddingEngine, ProgressCallback
from backend.models.weights import find_local_weights
from backend.service.workspace import EngineOptions, RegionSpec, Request, Workspace
from backend.store.cache import EmbeddingCache, EmbeddingSet

#: What each sensor brings to a fused embedding, as the app and docs say it.
S2_CONTRIBUTES = (
    "Sentinel-2 (optical, 13 bands): colour, vegetation vigour (red edge, NIR), moisture (SWIR); "
    "blind under cloud and at night"
)
S1_CONTRIBUTES = (
    "Sentinel-1 (radar, VV+VH): surface roughness and structure, open water (dark), buildings "
    "(bright), forest volume (VH); sees through cloud, day and night"
)


# --- pairs ---------------------------------------------------------------------------------
class PairsRequest(Request):
    """Which pairs to list: of one source, or all (``softmap sources pairs``)."""

    source: str | None = Field(default=None, description="a source id; None = every source")
    window_days: int = Field(default=DEFAULT_WINDOW_DAYS, ge=0, description="days apart at most")
    min_overlap: float = Field(default=MIN_OVERLAP, gt=0, le=1, description="of the smaller one")


def list_pairs(ws: Workspace, req: PairsRequest | None = None) -> list[SourcePair]:
    """S2–S1 pairs of one source (closest in time first) or of every source (by S2 id)."""
    req = req or PairsRequest()
    catalog = ws.catalog()
    if req.source is None:
        return all_pairs(catalog, window_days=req.window_days, min_overlap=req.min_overlap)
    return find_partners(
        catalog.get(req.source),
        catalog.list(),
        window_days=req.window_days,
        min_overlap=req.min_overlap,
    )


def partners_by_source(
    ws: Workspace, window_days: int = DEFAULT_WINDOW_DAYS
) -> dict[str, list[str]]:
    """Source id → ids of its partners (both directions), for listings."""
    out: dict[str, list[str]] = {}
    for p in all_pairs(ws.catalog(), window_days=window_days):
        out.setdefault(p.s2.id, []).append(p.s1.id)
        out.setdefault(p.s1.id, []).append(p.s2.id)
    return out


# --- fusion --------------------------------------------------------------------------------
class FuseRequest(Request):
    """Embed a region on both sensors and write the pair's fused set (``softmap fuse``)."""

    source: str = Field(description="an S2 or S1 source id; its partners supply the other sensor")
    region: RegionSpec | None = Field(default=None, description="default: the source's footprint")
    s2_model: str = Field(description="the Sentinel-2 model")
    s1_model: str = Field(description="the Sentinel-1 model")
    s1_weight: float = Field(default=DEFAULT_S1_WEIGHT, ge=0, le=1, description="S1 share")
    window_days: int = Field(default=DEFAULT_WINDOW_DAYS, ge=0, description="pairing window")
    min_tile_overlap: float = Field(default=MIN_TILE_OVERLAP, gt=0, le=1)
    chip: int | None = Field(default=None, ge=8, description="tile size (default: each model's)")
    s1_chip: int | None = Field(default=None, ge=8, description="S1 tile size (default: chip)")
    engine: EngineOptions = EngineOptions()
    s1_engine: EngineOptions | None = Field(default=None, description="default: as engine")

    @property
    def model_id(self) -> str:
        return fused_model_id(self.s2_model, self.s1_model)


@dataclass(frozen=True)
class FuseOutcome:
    """The fused set written, the pairs used and the embedding runs behind it."""

    fusion: FusionResult
    pairs: tuple[SourcePair, ...]
    s2_runs: tuple[EmbedResult, ...]
    s1_runs: tuple[EmbedResult, ...]
    #: Fused tiles inside the region (the set may hold more from earlier calls).
    region_tile_ids: tuple[str, ...] = field(default_factory=tuple)

    @property
    def model_id(self) -> str:
        return self.fusion.model_id

    def as_embed_result(self) -> EmbedResult:
        """The fusion as one embedding run of the fused model (what the app's pages expect)."""
        runs = self.s2_runs + self.s1_runs
        seconds = sum(r.seconds for r in runs) + self.fusion.seconds
        computed = sum(r.computed for r in runs)
        first = runs[0]
        return EmbedResult(
            run_id=first.run_id,
            source=first.source,
            model=self.fusion.model_id,
            preprocessing_hash=self.fusion.preprocessing_hash,
            tiles=len(self.fusion.matches),
            computed=computed,
            cached=sum(r.cached for r in runs),
            skipped=sum(r.skipped for r in runs),
            seconds=round(seconds, 3),
            tiles_per_s=round(computed / seconds, 2) if seconds > 0 and computed else 0.0,
            device=first.device,
            db=first.db,
            tile_ids=self.fusion.tile_ids,
        )

    def to_json(self) -> dict[str, Any]:
        def run(r: EmbedResult) -> dict[str, Any]:
            return {k: v for k, v in r.to_json().items() if k != "tile_ids"}

        return {
            **self.fusion.to_json(),
            "pairs": [p.to_json() for p in self.pairs],
            "s2_runs": [run(r) for r in self.s2_runs],
            "s1_runs": [run(r) for r in self.s1_runs],
        }


def _check_models(ws: Workspace, req: FuseRequest) -> tuple[ModelMeta, ModelMeta]:
    metas = {m.id: m for m in list_models()}
    for name in (req.s2_model, req.s1_model):
        if name not in metas:
            ws.model(name)  # raises UnknownModelError with the closest id
    s2, s1 = metas[req.s2_model], metas[req.s1_model]
    if s2.sensor == "S1-GRD":
        raise BandMismatchError(
            f"{s2.id} is a Sentinel-1 model; give it as the S1 model and an S2 model first."
        )
    if s1.sensor != "S1-GRD":
        raise BandMismatchError(
            f"{s1.id} is not a Sentinel-1 model (it reads {s1.sensor}); choose one of "
            + ", ".join(m.id for m in metas.values() if m.sensor == "S1-GRD")
            + "."
        )
    return s2, s1


def _clip(region: Region, source: SceneSource) -> Region | None:
    inside = region.geometry.intersection(source.footprint_lonlat)
    if inside.is_empty or inside.area <= 0:
        return None
    return Region(inside)


def fuse_region(
    ws: Workspace, req: FuseRequest, progress: ProgressCallback | None = None
) -> FuseOutcome:
    """Embed a region with both models where the cache lacks it, then write the fused set.

    For an S2 source the region is embedded in it with the S2 model and in each paired S1
    source with the S1 model (for an S1 source, the reverse). Tiles one sensor lacks fall back
    to the other, marked.

    Raises:
        NotFoundError: the source has no partner within the date window over the region.
        BandMismatchError: the models are not one S2 and one S1 model.
        SoftMapError: anything the embedding runs refuse (region, weights, cache).
    """
    _check_models(ws, req)
    spec = FusionSpec(req.s2_model, req.s1_model, req.s1_weight, req.min_tile_overlap)
    source = ws.source(req.source)
    region = req.region.resolve() if req.region is not None else Region(source.footprint_lonlat)
    validate_region(region, source, max_km2=ws.settings.max_region_km2, catalog=ws.catalog())
    pairs = [
        p
        for p in find_partners(source, ws.catalog().list(), window_days=req.window_days)
        if p.s2.footprint_lonlat.intersects(region.geometry)
        and p.s1.footprint_lonlat.intersects(region.geometry)
    ]
    if not pairs:
        other = "Sentinel-2" if is_s1(source) else "Sentinel-1"
        raise NotFoundError(
            f"No {other} source pairs with {source.id} over {region.describe()} within "
            f"{req.window_days} days. Register one (softmap sources add PATH), or widen the "
            "window (--window-days); `softmap sources pairs` lists the pairs.",
            title="No partner",
        )
    s2_sources = [source] if not is_s1(source) else [p.s2 for p in pairs]
    s1_sources = [p.s1 for p in pairs] if not is_s1(source) else [source]
    days = {(p.s2.id, p.s1.id): p.days_apart for p in pairs}
    s2_engine = ws.engine(req.s2_model, req.engine)
    s1_engine = ws.engine(req.s1_model, req.s1_engine or req.engine)
    with ws.cache() as cache:
        s2_runs = _embed_all(ws, cache, region, s2_sources, s2_engine, req.chip, progress)
        s1_chip = req.s1_chip or req.chip
        s1_runs = _embed_all(ws, cache, region, s1_sources, s1_engine, s1_chip, progress)
        s2_set = _one_set(cache, req.s2_model, s2_runs)
        s1_set = _one_set(cache, req.s1_model, s1_runs)
        fusion = fuse_embeddings(
            cache,
            spec,
            s2_set,
            s1_set,
            [t for r in s2_runs for t in r.tile_ids],
            [t for r in s1_runs for t in r.tile_ids],
            days,
        )
    return FuseOutcome(fusion, tuple(pairs), tuple(s2_runs), tuple(s1_runs), fusion.tile_ids)


def _embed_all(
    ws: Workspace,
    cache: EmbeddingCache,
    region: Region,
    sources: list[SceneSource],
    engine: EmbeddingEngine,
    chip: int | None,
    progress: ProgressCallback | None,
) -> list[EmbedResult]:
    runs = []
    for s in sources:
        part = _clip(region, s)
        if part is None:
            continue
        runs.append(
            embed_region(
                part,
                s,
                engine.model,
                cache,
                engine=engine,
                settings=ws.settings,
                chip=chip,
                progress=progress,
            )
        )
    return runs


def _one_set(cache: EmbeddingCache, model_id: str, runs: list[EmbedResult]) -> EmbeddingSet:
    hashes = sorted({r.preprocessing_hash for r in runs})
    if len(hashes) != 1:
        raise SoftMapError(
            f"The sources embedded with {model_id} were prepared differently ({len(hashes)} "
            "preprocessing hashes, e.g. L1C and L2A): fuse one source at a time.",
            title="Cannot fuse",
        )
    eset = cache.embedding_set(model_id, hashes[0])
    assert eset is not None
    return eset


# --- reading fused sets --------------------------------------------------------------------
def tile_coverage(
    ws: Workspace, model_id: str, tile_ids: list[str] | None = None
) -> dict[str, TileMatch]:
    """What each tile of a fused model's sets is made of (``both``, ``s2`` or ``s1``).

    Raises:
        UnknownModelError: ``model_id`` is not a fused model id.
    """
    if split_fused_model_id(model_id) is None:
        raise UnknownModelError(f"'{model_id}' is not a fused model id (<s2 model>+<s1 model>).")
    out: dict[str, TileMatch] = {}
    with ws.cache(read_only=not ws.keep_open) as cache:
        for eset in cache.embedding_sets():
            if eset.model_id == model_id:
                out.update(fused_coverage(cache, eset, tile_ids))
    return out


@dataclass(frozen=True)
class FusionChoice:
    """A fused model the app offers for a source: id, label and what each sensor adds."""

    model_id: str
    s2_model: str
    s1_model: str
    partners: tuple[str, ...]
    label: str
    caption: str


def _usable(meta: ModelMeta) -> bool:
    return not meta.weight_files or find_local_weights(meta) is not None


def fusion_choices(ws: Workspace, source_id: str) -> list[FusionChoice]:
    """ "S2 + S1" choices for a source that has partners: each S2 model with each S1 model whose
    weights are at hand (SoftCon pairs of the same architecture first)."""
    source = ws.source(source_id)
    partners = tuple(p.partner_of(source_id).id for p in find_partners(source, ws.catalog()))
    if not partners:
        return []
    models = [m for m in list_models() if _usable(m)]
    s2s = [m for m in models if m.sensor != "S1-GRD"]
    s1s = [m for m in models if m.sensor == "S1-GRD"]

    def family(m: ModelMeta) -> str:
        return m.id.rsplit("-", 1)[0]

    out = []
    for s2 in s2s:
        for s1 in sorted(s1s, key=lambda m: family(m) != family(s2)):
            mid = fused_model_id(s2.id, s1.id)
            caption = (
                f"S2 + S1: {s2.embed_dim}-d {s2.id} and {s1.embed_dim}-d {s1.id}, each "
                f"L2-normalised and weighted equally ({s2.embed_dim + s1.embed_dim}-d); "
                f"tiles one sensor lacks use the other alone.  \n{S2_CONTRIBUTES}.  \n"
                f"{S1_CONTRIBUTES}.  \nPartner: {', '.join(partners)}"
            )
            out.append(FusionChoice(mid, s2.id, s1.id, partners, f"S2 + S1 · {s2.id} + {s1.id}",
                                    caption))  # fmt: skip
    return out


def coverage_summary(matches: dict[str, TileMatch]) -> str:
    """``"12 tiles from both sensors, 2 S2 only, 1 S1 only"``."""
    c = coverage_counts(matches)
    return f"{c['both']} tiles from both sensors, {c['s2']} S2 only, {c['s1']} S1 only"
