"""Analyse a region: embed what the cache lacks with a progress bar, then map its land cover."""

from __future__ import annotations

from dataclasses import dataclass, replace

import streamlit as st
from shapely import wkt
from shapely.geometry import mapping

from app import resources
from app.state import Analysis
from backend.service import (
    EmbedRequest,
    LandCoverRequest,
    LandCoverResult,
    Progress,
    ProgressCallback,
    Region,
    RegionSpec,
    SceneSource,
    SoftMapError,
)
from backend.service.sensors import FuseRequest, fuse_region, split_fused_model_id

#: A fused S2 + S1 set has no model that runs, so Explore cannot map a region with it; its
#: land-cover heads are fitted and applied on the stored set (``softmap landcover --set``).
FUSED_HAS_NO_HEAD = SoftMapError(
    "A fused S2 + S1 set is mapped from its stored tiles, not from a region's pixels: fit a "
    "head on it with `softmap landcover fit --labels patches --model <s2>+<s1>`, then map the "
    "set with `softmap landcover --set --model <s2>+<s1>`; Embedding space colours a fused "
    "scope by that head. Here, choose the S2 model alone for a land-cover map of the region.",
    title="No region map for S2 + S1",
)


def progress_text(p: Progress) -> str:
    """``done/total tiles · rate · ETA`` for a progress bar."""
    eta = f" · about {p.eta_s:.0f} s left" if p.eta_s is not None and p.done < p.total else ""
    return f"{p.done}/{p.total} tiles · {p.tiles_per_s:.1f} tiles/s{eta}"


def progress_bar() -> tuple[ProgressCallback, st.delta_generator.DeltaGenerator]:
    """A Streamlit progress bar and the callback that moves it."""
    bar = st.progress(0.0, text="Planning tiles…")

    def update(p: Progress) -> None:
        bar.progress(min(p.done / p.total, 1.0) if p.total else 1.0, text=progress_text(p))

    return update, bar


def analyse(region: Region, source: SceneSource, model_id: str) -> Analysis:
    """Embed every tile of the region the cache lacks, then read back the tiles' records.

    Raises:
        SoftMapError: anything the user can fix (region, weights, cache in use…).
    """
    ops = resources.operations()  # in-process, or the service (progress from its job)
    update, bar = progress_bar()
    fused = split_fused_model_id(model_id)
    try:
        if fused is not None:  # "S2 + S1": both sensors embedded, then their fused set
            req = FuseRequest(source=source.id, region=RegionSpec.of(region),
                              s2_model=fused[0], s1_model=fused[1])  # fmt: skip
            result = fuse_region(resources.workspace(), req, progress=update).as_embed_result()
        else:
            request = EmbedRequest(source=source.id, region=RegionSpec.of(region), model=model_id)
            result = ops.embed(request, progress=update)
    finally:
        bar.empty()
    tiles = ops.tile_records(result.tile_ids)
    return Analysis(source.id, model_id, region.geometry.wkt, result, tiles)


@dataclass(frozen=True)
class LandCover:
    """The land cover of an analysed region with one head, or why there is none.

    Attributes:
        source_id: The scene.
        model_id: The model whose embeddings the head reads.
        region_wkt: The region (lon/lat WKT), as in :class:`~app.state.Analysis`.
        requested_head: The head asked for (None: the model's default head).
        result: Probabilities, areas and rasters; None when ``error`` says why.
        error: Why there is no land cover (e.g. no head for this model).
    """

    source_id: str
    model_id: str
    region_wkt: str
    requested_head: str | None
    result: LandCoverResult | None = None
    error: SoftMapError | None = None

    @property
    def head_id(self) -> str | None:
        """The head used (None without a result)."""
        return str(self.result.head["head_id"]) if self.result is not None else None

    def matches(self, analysis: Analysis, head: str | None) -> bool:
        """Whether this is the land cover of ``analysis`` with the head asked for."""
        return (
            self.source_id == analysis.source_id
            and self.model_id == analysis.model_id
            and self.region_wkt == analysis.region_wkt
            and self.requested_head == head
        )


def map_landcover(analysis: Analysis, source: SceneSource, head: str | None = None) -> LandCover:
    """Predict the land cover of an analysed region (its embeddings are already cached).

    Tile probabilities are stored in the cache and reused; a ViT head's token probabilities
    need the model once more on the first map of a region. A :class:`SoftMapError` (no head for
    the model, say) is kept in the result for the page to show, not raised.
    """
    base = LandCover(analysis.source_id, analysis.model_id, analysis.region_wkt, head)
    if split_fused_model_id(analysis.model_id) is not None:
        return replace(base, error=FUSED_HAS_NO_HEAD)
    request = LandCoverRequest(
        source=source.id,
        region=RegionSpec(geojson=mapping(wkt.loads(analysis.region_wkt))),
        model=analysis.model_id,
        head=head,
    )
    try:
        with st.spinner("Mapping land cover…"):
            result = resources.operations().map_landcover(request)
    except SoftMapError as e:
        return replace(base, error=e)
    return replace(base, result=result)
