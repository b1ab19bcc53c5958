"""The embedding space: scopes, PCA at once, UMAP in the background, colourings, the scatter.

Used by ``pages/embedding_space.py`` (and, for scopes and tile records, ``app/classes_view.py``).

* Scopes (region / scene / everything cached) are resolved once per input and *data version*
  (rows per embedding set of the model, :func:`app.search_view.model_version`): bounded
  ``st.cache_data``.
* PCA is instant and shown first. UMAP (``backend.analysis.projection.project``) runs in a daemon
  thread
  held in a ``st.cache_resource`` registry (:class:`UmapJobs`, one fit at a time: the CPU is
  shared); the page polls it from a fragment and switches to UMAP when the fit is done. A fit
  already stored in the cache answers within :data:`QUICK_WAIT_S`, so a revisit never shows PCA.
* Colourings (predicted land cover, a user class's probability, similarity to a tile, source)
  are computed from the cache and cached per input; the scatter is a plotly ``Scattergl``.
"""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import plotly.graph_objects as go
import streamlit as st
from numpy.typing import NDArray
from shapely.geometry import Point, shape

from app import resources
from app.search_view import colour_ramp, model_version
from backend.analysis.projection import ProjectionParams
from backend.landcover.labels import DW_PALETTE, DW_TITLES
from backend.service import (
    Projection,
    Region,
    RegionSpec,
    Scope,
    ScopeRequest,
    SoftMapError,
    class_predictions,
    landcover_predictions,
    parse_tile_id,
)
from backend.service import predict_scope_landcover as predict_landcover_of
from backend.service import similarities as similarities_to

__all__ = ["model_version"]

ScopeKind = Literal["region", "source", "all"]
#: Scope choices shown to the user: label → kind.
SCOPES: dict[str, ScopeKind] = {
    "This region": "region",
    "This scene": "source",
    "Everything cached": "all",
}
ColourBy = Literal["landcover", "class", "similarity", "source"]
COLOUR_BY: dict[str, ColourBy] = {
    "Predicted land cover": "landcover",
    "My class (probability)": "class",
    "Similarity to a tile": "similarity",
    "Source": "source",
}
#: UMAP settings of the page: PCA to 50 dims first (fast), seeded (a link shows the same layout).
UMAP_PARAMS = ProjectionParams(method="umap")
PCA_PARAMS = ProjectionParams(method="pca")
#: How long a rerun waits for a UMAP job before showing PCA (a stored fit returns in ms).
QUICK_WAIT_S = 0.3
#: Most tiles drawn on a map beside the scatter (a Leaflet map must stay light).
MAX_MAP_TILES = 3000
MISSING = "no prediction"
MISSING_COLOUR = "#b0b7c0"
#: Viridis: low probability/similarity dark blue, high yellow.
RAMP = ("#440154", "#3b528b", "#21918c", "#5ec962", "#fde725")
SELECTED_COLOUR = "#ff2d95"
SOURCE_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2")


# --- scopes -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ScopeInputs:
    """What a scope is made of (hashable: part of cache keys)."""

    model_id: str
    kind: ScopeKind
    source_id: str | None = None
    region_wkt: str | None = None

    def request(self) -> ScopeRequest:
        """The scope: tiles of the region (of the source), of the source, or all."""
        from shapely import wkt

        region = (
            RegionSpec.of(Region(wkt.loads(self.region_wkt)))
            if self.kind == "region" and self.region_wkt
            else None
        )
        source = self.source_id if self.kind in ("region", "source") else None
        return ScopeRequest(model=self.model_id, source=source, region=region)


Version = tuple[tuple[int, int], ...]


@st.cache_data(show_spinner=False, max_entries=32)
def cached_scope(db: str, inputs: ScopeInputs, version: Version) -> Scope:
    """The resolved scope (``db`` and ``version`` are part of the key only).

    Raises:
        NoEmbeddingsError, EmptyScopeError: nothing of the model is cached there.
    """
    return resources.operations().resolve_scope(inputs.request())


@st.cache_data(show_spinner=False, max_entries=16)
def records(db: str, tile_ids: tuple[str, ...]) -> list[dict[str, Any]]:
    """Stored records (footprint, centre…) of tiles, in the order asked."""
    return resources.operations().records(tile_ids)


def footprint(record: dict[str, Any]) -> dict[str, Any]:
    """A tile record's footprint as a GeoJSON geometry."""
    geometry: dict[str, Any] = json.loads(record["footprint"])
    return geometry


