"""leafmap maps that render with no network: local Leaflet assets and a bundled vector basemap.

Every map of the app is a `leafmap.foliumap.Map` built by :func:`base_map` (a folium map, so
streamlit-folium renders it). folium, streamlit-folium and leafmap's controls load Leaflet (and
jQuery, Bootstrap, awesome-markers, Font Awesome, plugins) from public CDNs; offline, the first
script that fails to load aborts streamlit-folium's loader and the map never appears. This module
points folium at the copies under `app/static/leaflet/` (served by Streamlit at `/app/static/...`
when `server.enableStaticServing` is on): Leaflet, Leaflet.draw, leaflet.fullscreen (leafmap's
fullscreen control) and leaflet-side-by-side (the swipe control of leafmap's split map). Tile
layers are replaced with Natural Earth outlines shipped in `assets/basemap/`. leafmap's other
controls (measure, locate, minimap, geocoder search, draggable legends) would load CDN assets and
are left off; `remote_assets(m)` lists what a map would still fetch.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import branca.colormap
import folium
import folium.plugins
import leafmap.foliumap as leafmap
import shapely
from branca.element import Element, Figure, MacroElement
from folium.elements import JSCSSMixin
from jinja2 import Template
from shapely.geometry import box, mapping, shape

STATIC_URL = "/app/static/leaflet"
"""Where Streamlit serves `app/static/leaflet/`; root-relative, so it resolves in the iframe too."""

# Only Leaflet itself: jQuery, Bootstrap and awesome-markers serve folium.Icon, popups' Bootstrap
# styling and `GeoJson(embed=False)`, none of which SoftMap uses. An element that needs them must
# bring local copies (see `remote_assets`).
MAP_JS: list[tuple[str, str]] = [("leaflet", f"{STATIC_URL}/leaflet.js")]
MAP_CSS: list[tuple[str, str]] = [("leaflet_css", f"{STATIC_URL}/leaflet.css")]
DRAW_JS: list[tuple[str, str]] = [("leaflet_draw_js", f"{STATIC_URL}/draw/leaflet.draw.js")]
DRAW_CSS: list[tuple[str, str]] = [("leaflet_draw_css", f"{STATIC_URL}/draw/leaflet.draw.css")]
FULLSCREEN_JS: list[tuple[str, str]] = [
    ("Control.Fullscreen.js", f"{STATIC_URL}/fullscreen/Control.FullScreen.js")
]
FULLSCREEN_CSS: list[tuple[str, str]] = [
    ("Control.FullScreen.css", f"{STATIC_URL}/fullscreen/Control.FullScreen.css")
]
SIDE_BY_SIDE_JS: list[tuple[str, str]] = [
    ("leaflet.sidebyside", f"{STATIC_URL}/side-by-side/leaflet-side-by-side.js")
]
SIDE_BY_SIDE_CSS: list[tuple[str, str]] = [
    ("leaflet.sidebyside.layout", f"{STATIC_URL}/side-by-side/layout.css"),
    ("leaflet.sidebyside.range", f"{STATIC_URL}/side-by-side/range.css"),
]

BASEMAP_DIR = Path(__file__).resolve().parent.parent / "assets" / "basemap"
OUTLINE_PATH = BASEMAP_DIR / "ne_50m_admin_0_countries.geojson"
DETAIL_PATH = BASEMAP_DIR / "coast_detail.geojson"

BACKGROUND = "#eef2f6"
OUTLINE_STYLE: dict[str, Any] = {"color": "#8a97a5", "weight": 1, "opacity": 0.9, "fill": False}
DETAIL_STYLE: dict[str, Any] = {"color": "#5b6878", "weight": 1.2, "opacity": 0.9, "fill": False}
ATTRIBUTION = "Outlines: Natural Earth"
WORLD_VIEW: dict[str, Any] = {"location": (20.0, 0.0), "zoom_start": 2}


def use_offline_assets() -> None:
    """Point folium's map template and the plugins SoftMap uses at the local copies.

    Idempotent: it assigns fresh lists to the class attributes each time, so calling it on every
    Streamlit rerun is cheap and safe. (`leafmap.foliumap.Map` subclasses `folium.Map`, so it
    inherits the map's lists.)
    """
    folium.Map.default_js = list(MAP_JS)
    folium.Map.default_css = list(MAP_CSS)
    folium.plugins.Draw.default_js = list(DRAW_JS)
    folium.plugins.Draw.default_css = list(DRAW_CSS)
    folium.plugins.Fullscreen.default_js = list(FULLSCREEN_JS)
    folium.plugins.Fullscreen.default_css = list(FULLSCREEN_CSS)
    folium.plugins.SideBySideLayers.default_js = list(SIDE_BY_SIDE_JS)
    folium.plugins.SideBySideLayers.default_css = list(SIDE_BY_SIDE_CSS)


#: leafmap controls that would load assets from a CDN: always off (see the module docstring).
_REMOTE_CONTROLS = {
    "draw_control": False,  # leafmap's Draw has no options; map_view adds a configured one
    "measure_control": False,
    "locate_control": False,
    "minimap_control": False,
    "search_control": False,
    "latlon_control": False,
}


def base_map(
    bounds_lonlat: tuple[float, float, float, float] | None = None, **kwargs: Any
) -> leafmap.Map:
    """Build a leafmap map with no tile layer, a light background and the bundled outlines.

    Args:
        bounds_lonlat: `(west, south, east, north)` in degrees to fit the view to; the whole
            world when None.
        **kwargs: passed to `leafmap.foliumap.Map` (they override the defaults here, `tiles`
            and `fullscreen_control` included).

    Returns:
        The map, with `use_offline_assets` already applied.
    """
    use_offline_assets()
    options: dict[str, Any] = {
        "tiles": None,
        "fullscreen_control": True,
        "layers_control": False,
        **WORLD_VIEW,
        **kwargs,
        **_REMOTE_CONTROLS,
    }
    m = leafmap.Map(**options)
    # leafmap hands its own options on to Leaflet too; `fullscreenControl: true` would make
    # leaflet.fullscreen add a second button, the others are noise in the map's script.
    for key in [*_REMOTE_CONTROLS, "fullscreen_control", "layers_control", "draw_export"]:
        m.options.pop(key, None)
    m.options.pop("layersControl", None)
    background = f"<style>.leaflet-container {{ background: {BACKGROUND}; }}</style>"
    figure = cast(Figure, m.get_root())  # a new Map always sits in a Figure
    figure.header.add_child(Element(background), name="softmap_map_background")
    add_outline(m)
    _Expose().add_to(m)
    if bounds_lonlat is not None:
        west, south, east, north = bounds_lonlat
        m.fit_bounds([[south, west], [north, east]])
    return m


def add_outline(m: folium.Map, *, detail: bool = True) -> folium.FeatureGroup:
    """Add the Natural Earth country outlines (1:50m, plus 1:10m around the demo regions).

    The layers are lines only and not interactive, so clicks and drawing go to the map.

    Args:
        m: the map to draw on.
        detail: also draw the 1:10m outlines of `coast_detail.geojson`; inside its coverage boxes
            the 1:50m lines are then left out so the two scales never overlap.

    Returns:
        The feature group holding the outline layers (already added to `m`).
    """
    group = folium.FeatureGroup(name="Country outlines (Natural Earth)", control=True)
    layers = [(_outline_geojson(cut_detail=detail), OUTLINE_STYLE)]
    if detail:
        layers.append((_detail_geojson(), DETAIL_STYLE))
    for data, style in layers:
        _Outline(
            _parsed(data),
            style_function=lambda _feature, style=style: style,
            interactive=False,
            attribution=ATTRIBUTION,
            control=False,
        ).add_to(group)
    group.add_to(m)
    return group


def image_overlay(
    url: str,
    bounds_lonlat: tuple[float, float, float, float],
    *,
    name: str,
    opacity: float = 1.0,
    class_name: str | None = None,
    pane: str | None = None,
) -> folium.raster_layers.ImageOverlay:
    """An image overlay of a PNG the app serves (a root-relative URL) or a data URL.

    folium reads a root-relative URL as a local file path and would inline it; the URL is set
    after construction instead. The image is stretched between lon/lat `(W, S, E, N)`.
    """
    w, s, e, n = bounds_lonlat
    options: dict[str, Any] = {"opacity": opacity}
    if class_name:
        options["className"] = class_name
    if pane:
        options["pane"] = pane
    overlay = folium.raster_layers.ImageOverlay(
        "data:,", bounds=[[s, w], [n, e]], name=name, **options
    )
    overlay.url = url
    return overlay


def add_legend(m: leafmap.Map, html_text: str, position: str = "bottomright") -> None:
    """Put static legend HTML on the map as a Leaflet control (leafmap's `add_html`).

    The HTML is wrapped in a `softmap-legend` box; clicks on it do not reach the map (they
    would select a tile).
    """
    box = (
        '<div class="softmap-legend" onclick="event.stopPropagation()" '
        'style="background:rgba(255,255,255,0.92);padding:6px 9px;border-radius:5px;'
        'box-shadow:0 1px 4px rgba(0,0,0,0.35);font:12px/1.45 sans-serif;color:#222">'
        f"{html_text}</div>"
    )
    m.add_html(box, position=position)


def ramp_legend(title: str, colours: list[str], ends: tuple[str, str], note: str = "") -> str:
    """The HTML of a continuous colour ramp with a title, its two ends and a note."""
    ramp = f"linear-gradient(to right, {', '.join(colours)})"
    return (
        f'<div style="font-weight:600;margin-bottom:3px">{title}</div>'
        f'<div style="height:12px;width:160px;background:{ramp};border:1px solid #999"></div>'
        '<div style="display:flex;justify-content:space-between;width:162px">'
        f"<span>{ends[0]}</span><span>{ends[1]}</span></div>"
        + (f'<div style="color:#666;margin-top:2px">{note}</div>' if note else "")
    )


class _PaneContainer(MacroElement):  # type: ignore[misc]
    """Gives an overlay a ``getContainer()`` that returns its pane.

    leaflet-side-by-side clips a layer's container; tile layers have one, image overlays and
    vector layers do not. Each side lives in its own map pane (a full-size div at the map
    pane's origin, just like a tile layer's container), so clipping the pane clips the layer.
    """

    _template = Template(
        """
        {% macro script(this, kwargs) %}
        {{ this.layer }}.getContainer = function () {
            return {{ this.map }}.getPane({{ this.pane|tojson }});
        };
        {% endmacro %}
        """
    )

    def __init__(self, layer: str, map_name: str, pane: str) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._name = "PaneContainer"
        self.layer, self.map, self.pane = layer, map_name, pane


def split_view(
    m: leafmap.Map,
    left: list[folium.Layer],
    right: list[folium.Layer],
    *,
    left_label: str,
    right_label: str,
) -> None:
    """A swipe between two sets of layers: leafmap's split-map control, on local assets.

    `leafmap.foliumap.Map.split_map` builds the same `SideBySideLayers` control, but only for
    tile layers or files it serves through localtileserver; SoftMap's dates are image overlays
    served by the app, so each side gets a pane of its own (see `_PaneContainer`). Layers must
    not be on the map yet: each is added to its side's pane here. The first layer of each side
    is the one the control clips (the pane holds them all, so all are clipped).
    """
    for side, layers in (("softmap-left", left), ("softmap-right", right)):
        folium.map.CustomPane(side, z_index=350 if side == "softmap-left" else 351).add_to(m)
        for layer in layers:
            layer.options["pane"] = side
            layer.add_to(m)
        _PaneContainer(layers[0].get_name(), m.get_name(), side).add_to(m)
    folium.plugins.SideBySideLayers(layer_left=left[0], layer_right=right[0]).add_to(m)
    for text, position in ((left_label, "topleft"), (right_label, "topright")):
        m.add_html(
            '<div class="softmap-split-label" style="background:rgba(255,255,255,0.9);'
            f'padding:3px 8px;border-radius:4px;font:600 13px sans-serif">{text}</div>',
            position=position,
        )


class _Expose(MacroElement):  # type: ignore[misc]
    """Names the Leaflet map ``window.softmapMap`` in its frame, for browser tests to read."""

    _template = Template(
        """
        {% macro script(this, kwargs) %}
        window.softmapMap = {{ this._parent.get_name() }};
        {% endmacro %}
        """
    )


class _Outline(folium.GeoJson):  # type: ignore[misc]
    """Outline lines that never count towards the map's bounds.

    streamlit-folium asks the map for its bounds on every rerun; walking every vertex of the
    world's outlines for that costs a fifth of a second each time.
    """

    def _get_self_bounds(self) -> list[list[float | None]]:
        return [[None, None], [None, None]]


@functools.lru_cache(maxsize=4)
def _parsed(text: str) -> dict[str, Any]:
    """The outline JSON parsed once (folium would parse the string on every rerun)."""
    data: dict[str, Any] = json.loads(text)
    return data


def remote_assets(m: folium.Element) -> list[str]:
    """List the scripts and stylesheets of `m` that would be fetched from another host.

    Walks the elements the way `streamlit_folium.st_folium` does. A branca colormap counts as
    d3 from a CDN, because st_folium adds that itself.

    Args:
        m: a map (or any folium element).

    Returns:
        Every URL that is not root-relative, in order, without duplicates; empty when the map
        renders offline.
    """
    urls: list[str] = []
    for element in _walk(m):
        if isinstance(element, branca.colormap.ColorMap):
            urls.append("https://d3js.org/d3.v4.min.js")
        if isinstance(element, JSCSSMixin):
            urls += [url for _, url in element.default_js + element.default_css]
    remote = [url for url in urls if not url.startswith("/") or url.startswith("//")]
    return list(dict.fromkeys(remote))


def _walk(element: folium.Element) -> Iterator[folium.Element]:
    yield element
    for child in getattr(element, "_children", {}).values():
        yield from _walk(child)


# Edges that only close polygons cut at the antimeridian or at the pole: no coast, no border.
_SEAMS = (
    (179.9999, -90.0, 180.0, 90.0),
    (-180.0, -90.0, -179.9999, 90.0),
    (-180.0, -90.0, 180.0, -89.99),
)


@functools.lru_cache(maxsize=2)
def _outline_geojson(*, cut_detail: bool) -> str:
    """The 1:50m countries as outline lines, minus the detail coverage when asked (as JSON)."""
    countries = json.loads(OUTLINE_PATH.read_text(encoding="utf-8"))
    boxes = [*_SEAMS, *(_detail_coverage() if cut_detail else [])]
    covered = shapely.union_all([box(*b) for b in boxes])
    features = []
    for i, feature in enumerate(countries["features"]):
        lines = shape(feature["geometry"]).boundary
        if lines.intersects(covered):
            lines = lines.difference(covered)
        if not lines.is_empty:
            features.append(
                {
                    "type": "Feature",
                    "id": i,
                    "properties": feature["properties"],
                    "geometry": mapping(lines),
                }
            )
    return json.dumps({"type": "FeatureCollection", "features": features}, separators=(",", ":"))


@functools.lru_cache(maxsize=1)
def _detail_geojson() -> str:
    """The 1:10m outline lines around the demo regions, with feature ids (as JSON)."""
    detail = json.loads(DETAIL_PATH.read_text(encoding="utf-8"))
    for i, feature in enumerate(detail["features"]):
        feature["id"] = i
    return json.dumps(detail, separators=(",", ":"))


def _detail_coverage() -> list[tuple[float, float, float, float]]:
    """The lon/lat boxes that `coast_detail.geojson` covers (its `coverage` member)."""
    detail = json.loads(DETAIL_PATH.read_text(encoding="utf-8"))
    return [(b[0], b[1], b[2], b[3]) for b in detail["coverage"].values()]
