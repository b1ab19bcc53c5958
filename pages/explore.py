"""Explore: the scene on a map; choose a region (draw, click, type, upload), analyse, inspect.

This page only reads widgets, calls the backend (through ``app/``) and renders. Land-cover
layers, legend, area chart/table and class-probability bars plug in at the ``HOOK`` lists below.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import streamlit as st

from app import resources
from app.analysis import analyse
from app.errors import error_text, show_error, user_errors
from app.landcover_view import (
    CLASS_KEY,
    DEFAULT_CLASS,
    DEFAULT_OPACITY,
    DW_CLASSES,
    HEAD_KEY,
    LAYER_KEY,
    LAYER_STATE_KEY,
    LAYERS,
    OPACITY_KEY,
    TOKENS_KEY,
    landcover_layer,
    landcover_panel,
    tile_probabilities,
)
from app.map_view import (
    LayerBuilder,
    MapContent,
    MapView,
    build_map,
    content_key,
    imagery_control,
    seed_imagery,
    show_map,
)
from app.other_layers import NONE, OTHER_KEY, other_layers
from app.state import (
    Analysis,
    Selection,
    get_analysis,
    get_region,
    get_selected_tiles,
    get_selection,
    set_analysis,
    set_region,
    set_selected_tiles,
)
from app.tile_panel import TileSection, tile_panel
from app.url_state import take_pending_url, write_params, write_url
from backend.service import (
    ModelMeta,
    Region,
    SceneSource,
    SoftMapError,
    get_model_meta,
    parse_bbox,
    parse_geojson,
    region_grid_geojson,
    tile_at,
    tile_block_region,
    tile_grid_geojson,
)

PAGE = "explore"
#: A few km² of each demo scene with varied land cover, embedded in seconds on a CPU.
DEFAULT_BBOX = {
    "demo/virginia": "-75.66,37.64,-75.625,37.67",
    "demo/brandenburg": "12.60,52.48,12.63,52.495",
}
CLICK_MODES = ("Inspect a tile", "Region around the point")
#: A click in "region" mode selects this many tiles across, centred on the point.
POINT_REGION_TILES = 3
MAP_KEY = "explore.map"
BBOX_KEY = "explore.bbox"
#: Bumped by each Analyse: the map fits the analysed region (a new view token).
ANALYSED_KEY = "explore.analysed_count"

# --- HOOKS: where the land-cover features plug in ---------------------------------------------
#: HOOK(land cover): map layers drawn once a region is analysed (dominant class with opacity =
#: confidence, one class's probability, entropy). Each gets the analysis and returns a builder.
#: Then "Also show": a user class's probability or the Similar places results, if held.
ANALYSIS_LAYERS: list[Callable[[Analysis], LayerBuilder]] = [landcover_layer, other_layers]
#: HOOK(land cover): panels under the map for an analysed region (legend, area chart and table).
ANALYSIS_PANELS: list[Callable[[Analysis], None]] = [landcover_panel]
#: HOOK(land cover): sections of the tile panel (class-probability bars), given the tile record.
TILE_SECTIONS: list[TileSection] = [tile_probabilities]


def map_cache_key(content: MapContent, analysis: Analysis | None) -> str | None:
    """What the map shows, for :func:`show_map` to reuse its render (None: render it again).

    The land-cover layer follows from the analysis, the head and the layer choice; the
    "Also show" layers hold data of other pages, so a map with one of them is always rendered.
    """
    if analysis is None:
        return content_key(content, None)
    if st.session_state.get(OTHER_KEY, NONE) != NONE:
        return None
    shown = st.session_state.get(LAYER_STATE_KEY)
    choice = None if shown is None else repr(shown[0])
    head = st.session_state.get(f"{HEAD_KEY}.{analysis.model_id}")
    layers = (analysis.source_id, analysis.model_id, analysis.region_wkt, id(analysis), head)
    return content_key(content, (layers, choice))


def default_region(source: SceneSource) -> Region:
    """A small region of the scene that embeds in seconds on a CPU."""
    if source.id in DEFAULT_BBOX:
        return parse_bbox(DEFAULT_BBOX[source.id])
    c = source.footprint_lonlat.centroid
    return parse_bbox(f"{c.x - 0.02:.5f},{c.y - 0.015:.5f},{c.x + 0.02:.5f},{c.y + 0.015:.5f}")


def bbox_text(region: Region) -> str:
    return ",".join(f"{v:.5f}" for v in region.bounds)


@st.cache_data(show_spinner=False, max_entries=16)
def grid_geojson(source_id: str, region_wkt: str, chip: int, stride: int) -> dict[str, Any]:
    """The tile grid of a region (cached: it is redrawn on every rerun)."""
    from shapely import wkt

    region = Region(wkt.loads(region_wkt))
    return region_grid_geojson(region, resources.catalog().get(source_id), chip, stride)


def apply_link(source: SceneSource, selection: Selection) -> bool:
    """Take region and tiles from a link on the session's first run; True to analyse it."""
    url = take_pending_url()
    if url is None:
        return False
    try:
        region = url.region()
    except SoftMapError as e:
        show_error(e)
        region = None
    set_region(region or default_region(source))
    set_selected_tiles(url.tiles)
    st.session_state["explore.source"] = selection.source_id
    seed_display(url.extra)
    return url.analysed and region is not None


