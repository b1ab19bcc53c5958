"""Folium maps that render with no network: local Leaflet assets and a bundled vector basemap.

folium and streamlit-folium load Leaflet (and jQuery, Bootstrap, awesome-markers, Font Awesome)
from public CDNs; offline, the first script that fails to load aborts streamlit-folium's loader
and the map never appears. This module points folium at the copies under `app/static/leaflet/`
(served by Streamlit at `/app/static/...` when `server.enableStaticServing` is on) and replaces
tile layers with Natural Earth outlines shipped in `assets/basemap/`.
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
import shapely
from branca.element import Element, Figure
from folium.elements import JSCSSMixin
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

BASEMAP_DIR = Path(__file__).resolve().parent.parent / "assets" / "basemap"
OUTLINE_PATH = BASEMAP_DIR / "ne_50m_admin_0_countries.geojson"
DETAIL_PATH = BASEMAP_DIR / "coast_detail.geojson"

BACKGROUND = "#eef2f6"
OUTLINE_STYLE: dict[str, Any] = {"color": "#8a97a5", "weight": 1, "opacity": 0.9, "fill": False}
DETAIL_STYLE: dict[str, Any] = {"color": "#5b6878", "weight": 1.2, "opacity": 0.9, "fill": False}
ATTRIBUTION = "Outlines: Natural Earth"
WORLD_VIEW: dict[str, Any] = {"location": (20.0, 0.0), "zoom_start": 2}


def use_offline_assets() -> None:
    """Point folium's map template and Draw plugin at the local Leaflet copies.

    Idempotent: it assigns fresh lists to the class attributes each time, so calling it on every
    Streamlit rerun is cheap and safe.
    """
    folium.Map.default_js = list(MAP_JS)
    folium.Map.default_css = list(MAP_CSS)
    folium.plugins.Draw.default_js = list(DRAW_JS)
    folium.plugins.Draw.default_css = list(DRAW_CSS)


def base_map(
    bounds_lonlat: tuple[float, float, float, float] | None = None, **kwargs: Any
) -> folium.Map:
    """Build a folium map with no tile layer, a light background and the bundled outlines.

    Args:
        bounds_lonlat: `(west, south, east, north)` in degrees to fit the view to; the whole
            world when None.
        **kwargs: passed to `folium.Map` (they override the defaults here, `tiles` included).

    Returns:
        The map, with `use_offline_assets` already applied.
    """
    use_offline_assets()
    options: dict[str, Any] = {"tiles": None, "control_scale": True, **WORLD_VIEW, **kwargs}
    m = folium.Map(**options)
    background = f"<style>.leaflet-container {{ background: {BACKGROUND}; }}</style>"
    figure = cast(Figure, m.get_root())  # a new Map always sits in a Figure
    figure.header.add_child(Element(background), name="softmap_map_background")
    add_outline(m)
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