def tile_at(recs: Sequence[dict[str, Any]], lon: float, lat: float) -> str | None:
    """The tile among ``recs`` under a click (nearest centre where tiles overlap)."""
    p = Point(lon, lat)
    hits = [r for r in recs if shape(footprint(r)).covers(p)]
    if not hits:
        return None
    return str(min(hits, key=lambda r: (r["lon"] - lon) ** 2 + (r["lat"] - lat) ** 2)["tile_id"])


def bounds_of(recs: Sequence[dict[str, Any]]) -> list[list[float]]:
    """``[[south, west], [north, east]]`` of tile records (for ``fit_bounds``)."""
    w, s = min(r["min_lon"] for r in recs), min(r["min_lat"] for r in recs)
    e, n = max(r["max_lon"] for r in recs), max(r["max_lat"] for r in recs)
    return [[s, w], [n, e]]


def map_tiles(db: str, scope: Scope, source_id: str) -> list[dict[str, Any]]:
    """Records of the scope's tiles of one source, at most :data:`MAX_MAP_TILES`."""
    ids = tuple(t for t in scope.tile_ids if t.startswith(f"{source_id}/"))[:MAX_MAP_TILES]
    return records(db, ids)


# --- projections --------------------------------------------------------------------------------
@st.cache_data(show_spinner=False, max_entries=16)
def pca_projection(db: str, inputs: ScopeInputs, version: Version) -> Projection:
    """The instant 2-D PCA of the scope (stored in the cache too)."""
    scope = cached_scope(db, inputs, version)
    return resources.operations().scope_projection(scope, PCA_PARAMS)


JobKey = tuple[str, ScopeInputs, Version, ProjectionParams]


@dataclass
class UmapJob:
    """A UMAP fit running (or done) in a background thread."""

    future: Future[Projection]
    started: float

    def elapsed(self) -> float:
        return time.monotonic() - self.started


class UmapJobs:
    """Background UMAP fits, one at a time, the newest few kept (shared by every session)."""

    KEEP = 8

    def __init__(self) -> None:
        self._jobs: OrderedDict[JobKey, UmapJob] = OrderedDict()
        self._lock = threading.Lock()
        self._fit_lock = threading.Lock()  # two fits at once would only halve each other's CPU

    def get(self, key: JobKey) -> UmapJob | None:
        with self._lock:
            return self._jobs.get(key)

    def start(self, key: JobKey, fit: Callable[[], Projection]) -> UmapJob:
        """The job of ``key``: started now unless it runs already or finished well."""
        with self._lock:
            job = self._jobs.get(key)
            if job is not None and not (job.future.done() and job.future.exception()):
                return job
            job = UmapJob(Future(), time.monotonic())
            self._jobs[key] = job
            for old in list(self._jobs)[: -self.KEEP]:
                if self._jobs[old].future.done():
                    del self._jobs[old]
        # A daemon thread, not an executor: a fit must never hold the process open at exit.
        threading.Thread(target=self._run, args=(job, fit), daemon=True, name="umap").start()
        return job

    def _run(self, job: UmapJob, fit: Callable[[], Projection]) -> None:
        if not job.future.set_running_or_notify_cancel():
            return
        try:
            with self._fit_lock:
                result = fit()
        except SoftMapError as e:
            job.future.set_exception(e)
        except Exception as e:  # any failure of the fit is shown as a SoftMapError, no traceback
            job.future.set_exception(
                SoftMapError(f"UMAP could not be fitted: {e}. PCA is shown.", title="UMAP failed")
            )
        else:
            job.future.set_result(result)


@st.cache_resource(show_spinner=False)
def umap_jobs() -> UmapJobs:
    """The process's UMAP job registry."""
    return UmapJobs()


def umap_job(db: str, inputs: ScopeInputs, version: Version) -> UmapJob:
    """The UMAP job of a scope, started if needed; waits briefly so a stored fit shows at once."""
    ops = resources.operations()
    scope = cached_scope(db, inputs, version)
    key: JobKey = (db, inputs, version, UMAP_PARAMS)
    job = umap_jobs().start(key, lambda: ops.scope_projection(scope, UMAP_PARAMS))
    if not job.future.done():
        try:
            job.future.result(timeout=QUICK_WAIT_S)
        except TimeoutError:
            pass
        except SoftMapError:
            pass  # the page shows it from the job
    return job