def seed_display(extra: dict[str, tuple[str, ...]]) -> None:
    """Imagery and land-cover layer settings from a link (before their widgets exist)."""

    def first(key: str) -> str:
        return (extra.get(key) or ("",))[0]

    seed_imagery(PAGE, extra)
    label = next((lbl for lbl, mode in LAYERS.items() if (mode or "off") == first("lc")), None)
    if label is not None:
        st.session_state[LAYER_KEY] = label
    if first("cls") in DW_CLASSES:
        st.session_state[CLASS_KEY] = DW_CLASSES.index(first("cls"))
    if first("op").isdigit() and 0 <= int(first("op")) <= 100:
        st.session_state[OPACITY_KEY] = int(first("op")) // 5 * 5
    if first("cells") in ("0", "1"):
        st.session_state[TOKENS_KEY] = first("cells") == "1"


def display_params(imagery_param: str | None) -> dict[str, str | list[str] | None]:
    """The display settings as URL parameters (defaults are left out, so links stay short)."""
    label = st.session_state.get(LAYER_KEY)
    mode = LAYERS.get(label) if isinstance(label, str) else "dominant"
    class_index = st.session_state.get(CLASS_KEY, DEFAULT_CLASS)
    opacity = st.session_state.get(OPACITY_KEY, DEFAULT_OPACITY)
    tokens = st.session_state.get(TOKENS_KEY, True)
    return {
        "img": imagery_param,
        "lc": None if mode == "dominant" else (mode or "off"),
        "cls": DW_CLASSES[class_index] if class_index != DEFAULT_CLASS else None,
        "op": str(opacity) if opacity != DEFAULT_OPACITY else None,
        "cells": None if tokens else "0",
    }


def follow_source(source: SceneSource, selection: Selection) -> None:
    """A different scene in the sidebar: start from its default region."""
    if st.session_state.get("explore.source") != selection.source_id:
        st.session_state["explore.source"] = selection.source_id
        set_region(default_region(source))
        set_analysis(None)


def on_bbox_change() -> None:
    try:
        set_region(parse_bbox(st.session_state[BBOX_KEY]))
        st.session_state.pop("explore.bbox_error", None)
    except SoftMapError as e:
        st.session_state["explore.bbox_error"] = e


def region_inputs(region: Region | None) -> None:
    """Typing a bbox, uploading GeoJSON; drawing and clicking happen on the map."""
    if region is not None and st.session_state.get("explore.bbox_of") != region.geometry.wkt:
        st.session_state[BBOX_KEY] = bbox_text(region)
        st.session_state["explore.bbox_of"] = region.geometry.wkt
    left, right = st.columns([3, 2])
    left.text_input(
        "Region as W,S,E,N (lon/lat) — or draw a rectangle or polygon on the map",
        key=BBOX_KEY,
        on_change=on_bbox_change,
    )
    error = st.session_state.get("explore.bbox_error")
    if isinstance(error, SoftMapError):
        show_error(error, where=left)
    upload = right.file_uploader(
        "…or upload GeoJSON (EPSG:4326)", type=["geojson", "json"], key="explore.upload"
    )
    if upload is not None and st.session_state.get("explore.upload_seen") != upload.file_id:
        try:
            set_region(parse_geojson(upload.getvalue()))
            st.session_state["explore.upload_seen"] = upload.file_id
        except SoftMapError as e:
            right.error(error_text(e), icon=":material/error:")


def selected_record(
    tile_id: str, analysis: Analysis | None, source: SceneSource
) -> Mapping[str, Any] | None:
    """The stored record of a tile: from the analysis, else from the cache (if it has it)."""
    if analysis is not None:
        for t in analysis.tiles:
            if t["tile_id"] == tile_id:
                return t
    with user_errors():
        found = resources.operations().tile_records([tile_id])
        return found[0] if found else None
    return None


def handle_map_events(events: Any, source: SceneSource, meta: ModelMeta, click_mode: str) -> None:
    """A drawing becomes the region; a click selects a tile or a region around the point."""
    if events.drawing is not None:
        with user_errors():
            set_region(parse_geojson(events.drawing))
            st.rerun()
    if events.clicked is not None:
        lon, lat = events.clicked
        if click_mode == CLICK_MODES[1]:
            # The 3 × 3 tiles around the clicked one, on the model's own grid (a square of
            # 3 tiles' width centred on the point would touch 4 × 4 of them).
            block = tile_block_region(
                source, lon, lat, meta.chip_size, meta.tile_stride, POINT_REGION_TILES
            )
            if block is None:
                st.warning(
                    f"{lat:.5f}, {lon:.5f} (lat, lon) is outside {source.title}: click on the "
                    "scene's imagery.",
                    icon=":material/ads_click:",
                )
            else:
                set_region(block)
                st.rerun()
        else:
            tile_id = tile_at(source, lon, lat, meta.chip_size, meta.tile_stride)
            if tile_id is not None:
                set_selected_tiles((tile_id,))
                st.rerun()


