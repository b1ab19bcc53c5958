"""The app's maps: imagery overlays, footprints, the region, tiles, drawing; the view kept.

The view (centre and zoom) never goes through Python. streamlit-folium can return it and take it
back as ``center``/``zoom``, but a returned view that is passed back races the browser: the
map moves, reports its view, the rerun passes an older view back, the map jumps to it, reports
that… (issue 12: zoom flipping 11↔13 and ~50 websocket messages a second after Analyse). So
:func:`show_map` asks only for clicks and drawings, and the browser keeps the view itself:
:class:`ViewMemory` stores it in the tab's ``sessionStorage`` on every move and restores it when
the map is rebuilt (new layers mean new HTML and a fresh iframe). A page says where the map opens
with a :class:`MapView`: its bounds are fitted when the map first opens, and again whenever its
``token`` changes (new results, a new analysis); with the same token the user's view is kept.
Layer choices are Streamlit widgets, so they survive too.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import folium
import folium.plugins
import streamlit as st
import streamlit_folium
from branca.element import MacroElement
from jinja2 import Template
from shapely.geometry import box
from shapely.geometry.base import BaseGeometry
from shapely.ops import unary_union

from app import resources
from app.offline_map import base_map
from app.state import keep, kept
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


@dataclass(frozen=True)
class MapView:
    """Where a map opens: ``bounds`` (lon/lat W, S, E, N) fitted with ``padding`` pixels.

    The browser keeps the view the user moved to for as long as ``token`` stays the same; a new
    token (new results, a new analysis) fits ``bounds`` again. No bounds: the map's own view.
    """

    bounds: tuple[float, float, float, float] | None = None
    token: str = ""
    padding: int = 20


class ViewMemory(MacroElement):  # type: ignore[misc]
    """Keeps a map's view in the tab's ``sessionStorage`` (per map key and view token).

    Added last, after every ``fit_bounds``, so a kept view of the same token wins over the fit.
    """

    _template = Template(
        """
        {% macro script(this, kwargs) %}
        (function (map) {
            var slot = {{ this.slot|tojson }}, token = {{ this.token|tojson }};
            try {
                var kept = JSON.parse(window.sessionStorage.getItem(slot) || "null");
                if (kept && kept.token === token) {
                    map.setView([kept.lat, kept.lng], kept.zoom, {animate: false});
                }
            } catch (e) {}
            map.on("moveend", function () {
                try {
                    var c = map.getCenter();
                    window.sessionStorage.setItem(slot, JSON.stringify(
                        {token: token, lat: c.lat, lng: c.lng, zoom: map.getZoom()}));
                } catch (e) {}
            });
        })({{ this._parent.get_name() }});
        {% endmacro %}
        """
    )

    def __init__(self, key: str, token: str) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._name = "ViewMemory"
        self.slot = f"softmap.view.{key}"
        self.token = token


def _has_draw(m: folium.Map) -> bool:
    return any(isinstance(c, folium.plugins.Draw) for c in m._children.values())


#: Session-state counter of map renders (a rerun with the same map must not add one).
RENDERS_KEY = "app.map_renders"
#: Reuse a map rendered on an earlier rerun (False: render every rerun, as before; for benches).
REUSE_RENDERS = True


def _render(m: folium.Map, key: str, returned: list[str]) -> dict[str, Any]:
    """What :func:`streamlit_folium.st_folium` sends its component, computed once per map.

    Rendering and serialising the map is nearly all of a rerun's time on a whole scene (900 tile
    features: 2-3 s), so :func:`show_map` keeps this for as long as the map stays the same. The
    steps are st_folium's own (streamlit-folium 0.2x), for a plain :class:`folium.Map`.
    """
    sf = streamlit_folium
    m.get_root().render()
    m.render()
    html, header = sf._get_html(m), sf._get_header(m)
    leaflet = sf._get_map_string(m)
    (s, w), (n, e) = m.get_bounds()
    defaults: dict[str, Any] = {
        "last_clicked": None,
        "all_drawings": None,
        "bounds": {"_southWest": {"lat": s, "lng": w}, "_northEast": {"lat": n, "lng": e}},
    }
    css: list[str] = []
    js: list[str] = []

    def walk(el: Any) -> Any:
        yield el
        for child in getattr(el, "_children", {}).values():
            yield from walk(child)

    for el in walk(m):
        css.extend(href for _, href in getattr(el, "default_css", []))
        js.extend(src for _, src in getattr(el, "default_js", []))
    st.session_state[RENDERS_KEY] = st.session_state.get(RENDERS_KEY, 0) + 1
    return {
        "script": leaflet,
        "header": header,
        "html": html,
        "id": sf.get_full_id(m),
        "key": sf.generate_js_hash(leaflet, key, False),
        "returned_objects": returned,
        "default": {k: v for k, v in defaults.items() if k in returned},
        "css_links": list(dict.fromkeys(css)),
        "js_links": list(dict.fromkeys(js)),
    }


def show_map(
    m: folium.Map,
    key: str,
    height: int = 560,
    view: MapView | None = None,
    cache_key: str | None = None,
) -> MapEvents:
    """Render the map and report new drawings and clicks (never its view: see the module).

    Args:
        m: the map (from :func:`build_map`).
        key: the map's key; also where the browser keeps its view.
        height: in pixels.
        view: where it opens; the user's view is kept while ``view.token`` stays the same.
        cache_key: what the map shows (content, layers, their data version): while it stays the
            same the map rendered on an earlier rerun is sent again, and ``m`` is not rendered.
            None: render every time.
    """
    view = view or MapView()
    draw = _has_draw(m)
    # Clicks, and drawings where the map draws. Not "last_active_drawing": streamlit-folium sets
    # it on a click on any GeoJSON feature too (a tile), which read as drawing that tile as the
    # region (issue 12). "all_drawings" lists only the shapes drawn with the Draw tool.
    returned = ["last_clicked", "all_drawings"] if draw else ["last_clicked"]
    slot = f"{key}.rendered"
    reuse = cache_key is not None and REUSE_RENDERS
    full_key = view_token(cache_key, view, height, returned) if reuse else None
    kept_render = st.session_state.get(slot)
    if full_key is not None and kept_render is not None and kept_render[0] == full_key:
        args = kept_render[1]
    else:
        if view.bounds is not None:
            w, s, e, n = view.bounds
            m.fit_bounds([[s, w], [n, e]], padding=(view.padding, view.padding))
        m.add_child(ViewMemory(key, view.token))
        args = _render(m, key, returned)
        st.session_state[slot] = (full_key, args)  # one kept render per map key

    def on_change() -> None:  # as st_folium's: the map's key holds its latest output
        st.session_state[key] = st.session_state.get(args["key"], {})

    output = streamlit_folium._component_func(
        **args,
        height=height,
        width=None,
        zoom=None,
        center=None,
        feature_group=None,
        return_on_hover=False,
        layer_control=None,
        pixelated=False,
        on_change=on_change,
        wrap_longitude=False,
    )
    output = output or {}
    seen: dict[str, Any] = st.session_state.setdefault(f"{key}.seen", {})
    drawings = output.get("all_drawings") or None
    clicked = output.get("last_clicked")
    new_drawing = drawings[-1] if drawings and drawings != seen.get("drawings") else None
    new_click = (
        (float(clicked["lng"]), float(clicked["lat"]))
        if clicked and clicked != seen.get("clicked")
        else None
    )
    seen["drawings"], seen["clicked"] = drawings, clicked
    if new_drawing is not None:  # a drawing's last click is not a separate click
        return MapEvents(drawing=new_drawing)
    return MapEvents(clicked=new_click)


# --- the map of the tile pages (Similar places, Embedding space, My classes) --------------------
#: The ``img`` URL parameter: imagery label → value (True colour, the default, is left out).
IMAGERY_PARAM: dict[str, str | None] = {
    "True colour": None,
    "False colour (NIR)": "false",
    "None": "none",
}
DEFAULT_IMAGERY = "True colour"


def seed_imagery(page: str, extra: dict[str, tuple[str, ...]]) -> None:
    """Take a link's ``img`` parameter for the page's imagery control (before it exists)."""
    value = (extra.get("img") or (None,))[0]
    label = next((lbl for lbl, v in IMAGERY_PARAM.items() if v == value and value), None)
    if label is not None:
        st.session_state[f"{page}.imagery.kept"] = label


def imagery_control(page: str, where: Any = None) -> tuple[Composite | None, str | None]:
    """The page's imagery choice (kept across pages); returns it and its ``img`` URL value."""
    key = f"{page}.imagery"
    kept(key, DEFAULT_IMAGERY)
    label = keep(key, (where or st).segmented_control("Imagery", list(IMAGERY), key=key))
    label = label or "None"  # segmented controls can be unselected: no imagery
    return IMAGERY.get(label), IMAGERY_PARAM.get(label)


