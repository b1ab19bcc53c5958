"""Issue 12's "Also" list, headless (AppTest): links keep the display, the typed point and the
trained class; the minimum score, the lat,lon hint, the 3 × 3 region, names and messages.

The map clicks and the quiet page after Analyse need a browser: tests/test_browser.py.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from streamlit.testing.v1 import AppTest

from backend.errors import RegionOutsideSourceError
from backend.imagery.preview import tile_at, tile_block_region
from backend.imagery.regions import parse_bbox, validate_region
from backend.imagery.sources import SceneSource
from backend.imagery.tiling import grid_cells
from backend.landcover.labels import DW_CLASSES
from backend.settings import PROJECT_ROOT, get_settings
from tests.conftest import VIRGINIA_SMALL_BBOX

MAIN = str(PROJECT_ROOT / "app" / "main.py")
TILE = "demo/virginia/112/112/{}"
POSITIVES = [TILE.format(t) for t in ("8_5", "8_6", "9_5")]
NEGATIVES = [TILE.format(t) for t in ("11_7", "11_8", "10_8")]


@pytest.fixture
def db(embedded_db: Path, tmp_path: Path) -> Path:
    """A private copy of the embedded cache (the app holds its file open)."""
    copy = tmp_path / "app.duckdb"
    shutil.copy(embedded_db, copy)
    return copy


def app_at(db: Path, monkeypatch: pytest.MonkeyPatch, **params: str | list[str]) -> AppTest:
    monkeypatch.setenv("SOFTMAP_DB_PATH", str(db))
    get_settings.cache_clear()
    at = AppTest.from_file(MAIN, default_timeout=180)
    at.query_params["source"] = "demo/virginia"
    at.query_params["model"] = "test-vit"
    at.query_params["bbox"] = VIRGINIA_SMALL_BBOX
    for key, value in params.items():
        at.query_params[key] = value
    return at


def reopened(at: AppTest, db: Path, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    """The URL the app wrote, opened in a new session (a shared link)."""
    params: dict[str, Any] = {k: at.query_params[k] for k in at.query_params}
    again = app_at(db, monkeypatch, **params)
    again.run()
    assert not again.exception
    return again


def test_an_explore_link_restores_imagery_and_the_land_cover_layer(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = app_at(db, monkeypatch, analysed="1")
    at.run()
    assert not at.exception
    # The defaults stay out of the URL.
    assert not {"img", "lc", "cls", "op", "cells"} & set(at.query_params)
    at.segmented_control(key="explore.imagery").set_value("False colour (NIR)").run()
    at.selectbox(key="explore.lc_layer").set_value("Probability of a class").run()
    at.selectbox(key="explore.lc_class").set_value(DW_CLASSES.index("water")).run()
    at.slider(key="explore.lc_opacity").set_value(45).run()
    at.toggle(key="explore.lc_tokens").set_value(False).run()
    assert not at.exception
    assert at.query_params["img"] == "false"
    assert at.query_params["lc"] == "probability"
    assert at.query_params["cls"] == "water"
    assert at.query_params["op"] == "45"
    assert at.query_params["cells"] == "0"
    again = reopened(at, db, monkeypatch)
    assert again.segmented_control(key="explore.imagery").value == "False colour (NIR)"
    assert again.selectbox(key="explore.lc_layer").value == "Probability of a class"
    assert again.selectbox(key="explore.lc_class").value == DW_CLASSES.index("water")
    assert again.slider(key="explore.lc_opacity").value == 45
    assert again.toggle(key="explore.lc_tokens").value is False
    layer = again.session_state["explore.landcover_layer"]
    assert layer[0].mode == "probability" and layer[0].opacity == pytest.approx(0.45)
    assert layer[0].tokens is False


def test_a_similar_link_restores_the_typed_point_and_the_imagery(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = app_at(db, monkeypatch, page="similar")
    at.run()
    at.text_input(key="similar.point_text").set_value("-75.645,37.655").run()
    at.segmented_control(key="similar.imagery").set_value("None").run()
    assert not at.exception
    assert at.query_params["pt"] == "-75.64500,37.65500" and at.query_params["img"] == "none"
    again = reopened(at, db, monkeypatch)
    assert again.session_state["similar.query"].point == (-75.645, 37.655)
    assert again.text_input(key="similar.point_text").value == "-75.64500,37.65500"
    assert again.segmented_control(key="similar.imagery").value == "None"
    assert any("results of 16 test-vit tiles" in c.value for c in again.caption)


def test_a_point_typed_lat_lon_is_answered_with_the_order(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = app_at(db, monkeypatch, page="similar")
    at.run()
    at.text_input(key="similar.point_text").set_value("37.655,-75.645").run()
    assert not at.exception
    text = " ".join(w.value for w in at.warning)
    assert "Longitude first" in text and "-75.645,37.655" in text
    assert at.session_state["similar.query"].point is None


def test_minimum_score_zero_drops_negative_scores(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import app.operations as operations
    import app.search_view as search_view

    asked: list[float | None] = []
    original = operations.find_similar

    def recording(workspace: Any, request: Any) -> Any:
        asked.append(request.threshold)
        return original(workspace, request)

    # In-process, the app's one operations object calls the service function by this name.
    monkeypatch.setattr(operations, "find_similar", recording)
    search_view.run_search.clear()
    at = app_at(db, monkeypatch, page="similar", q=POSITIVES[0], k="50", sup="0")
    at.run()
    assert not at.exception
    # The default minimum, 0.00, is a minimum (it used to mean "none" and let -0.41 through).
    assert at.slider(key="similar.threshold").value == 0.0 and asked[-1] == 0.0
    assert "thr" not in at.query_params
    at.slider(key="similar.threshold").set_value(-1.0).run()
    assert asked[-1] is None and at.query_params["thr"] == "-1.00"
    at.slider(key="similar.threshold").set_value(0.9).run()
    assert asked[-1] == pytest.approx(0.9)
    scores = [float(m.value.split("`")[1]) for m in at.markdown if m.value.startswith("**#")]
    assert scores and min(scores) >= 0.9
    assert reopened(at, db, monkeypatch).slider(key="similar.threshold").value == 0.9


def test_a_my_classes_link_restores_the_trained_classifier(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = app_at(db, monkeypatch, page="classes")
    at.run()
    at.text_input(key="classes.new_name").set_value("fields")
    at.button(key="classes.create").click().run()
    # The placeholder shows ids of the model in use (test-vit: 112 px chips).
    assert at.text_input(key="classes.ids").placeholder.startswith("demo/virginia/112/112/")
    at.text_input(key="classes.ids").set_value(" ".join(POSITIVES))
    at.button(key="classes.add_pos").click().run()
    at.text_input(key="classes.ids").set_value(" ".join(NEGATIVES))
    at.button(key="classes.add_neg").click().run()
    at.button(key="classes.train").click().run()
    assert not at.exception
    assert at.query_params["trained"] == "1"
    again = reopened(at, db, monkeypatch)
    text = " ".join(m.value for m in again.markdown)
    assert "Cross-validated balanced accuracy" in text and "3 positive / 3 negative" in text
    assert any(s.value == "Label these next" for s in again.subheader)
    # Three labels a side: too few to calibrate, and the page says what that means.
    assert "not calibrated yet" in " ".join(c.value for c in again.caption)


def test_region_around_a_point_is_the_3_by_3_tiles_of_the_model(virginia: SceneSource) -> None:
    lon, lat = -75.6425, 37.655
    for chip in (64, 112):
        region = tile_block_region(virginia, lon, lat, chip, chip)
        assert region is not None
        cells = grid_cells(region, virginia, chip, chip)
        assert len(cells) == 9
        centre = tile_at(virginia, lon, lat, chip, chip)
        assert centre is not None and centre.endswith(f"/{cells[4][0]}_{cells[4][1]}")
    assert tile_block_region(virginia, 10.0, 50.0, 64, 64) is None


def test_a_bbox_far_outside_the_scene_is_outside_not_too_large(virginia: SceneSource) -> None:
    with pytest.raises(RegionOutsideSourceError, match="does not overlap demo/virginia"):
        validate_region(parse_bbox("10,50,11,51"), virginia, max_km2=2500)


@pytest.mark.parametrize(
    "message",
    [
        "Class 'x' has 1 positive and 0 negative tiles embedded with test-vit: mark at least one "
        "of each (`softmap label add 'x' --tile ID [--negative]`).",
        "Download it from https://huggingface.co/wangyi111/softcon and put it in models/ (or pass "
        "--checkpoint PATH).",
        "Wait for it to finish or close it, or pass --db to use another file.",
        "Embed a region first: softmap embed --model test-vit --source … --bbox …",
        "Give at least one query tile (--tile, --point or --positive).",
    ],
)
def test_ui_messages_do_not_cite_cli_flags(message: str) -> None:
    from app.errors import ui_message

    text = ui_message(message)
    assert "--" not in text and "softmap " not in text
    assert text.endswith((".", "…", "Explore"))
