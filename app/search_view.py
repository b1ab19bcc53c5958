"""Similar places on the map: the search (cached per input), result and query layers, heatmaps.

Everything here is derived from the cache and bounded-cached with ``st.cache_data``; keys carry
the model's *data version* (rows per embedding set), so a search is recomputed only when its
inputs change or new tiles of the model were embedded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import folium
import numpy as np
import streamlit as st
from numpy.typing import NDArray

from app import resources
from app.map_view import LayerBuilder
from backend.imagery.preview import encode_png, png_data_url, tile_grid_geojson, tile_rgba
from backend.search.query import SearchResult
from backend.service import (
    DataVersion,
    MatchHeatmap,
    Region,
    RegionSpec,
    SearchRequest,
    SearchResponse,
)

ScopeKind = Literal["region", "source", "all"]

#: Viridis, five stops: low scores dark blue, high scores yellow (readable over imagery).
SCORE_PALETTE = ("#440154", "#3b528b", "#21918c", "#5ec962", "#fde725")
#: Inferno for the patch heatmap: where the match is glows.
HEAT_PALETTE = ("#000004", "#57106e", "#bc3754", "#f98e09", "#fcffa4")
POSITIVE_STYLE = {"color": "#00e5ff", "weight": 4, "dashArray": "7 5", "fillOpacity": 0.15}
NEGATIVE_STYLE = {"color": "#ff4d6d", "weight": 4, "dashArray": "7 5", "fillOpacity": 0.15}
CACHED_STYLE = {"color": "#ffffff", "weight": 0.6, "opacity": 0.6, "fillOpacity": 0.0}
#: Most cached tiles outlined on the map (a map must stay light).
MAX_CACHED_OUTLINES = 3000


@dataclass(frozen=True)
class SearchInputs:
    """Everything a search depends on, hashable: the key of its cached response."""

    positives: tuple[str, ...] = ()
    negatives: tuple[str, ...] = ()
    point: tuple[float, float] | None = None
    k: int = 10
    threshold: float | None = None
    suppress: bool = True
    scope: ScopeKind = "region"
    source_id: str | None = None
    region_wkt: str | None = None

    @property
    def has_query(self) -> bool:
        return bool(self.positives) or self.point is not None

    def request(self, model_id: str) -> SearchRequest:
        """The search (a region scope is limited to the source shown)."""
        region = source = None
        kind: ScopeKind = "all"
        if self.scope == "region" and self.region_wkt:
            from shapely import wkt

            kind, source = "region", self.source_id
            region = RegionSpec.of(Region(wkt.loads(self.region_wkt)))
        elif self.scope == "source" and self.source_id:
            kind, source = "source", self.source_id
        return SearchRequest(
            model=model_id,
            source=source,
            region=region,
            scope=kind,
            tiles=self.positives,
            point=self.point,
            negatives=self.negatives,
            k=self.k,
            threshold=self.threshold,
            suppress=self.suppress,
        )


_QUERY = "similar.query"


@dataclass(frozen=True)
class Query:
    """The query on this page: positive tiles, negative tiles, a point, the chosen result."""

    positives: tuple[str, ...] = ()
    negatives: tuple[str, ...] = ()
    point: tuple[float, float] | None = None
    selected: str | None = None


def get_query() -> Query:
    """The Similar page's query (empty when none)."""
    value = st.session_state.get(_QUERY)
    return value if isinstance(value, Query) else Query()


def set_query(query: Query) -> None:
    """Replace the Similar page's query."""
    st.session_state[_QUERY] = query


# --- data version and cached derivations ------------------------------------------------------
def model_version(model_id: str) -> DataVersion:
    """(set id, rows) of each embedding set of the model: empty when nothing is cached."""
    return resources.operations().model_version(model_id)


@st.cache_data(show_spinner="Searching…", max_entries=32)
def run_search(
    db: str, model_id: str, inputs: SearchInputs, version: tuple[tuple[int, int], ...]
) -> SearchResponse:
    """The search for these inputs (``db`` and ``version`` are part of the key only).

    Raises:
        SoftMapError: see :func:`backend.search.query.search`.
    """
    return resources.operations().find_similar(inputs.request(model_id))


@st.cache_data(show_spinner=False, max_entries=16)
def region_tiles(
    db: str, model_id: str, source_id: str, region_wkt: str, version: tuple[tuple[int, int], ...]
) -> list[dict[str, Any]]:
    """Records of the model's cached tiles over a region of one source."""
    from shapely import wkt

    region = Region(wkt.loads(region_wkt))
    return resources.operations().region_tiles(model_id, source_id, region, MAX_CACHED_OUTLINES)


@st.cache_data(show_spinner=False, max_entries=64)
def tile_records(db: str, tile_ids: tuple[str, ...]) -> list[dict[str, Any]]:
    """Stored records of tiles (query tiles to draw), in the order asked."""
    return resources.operations().records(tile_ids)