def records_view(
    records: Sequence[Mapping[str, Any]], token: str, extra: BaseGeometry | None = None
) -> MapView:
    """Open on these tile records (and ``extra``, e.g. the region); refit when ``token`` changes."""
    boxes = [box(r["min_lon"], r["min_lat"], r["max_lon"], r["max_lat"]) for r in records]
    if extra is not None:
        boxes.append(extra)
    if not boxes:
        return MapView(None, token)
    w, s, e, n = unary_union(boxes).bounds
    return MapView((w, s, e, n), token)


def tiles_map(
    page: str,
    source: SceneSource,
    region: Region | None,
    imagery: Composite | None,
    layers: Sequence[LayerBuilder],
    view: MapView,
    height: int = 560,
    layers_key: object = None,
) -> MapEvents:
    """The map of a tile page: imagery, scene outlines, the region and the page's layers.

    No drawing (regions are chosen on Explore); clicks come back as :class:`MapEvents`. The
    browser keeps the user's view while ``view.token`` stays the same (:func:`show_map`).
    ``layers_key`` names what ``layers`` draw (their data and styles): given, a rerun with the
    same content and key reuses the rendered map (:func:`show_map`); None renders every time.
    """
    content = MapContent(
        source=source,
        others=resources.catalog().list(),
        imagery=imagery,
        region=region,
        draw=False,
    )
    cache_key = None if layers_key is None else content_key(content, layers_key)
    return show_map(
        build_map(content, layers),
        key=f"{page}.map.{source.id}",
        height=height,
        view=view,
        cache_key=cache_key,
    )


def content_key(content: MapContent, layers_key: object) -> str:
    """A key of what a map shows: its content and the page's name for its layers."""
    region = None if content.region is None else content.region.to_geojson()
    return view_token(
        content.source.id,
        str(content.source.root),
        [o.id for o in content.others],
        content.imagery,
        region,
        content.grid,
        content.tiles,
        content.selected,
        content.draw,
        content.tile_outlines,
        layers_key,
    )


def view_token(*parts: object) -> str:
    """A short token for :class:`MapView` from whatever should refit the map when it changes."""
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]
