"""The Change page, headless (AppTest), and the change operations it calls.

The second date is ``scripts/second_date.py``: a copy of a crop of the Virginia demo in which a
2.24 km block (the 112 px tiles 9_6, 9_7, 10_6, 10_7) is flooded. The map is a custom component
AppTest cannot render (``tests/test_browser_maps.py`` opens it in Chromium); these tests check
what the page computed, says and offers.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio
from streamlit.testing.v1 import AppTest

from backend.errors import ChangeError
from backend.imagery.regions import parse_bbox
from backend.service import ChangeRequest, RegionSpec, Workspace
from backend.service.change import common_region, compare_dates, overlapping_sources
from backend.settings import PROJECT_ROOT, get_settings
from scripts.second_date import (
    CHANGED_TILES_112,
    SOURCE_ID,
    register_second_date,
    write_second_date,
)
from tests.conftest import VIRGINIA_SMALL_BBOX

MAIN = str(PROJECT_ROOT / "app" / "main.py")
CHANGED = {f"demo/virginia/112/112/{r}_{c}" for r, c in CHANGED_TILES_112}


@pytest.fixture(scope="module")
def two_dates_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache with the derived second date registered (nothing embedded yet)."""
    folder = tmp_path_factory.mktemp("two_dates")
    path = write_second_date(folder / "files")
    db = folder / "template.duckdb"
    register_second_date(Workspace(db_path=db), path)
    return db


@pytest.fixture
def db(two_dates_db: Path, tmp_path: Path) -> Path:
    """A private copy (the app holds its file open)."""
    copy = tmp_path / "app.duckdb"
    shutil.copy(two_dates_db, copy)
    return copy


def change_app(db: Path, monkeypatch: pytest.MonkeyPatch, **params: str) -> AppTest:
    monkeypatch.setenv("SOFTMAP_DB_PATH", str(db))
    get_settings.cache_clear()
    at = AppTest.from_file(MAIN, default_timeout=240)
    at.query_params["page"] = "change"
    at.query_params["source"] = "demo/virginia"
    at.query_params["model"] = "test-vit"
    for key, value in params.items():
        at.query_params[key] = value
    return at


def ranked_tiles(at: AppTest) -> list[str]:
    return [m.value.split("`")[1] for m in at.markdown if m.value.startswith("**0.")]


