"""Embed a region: pick it on the map (draw) or as a bbox, then embed it with a progress bar.

The interim demo page of the backend core; the full Explore page replaces it later.
"""

from __future__ import annotations

import json
from typing import Any

import folium
import folium.plugins
import streamlit as st
from streamlit_folium import st_folium

from app import resources
from app.errors import show_error, user_errors
from app.offline_map import base_map
from app.state import get_selection
from backend.cache import EmbeddingCache
from backend.errors import SoftMapError
from backend.inference import Progress
from backend.pipeline import EmbedResult, embed_region
from backend.preview import Composite, Preview, scene_preview
from backend.regions import Region, parse_bbox, parse_geojson
from backend.settings import get_settings
from backend.sources import SceneSource

#: A few km² of each demo scene with varied land cover, embedded in seconds on a CPU.
DEFAULT_BBOX = {
    "demo/virginia": "-75.66,37.64,-75.625,37.67",
    "demo/brandenburg": "12.60,52.48,12.63,52.495",
}
_RESULT = "embed.result"
_TILES = "embed.tiles"


def default_bbox(source: SceneSource) -> str:
    if source.id in DEFAULT_BBOX:
        return DEFAULT_BBOX[source.id]
    c = source.footprint_lonlat.centroid
    return f"{c.x - 0.02:.4f},{c.y - 0.015:.4f},{c.x + 0.02:.4f},{c.y + 0.015:.4f}"


@st.cache_data(max_entries=8, show_spinner=False)
def preview(source_id: str, composite: Composite) -> Preview:
    return scene_preview(resources.catalog().get(source_id), composite)


def build_map(
    source: SceneSource, region: Region | None, tiles: list[dict[str, Any]]
) -> folium.Map:
    m = base_map(source.bbox_lonlat)
    layers: tuple[tuple[Composite, str], ...] = (
        ("true", "True colour (B4, B3, B2)"),
        ("false", "False colour (B8, B4, B3)"),
    )
    for composite, title in layers:
        image = preview(source.id, composite)
        w, s, e, n = image.bounds
        folium.raster_layers.ImageOverlay(
            image.rgba, bounds=[[s, w], [n, e]], name=title, show=composite == "true"
        ).add_to(m)
    for s in resources.catalog().list():
        folium.GeoJson(
            s.summary()["footprint"],
            name=s.id,
            style_function=lambda _f, active=(s.id == source.id): {
                "color": "#2f6fb0" if active else "#7b8794",
                "weight": 2 if active else 1,
                "fillOpacity": 0.0,
                "dashArray": None if active else "4 4",
            },
            tooltip=f"{s.id}: {s.title}, {s.date}",
        ).add_to(m)
    if region is not None:
        folium.GeoJson(
            region.to_geojson(),
            name="region",
            style_function=lambda _f: {"color": "#ff5c5c", "weight": 2.5, "fillOpacity": 0.0},
            tooltip=f"Region: {region.area_km2:.1f} km²",
        ).add_to(m)
    if tiles:
        features = [
            {
                "type": "Feature",
                "geometry": json.loads(t["footprint"]),
                "properties": {"tile": t["tile_id"], "nodata": f"{t['nodata_fraction']:.0%}"},
            }
            for t in tiles
        ]
        folium.GeoJson(
            {"type": "FeatureCollection", "features": features},
            name="embedded tiles",
            style_function=lambda _f: {"color": "#ffd43b", "weight": 1.5, "fillOpacity": 0.1},
            tooltip=folium.GeoJsonTooltip(["tile", "nodata"], aliases=["Tile", "Nodata"]),
        ).add_to(m)
    folium.plugins.Draw(
        export=False,
        draw_options={
            "polyline": False,
            "circle": False,
            "circlemarker": False,
            "marker": False,
            "polygon": True,
            "rectangle": True,
        },
        edit_options={"edit": False},
    ).add_to(m)
    folium.LayerControl(collapsed=False).add_to(m)
    return m


def run_embedding(region: Region, source: SceneSource, model_id: str) -> EmbedResult:
    bar = st.progress(0.0, text="Planning tiles…")

    def progress(p: Progress) -> None:
        eta = f", about {p.eta_s:.0f} s left" if p.eta_s is not None and p.done else ""
        bar.progress(
            p.done / p.total if p.total else 1.0,
            text=f"{p.done}/{p.total} tiles · {p.tiles_per_s:.1f} tiles/s{eta}",
        )

    settings = get_settings()
    with EmbeddingCache(settings.db_path) as cache:
        result = embed_region(
            region,
            source,
            resources.model(model_id),
            cache,
            engine=resources.engine(model_id),
            settings=settings,
            catalog=resources.catalog(),
            progress=progress,
        )
        st.session_state[_TILES] = cache.tiles(list(result.tile_ids))
    bar.empty()
    return result


def page() -> None:
    selection = get_selection()
    if selection is None:
        st.stop()
    source = resources.catalog().get(selection.source_id)
    st.header(f"Embed a region of {source.title}")
    st.caption(
        f"{source.sensor} {source.product_level}, {source.date}, {source.crs}, "
        f"{source.size_km[0]} × {source.size_km[1]} km. {source.attribution}."
    )
    bbox_text = st.text_input(
        "Region as W,S,E,N (lon/lat) — or draw a rectangle or polygon on the map",
        value=default_bbox(source),
        key=f"embed.bbox.{source.id}",
    )
    region: Region | None = None
    drawn = st.session_state.get("embed.drawn")
    try:
        region = parse_geojson(drawn) if drawn else parse_bbox(bbox_text)
    except SoftMapError as e:
        show_error(e)
    tiles = st.session_state.get(_TILES, [])
    output = st_folium(
        build_map(source, region, tiles),
        key="embed.map",
        height=520,
        use_container_width=True,
        returned_objects=["last_active_drawing"],
    )
    drawing = (output or {}).get("last_active_drawing")
    if drawing and drawing != drawn:
        st.session_state["embed.drawn"] = drawing
        st.rerun()
    cols = st.columns([1, 1, 4])
    if drawn and region is not None:
        cols[2].info(f"Using the shape drawn on the map ({region.area_km2:.1f} km²).")
    if drawn and cols[1].button("Use the bbox"):
        st.session_state.pop("embed.drawn", None)
        st.rerun()
    if cols[0].button("Embed region", type="primary", disabled=region is None) and region:
        with user_errors():
            st.session_state[_RESULT] = run_embedding(region, source, selection.model_id)
            st.rerun()
    result: EmbedResult | None = st.session_state.get(_RESULT)
    if result is not None:
        st.success(
            f"{result.tiles} tiles with {result.model}: {result.computed} computed, "
            f"{result.cached} from the cache, {result.skipped} skipped (nodata), "
            f"in {result.seconds:.1f} s on {result.device}."
        )
        m = st.columns(4)
        m[0].metric("Tiles", result.tiles)
        m[1].metric("Computed", result.computed)
        m[2].metric("Cached", result.cached)
        m[3].metric("Tiles/s", f"{result.tiles_per_s:.1f}")


page()
