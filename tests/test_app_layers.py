"""Explore's "Also show": a user class's probability and the Similar places results on the map.

AppTest runs the page (the picker, its choices); the layers themselves are checked in the map's
HTML, which AppTest cannot render.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from app.offline_map import base_map
from app.other_layers import class_layer
from backend.service import (
    ClassifyRequest,
    ScopeRequest,
    TileSelection,
    Workspace,
    add_labels,
    classify,
)
from backend.service.layers import class_probability_layers
from backend.settings import PROJECT_ROOT, get_settings
from tests.conftest import VIRGINIA_SMALL_BBOX

MAIN = str(PROJECT_ROOT / "app" / "main.py")
FIELDS = ("demo/virginia/112/112/9_6", "demo/virginia/112/112/8_5", "demo/virginia/112/112/8_6")
OTHERS = ("demo/virginia/112/112/11_8", "demo/virginia/112/112/10_8", "demo/virginia/112/112/11_7")


@pytest.fixture
def classified_db(embedded_db: Path, tmp_path: Path) -> Path:
    """The embedded small region with a class "fields" trained and predicted over it."""
    db = tmp_path / "app.duckdb"
    shutil.copy(embedded_db, db)
    ws = Workspace(db_path=db)
    add_labels(ws, "fields", TileSelection(tiles=FIELDS), positive=True)
    add_labels(ws, "fields", TileSelection(tiles=OTHERS), positive=False)
    scope = ScopeRequest(model="test-vit", source="demo/virginia")
    classify(ws, ClassifyRequest(name="fields", scope=scope))
    return db


def explore(db: Path, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    monkeypatch.setenv("SOFTMAP_DB_PATH", str(db))
    get_settings.cache_clear()
    at = AppTest.from_file(MAIN, default_timeout=240)
    at.query_params["source"] = "demo/virginia"
    at.query_params["model"] = "test-vit"
    at.query_params["bbox"] = VIRGINIA_SMALL_BBOX
    at.query_params["analysed"] = "1"
    return at


def test_the_class_probability_is_offered_and_drawn(
    classified_db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = explore(classified_db, monkeypatch)
    at.run()
    assert not at.exception
    picker = at.selectbox(key="explore.other_layer")
    assert picker.options == ["Nothing else", "My class: fields (probability)"]
    assert picker.value == "Nothing else"
    picker.set_value("My class: fields (probability)").run()
    assert not at.exception
    assert at.selectbox(key="explore.other_layer").value == "My class: fields (probability)"
    # The choice stays across reruns (another widget changes).
    at.selectbox(key="explore.lc_layer").set_value("Uncertainty (entropy)").run()
    assert at.selectbox(key="explore.other_layer").value == "My class: fields (probability)"


def test_the_similar_places_query_is_offered_on_explore(
    embedded_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "app.duckdb"
    shutil.copy(embedded_db, db)
    at = explore(db, monkeypatch)
    at.run()
    assert at.selectbox(key="explore.other_layer").options == ["Nothing else"]
    from app.search_view import Query

    at.session_state["similar.query"] = Query(positives=(FIELDS[0],))
    at.run()
    options = at.selectbox(key="explore.other_layer").options
    assert options[0] == "Nothing else" and len(options) == 2
    assert options[1].startswith("Similar places: your query (top ")
    at.selectbox(key="explore.other_layer").set_value(options[1]).run()
    assert not at.exception


def test_the_class_layer_colours_tiles_by_probability(classified_db: Path) -> None:
    ws = Workspace(db_path=classified_db)
    from backend.service import tile_records

    records = tile_records(ws, [*FIELDS, *OTHERS])
    eset_hash = _preprocessing_hash(classified_db)
    (layer,) = class_probability_layers(ws, "test-vit", eset_hash, [r["tile_id"] for r in records])
    assert layer.name == "fields" and len(layer.tile_ids) == 6
    p = layer.as_dict()
    assert min(p[t] for t in FIELDS) > max(p[t] for t in OTHERS)
    m = base_map()
    class_layer(layer, records)(m)
    html = m.get_root().render()
    assert html.count("softmap-class-probability") >= 1
    assert "My class: fields" in html and "softmap-legend" in html
    # Another model's or preprocessing's tiles have no such layer.
    assert class_probability_layers(ws, "test-vit", "0" * 16, list(p)) == []


def _preprocessing_hash(db: Path) -> str:
    import duckdb

    with duckdb.connect(str(db), read_only=True) as con:
        row = con.execute(
            "SELECT preprocessing_hash FROM embedding_sets WHERE model_id = 'test-vit'"
        ).fetchone()
    assert row is not None
    return str(row[0])