# --- the page ------------------------------------------------------------------------------------
def test_with_one_date_the_page_says_how_to_add_a_second(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = change_app(tmp_path / "empty.duckdb", monkeypatch, bbox=VIRGINIA_SMALL_BBOX)
    at.run()
    assert not at.exception
    assert "Only one date of this place" in at.info[0].value
    code = "\n".join(c.value for c in at.code)
    assert "softmap stac add --bbox -75.6600,37.6400,-75.6250,37.6700" in code
    assert "softmap sources add" in code
    assert not [b for b in at.button if b.key == "change.compare"]
    assert "after" not in at.query_params


def test_compare_embeds_both_dates_and_ranks_the_flooded_tiles_first(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = change_app(db, monkeypatch, bbox=VIRGINIA_SMALL_BBOX)
    at.run()
    assert not at.exception
    assert at.selectbox(key="change.after").value == SOURCE_ID
    assert "Press **Compare**" in at.info[0].value
    at.button(key="change.compare").click().run()
    assert not at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Tile pairs"] == "16"
    captions = " ".join(c.value for c in at.caption)
    assert "16 tile pairs (centroid matching)" in captions
    assert "32 embedded now, 0 from the cache" in captions
    ranked = ranked_tiles(at)
    assert len(ranked) == 10
    assert set(ranked[:4]) == CHANGED
    # Before and after thumbnails for each listed tile.
    captions = [c for img in at.image for c in img.captions]
    assert len(captions) == 2 * 10
    assert captions[:2] == ["9_6", "5_2"]  # the same place: bundled row 9 = crop row 5
    downloads = [d.proto.label for d in at.get("download_button")]
    assert downloads == ["Change map (COG)", "Ranked list (GeoJSON)", "Ranked list (CSV)"]
    assert at.query_params["after"] == SOURCE_ID
    assert at.query_params["analysed"] == "1"

    # Listing fewer tiles, or switching to the swipe view, reuses the comparison.
    at.slider(key="change.k").set_value(4).run()
    assert not at.exception
    assert set(ranked_tiles(at)) == CHANGED
    assert "32 embedded now" in " ".join(c.value for c in at.caption)
    at.segmented_control(key="change.view").set_value("Swipe before / after").run()
    assert not at.exception
    assert any("Drag the handle" in c.value for c in at.caption)

    # Compare again: everything comes from the cache.
    at.button(key="change.compare").click().run()
    assert "0 embedded now, 32 from the cache" in " ".join(c.value for c in at.caption)


def test_a_link_restores_the_comparison(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at = change_app(db, monkeypatch, bbox=VIRGINIA_SMALL_BBOX, after=SOURCE_ID, analysed="1")
    at.run()
    assert not at.exception
    assert {m.label: m.value for m in at.metric}["Tile pairs"] == "16"
    assert set(ranked_tiles(at)[:4]) == CHANGED


def test_a_region_outside_the_overlap_is_one_clear_message(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Inside the Virginia scene, but east of the derived crop.
    at = change_app(db, monkeypatch, bbox="-75.56,37.60,-75.53,37.63")
    at.run()
    assert not at.exception
    assert "Outside the overlap" in at.warning[0].value
    at.button(key="change.compare").click().run()
    assert not at.exception
    shown = " ".join(e.value for e in [*at.error, *at.warning])
    assert "outside the overlap of demo/virginia and test/virginia-flooded" in shown
    assert not at.metric
    # One click puts the region back where both dates are.
    at.button(key="change.use_overlap").click().run()
    assert not at.exception and not at.warning
    assert "Press **Compare**" in at.info[0].value


# --- the operations ------------------------------------------------------------------------------
def test_the_overlap_and_its_region(db: Path) -> None:
    ws = Workspace(db_path=db)
    assert [s.id for s in overlapping_sources(ws, "demo/virginia")] == [SOURCE_ID]
    assert [s.id for s in overlapping_sources(ws, SOURCE_ID)] == ["demo/virginia"]
    assert overlapping_sources(ws, "demo/brandenburg") == []
    before, after = ws.source("demo/virginia"), ws.source(SOURCE_ID)
    whole = common_region(before, after, None)
    assert whole.geometry.within(before.footprint_lonlat.buffer(1e-9))
    assert 70 < whole.area_km2 < 90  # the 8.96 km crop
    # A region sticking out of the crop is clipped to it.
    clipped = common_region(before, after, parse_bbox("-75.70,37.64,-75.60,37.67"))
    assert clipped.geometry.within(whole.geometry.buffer(1e-9))
    with pytest.raises(ChangeError, match="do not overlap"):
        common_region(before, ws.source("demo/brandenburg"), None)


def test_the_map_and_the_list_as_files(db: Path, tmp_path: Path) -> None:
    ws = Workspace(db_path=db)
    req = ChangeRequest(
        before="demo/virginia",
        after=SOURCE_ID,
        region=RegionSpec(bbox=VIRGINIA_SMALL_BBOX),
        model="test-vit",
        k=5,
    )
    change = compare_dates(ws, req)
    distances = [t.distance for t in change.tiles]
    assert distances == sorted(distances, reverse=True)
    assert [t.rank for t in change.tiles] == list(range(1, 17))
    assert {t.before_tile for t in change.top(4)} == CHANGED

    cog = change.write_map(tmp_path / "change.tif")
    with rasterio.open(cog) as ds:
        assert ds.crs.to_epsg() == 32618
        assert ds.descriptions == ("cosine_distance",)
        assert ds.tags()["after"] == SOURCE_ID
        data = ds.read(1)
        assert np.nanmax(data) == pytest.approx(change.max_distance, rel=1e-6)
        assert int(np.isfinite(data).sum()) == 16  # one cell per 1.12 km tile
        assert ds.res == (1120.0, 1120.0)

    gj = json.loads(change.write_list(tmp_path / "change.geojson").read_text())
    assert len(gj["features"]) == 16
    first = gj["features"][0]
    assert first["geometry"]["type"] == "Polygon"
    assert first["properties"]["rank"] == 1 and first["properties"]["before_tile"] in CHANGED
    rows = list(csv.DictReader(io.StringIO(change.write_list(tmp_path / "c.csv").read_text())))
    assert [r["rank"] for r in rows] == [str(i) for i in range(1, 17)]
    assert {r["before_tile"] for r in rows[:4]} == CHANGED
    with pytest.raises(ChangeError, match=r"\.geojson or \.csv"):
        change.write_list(tmp_path / "c.xlsx")


def test_softmap_change_writes_the_ranked_list(
    db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from backend.cli import main

    out = tmp_path / "list.geojson"
    argv = ["change", "--before", "demo/virginia", "--after", SOURCE_ID, "--bbox",
            VIRGINIA_SMALL_BBOX, "--model", "test-vit", "--db", str(db), "--list", str(out),
            "--json"]  # fmt: skip
    assert main(argv) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["list"] == str(out) and payload["computed"] == 32
    features = json.loads(out.read_text())["features"]
    assert {f["id"] for f in features[:4]} == CHANGED
    with pytest.raises(SystemExit) as exit_info:  # argparse: one line, status 2
        main([*argv[:-3], "--list", str(tmp_path / "list.xlsx")])
    assert exit_info.value.code == 2
    assert "write one of: .geojson, .csv" in capsys.readouterr().err