# --- colourings ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Colouring:
    """How each point is coloured: categories with colours, or values on a ramp."""

    title: str
    categories: tuple[str, ...] | None = None  # per point (categorical)
    colours: tuple[tuple[str, str], ...] = ()  # category → colour, legend order
    values: tuple[float, ...] | None = None  # per point (continuous), NaN = none
    value_range: tuple[float, float] = (0.0, 1.0)
    note: str | None = None  # shown under the chart (e.g. what is missing)
    incomplete: bool = False  # some points lack what they are coloured by

    def hover(self, i: int) -> str:
        if self.categories is not None:
            return self.categories[i]
        if self.values is not None and np.isfinite(self.values[i]):
            return f"{self.title}: {self.values[i]:.3f}"
        return MISSING


def plain(tile_ids: Sequence[str], note: str | None = None) -> Colouring:
    """One colour for every point."""
    return Colouring("tiles", tuple("tile" for _ in tile_ids), (("tile", "#4c78a8"),), note=note)


@st.cache_data(show_spinner=False, max_entries=16)
def landcover_classes(
    db: str, model_id: str, tile_ids: tuple[str, ...], stamp: int
) -> tuple[str | None, tuple[int, ...]]:
    """(head id, dominant DW class per tile, -1 where none) from stored land-cover predictions."""
    stored = landcover_predictions(resources.workspace(), model_id, tile_ids)
    found = dict(zip(stored.tile_ids, stored.probabilities.argmax(axis=1).tolist(), strict=True))
    return stored.head_id, tuple(int(found.get(t, -1)) for t in tile_ids)


def landcover_colouring(classes: Sequence[int], head_id: str | None) -> Colouring:
    """Dominant class in the Dynamic World palette (grey where none is stored)."""
    cats = tuple(DW_TITLES[c] if c >= 0 else MISSING for c in classes)
    present = sorted({c for c in classes if c >= 0})
    colours = [(DW_TITLES[c], f"#{DW_PALETTE[c]}") for c in present]
    if any(c < 0 for c in classes):
        colours.append((MISSING, MISSING_COLOUR))
    missing = sum(c < 0 for c in classes)
    note = f"Head {head_id}." if head_id else None
    if missing:
        note = f"{missing} of {len(classes)} tiles have no land-cover prediction yet."
    return Colouring("Land cover", cats, tuple(colours), note=note, incomplete=missing > 0)


def predict_scope_landcover(scope: Scope) -> int:
    """Predict and store land cover for the scope's tiles that lack it; returns tiles predicted.

    The embeddings are cached already, so this only applies the model's land-cover head.

    Raises:
        UnknownHeadError: the model has no land-cover head.
    """
    return predict_landcover_of(resources.workspace(), scope)


@st.cache_data(show_spinner=False, max_entries=16)
def class_probabilities(
    db: str, class_name: str, inputs: ScopeInputs, version: Version, stamp: int
) -> tuple[float, ...] | None:
    """Stored probabilities of a user class per scope tile (NaN where none); None if none at all.

    ``stamp`` changes when the class was trained again (its predictions were rewritten).
    """
    scope = cached_scope(db, inputs, version)
    ids, probs = class_predictions(resources.workspace(), class_name, scope)
    if not ids:
        return None
    found = dict(zip(ids, probs.tolist(), strict=True))
    return tuple(float(found.get(t, np.nan)) for t in scope.tile_ids)


@st.cache_data(show_spinner=False, max_entries=16)
def similarities(db: str, inputs: ScopeInputs, version: Version, anchor: str) -> tuple[float, ...]:
    """Cosine similarity of every scope tile to ``anchor`` (a tile of the same embedding set).

    Raises:
        NotFoundError: the anchor has no embedding in the scope's embedding set.
    """
    scope = cached_scope(db, inputs, version)
    by_id = similarities_to(resources.workspace(), scope, anchor)
    return tuple(float(by_id.get(t, np.nan)) for t in scope.tile_ids)


def source_colouring(tile_ids: Sequence[str]) -> Colouring:
    """Each tile's source, one colour per source."""
    cats = tuple(parse_tile_id(t)[0] for t in tile_ids)
    names = sorted(set(cats))
    colours = tuple((n, SOURCE_COLOURS[i % len(SOURCE_COLOURS)]) for i, n in enumerate(names))
    return Colouring("Source", cats, colours)