def tile_under(model_id: str, lon: float, lat: float) -> str | None:
    """The model's cached tile under a lon/lat point (first embedding set that has one)."""
    return resources.operations().tile_under(model_id, lon, lat)


@st.cache_data(show_spinner="Locating the match inside the tile…", max_entries=64)
def heatmap(
    db: str, model_id: str, preprocessing_hash: str, tile_id: str, query: NDArray[np.float32]
) -> MatchHeatmap | None:
    """The patch-token heatmap of one result against the search's query vector."""
    ops = resources.operations()
    return ops.result_heatmap(model_id, preprocessing_hash, tile_id, query)


# --- colours ----------------------------------------------------------------------------------
def _rgb(palette: Sequence[str]) -> NDArray[np.float64]:
    return np.array([[int(c[i : i + 2], 16) for i in (1, 3, 5)] for c in palette], dtype=float)


def colour_ramp(values: NDArray[np.floating[Any]], palette: Sequence[str]) -> NDArray[np.uint8]:
    """Values in [0, 1] → ``(..., 3)`` uint8 colours interpolated along a palette."""
    rgb = _rgb(palette)
    stops = np.linspace(0.0, 1.0, len(palette))
    v = np.clip(np.asarray(values, dtype=float), 0.0, 1.0)
    out = np.stack([np.interp(v, stops, rgb[:, i]) for i in range(3)], axis=-1)
    return np.round(out).astype(np.uint8)


def score_range(results: Sequence[SearchResult]) -> tuple[float, float]:
    """Lowest and highest score of the results (colours stretch between them)."""
    if not results:
        return 0.0, 1.0
    scores = [r.score for r in results]
    return min(scores), max(scores)


def score_colour(score: float, lo: float, hi: float) -> str:
    """A result's colour: its score stretched over the results' range (ties are top colour)."""
    t = 1.0 if hi - lo < 1e-9 else (score - lo) / (hi - lo)
    r, g, b = (int(c) for c in colour_ramp(np.array(t), SCORE_PALETTE))
    return f"#{r:02x}{g:02x}{b:02x}"


def text_colour(background: str) -> str:
    """Black or white, whichever reads better on a ``#rrggbb`` background."""
    r, g, b = (int(background[i : i + 2], 16) for i in (1, 3, 5))
    return "#111111" if 0.299 * r + 0.587 * g + 0.114 * b > 140 else "#ffffff"


def legend_html(lo: float, hi: float) -> str:
    """A small score colour bar for ``st.markdown(..., unsafe_allow_html=True)``."""
    stops = ", ".join(SCORE_PALETTE)
    return (
        f"<div style='display:flex;align-items:center;gap:.5em;font-size:.85em'>"
        f"<span>score {lo:.4f}</span><span style='flex:0 0 10em;height:.8em;border-radius:3px;"
        f"background:linear-gradient(to right, {stops})'></span><span>{hi:.4f}</span>"
        f"<span style='margin-left:1em;border:2px dashed {POSITIVE_STYLE['color']};"
        f"padding:0 .4em'>query</span><span style='border:2px dashed "
        f"{NEGATIVE_STYLE['color']};padding:0 .4em'>negative</span></div>"
    )


def heatmap_rgba(scores: NDArray[np.float32], size: int, alpha: int = 170) -> NDArray[np.uint8]:
    """A ``(g, g)`` heatmap as a ``(size, size, 4)`` image, stretched min → max, nearest."""
    lo, hi = float(scores.min()), float(scores.max())
    t = (scores - lo) / (hi - lo) if hi - lo > 1e-9 else np.ones_like(scores)
    g1, g2 = scores.shape
    rows = np.arange(size) * g1 // size
    cols = np.arange(size) * g2 // size
    t = t[rows][:, cols]
    rgba = np.empty((size, size, 4), dtype=np.uint8)
    rgba[..., :3] = colour_ramp(t, HEAT_PALETTE)
    rgba[..., 3] = alpha
    return rgba


@st.cache_data(show_spinner=False, max_entries=64)
def blended_thumbnail(
    source_id: str, tile_id: str, scores: NDArray[np.float32], size: int = 224
) -> bytes:
    """The tile's true colour with its heatmap laid over it, as PNG bytes."""
    rgba = tile_rgba(resources.catalog().get(source_id), tile_id, "true")
    h, w = rgba.shape[:2]
    rows = (np.arange(size) * h // size).clip(0, h - 1)
    cols = (np.arange(size) * w // size).clip(0, w - 1)
    base = rgba[rows][:, cols, :3].astype(float)
    heat = heatmap_rgba(scores, size).astype(float)
    a = heat[..., 3:4] / 255.0 * 0.75
    out = np.empty((size, size, 4), dtype=np.uint8)
    out[..., :3] = np.round(base * (1 - a) + heat[..., :3] * a).astype(np.uint8)
    out[..., 3] = 255
    return encode_png(out)


# --- map layers -------------------------------------------------------------------------------
def results_geojson(results: Sequence[SearchResult]) -> dict[str, Any]:
    """Result footprints with ``rank``, ``score``, ``tile_id`` and ``colour`` properties."""
    lo, hi = score_range(results)
    return {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "id": r.tile_id,
                "geometry": r.footprint,
                "properties": {
                    "tile_id": r.tile_id,
                    "rank": r.rank,
                    "score": round(r.score, 4),
                    "colour": score_colour(r.score, lo, hi),
                },
            }
            for r in results
        ],
    }


