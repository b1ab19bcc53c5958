"""The Similar places page, headless (AppTest): queries by tile, point, positives and negatives.

The map is a custom component AppTest cannot render (see test_browser.py); these tests check the
search the page ran, the gallery, the heatmap panel, messages and the URL.
"""

from __future__ import annotations

import shutil
import statistics
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from backend.settings import PROJECT_ROOT, get_settings
from tests.conftest import VIRGINIA_SMALL_BBOX

MAIN = str(PROJECT_ROOT / "app" / "main.py")
#: The 16 test-vit tiles of the small Virginia region (rows 8–11, columns 5–8).
QUERY = "demo/virginia/112/112/9_6"
NEGATIVE = "demo/virginia/112/112/10_7"


def similar_app(db: Path, monkeypatch: pytest.MonkeyPatch, **params: str | list[str]) -> AppTest:
    monkeypatch.setenv("SOFTMAP_DB_PATH", str(db))
    get_settings.cache_clear()
    at = AppTest.from_file(MAIN, default_timeout=180)
    at.query_params["page"] = "similar"
    at.query_params["source"] = "demo/virginia"
    at.query_params["model"] = "test-vit"
    at.query_params["bbox"] = VIRGINIA_SMALL_BBOX
    for key, value in params.items():
        at.query_params[key] = value
    return at


@pytest.fixture
def db(embedded_db: Path, tmp_path: Path) -> Path:
    """A private copy of the embedded cache (the app holds its file open)."""
    copy = tmp_path / "app.duckdb"
    shutil.copy(embedded_db, copy)
    return copy


def gallery_scores(at: AppTest) -> list[str]:
    return [m.value for m in at.markdown if m.value.startswith("**#")]


def test_a_tile_query_from_the_link_shows_results_gallery_and_heatmap(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = similar_app(db, monkeypatch, q=QUERY, sup="0")
    at.run()
    assert not at.exception
    assert at.header[0].value == "Similar places"
    response = at.session_state["similar.query"]
    assert response.positives == (QUERY,)
    # The gallery: ten ranked cards, best first, the query tile itself never among them.
    cards = gallery_scores(at)
    assert len(cards) == 10
    assert cards[0].startswith("**#1**") and cards[-1].startswith("**#10**")
    assert all(QUERY.rsplit("/", 1)[1] not in c for c in cards)
    assert any("10 results of 16 test-vit tiles in region" in c.value for c in at.caption)
    # The top result is selected: its heatmap panel (thumbnail + overlay) is shown.
    assert at.subheader[0].value.startswith("#1 · ")
    captions = [c for img in at.image for c in img.captions]
    assert any("Where it matches" in c for c in captions)
    assert any("8 × 8 patches" in c.value for c in at.caption)
    # Selecting another result moves the panel; the selection goes into the URL.
    third = at.subheader[0].value  # keep the first for comparison
    buttons = [b for b in at.button if b.key and b.key.startswith("similar.pick.")]
    buttons[2].click().run()
    assert not at.exception
    assert at.subheader[0].value.startswith("#3 · ")
    assert at.subheader[0].value != third
    assert at.query_params["sel"] == "demo/virginia/112/112/" + at.subheader[0].value[5:]
    assert at.query_params["q"] == QUERY
    assert at.query_params["sup"] == "0"


def test_k_scope_and_threshold_change_the_search_and_reruns_reuse_it(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = similar_app(db, monkeypatch, q=QUERY, k="4")
    at.run()
    assert len(gallery_scores(at)) == 4
    at.toggle(key="similar.suppress").set_value(False).run()
    at.slider(key="similar.k").set_value(15).run()
    assert not at.exception
    assert len(gallery_scores(at)) == 15  # all 16 tiles but the query
    assert at.query_params["k"] == "15" and at.query_params["sup"] == "0"
    at.slider(key="similar.threshold").set_value(1.0).run()
    assert "No results" in at.warning[0].value
    at.slider(key="similar.threshold").set_value(0.0).run()
    # Reruns with the same inputs are answered from the cached search: fast.
    for _ in range(4):
        at.run()
    times = [t.seconds for t in at.session_state["app.timings"] if t.page == "similar"]
    assert statistics.median(times[-4:]) < 2.0, times


def test_positive_and_negative_examples_steer_the_search(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plain = similar_app(db, monkeypatch, q=QUERY, sup="0", k="15")
    plain.run()
    steered = similar_app(db, monkeypatch, q=QUERY, neg=NEGATIVE, sup="0", k="15")
    steered.run()
    assert not steered.exception
    assert steered.session_state["similar.query"].negatives == (NEGATIVE,)
    # The negative example is never returned, and it moves the ranking.
    cards = gallery_scores(steered)
    assert len(cards) == 14
    assert all("10_7" not in c for c in cards)
    assert cards != [c for c in gallery_scores(plain) if "10_7" not in c]
    assert any("positives minus negatives" in c.value for c in steered.caption)
    # Its chip removes it again.
    steered.button(key=f"similar.rm.{NEGATIVE}").click().run()
    assert steered.session_state["similar.query"].negatives == ()
    assert "neg" not in steered.query_params
    assert len(gallery_scores(steered)) == 15


def test_a_point_query_uses_the_tile_under_it(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at = similar_app(db, monkeypatch, sup="0")
    at.run()
    assert not at.exception
    assert "How to search" in at.markdown[-1].value or gallery_scores(at) == []
    at.text_input(key="similar.point_text").set_value("-75.645, 37.655").run()
    assert not at.exception
    assert at.session_state["similar.query"].point == (-75.645, 37.655)
    assert len(gallery_scores(at)) == 10
    assert at.query_params["pt"] == "-75.64500,37.65500"
    at.text_input(key="similar.point_text").set_value("37.6,-75.6,1").run()
    assert "Invalid point" in at.warning[0].value


def test_an_empty_cache_says_so_and_offers_to_analyse_here(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = similar_app(tmp_path / "empty.duckdb", monkeypatch, q=QUERY, sup="0")
    at.run()
    assert not at.exception
    assert "Nothing is cached for" in at.info[0].value
    at.button(key="similar.analyse").click().run()
    assert not at.exception
    # Analysed in place: the search runs on the new tiles.
    assert len(gallery_scores(at)) == 10
    assert at.session_state["app.analysis"].result.computed == 16