def ramp_colouring(title: str, values: Sequence[float], note: str | None = None) -> Colouring:
    """Values on the viridis ramp, scaled to their finite range (probabilities to 0–1)."""
    v = np.asarray(values, dtype=float)
    finite = v[np.isfinite(v)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if title.startswith("P("):
        lo, hi = 0.0, 1.0
    return Colouring(title, values=tuple(v.tolist()), value_range=(lo, hi), note=note)


def point_colours(colouring: Colouring) -> list[str]:
    """A ``#rrggbb`` per point (for the map beside the scatter)."""
    if colouring.categories is not None:
        table = dict(colouring.colours)
        return [table.get(c, MISSING_COLOUR) for c in colouring.categories]
    assert colouring.values is not None
    v = np.asarray(colouring.values, dtype=float)
    lo, hi = colouring.value_range
    scaled = (v - lo) / (hi - lo) if hi > lo else np.full_like(v, 0.5)
    rgb = colour_ramp(np.nan_to_num(scaled, nan=0.0), RAMP)
    return [
        f"#{r:02x}{g:02x}{b:02x}" if np.isfinite(x) else MISSING_COLOUR
        for (r, g, b), x in zip(rgb.astype(int).tolist(), v, strict=True)
    ]


# --- the scatter ----------------------------------------------------------------------------
def scatter_figure(
    tile_ids: Sequence[str],
    xy: NDArray[np.float32],
    colouring: Colouring,
    selected: Sequence[str] = (),
    *,
    method: str = "umap",
) -> go.Figure:
    """A WebGL scatter of the projection: one trace per category (or one on a ramp), then the
    selected tiles ringed on top. Every point carries its tile id as ``customdata``."""
    ids = np.asarray(tile_ids, dtype=object)
    fig = go.Figure()
    marker: dict[str, Any] = {"size": 7, "opacity": 0.85, "line": {"width": 0}}
    hover = "%{customdata}<br>%{text}<extra></extra>"
    texts = np.asarray([colouring.hover(i) for i in range(len(ids))], dtype=object)
    if colouring.categories is not None:
        cats = np.asarray(colouring.categories, dtype=object)
        for name, colour in colouring.colours:
            mask = cats == name
            if not mask.any():
                continue
            fig.add_trace(
                go.Scattergl(
                    x=xy[mask, 0], y=xy[mask, 1], mode="markers", name=name,
                    customdata=ids[mask], text=texts[mask], hovertemplate=hover,
                    marker={**marker, "color": colour},
                )
            )  # fmt: skip
    else:
        assert colouring.values is not None
        lo, hi = colouring.value_range
        fig.add_trace(
            go.Scattergl(
                x=xy[:, 0], y=xy[:, 1], mode="markers", name=colouring.title,
                customdata=ids, text=texts, hovertemplate=hover, showlegend=False,
                marker={
                    **marker, "color": np.nan_to_num(np.asarray(colouring.values), nan=lo),
                    "colorscale": [[i / (len(RAMP) - 1), c] for i, c in enumerate(RAMP)],
                    "cmin": lo, "cmax": hi if hi > lo else lo + 1e-6,
                    "colorbar": {"title": {"text": colouring.title}, "thickness": 12},
                },
            )
        )  # fmt: skip
    chosen = set(selected)
    if chosen:
        mask = np.array([t in chosen for t in tile_ids], dtype=bool)
        fig.add_trace(
            go.Scattergl(
                x=xy[mask, 0], y=xy[mask, 1], mode="markers", name="selected",
                customdata=ids[mask], text=texts[mask], hovertemplate=hover,
                marker={"size": 13, "color": "rgba(0,0,0,0)",
                        "line": {"width": 2.5, "color": SELECTED_COLOUR}},
            )
        )  # fmt: skip
    axis = "UMAP" if method == "umap" else "PC"
    fig.update_layout(
        height=560,
        margin={"l": 10, "r": 10, "t": 30, "b": 10},
        dragmode="lasso",
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.0, "x": 0},
        xaxis={"title": {"text": f"{axis} 1"}, "showticklabels": False, "zeroline": False},
        yaxis={"title": {"text": f"{axis} 2"}, "showticklabels": False, "zeroline": False},
        plot_bgcolor="#f7f9fb",
        uirevision="softmap-embedding",  # keep zoom and pan across reruns
    )
    return fig


def selected_ids(event: Any) -> tuple[str, ...]:
    """Tile ids of the points in a plotly selection event (``st.plotly_chart(on_select=…)``)."""
    try:
        points = event["selection"]["points"]
    except (KeyError, TypeError):
        return ()
    out: dict[str, None] = {}
    for p in points or ():
        tile = p.get("customdata") if isinstance(p, dict) else None
        if isinstance(tile, list):
            tile = tile[0] if tile else None
        if isinstance(tile, str):
            out[tile] = None
    return tuple(out)
