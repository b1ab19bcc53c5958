"""The app, run headless with Streamlit's AppTest (the map itself needs a browser: test_browser.py).

AppTest cannot render custom components (the Leaflet map), so these tests check what the page
computes: session state, text, the URL's query parameters.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from shapely.geometry import shape
from streamlit.testing.v1 import AppTest

from app.charts import area_figure, area_table
from app.landcover_view import (
    LAYER_DIR,
    LAYER_URL,
    LayerChoice,
    layer_title,
    legend_html,
    overlay_builder,
    rendered_layer,
)
from app.url_state import compact_geojson
from backend.imagery.regions import parse_bbox
from backend.landcover.areas import class_areas
from backend.landcover.labels import DW_CLASSES, DW_PALETTE, DW_TITLES, N_CLASSES
from backend.landcover.maps import LandCoverResult
from backend.models import list_models
from backend.settings import PROJECT_ROOT, get_settings
from tests.conftest import BRANDENBURG_SMALL_BBOX, VIRGINIA_SMALL_BBOX

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
    """The app on a fresh cache, with test-vit chosen by the link (the default may differ)."""
    at = new_app(tmp_path, monkeypatch, model="test-vit")
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
    assert f"Tile {tile}" in [s.value for s in at.subheader]
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


# --- land cover (app/landcover_view.py, app/charts.py) ------------------------------------------
def lc_result(at: AppTest) -> LandCoverResult:
    shown = at.session_state["explore.landcover_shown"]
    assert shown.error is None, shown.error
    result: LandCoverResult = shown.result
    return result


def layer_pixels(at: AppTest) -> tuple[LayerChoice, np.ndarray]:
    """The land-cover layer on the map: its choice and the RGBA pixels of the served PNG."""
    choice, layer = at.session_state["explore.landcover_layer"]
    assert layer.url.startswith(LAYER_URL + "/")
    path = LAYER_DIR / layer.url.rsplit("/", 1)[1]
    with rasterio.open(path) as ds:
        return choice, ds.read().transpose(1, 2, 0)


def rgb(hex_colour: str) -> tuple[int, int, int]:
    return (int(hex_colour[0:2], 16), int(hex_colour[2:4], 16), int(hex_colour[4:6], 16))


def table_km2(at: AppTest) -> dict[str, float]:
    table = at.dataframe[0].value
    return dict(zip(table["Class"], table["Expected km²"], strict=True))


def test_analysing_virginia_maps_land_cover_with_a_legend_chart_and_table(app: AppTest) -> None:
    app.button(key="explore.analyse").click().run()
    assert not app.exception
    result = lc_result(app)
    assert len(result.tile_ids) == 16
    # test-vit's bundled head has a token head: the map has 8 × 8 cells per tile.
    assert result.token_probabilities is not None
    assert result.token_probabilities.shape == (16, N_CLASSES, 8, 8)
    # Expected areas add up to the region (all 16 tiles are mapped, clipped to the bbox).
    region_km2 = parse_bbox(VIRGINIA_SMALL_BBOX).area_km2
    assert sum(a.expected_km2 for a in result.areas) == pytest.approx(result.region_km2)
    assert result.region_km2 == pytest.approx(region_km2, rel=0.01)
    km2 = table_km2(app)
    assert set(km2) == set(DW_TITLES)
    assert sum(km2.values()) == pytest.approx(region_km2, abs=0.05)
    table = app.dataframe[0].value
    assert list(table.columns) == [
        "Class", "Map km²", "Expected km²", "95 % range (km²)", "Share %", "Cells dominant",
    ]  # fmt: skip
    g = result.token_probabilities.shape[-1] if result.token_probabilities is not None else 1
    assert table["Cells dominant"].sum() == 16 * g * g
    assert table["Map km²"].sum() == pytest.approx(region_km2, abs=0.05)
    assert table["Share %"].sum() == pytest.approx(100, abs=0.5)
    metrics = {m.label: m.value for m in app.metric}
    assert metrics["Tiles"] == "16"
    assert metrics["Region mapped"] == f"{result.region_km2:.2f} km²"
    assert metrics["Held-out mAP"] == f"{result.head['metrics']['tile']['mAP']:.2f}"
    assert any(m.value.startswith("**Cropland:") for m in app.markdown)
    captions = " ".join(c.value for c in app.caption)
    assert "test-vit has random weights" in captions and "Held-out tokens" in captions
    # The default layer: dominant class in DW colours, opacity = confidence.
    choice, px = layer_pixels(app)
    assert choice.mode == "dominant" and choice.tokens
    seen = {tuple(int(v) for v in p) for p in px[px[..., 3] > 0][:, :3]}
    assert seen <= {rgb(c) for c in DW_PALETTE} and len(seen) > 1
    assert 0 < px[..., 3].max() <= 255
    # One class's probability: that class's colour only.
    app.selectbox(key="explore.lc_layer").set_value("Probability of a class").run()
    app.selectbox(key="explore.lc_class").set_value(DW_CLASSES.index("water")).run()
    choice, px = layer_pixels(app)
    assert choice.mode == "probability" and choice.class_index == 0
    assert {tuple(int(v) for v in p) for p in px[px[..., 3] > 0][:, :3]} == {rgb(DW_PALETTE[0])}
    # Entropy, one cell per tile, half opacity: a coarser image, still served as a file.
    app.selectbox(key="explore.lc_layer").set_value("Uncertainty (entropy)").run()
    app.toggle(key="explore.lc_tokens").set_value(False).run()
    app.slider(key="explore.lc_opacity").set_value(50).run()
    choice, px = layer_pixels(app)
    assert (choice.mode, choice.tokens, choice.opacity) == ("entropy", False, 0.5)
    assert not app.exception
    app.selectbox(key="explore.lc_layer").set_value("Off").run()
    choice, layer = app.session_state["explore.landcover_layer"]
    assert choice.mode is None and layer is None


def test_the_map_layer_and_legend_render_offline(app: AppTest) -> None:
    from streamlit_folium import generate_leaflet_string

    from app.offline_map import base_map, remote_assets

    app.button(key="explore.analyse").click().run()
    result = lc_result(app)
    for choice, words in [
        (LayerChoice("dominant"), ["Dominant class", "Crops", "Snow &amp; ice", "confidence"]),
        (LayerChoice("probability", class_index=4), ["Probability of Crops", "100 %"]),
        (LayerChoice("entropy"), ["Uncertainty (entropy)", "uncertain"]),
    ]:
        layer = rendered_layer(result, choice)
        assert layer is not None
        m = base_map(result.source.bbox_lonlat)
        overlay_builder(layer, choice)(m)
        m.render()
        script = generate_leaflet_string(m)
        assert layer.url in script and "softmap-landcover" in script
        legend = legend_html(choice)
        assert all(w in legend for w in words), legend
        # The legend is a Leaflet control in the map's own script (jinja's tojson escapes <>&).
        assert "L.control" in script and "softmap-legend" in script
        assert layer_title(choice) in script
        assert remote_assets(m) == []


def test_a_brandenburg_link_maps_land_cover_and_the_tile_shows_class_bars(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tile = "demo/brandenburg/112/112/3_7"
    at = new_app(
        tmp_path,
        monkeypatch,
        source="demo/brandenburg",
        model="test-vit",
        bbox=BRANDENBURG_SMALL_BBOX,
        tiles=[tile],
        analysed="1",
    )
    at.run()
    assert not at.exception
    result = lc_result(at)
    assert result.source.id == "demo/brandenburg"
    region_km2 = parse_bbox(BRANDENBURG_SMALL_BBOX).area_km2
    assert sum(a.expected_km2 for a in result.areas) == pytest.approx(result.region_km2)
    assert result.region_km2 == pytest.approx(region_km2, rel=0.02)
    assert sum(table_km2(at).values()) == pytest.approx(result.region_km2, abs=0.05)
    assert np.allclose(result.probabilities.sum(axis=1), 1, atol=1e-4)
    # The clicked tile: its most likely class and the bars of its probabilities.
    assert tile in result.tile_ids
    p = result.probabilities[result.tile_ids.index(tile)]
    top = DW_TITLES[int(p.argmax())]
    assert any(m.value.startswith(f"Most likely **{top}**") for m in at.markdown)
    bars = json.loads(at.get("plotly_chart")[-1].proto.spec)["data"][0]
    assert bars["y"][-1] == top and bars["x"][-1] == pytest.approx(float(p.max()), abs=1e-6)
    assert bars["marker"]["color"][-1] == f"#{DW_PALETTE[int(p.argmax())]}"


def test_a_model_without_a_head_explains_how_to_fit_one(
    app: AppTest, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("backend.landcover.store.load_bundled", lambda _folder: [])
    app.button(key="explore.analyse").click().run()
    assert not app.exception
    assert "16 tiles analysed" in app.success[0].value  # the analysis itself worked
    text = " ".join(w.value for w in app.warning)
    assert "Unknown land-cover head" in text
    assert "softmap landcover fit --model test-vit" in text
    assert not app.get("plotly_chart")


def test_reruns_after_the_analysis_stay_fast(app: AppTest) -> None:
    app.button(key="explore.analyse").click().run()
    app.selectbox(key="explore.lc_layer").set_value("Uncertainty (entropy)").run()
    app.selectbox(key="explore.lc_layer").set_value("Dominant class").run()
    start = len(app.session_state["app.timings"])
    for _ in range(3):
        app.run()
    app.slider(key="explore.lc_opacity").set_value(60).run()
    app.selectbox(key="explore.lc_layer").set_value("Uncertainty (entropy)").run()
    times = [t.seconds for t in app.session_state["app.timings"][start:]]
    assert len(times) == 5
    # Nothing is recomputed: well under a second here, with slack for a loaded machine.
    assert sorted(times)[2] < 2.0, times


def test_area_chart_has_dw_colours_and_asymmetric_95_percent_error_bars() -> None:
    areas = class_areas(
        np.array([[0.1, 0, 0, 0, 0.9, 0, 0, 0, 0], [0, 0, 0, 0, 0.5, 0, 0.5, 0, 0]]),
        np.array([2.0, 1.0]),
        DW_CLASSES,
    )
    bar = area_figure(areas).data[0]
    assert list(bar.y) == ["Water", "Built area", "Crops"]  # largest on top; empty classes out
    crops = next(a for a in areas if a.name == "crops")
    i = list(bar.y).index("Crops")
    assert bar.x[i] == pytest.approx(2.3)
    assert bar.error_x.array[i] == pytest.approx(crops.high_km2 - 2.3)
    assert bar.error_x.arrayminus[i] == pytest.approx(2.3 - crops.low_km2)
    assert bar.marker.color[i] == f"#{DW_PALETTE[4]}"
    table = area_table(areas)
    assert table["Class"][0] == "Crops" and table["Share %"][0] == pytest.approx(76.7)


def test_the_default_model_is_the_bundled_one_when_its_weights_are_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app import sidebar

    models = list_models()
    monkeypatch.setattr(sidebar, "find_local_weights", lambda _meta: None)
    assert sidebar.default_model(models) == "test-vit"
    monkeypatch.setattr(sidebar, "find_local_weights", lambda _meta: tmp_path / "w.pt")
    assert sidebar.default_model(models) == "softmap-default"
    monkeypatch.undo()
    # A session without a model in its link starts on that default.
    at = new_app(tmp_path, monkeypatch)
    at.run()
    assert at.sidebar.selectbox(key="sidebar.model").value == sidebar.default_model()
