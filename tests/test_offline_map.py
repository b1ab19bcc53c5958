"""Every map the app builds is a leafmap map loading its JavaScript and CSS from the app itself."""

from __future__ import annotations

import re

import folium
import folium.plugins
import leafmap.foliumap
import numpy as np
import pytest

from app.offline_map import (
    STATIC_URL,
    add_legend,
    base_map,
    image_overlay,
    ramp_legend,
    remote_assets,
    split_view,
)
from backend.settings import PROJECT_ROOT

STATIC = PROJECT_ROOT / "app" / "static" / "leaflet"


def _asset_urls(m: folium.Map) -> list[str]:
    return re.findall(r'(?:src|href)="([^"]+)"', m.get_root().render())


def test_the_embed_page_map_needs_nothing_remote() -> None:
    m = base_map((-75.73, 37.58, -75.51, 37.76))
    assert isinstance(m, leafmap.foliumap.Map)
    folium.raster_layers.ImageOverlay(
        np.zeros((4, 4, 4), np.uint8), bounds=[[0, 0], [1, 1]]
    ).add_to(m)
    folium.GeoJson({"type": "Point", "coordinates": [0, 0]}, tooltip="x").add_to(m)
    folium.plugins.Draw().add_to(m)
    folium.LayerControl().add_to(m)
    assert remote_assets(m) == []
    html = m.get_root().render()
    assert f"{STATIC_URL}/leaflet.js" in html
    assert "cdn.jsdelivr" not in html and "unpkg.com" not in html
    # leafmap's fullscreen control is on, from the local copy, once (not also as a map option).
    assert f"{STATIC_URL}/fullscreen/Control.FullScreen.js" in html
    assert html.count("L.control.fullscreen(") == 1 and "fullscreenControl" not in html


def test_every_asset_a_map_references_is_a_file_the_app_serves() -> None:
    m = base_map((-75.73, 37.58, -75.51, 37.76))
    before = image_overlay("/app/static/previews/a.png", (-75.7, 37.6, -75.6, 37.7), name="a")
    after = image_overlay("/app/static/previews/b.png", (-75.7, 37.6, -75.6, 37.7), name="b")
    split_view(m, [before], [after], left_label="2016-01-12", right_label="2016-02-01")
    add_legend(m, ramp_legend("Change", ["#ffffff", "#ff0000"], ("0", "1")))
    folium.plugins.Draw().add_to(m)
    urls = _asset_urls(m)
    assert urls, "no script or stylesheet found in the rendered map"
    for url in urls:
        assert url.startswith(STATIC_URL + "/"), url
        assert (STATIC / url.removeprefix(STATIC_URL + "/")).stat().st_size > 100, url


def test_the_split_view_clips_one_pane_per_date() -> None:
    m = base_map()
    left = image_overlay("/app/static/x/l.png", (0, 0, 1, 1), name="before")
    right = image_overlay("/app/static/x/r.png", (0, 0, 1, 1), name="after")
    split_view(m, [left], [right], left_label="before", right_label="after")
    html = m.get_root().render()
    assert ".createPane(" in html
    assert f"{left.get_name()}.getContainer = function" in html
    assert f"{right.get_name()}.getContainer = function" in html
    assert "L.control.sideBySide" in html
    assert '"pane": "softmap-left"' in html and '"pane": "softmap-right"' in html
    # The root-relative image URLs are kept as URLs (folium would inline a local path).
    assert '"/app/static/x/l.png"' in html


def test_the_legend_is_a_leaflet_control() -> None:
    m = base_map()
    add_legend(m, ramp_legend("Change score", ["#fff", "#b10026"], ("none", "most"), "1 − cos"))
    html = m.get_root().render()
    assert "softmap-legend" in html and "Change score" in html
    assert "L.Control.CustomControl" in html


@pytest.mark.parametrize(
    "plugin",
    [folium.plugins.MiniMap, folium.plugins.MeasureControl, folium.plugins.LocateControl],
)
def test_a_cdn_asset_would_be_reported(plugin: type[folium.MacroElement]) -> None:
    m = base_map()
    plugin().add_to(m)  # not served locally
    assert remote_assets(m)


def test_the_local_assets_exist() -> None:
    names = (
        "leaflet.js",
        "leaflet.css",
        "draw/leaflet.draw.js",
        "draw/leaflet.draw.css",
        "fullscreen/Control.FullScreen.js",
        "fullscreen/Control.FullScreen.css",
        "fullscreen/icon-fullscreen.svg",
        "side-by-side/leaflet-side-by-side.js",
        "side-by-side/layout.css",
        "side-by-side/range.css",
        "side-by-side/range-icon.png",
    )
    for name in names:
        assert (STATIC / name).stat().st_size > 100, name