def cached_tiles_layer(records: Sequence[dict[str, Any]]) -> LayerBuilder:
    """Thin outlines of the model's cached tiles: where a click finds a tile."""
    data = tile_grid_geojson(records)

    def add(m: folium.Map) -> None:
        if data["features"]:
            folium.GeoJson(
                data,
                name="cached tiles",
                style_function=lambda _f: CACHED_STYLE,
                interactive=False,
            ).add_to(m)

    return add


def results_layer(results: Sequence[SearchResult], selected: str | None) -> LayerBuilder:
    """Result footprints coloured by score, numbered by rank; the selected one outlined white."""
    data = results_geojson(results)

    def style(feature: dict[str, Any]) -> dict[str, Any]:
        props = feature["properties"]
        chosen = props["tile_id"] == selected
        return {
            "color": "#ffffff" if chosen else props["colour"],
            "fillColor": props["colour"],
            "weight": 4 if chosen else 2.5,
            "fillOpacity": 0.05 if chosen else 0.35,
            "className": "softmap-result",
        }

    def add(m: folium.Map) -> None:
        if not results:
            return
        group = folium.FeatureGroup(name="search results")
        folium.GeoJson(
            data,
            name="result footprints",
            style_function=style,
            tooltip=folium.GeoJsonTooltip(["rank", "score", "tile_id"], aliases=["#", "Score", ""]),
        ).add_to(group)
        lo, hi = score_range(results)
        for r in results:
            colour = score_colour(r.score, lo, hi)
            folium.Marker(
                [r.lat, r.lon],
                icon=folium.DivIcon(
                    html=(
                        f"<div class='softmap-rank' style='background:{colour};color:"
                        f"{text_colour(colour)};"
                        "border:1.5px solid #fff;border-radius:50%;width:22px;height:22px;"
                        "line-height:19px;text-align:center;font:bold 12px sans-serif'>"
                        f"{r.rank}</div>"
                    ),
                    icon_size=(22, 22),
                    icon_anchor=(11, 11),
                ),
                interactive=False,
            ).add_to(group)
        group.add_to(m)

    return add


def query_layer(
    positives: Sequence[dict[str, Any]], negatives: Sequence[dict[str, Any]]
) -> LayerBuilder:
    """Query tiles (cyan, dashed) and negative examples (red, dashed)."""

    def add(m: folium.Map) -> None:
        for records, style, name in (
            (positives, POSITIVE_STYLE, "query tiles"),
            (negatives, NEGATIVE_STYLE, "negative examples"),
        ):
            if records:
                folium.GeoJson(
                    tile_grid_geojson(records),
                    name=name,
                    style_function=lambda _f, style=style: {**style, "className": "softmap-query"},
                    interactive=False,
                ).add_to(m)

    return add


def heatmap_layer(hm: MatchHeatmap) -> LayerBuilder:
    """The selected result's patch heatmap over its footprint (its lon/lat bounding box)."""
    if not hm.footprint:
        return lambda _m: None
    coords = np.asarray(hm.footprint["coordinates"][0], dtype=float)
    w, s = coords.min(axis=0)
    e, n = coords.max(axis=0)
    url = png_data_url(heatmap_rgba(hm.scores, 8 * hm.scores.shape[0]))

    def add(m: folium.Map) -> None:
        overlay = folium.raster_layers.ImageOverlay(
            "data:,",
            bounds=[[float(s), float(w)], [float(n), float(e)]],
            name="match heatmap",
            opacity=0.85,
            interactive=False,
            className="softmap-heatmap",
        )
        overlay.url = url  # already a data URL; folium would try to read a string as a file
        overlay.add_to(m)

    return add


def response_summary(response: SearchResponse) -> str:
    """One line: how many results, of how many candidates, how, in what time."""
    method = {
        "mean": "mean of the query tiles",
        "mean-minus-negatives": "positives minus negatives",
        "classifier": "logistic regression on positives and negatives",
    }.get(response.method, response.method)
    suppressed = (
        f", {response.suppressed} touching results suppressed" if response.suppressed else ""
    )
    return (
        f"{len(response.results)} results of {response.candidates} {response.model_id} tiles in "
        f"{response.scope} · {method} · {response.engine} search{suppressed} · "
        f"{response.seconds * 1000:.0f} ms"
    )
