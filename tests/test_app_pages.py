"""The Embedding space and My classes pages, headless (AppTest) on the small Virginia region.

AppTest cannot render the Leaflet map or draw the plotly chart (test_browser.py does); these
tests check the chart element and its data, what the pages computed (session state, cache) and
the text a user reads.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from app.projection_view import (
    Colouring,
    landcover_colouring,
    point_colours,
    scatter_figure,
    selected_ids,
)
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


def page_app(db: Path, monkeypatch: pytest.MonkeyPatch, page: str, **params: str) -> AppTest:
    monkeypatch.setenv("SOFTMAP_DB_PATH", str(db))
    get_settings.cache_clear()
    at = AppTest.from_file(MAIN, default_timeout=180)
    at.query_params["page"] = page
    at.query_params["model"] = "test-vit"
    at.query_params["bbox"] = VIRGINIA_SMALL_BBOX
    for key, value in params.items():
        at.query_params[key] = value
    return at


def plotly_figure(at: AppTest) -> dict[str, object]:
    charts = at.get("plotly_chart")
    assert len(charts) == 1, "no plotly chart on the page"
    spec: dict[str, object] = json.loads(charts[0].proto.spec)
    return spec


def numbers(value: object) -> list[float]:
    """A plotly array from the figure's JSON: a list, or a typed array (``bdata``, base64)."""
    import base64

    import numpy as np

    if isinstance(value, dict):
        raw = base64.b64decode(value["bdata"])
        return np.frombuffer(raw, dtype=np.dtype(value["dtype"])).astype(float).tolist()
    assert isinstance(value, list)
    return [float(v) for v in value]


def captions(at: AppTest) -> str:
    return " ".join(c.value for c in at.caption)


