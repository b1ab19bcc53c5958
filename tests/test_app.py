"""The interim app, run headless with Streamlit's AppTest (the map itself needs a browser)."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from backend.settings import PROJECT_ROOT, get_settings

MAIN = str(PROJECT_ROOT / "app" / "main.py")


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    monkeypatch.setenv("SOFTMAP_DB_PATH", str(tmp_path / "app.duckdb"))
    get_settings.cache_clear()
    at = AppTest.from_file(MAIN, default_timeout=120)
    at.run()
    return at


def test_page_renders_with_the_demo_scene(app: AppTest) -> None:
    assert not app.exception
    assert app.sidebar.selectbox(key="sidebar.source").value == "demo/virginia"
    assert app.sidebar.selectbox(key="sidebar.model").value == "test-vit"
    assert "Eastern Shore of Virginia" in app.header[0].value


def test_embed_button_embeds_then_reuses_the_cache(app: AppTest) -> None:
    app.button[0].click().run()
    assert not app.exception
    assert "16 computed, 0 from the cache" in app.success[0].value
    app.button[0].click().run()
    assert "0 computed, 16 from the cache" in app.success[0].value


def test_bad_bbox_and_missing_weights_are_shown_not_raised(app: AppTest) -> None:
    app.text_input(key="embed.bbox.demo/virginia").set_value("1,2,3").run()
    assert not app.exception
    assert "four numbers" in app.warning[0].value
    app.text_input(key="embed.bbox.demo/virginia").set_value("12.6,52.48,12.63,52.49").run()
    app.button[0].click().run()
    assert "Sources that cover it: demo/brandenburg" in app.warning[0].value
    app.text_input(key="embed.bbox.demo/virginia").set_value("-75.66,37.64,-75.625,37.67").run()
    app.sidebar.selectbox(key="sidebar.model").set_value("softcon-vits14-s2").run()
    app.button[0].click().run()
    assert not app.exception
    assert "B13_vits14_softcon.pth" in app.warning[0].value
