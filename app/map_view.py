"""The Explore map: imagery overlays, footprints, the region, tiles, drawing; view kept on reruns.

The map's HTML only changes when what it shows changes (imagery, region, tiles); its view
(centre and zoom) is returned by streamlit-folium and passed back on every rerun, so zoom and
position survive reruns and re-renders. Layer choices are Streamlit widgets, so they survive too.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import folium
import folium.plugins
import streamlit as st
from streamlit_folium import st_folium

from app import resources
from app.offline_map import base_map
from backend.imagery.preview import Composite
from backend.imagery.regions import Region
from backend.imagery.sources import SceneSource

#: Imagery choices: label → composite (None: outlines only).
IMAGERY: dict[str, Composite | None] = {
    "True colour": "true",
    "False colour (NIR)": "false",
    "None": None,
}
REGION_STYLE = {"color": "#ff5c5c", "weight": 2.5, "fillOpacity": 0.0}
# Thin lines: the grid and the tile outlines must not hide the imagery or the layers under them.
GRID_STYLE = {"color": "#ffffff", "weight": 0.5, "opacity": 0.6, "fillOpacity": 0.0}
TILE_STYLE = {"color": "#ffd43b", "weight": 0.6, "opacity": 0.8, "fillOpacity": 0.0}
#: Analysed tiles with their outlines off: nothing drawn, the tile tooltips still answer a hover.
TILE_HIDDEN_STYLE = {"color": "#ffd43b", "weight": 0, "opacity": 0.0, "fillOpacity": 0.0}
SELECTED_STYLE = {"color": "#00e5ff", "weight": 3, "fillOpacity": 0.15}

#: A layer added on top of the base layers (land cover, probabilities, search results…).
LayerBuilder = Callable[[folium.Map], None]


@dataclass(frozen=True)
class MapEvents:
    """What the user did on the map since the last rerun (None: nothing new)."""

    drawing: dict[str, Any] | None = None
    clicked: tuple[float, float] | None = None  # (lon, lat)


@dataclass(frozen=True)
class MapContent:
    """Everything the map shows; equal contents give identical HTML (no re-render)."""

    source: SceneSource
    others: Sequence[SceneSource]
    imagery: Composite | None
    region: Region | None
    grid: dict[str, Any] | None = None
    tiles: dict[str, Any] | None = None
    selected: dict[str, Any] | None = None
    draw: bool = True
    #: Draw the outlines of ``tiles`` (off once a land-cover or search layer is on the map).
    tile_outlines: bool = True


def build_map(content: MapContent, layers: Sequence[LayerBuilder] = ()) -> folium.Map:
    """A folium map of the scene with the chosen layers (offline assets only)."""
    source = content.source
    m = base_map(source.bbox_lonlat)
    if content.imagery is not None:
        url, (w, s, e, n) = resources.overlay_url(source.id, content.imagery, str(source.root))
        overlay = folium.raster_layers.ImageOverlay(
            "data:,", bounds=[[s, w], [n, e]], name=f"Scene ({content.imagery} colour)"
        )
        overlay.url = url  # folium would read a root-relative URL as a local file path
        overlay.add_to(m)
    for other in content.others:
        active = other.id == source.id
        folium.GeoJson(
            other.summary()["footprint"],
            name=other.id,
            style_function=lambda _f, active=active: {
                "color": "#2f6fb0" if active else "#7b8794",
                "weight": 2 if active else 1,
                "fillOpacity": 0.0,
                "dashArray": None if active else "4 4",
            },
            interactive=False,
        ).add_to(m)
    for layer in layers:
        layer(m)
    if content.grid is not None:
        folium.GeoJson(
            content.grid, name="tile grid", style_function=lambda _f: GRID_STYLE, interactive=False
        ).add_to(m)
    if content.region is not None:
        folium.GeoJson(
            content.region.to_geojson(),
            name="region",
            style_function=lambda _f: REGION_STYLE,
            interactive=False,
        ).add_to(m)
    if content.tiles is not None:
        folium.GeoJson(
            content.tiles,
            name="analysed tiles",
            style_function=lambda _f, on=content.tile_outlines: (
                TILE_STYLE if on else TILE_HIDDEN_STYLE
            ),
            tooltip=folium.GeoJsonTooltip(
                ["tile_id", "nodata_fraction"], aliases=["Tile", "Nodata"]
            ),
        ).add_to(m)
    if content.selected is not None:
        folium.GeoJson(
            content.selected,
            name="selected tile",
            style_function=lambda _f: SELECTED_STYLE,
            interactive=False,
        ).add_to(m)
    if content.draw:
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
    return m


def show_map(m: folium.Map, key: str, height: int = 560) -> MapEvents:
    """Render the map and report new drawings and clicks.

    The view (centre, zoom) is stored under ``<key>.view`` and passed back on each rerun.
    """
    view = st.session_state.get(f"{key}.view")
    output = st_folium(
        m,
        key=key,
        height=height,
        use_container_width=True,
        returned_objects=["last_active_drawing", "last_clicked", "center", "zoom"],
        center=view[0] if view else None,
        zoom=view[1] if view else None,
    )
    output = output or {}
    center, zoom = output.get("center"), output.get("zoom")
    if center and zoom is not None:
        st.session_state[f"{key}.view"] = ((center["lat"], center["lng"]), zoom)
    seen: dict[str, Any] = st.session_state.setdefault(f"{key}.seen", {})
    drawing = output.get("last_active_drawing")
    clicked = output.get("last_clicked")
    events = MapEvents(
        drawing=drawing if drawing and drawing != seen.get("drawing") else None,
        clicked=(
            (float(clicked["lng"]), float(clicked["lat"]))
            if clicked and clicked != seen.get("clicked")
            else None
        ),
    )
    seen["drawing"], seen["clicked"] = drawing, clicked
    if events.drawing is not None:  # a drawing's last click is not a separate click
        return MapEvents(drawing=events.drawing)
    return events