# --- Embedding space ----------------------------------------------------------------------------
def test_embedding_space_shows_pca_at_once_coloured_by_land_cover_on_request(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = page_app(db, monkeypatch, "embedding", tiles=POSITIVES[0])
    at.run()
    assert not at.exception
    assert at.header[0].value == "Embedding space"
    spec = plotly_figure(at)
    traces = spec["data"]
    assert isinstance(traces, list)
    assert all(t["type"] == "scattergl" for t in traces)
    # Every one of the 16 tiles is a point (plus the selected tile from the link, ringed).
    points = [tid for t in traces if t["name"] != "selected" for tid in t["customdata"]]
    assert sorted(points) == sorted(
        at.session_state["app.selected_tiles"]
        + tuple(p for p in points if p not in at.session_state["app.selected_tiles"])
    )
    assert len(points) == 16
    ringed = [t for t in traces if t["name"] == "selected"]
    assert ringed and ringed[0]["customdata"] == [POSITIVES[0]]
    # PCA is on screen at once; UMAP is fitted in the background meanwhile (or done already).
    text = captions(at)
    assert "PCA of 16 tiles of test-vit over region" in text or "UMAP of 16 tiles" in text
    # No land cover stored yet: the page says so and offers to compute it with the bundled head.
    assert "No land-cover predictions are stored" in text
    at.button(key="embedding.compute_lc").click().run()
    assert not at.exception
    traces = plotly_figure(at)["data"]
    names = {t["name"] for t in traces} - {"selected"}
    assert names and names <= {
        "Water", "Trees", "Grass", "Flooded vegetation", "Crops", "Shrub & scrub",
        "Built area", "Bare ground", "Snow & ice",
    }  # fmt: skip
    assert at.query_params["page"] == "embedding"
    assert at.query_params["tiles"] == POSITIVES[0]


def test_embedding_space_colours_by_source_and_similarity_and_reruns_are_cheap(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = page_app(db, monkeypatch, "embedding", tiles=POSITIVES[0])
    at.run()
    at.selectbox(key="embedding.colour").set_value("Source").run()
    assert not at.exception
    assert {t["name"] for t in plotly_figure(at)["data"]} == {"demo/virginia", "selected"}
    assert at.query_params["color"] == "source"
    at.selectbox(key="embedding.colour").set_value("Similarity to a tile").run()
    assert not at.exception
    trace = plotly_figure(at)["data"][0]
    colours = numbers(trace["marker"]["color"])
    # The anchor tile is most similar to itself (cosine 1).
    anchor = trace["customdata"].index(POSITIVES[0])
    assert colours[anchor] == pytest.approx(max(colours), abs=1e-5)
    assert colours[anchor] == pytest.approx(1.0, abs=1e-4)
    # A rerun that changes nothing on the map sends the map rendered before (rendering 900 tiles
    # is most of a rerun's time); the timings are in bench/bench_app.py, not in a test.
    renders = at.session_state["app.map_renders"]
    for _ in range(4):
        at.run()
    assert not at.exception
    assert at.session_state["app.map_renders"] == renders
    at.selectbox(key="embedding.colour").set_value("Source").run()
    assert at.session_state["app.map_renders"] == renders + 1


@pytest.mark.slow
def test_embedding_space_switches_to_umap_when_the_background_fit_is_done(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    at = page_app(db, monkeypatch, "embedding")
    at.run()
    deadline = time.monotonic() + 240
    while "UMAP of 16 tiles of" not in captions(at) and time.monotonic() < deadline:
        time.sleep(2)
        at.run()  # what the page's polling fragment triggers in a browser
    assert not at.exception
    assert "UMAP of 16 tiles of test-vit" in captions(at)
    assert plotly_figure(at)["layout"]["xaxis"]["title"]["text"] == "UMAP 1"
    # The fit is kept: a new session gets UMAP on its first render (no PCA, no waiting).
    fresh = page_app(db, monkeypatch, "embedding")
    fresh.run()
    assert "UMAP of 16 tiles of test-vit over region" in captions(fresh)
    # PCA stays one click away.
    fresh.button_group(key="embedding.method").set_value("PCA").run()
    assert "PCA of 16 tiles" in captions(fresh)


def test_scatter_helpers_keep_tile_ids_through_selection() -> None:
    import numpy as np

    ids = [TILE.format(f"{r}_{c}") for r in range(2) for c in range(3)]
    xy = np.arange(12, dtype=np.float32).reshape(6, 2)
    colouring = landcover_colouring([0, 0, 4, 4, -1, 1], "test-vit@osm")
    assert colouring.incomplete
    fig = scatter_figure(ids, xy, colouring, [ids[2]])
    names = [t.name for t in fig.data]
    assert names == ["Water", "Trees", "Crops", "no prediction", "selected"]
    assert point_colours(colouring)[:3] == ["#419bdf", "#419bdf", "#e49635"]
    event = {"selection": {"points": [{"customdata": ids[1]}, {"customdata": [ids[4]]}]}}
    assert selected_ids(event) == (ids[1], ids[4])
    assert selected_ids({"selection": {"points": []}}) == ()
    ramp = Colouring("P(x)", values=(0.0, 0.5, 1.0, float("nan"), 0.2, 0.9))
    colours = point_colours(ramp)
    assert colours[0] == "#440154" and colours[2] == "#fde725" and colours[3] == "#b0b7c0"


# --- My classes ---------------------------------------------------------------------------------
def test_my_classes_create_label_train_and_suggest(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = page_app(db, monkeypatch, "classes")
    at.run()
    assert not at.exception
    assert at.header[0].value == "My classes"
    # Create a class.
    at.text_input(key="classes.new_name").set_value("marsh")
    at.button(key="classes.create").click().run()
    assert not at.exception
    assert at.selectbox(key="classes.class").value == "marsh"
    assert "Class 'marsh' created" in at.success[0].value
    assert at.query_params["class"] == "marsh"
    # Label tiles by id: three positive, three negative.
    at.text_input(key="classes.ids").set_value(" ".join(POSITIVES))
    at.button(key="classes.add_pos").click().run()
    at.text_input(key="classes.ids").set_value(", ".join(NEGATIVES))
    at.button(key="classes.add_neg").click().run()
    assert not at.exception
    assert any("3 positive · 3 negative" in m.value for m in at.markdown)
    # Train: cross-validated accuracy with its label counts, the expected area with a range.
    at.button(key="classes.train").click().run()
    assert not at.exception
    text = " ".join(m.value for m in at.markdown)
    assert "Cross-validated balanced accuracy **" in text
    assert "(3 folds; chance 0.50) from 3 positive / 3 negative labels" in text
    assert "Expected area of **marsh** in the region" in text and "95 % range" in text
    assert "16 tiles mapped" in captions(at)
    # Suggestions: unlabelled tiles only, with one-click buttons.
    assert any(s.value == "Label these next" for s in at.subheader)
    yes = [b for b in at.button if b.key and b.key.startswith("classes.sug_pos.")]
    assert len(yes) == 6
    suggested = [b.key.removeprefix("classes.sug_pos.") for b in yes]
    assert not set(suggested) & set(POSITIVES + NEGATIVES)
    # One click labels a suggestion; the classifier retrains on 4 positives.
    yes[0].click().run()
    assert not at.exception
    assert "from 4 positive / 3 negative labels" in " ".join(m.value for m in at.markdown)
    assert not any(b.key == f"classes.sug_pos.{suggested[0]}" for b in at.button)
    # Remove a label from the list.
    at.button(key=f"classes.rm.{NEGATIVES[0]}").click().run()
    assert "4 positive · 2 negative" in " ".join(m.value for m in at.markdown)


def test_my_classes_rename_delete_and_errors(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at = page_app(db, monkeypatch, "classes")
    at.run()
    at.text_input(key="classes.new_name").set_value("water")
    at.button(key="classes.create").click().run()
    # An unknown tile id: a warning that says what a tile id looks like, no traceback.
    at.text_input(key="classes.ids").set_value("demo/virginia/112/112/99_99")
    at.button(key="classes.add_pos").click().run()
    assert not at.exception
    assert any("is not in the cache" in e.value for e in at.warning)
    # Training with positives only: told to add a negative.
    at.text_input(key="classes.ids").set_value(POSITIVES[0])
    at.button(key="classes.add_pos").click().run()
    at.button(key="classes.train").click().run()
    assert not at.exception
    assert any("Not enough labels" in e.value for e in [*at.error, *at.warning])
    # Rename, then delete.
    at.text_input(key="classes.rename_to").set_value("open water")
    at.button(key="classes.rename").click().run()
    assert at.selectbox(key="classes.class").value == "open water"
    at.button(key="classes.delete").click().run()
    assert not at.exception
    assert "Deleted 'open water' and its 1 labels." in at.success[0].value
    assert any("No classes yet" in i.value for i in at.info)
