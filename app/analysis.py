"""Analyse a region: embed what the cache lacks with a progress bar, and keep the tiles."""

from __future__ import annotations

import streamlit as st

from app import resources
from app.state import Analysis
from backend.inference import Progress, ProgressCallback
from backend.pipeline import embed_region
from backend.regions import Region
from backend.settings import get_settings
from backend.sources import SceneSource


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
    cache = resources.cache()
    update, bar = progress_bar()
    try:
        result = embed_region(
            region,
            source,
            resources.model(model_id),
            cache,
            engine=resources.engine(model_id),
            settings=get_settings(),
            catalog=resources.catalog(),
            progress=update,
        )
    finally:
        bar.empty()
    tiles = cache.tiles(list(result.tile_ids))
    return Analysis(source.id, model_id, region.geometry.wkt, result, tiles)