def run_analysis(region: Region, source: SceneSource, selection: Selection) -> None:
    with user_errors():
        set_analysis(analyse(region, source, selection.model_id))
        # Show the analysed region: a new view token makes the map fit it (map_view.MapView).
        st.session_state[ANALYSED_KEY] = st.session_state.get(ANALYSED_KEY, 0) + 1
        st.rerun()  # the sidebar, drawn before, shows the new cache counts


def map_view(source: SceneSource, region: Region | None, analysis: Analysis | None) -> MapView:
    """The scene until a region is analysed; then that region with a margin, once per Analyse.

    Choosing another region keeps the view (the token only changes when Analyse is pressed).
    """
    token = f"{source.id}:{st.session_state.get(ANALYSED_KEY, 0)}"
    if analysis is None or region is None:
        return MapView(source.bbox_lonlat, token, padding=0)
    w, s, e, n = region.bounds
    dx, dy = (e - w) * 0.25, (n - s) * 0.25
    return MapView((w - dx, s - dy, e + dx, n + dy), token, padding=0)


def page() -> None:
    selection = get_selection()
    if selection is None:
        st.stop()
    source = resources.catalog().get(selection.source_id)
    meta = get_model_meta(selection.model_id)
    analyse_link = apply_link(source, selection)
    follow_source(source, selection)
    region = get_region()

    st.header(f"Explore {source.title}", anchor=False)
    st.caption(
        f"{source.sensor} {source.product_level}, {source.date}, {source.crs}, "
        f"{source.size_km[0]} × {source.size_km[1]} km. {source.attribution}."
    )
    region_inputs(region)
    region = get_region()

    controls = st.columns([2, 2, 1, 1])
    imagery, imagery_param = imagery_control(PAGE, controls[0])
    click_mode = controls[1].segmented_control(
        "A click on the map", CLICK_MODES, default=CLICK_MODES[0], key="explore.click_mode"
    )
    show_grid = controls[2].toggle("Tile grid", key="explore.grid")
    go = controls[3].button(
        "Analyse", type="primary", disabled=region is None, key="explore.analyse"
    )

    if (go or analyse_link) and region is not None:
        run_analysis(region, source, selection)
    analysis = get_analysis()
    if analysis is not None and not analysis.matches(selection, region):
        analysis = None

    selected = get_selected_tiles()
    selected_tile = selected[-1] if selected else None
    record = selected_record(selected_tile, analysis, source) if selected_tile else None
    content = MapContent(
        source=source,
        others=resources.catalog().list(),
        imagery=imagery,
        region=region,
        grid=(
            grid_geojson(source.id, region.geometry.wkt, meta.chip_size, meta.tile_stride)
            if show_grid and region is not None and analysis is None
            else None
        ),
        tiles=tile_grid_geojson(analysis.tiles) if analysis is not None else None,
        # Over the land-cover layer the tile outlines only hide colours: off unless asked for.
        tile_outlines=bool(show_grid),
        selected=tile_grid_geojson([record]) if record is not None else None,
    )
    layers = [hook(analysis) for hook in ANALYSIS_LAYERS] if analysis is not None else []
    events = show_map(
        build_map(content, layers),
        key=f"{MAP_KEY}.{source.id}",
        view=map_view(source, region, analysis),
        cache_key=map_cache_key(content, analysis),
    )
    handle_map_events(events, source, meta, click_mode or CLICK_MODES[0])

    if region is not None:
        st.caption(f"Region: {region.describe()}")
    if analysis is not None:
        r = analysis.result
        st.success(
            f"{r.tiles} tiles analysed with {r.model}: {r.computed} computed, {r.cached} from "
            f"the cache, {r.skipped} skipped (nodata), in {r.seconds:.1f} s on {r.device}.",
            icon=":material/check_circle:",
        )
        for panel in ANALYSIS_PANELS:
            panel(analysis)
    if selected_tile is not None:
        if record is not None:
            tile_panel(source, record, tuple(TILE_SECTIONS))
        else:
            st.info(f"Tile {selected_tile} is not analysed yet: analyse a region that covers it.")
    write_url(
        page=PAGE,
        source=selection.source_id,
        model=selection.model_id,
        region=region,
        tiles=selected,
        analysed=analysis is not None,
    )
    write_params(display_params(imagery_param))


page()
