"""The app, run headless with Streamlit's AppTest (the map itself needs a browser: test_browser.py).

AppTest cannot render custom components (the Leaflet map), so these tests check what the page
computes: session state, text, the URL's query parameters.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from shapely.geometry import shape
from streamlit.testing.v1 import AppTest

from app.url_state import compact_geojson
from backend.settings import PROJECT_ROOT, get_settings
from tests.conftest import VIRGINIA_SMALL_BBOX

MAIN = str(PROJECT_ROOT / "app" / "main.py")
SMALL_BBOX_URL = "-75.66000,37.64000,-75.62500,37.67000"


def new_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **params: str | list[str]) -> AppTest:
    monkeypatch.setenv("SOFTMAP_DB_PATH", str(tmp_path / "app.duckdb"))
    get_settings.cache_clear()
    at = AppTest.from_file(MAIN, default_timeout=180)
    for key, value in params.items():
        at.query_params[key] = value
    return at


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    at = new_app(tmp_path, monkeypatch)
    at.run()
    return at


def test_explore_renders_with_the_demo_scene_and_the_sidebar(app: AppTest) -> None:
    assert not app.exception
    assert app.sidebar.selectbox(key="sidebar.source").value == "demo/virginia"
    assert app.sidebar.selectbox(key="sidebar.model").value == "test-vit"
    assert "Explore Eastern Shore of Virginia" in app.header[0].value
    captions = " ".join(c.value for c in app.sidebar.caption)
    assert "13 bands · 112 px chips · 14 px patches · 48-d" in captions
    assert "Weights: built in" in captions
    assert "Device: **cpu**" in captions
    assert "0 tiles · 0 embeddings" in captions
    # The view is in the URL from the first render.
    assert app.query_params["source"] == "demo/virginia"
    assert app.query_params["model"] == "test-vit"
    assert app.query_params["page"] == "explore"
    assert app.query_params["bbox"] == SMALL_BBOX_URL


def test_analyse_embeds_the_small_region_then_reuses_the_cache(app: AppTest) -> None:
    app.button(key="explore.analyse").click().run()
    assert not app.exception
    assert "16 tiles analysed with test-vit: 16 computed, 0 from the cache" in app.success[0].value
    analysis = app.session_state["app.analysis"]
    assert len(analysis.tiles) == 16
    assert all(t["tile_id"].startswith("demo/virginia/112/112/") for t in analysis.tiles)
    assert app.query_params["analysed"] == "1"
    assert "16 tiles · 16 embeddings" in " ".join(c.value for c in app.sidebar.caption)
    app.button(key="explore.analyse").click().run()
    assert "0 computed, 16 from the cache" in app.success[0].value
    # Reruns after the analysis are timed, and recompute nothing.
    app.run()
    times = app.session_state["app.timings"]
    assert times[-1].page == "explore"
    assert times[-1].seconds < 10


def test_a_link_restores_region_source_model_tiles_and_the_analysis(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tile = "demo/brandenburg/112/112/3_7"
    at = new_app(
        tmp_path,
        monkeypatch,
        source="demo/brandenburg",
        model="test-vit",
        bbox="12.60,52.48,12.63,52.495",
        tiles=[tile],
        analysed="1",
    )
    at.run()
    assert not at.exception
    assert at.sidebar.selectbox(key="sidebar.source").value == "demo/brandenburg"
    assert at.text_input(key="explore.bbox").value == "12.60000,52.48000,12.63000,52.49500"
    assert at.session_state["app.selected_tiles"] == (tile,)
    assert "tiles analysed with test-vit" in at.success[0].value
    assert at.subheader[0].value == f"Tile {tile}"
    assert any("nodata" in m.value for m in at.markdown)
    assert [c for img in at.image for c in img.captions] == ["True colour", "False colour (NIR)"]
    assert at.query_params.get("tiles") in (tile, [tile])
    # The URL the app wrote opens the same view in a new session.
    again = new_app(tmp_path, monkeypatch, **dict(at.query_params))
    again.run()
    assert again.session_state["app.region"].geometry.equals(
        at.session_state["app.region"].geometry
    )
    assert again.session_state["app.analysis"].result.tiles == (
        at.session_state["app.analysis"].result.tiles
    )


def test_a_polygon_region_travels_as_compact_geojson(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    triangle = {
        "type": "Polygon",
        "coordinates": [[[-75.66, 37.64], [-75.62, 37.64], [-75.64, 37.67], [-75.66, 37.64]]],
    }
    aoi = compact_geojson(triangle)
    assert " " not in aoi
    at = new_app(tmp_path, monkeypatch, aoi=aoi)
    at.run()
    assert not at.exception
    assert at.session_state["app.region"].geometry.equals(shape(triangle))
    assert json.loads(at.query_params["aoi"]) == json.loads(aoi)
    assert "bbox" not in at.query_params


def test_mistakes_are_shown_not_raised(app: AppTest) -> None:
    app.text_input(key="explore.bbox").set_value("1,2,3").run()
    assert not app.exception
    assert "four numbers" in app.warning[0].value
    assert "Invalid region" in app.warning[0].value
    # A region on another scene: the analysis says which scene covers it.
    app.text_input(key="explore.bbox").set_value("12.6,52.48,12.63,52.49").run()
    app.button(key="explore.analyse").click().run()
    assert not app.exception
    assert "Sources that cover it: demo/brandenburg" in app.warning[0].value
    app.text_input(key="explore.bbox").set_value(VIRGINIA_SMALL_BBOX).run()
    app.sidebar.selectbox(key="sidebar.model").set_value("softcon-vits14-s2").run()
    app.button(key="explore.analyse").click().run()
    assert not app.exception
    assert "B13_vits14_softcon.pth" in app.warning[0].value


def test_a_link_with_a_broken_region_falls_back_to_the_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = new_app(tmp_path, monkeypatch, aoi="{not json")
    at.run()
    assert not at.exception
    assert "not valid JSON" in at.warning[0].value
    assert at.query_params["bbox"] == SMALL_BBOX_URL


def test_a_cache_held_by_another_process_is_explained(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.conftest import another_process_holding

    at = new_app(tmp_path, monkeypatch)
    with another_process_holding(tmp_path / "app.duckdb") as pid:
        at.run()
        assert not at.exception
        text = " ".join(w.value for w in at.sidebar.warning)
        assert "Cache database in use" in text and f"process {pid}" in text
        at.button(key="explore.analyse").click().run()
        assert not at.exception
        assert "Cache database in use" in at.warning[0].value
