"""The app offers "S2 + S1" for a scene with a radar partner, and analyses with it (AppTest).

Uses the real BigEarthNet Austria pair of ../shared/data (skipped without it), registered with
`softmap sources add`, and test-vit + test-vit-s1 (seeded random weights).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from backend.cli import main
from backend.imagery.sources import SceneSource
from backend.settings import PROJECT_ROOT, get_settings

MAIN = str(PROJECT_ROOT / "app" / "main.py")
S2_ID, S1_ID = "ben/austria-s2", "ben/austria-s1"
FUSED = "test-vit+test-vit-s1"


@pytest.fixture
def paired_app(shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    db = tmp_path / "app.duckdb"
    s2 = shared_data / "bigearthnet_s2_examples" / "S2A_MSIL2A_20170613T101031_87_48"
    s1 = next((shared_data / "bigearthnet_s1_examples").glob("*_33UUP_87_48"))
    for path, sid in ((s2, S2_ID), (s1, S1_ID)):
        assert main(["sources", "add", str(path), "--id", sid, "--db", str(db)]) == 0
    monkeypatch.setenv("SOFTMAP_DB_PATH", str(db))
    get_settings.cache_clear()
    at = AppTest.from_file(MAIN, default_timeout=180)
    at.query_params["source"] = S2_ID
    at.query_params["model"] = FUSED
    at.query_params["bbox"] = "13.7127,48.2168,13.7292,48.2278"
    return at


def test_s2_plus_s1_is_offered_and_analyses(paired_app: AppTest) -> None:
    at = paired_app
    at.run()
    assert not at.exception
    model = at.sidebar.selectbox(key="sidebar.model")
    assert model.value == FUSED
    assert FUSED in model.options or any("S2 + S1" in o for o in model.options)
    captions = " ".join(c.value for c in at.sidebar.caption)
    assert "radar" in captions and "optical" in captions and S1_ID in captions
    assert f"Radar (S1) partner: `{S1_ID}` (same day)" in captions
    at.button(key="explore.analyse").click().run()
    assert not at.exception
    analysis = at.session_state["app.analysis"]
    assert analysis.model_id == FUSED and len(analysis.tiles) == 1
    assert analysis.result.model == FUSED and analysis.result.computed == 2  # one S2, one S1 tile
    # Land cover says why there is none (heads are per model) instead of failing.
    from app.analysis import FUSED_HAS_NO_HEAD, map_landcover

    source = analysis.result.source
    assert map_landcover(analysis, source=_source(source)).error is FUSED_HAS_NO_HEAD


def _source(source_id: str) -> SceneSource:
    from backend.store.catalog import open_catalog

    return open_catalog(get_settings().db_path).get(source_id)


def test_a_scene_without_partner_has_no_fused_choice(paired_app: AppTest) -> None:
    at = paired_app
    at.query_params["source"] = "demo/virginia"
    at.query_params["bbox"] = "-75.66,37.64,-75.625,37.67"
    at.run()
    assert not at.exception
    model = at.sidebar.selectbox(key="sidebar.model")
    assert model.value != FUSED and not any("S2 + S1" in str(o) for o in model.options)
