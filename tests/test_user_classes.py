"""User classes on real embeddings of the Virginia scene: labels by id, point and polygon."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from backend.classes import user_classes as uc
from backend.cli import main
from backend.errors import NotFoundError, UnknownClassError
from backend.imagery.regions import parse_bbox
from backend.imagery.sources import SceneSource
from backend.store.cache import EmbeddingCache
from backend.store.scopes import resolve_scope, tiles_at_point, tiles_in_geometry

from .conftest import embed_test_vit

#: About 8.8 km × 8.9 km of the Eastern Shore: 75 test-vit tiles (112 px).
WIDE_BBOX = "-75.70,37.62,-75.60,37.70"


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory, virginia: SceneSource) -> Path:
    path = tmp_path_factory.mktemp("user_classes") / "cache.duckdb"
    embed_test_vit(path, virginia, WIDE_BBOX)
    return path


def test_labels_by_id_point_and_polygon(db: Path) -> None:
    with EmbeddingCache(db) as cache:
        scope = resolve_scope(cache, "test-vit", source_id="demo/virginia")
        ids = list(scope.tile_ids)
        tile = cache.tiles([ids[10]])[0]
        assert tiles_at_point(cache, tile["lon"], tile["lat"], scope.eset) == ids[10]
        with pytest.raises(NotFoundError, match="No cached tile"):
            tiles_at_point(cache, 12.6, 52.48)
        corner = parse_bbox(f"{tile['min_lon']},{tile['min_lat']},{tile['max_lon']},"
                            f"{tile['max_lat']}")  # fmt: skip
        assert tiles_in_geometry(cache, corner.geometry, scope.eset) == [ids[10]]

        change = uc.add_labels(cache, "water", ids[:3], positive=True)
        assert change.created_class and change.tiles == 3
        uc.add_labels(cache, "water", [ids[10]], positive=False, origin="point")
        # Relabelling replaces: tile 2 becomes negative.
        uc.add_labels(cache, "water", [ids[2]], positive=False, origin="polygon")
        (water,) = [c for c in uc.classes(cache) if c.name == "water"]
        assert (water.positives, water.negatives) == (2, 2)
        by_tile = {lb.tile_id: lb for lb in uc.labels(cache, "water")}
        assert by_tile[ids[2]].origin == "polygon" and not by_tile[ids[2]].positive
        assert by_tile[ids[0]].labelled_at is not None and by_tile[ids[0]].origin == "id"
        assert uc.remove_labels(cache, "water", [ids[0], ids[40]]).tiles == 1
        assert uc.label_sets(cache, "water") == ([ids[1]], sorted([ids[2], ids[10]]))

        with pytest.raises(NotFoundError, match="not in the cache"):
            uc.add_labels(cache, "water", ["demo/virginia/112/112/99_99"], positive=True)
        with pytest.raises(UnknownClassError, match="water"):
            uc.labels(cache, "wetland")


def test_rename_delete_export_import_round_trip(db: Path, tmp_path: Path) -> None:
    with EmbeddingCache(db) as cache:
        ids = list(resolve_scope(cache, "test-vit").tile_ids)
        uc.add_labels(cache, "fields", ids[20:25], positive=True)
        uc.add_labels(cache, "fields", ids[30:33], positive=False)
        uc.rename_class(cache, "fields", "cropland")
        with pytest.raises(UnknownClassError):
            uc.get_class(cache, "fields")
        before = [(lb.tile_id, lb.positive) for lb in uc.labels(cache, "cropland")]
        n = uc.export_labels(cache, tmp_path / "labels.geojson", "cropland")
        data = json.loads((tmp_path / "labels.geojson").read_text())
        assert n == len(data["features"]) == 8
        feature = data["features"][0]
        assert feature["geometry"]["type"] == "Polygon"
        assert feature["properties"]["class"] == "cropland"
        assert feature["properties"]["label"] in ("positive", "negative")
        assert uc.delete_class(cache, "cropland") == 8
        assert "cropland" not in [c.name for c in uc.classes(cache)]
        uc.import_labels(cache, tmp_path / "labels.geojson")
        after = [(lb.tile_id, lb.positive) for lb in uc.labels(cache, "cropland")]
        assert after == before
        assert {lb.origin for lb in uc.labels(cache, "cropland")} == {"import"}


def test_cli_label_actions(db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with EmbeddingCache(db, read_only=True) as cache:
        ids = list(resolve_scope(cache, "test-vit").tile_ids)
        tile = cache.tiles([ids[5]])[0]
    base = ["--db", str(db), "--json"]
    assert main(["label", "add", "marsh", "--tile", ids[0], "--tile", ids[1], *base]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out == {"class_name": "marsh", "tiles": 2, "positive": True, "created_class": True}
    point = f"{tile['lon']},{tile['lat']}"
    assert main(["label", "add", "marsh", "--point", point, "--negative", "--model",
                 "test-vit", *base]) == 0  # fmt: skip
    assert json.loads(capsys.readouterr().out)["positive"] is False
    assert main(["label", "list", "marsh", *base]) == 0
    labels = json.loads(capsys.readouterr().out)["labels"]
    assert {(lb["tile_id"], lb["positive"], lb["origin"]) for lb in labels} == {
        (ids[0], True, "id"), (ids[1], True, "id"), (ids[5], False, "point")}  # fmt: skip
    assert main(["label", "list", "--db", str(db)]) == 0
    assert "marsh" in capsys.readouterr().out

    assert main(["label", "rename", "nope", "other", "--db", str(db)]) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith("softmap: Unknown class:") and "nope" in err and len(err.splitlines()) == 1
    )
    assert main(["label", "add", "marsh", "--tile", "demo/virginia/112/112/999_0",
                 "--db", str(db)]) == 2  # fmt: skip
    assert "not in the cache" in capsys.readouterr().err
    assert main(["label", "add", "marsh", "--db", str(db)]) == 2
    assert "--tile" in capsys.readouterr().err

    path = tmp_path / "marsh.geojson"
    assert main(["label", "export", "marsh", "--out", str(path), *base]) == 0
    assert json.loads(capsys.readouterr().out)["features"] == 3
    assert main(["label", "delete", "marsh", *base]) == 0
    capsys.readouterr()
    assert main(["label", "import", str(path), *base]) == 0
    assert json.loads(capsys.readouterr().out)["imported"][0]["class_name"] == "marsh"
