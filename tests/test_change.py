"""Change between two dates: the bundled scene against a copy with a block of pixels altered."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

from backend.analysis.change import detect_change
from backend.cli import main
from backend.errors import ChangeError
from backend.imagery.bands import S2_L1C_BANDS
from backend.imagery.reader import PixelWindow, SceneReader
from backend.imagery.regions import Region
from backend.imagery.sources import BandAsset, Grid, SceneSource
from backend.models import create_model
from backend.models.inference import EmbeddingEngine
from backend.settings import Settings
from backend.store.cache import EmbeddingCache
from backend.store.catalog import register_source

from .conftest import VIRGINIA_SMALL_BBOX

#: The copy covers 6 × 6 tiles of 112 px around the small region (bundled rows 7–12, cols 4–9).
ROW0, COL0, SIZE = 7 * 112, 4 * 112, 672
#: Bundled tiles whose pixels the copy alters (a 2 × 2 block inside the region's 4 × 4 tiles).
CHANGED = {(9, 6), (9, 7), (10, 6), (10, 7)}


def _altered_copy(virginia: SceneSource, folder: Path, *, own_grid: bool, sid: str) -> SceneSource:
    """A 13-band copy of the crop with the CHANGED tiles altered (bundled grid or its own)."""
    with SceneReader(virginia) as reader:
        data = reader.read(PixelWindow(COL0, ROW0, SIZE, SIZE), S2_L1C_BANDS).astype(np.uint16)
    for r, c in CHANGED:
        y, x = r * 112 - ROW0, c * 112 - COL0
        data[:, y : y + 112, x : x + 112] = 6000  # bright and flat: a cloud, a flooded field
    transform = virginia.grid.affine @ Affine.translation(COL0, ROW0)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "after.tif"
    profile = {"driver": "GTiff", "width": SIZE, "height": SIZE, "count": 13, "dtype": "uint16",
               "crs": virginia.crs, "transform": transform, "nodata": 0, "tiled": True}  # fmt: skip
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(data)
    grid = (
        Grid(transform=tuple(transform)[:6], width=SIZE, height=SIZE)  # type: ignore[arg-type]
        if own_grid
        else virginia.grid
    )
    return virginia.model_copy(
        update={
            "id": sid,
            "title": "Altered copy",
            "date": "2016-02-01",
            "grid": grid,
            "bands": tuple(
                BandAsset(name=b, resolution_m=r.resolution_m, file="after.tif", index=i + 1)
                for i, (b, r) in enumerate(zip(S2_L1C_BANDS, virginia.bands, strict=True))
            ),
            "labels": (),
            "root": folder,
        }
    )


@pytest.mark.parametrize("own_grid", [False, True], ids=["same-grid", "other-grid"])
def test_altered_tiles_rank_first(
    virginia: SceneSource,
    small_region: Region,
    settings: Settings,
    db_path: Path,
    tmp_path: Path,
    own_grid: bool,
) -> None:
    after = _altered_copy(virginia, tmp_path / "after", own_grid=own_grid, sid="test/after")
    model = create_model("test-vit")
    engine = EmbeddingEngine(model, device="cpu", batch_size=16, readers=0)
    with EmbeddingCache(db_path) as cache:
        result = detect_change(
            small_region, virginia, after, model, cache, k=6, out=tmp_path / "change.tif",
            engine=engine, settings=settings,
        )  # fmt: skip
        again = detect_change(
            small_region, virginia, after, model, cache, k=6, engine=engine, settings=settings
        )
    assert result.matching == ("centroid" if own_grid else "grid")
    assert len(result.pairs) == 16 and result.unmatched_before == result.unmatched_after == 0
    assert result.computed == 32 and again.computed == 0 and again.cached == 32
    top4 = {
        tuple(int(v) for v in t.before_tile.rsplit("/", 1)[1].split("_")) for t in result.top[:4]
    }
    assert top4 == CHANGED
    assert max(t.distance for t in result.top[4:]) < 1e-6  # identical pixels elsewhere
    assert min(t.distance for t in result.top[:4]) > 1e-3
    with rasterio.open(tmp_path / "change.tif") as ds:
        grid = ds.read(1)
        assert ds.crs.to_epsg() == 32618 and grid.shape == (4, 4)
        assert ds.transform.a == 1120.0
    np.testing.assert_allclose(np.sort(grid.ravel())[::-1], np.sort(result.distances)[::-1])
    # Rows 9–10, cols 6–7 of the bundled grid are the centre of the region's rows 8–11, 5–8.
    assert (grid[1:3, 1:3] > 1e-3).all() and (grid[0] < 1e-6).all()


def test_same_source_twice_is_refused(
    virginia: SceneSource, small_region: Region, settings: Settings, db_path: Path
) -> None:
    with EmbeddingCache(db_path) as cache, pytest.raises(ChangeError, match="both"):
        detect_change(
            small_region, virginia, virginia, create_model("test-vit"), cache, settings=settings
        )


def test_cli_change_json(
    virginia: SceneSource, db_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    after = _altered_copy(virginia, tmp_path / "after", own_grid=False, sid="user/after")
    with EmbeddingCache(db_path) as cache:
        register_source(cache, after)
    args = ["change", "--model", "test-vit", "--before", "demo/virginia", "--after",
            "user/after", "--bbox", VIRGINIA_SMALL_BBOX, "--db", str(db_path), "--k", "4",
            "--device", "cpu", "--readers", "0"]  # fmt: skip
    assert main([*args, "--json", "--out", str(tmp_path / "map.tif")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["pairs"] == 16 and out["matching"] == "grid" and len(out["top"]) == 4
    assert {t["before_tile"].rsplit("/", 1)[1] for t in out["top"]} == {
        "9_6",
        "9_7",
        "10_6",
        "10_7",
    }
    assert out["top"][0]["distance"] > 1e-3 and -75.67 < out["top"][0]["lon"] < -75.62
    assert (tmp_path / "map.tif").exists()
    assert main(args) == 0
    assert "RANK" in capsys.readouterr().out
    assert main([*args[:6], "demo/virginia", *args[7:]]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("softmap: Cannot compare dates") and "\n" not in err
