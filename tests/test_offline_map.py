"""Every map the app builds loads its JavaScript and CSS from the app itself, never a CDN."""

from __future__ import annotations

import folium
import folium.plugins
import numpy as np

from app.offline_map import STATIC_URL, base_map, remote_assets
from backend.settings import PROJECT_ROOT


def test_the_embed_page_map_needs_nothing_remote() -> None:
    m = base_map((-75.73, 37.58, -75.51, 37.76))
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


def test_the_local_assets_exist() -> None:
    static = PROJECT_ROOT / "app" / "static" / "leaflet"
    for name in ("leaflet.js", "leaflet.css", "draw/leaflet.draw.js", "draw/leaflet.draw.css"):
        assert (static / name).stat().st_size > 1000, name


def test_a_cdn_asset_would_be_reported() -> None:
    m = base_map()
    folium.plugins.Fullscreen().add_to(m)  # not served locally
    assert remote_assets(m)
