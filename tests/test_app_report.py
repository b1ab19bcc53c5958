"""The Report & export page, headless (AppTest): not analysed → offer; analysed → report + files."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from backend.settings import PROJECT_ROOT, get_settings
from tests.conftest import VIRGINIA_SMALL_BBOX

MAIN = str(PROJECT_ROOT / "app" / "main.py")


def report_app(db: Path, monkeypatch: pytest.MonkeyPatch, **params: str) -> AppTest:
    monkeypatch.setenv("SOFTMAP_DB_PATH", str(db))
    get_settings.cache_clear()
    at = AppTest.from_file(MAIN, default_timeout=180)
    at.query_params["page"] = "report"
    at.query_params["source"] = "demo/virginia"
    at.query_params["model"] = "test-vit"
    for key, value in params.items():
        at.query_params[key] = value
    return at


def downloads(at: AppTest) -> dict[str, str]:
    """Download buttons: label (before the size) → the suffix the MIME type gives the file."""
    return {
        el.proto.label.split(" · ")[0]: el.proto.url.rsplit(".", 1)[-1]
        for el in at.get("download_button")
    }


def preview(at: AppTest) -> str:
    """The report shown on the page (the iframe's document)."""
    (frame,) = at.get("iframe")
    return str(frame.proto.srcdoc)


def test_a_region_not_analysed_is_offered_analysis(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = report_app(tmp_path / "empty.duckdb", monkeypatch, bbox=VIRGINIA_SMALL_BBOX)
    at.run()
    assert not at.exception
    assert at.header[0].value == "Report & export"
    assert "is not analysed with" in at.info[0].value
    assert not at.get("download_button")
    # Analysing here embeds the 16 tiles and brings the report.
    at.button(key="report.analyse").click().run()
    assert not at.exception
    assert len(at.get("download_button")) == 6
    assert at.query_params["analysed"] == "1" and at.query_params["page"] == "report"


def test_an_analysed_region_shows_the_report_and_every_download(
    embedded_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "app.duckdb"
    shutil.copy(embedded_db, db)
    at = report_app(db, monkeypatch, bbox=VIRGINIA_SMALL_BBOX, analysed="1")
    at.run()
    assert not at.exception, at.exception
    files = downloads(at)
    assert set(files) == {
        "Report (HTML)",
        "Tiles (GeoJSON)",
        "Tiles (GeoParquet)",
        "Probability map (COG)",
        "Class areas (CSV)",
        "Embeddings (GeoParquet)",
    }
    assert files["Report (HTML)"] == "html" and files["Class areas (CSV)"] == "csv"
    html = preview(at)
    # The report holds the area table with the same numbers as the land cover the page mapped.
    result = next(iter(at.session_state["report.landcover"].values())).result
    assert len(result.tile_ids) == 16
    assert '<table class="areas">' in html and "Expected km²" in html
    for a in result.areas:
        assert f"{a.expected_km2:.2f}</td>" in html
    assert "Eastern Shore of Virginia" in html and "2016-01-12" in html
    assert html.count("data:image/png;base64,") == 2
    assert "http://" not in html and "https://" not in html
    assert "test-vit has random weights" in html
    # Reruns reuse the report: the same document, built once.
    at.run()
    assert not at.exception
    assert preview(at) == html
    times = [t.seconds for t in at.session_state["app.timings"] if t.page == "report"]
    assert times[-1] < 2.0, times
