"""STAC imagery for real: a loopback STAC API serving per-band COGs cut from the bundled scene."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from affine import Affine

from backend.cli import main
from backend.embedding.pipeline import embed_region
from backend.errors import CatalogueUnreachableError, EmptySearchError
from backend.imagery.bands import S2_L1C_BANDS
from backend.imagery.rasters import write_cog
from backend.imagery.reader import PixelWindow, SceneReader
from backend.imagery.regions import Region, parse_bbox
from backend.imagery.sources import SceneSource, load_manifest, to_lonlat
from backend.imagery.stac import build_source, item_source, save_manifest, search, selection_tiles
from backend.models import create_model
from backend.models.inference import EmbeddingEngine
from backend.settings import Settings
from backend.store.acquisitions import record_tiles, tile_acquisitions
from backend.store.cache import EmbeddingCache

from .conftest import VIRGINIA_SMALL_BBOX
from .stac_server import StacTestServer

#: The crop served as COGs: 6 × 6 cells of 112 px, aligned with the bundled grid's 112 px tiles.
ROW0, COL0, SIZE = 7 * 112, 4 * 112, 672
EARTH_SEARCH_KEYS = {
    "B01": "coastal", "B02": "blue", "B03": "green", "B04": "red", "B05": "rededge1",
    "B06": "rededge2", "B07": "rededge3", "B08": "nir", "B8A": "nir08", "B09": "nir09",
    "B10": "cirrus", "B11": "swir16", "B12": "swir22",
}  # fmt: skip
COLLECTION = "sentinel-2-l1c"
DATES = "2016-01-01/2016-01-31"


def _item(
    server: StacTestServer, item_id: str, when: str, cloud: float, transform: Affine, crs: str
) -> dict[str, Any]:
    footprint = to_lonlat(
        __import__("shapely.geometry", fromlist=["box"]).box(
            transform.c, transform.f - SIZE * 10, transform.c + SIZE * 10, transform.f
        ),
        crs,
    )
    grid = {"proj:shape": [SIZE, SIZE], "proj:transform": list(transform)[:6]}
    assets: dict[str, Any] = {
        # Earth Search lists a JP2 twin of each band; the COG must win.
        "blue-jp2": {
            "href": server.data_url(f"{item_id}_missing.jp2"),
            "type": "image/jp2",
            "eo:bands": [{"name": "B02"}],
        },
        "thumbnail": {"href": server.data_url("none.jpg"), "type": "image/jpeg"},
    }
    for band, key in EARTH_SEARCH_KEYS.items():
        assets[key] = {
            "href": server.data_url(f"{item_id}_{band}.tif"),
            "type": "image/tiff; application=geotiff; profile=cloud-optimized",
            "roles": ["data"],
            **grid,
        }
    assets["scl"] = {"href": server.data_url(f"{item_id}_SCL.tif"), "type": "image/tiff", **grid}
    return {
        "type": "Feature",
        "stac_version": "1.0.0",
        "id": item_id,
        "collection": COLLECTION,
        "bbox": list(footprint.bounds),
        "geometry": json.loads(json.dumps(footprint.__geo_interface__)),
        "properties": {
            "datetime": when,
            "eo:cloud_cover": cloud,
            "proj:epsg": 32618,
            "s2:mgrs_tile": "18SVG",
        },
        "links": [],
        "assets": assets,
    }


@pytest.fixture(scope="module")
def stac(tmp_path_factory: pytest.TempPathFactory, virginia: SceneSource) -> Iterator[Any]:
    """Items: ``clear`` (2016-01-12, 1 %), ``west-cloud`` / ``east-cloud`` (half clouded, SCL)."""
    root = tmp_path_factory.mktemp("stac")
    with SceneReader(virginia) as reader:
        clear = reader.read(PixelWindow(COL0, ROW0, SIZE, SIZE), S2_L1C_BANDS).astype(np.uint16)
    transform = virginia.grid.affine @ Affine.translation(COL0, ROW0)
    half = SIZE // 2
    server = StacTestServer(root).start()
    versions = {
        "S2A_18SVG_20160112_clear": ("2016-01-12T15:54:00Z", 1.0, None),
        "S2A_18SVG_20160122_west": ("2016-01-22T15:54:00Z", 50.0, slice(0, half)),
        "S2A_18SVG_20160201_east": ("2016-01-28T15:54:00Z", 50.0, slice(half, SIZE)),
        "S2A_18SVG_20160215_late": ("2016-02-15T15:54:00Z", 0.0, None),
        "S2A_18SVG_20160105_cloudy": ("2016-01-05T15:54:00Z", 95.0, None),
    }
    for item_id, (when, cloud, cols) in versions.items():
        data = clear.copy()
        scl = np.full((SIZE, SIZE), 4, dtype=np.uint8)  # vegetation: usable
        if cols is not None:
            data[:, :, cols] = 9000  # bright cloud in every band
            scl[:, cols] = 9
        for i, band in enumerate(S2_L1C_BANDS):
            write_cog(root / f"{item_id}_{band}.tif", data[i], transform=transform,
                      crs=virginia.crs, nodata=0)  # fmt: skip
        write_cog(root / f"{item_id}_SCL.tif", scl, transform=transform, crs=virginia.crs)
        server.items.append(_item(server, item_id, when, cloud, transform, virginia.crs))
    yield server
    server.stop()


@pytest.fixture
def online(tmp_path: Path) -> Settings:
    return Settings(db_path=tmp_path / "cache.duckdb", offline=False, stac_timeout_s=5)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_windowed_reads_are_range_requests(stac: StacTestServer, online: Settings) -> None:
    region = parse_bbox(VIRGINIA_SMALL_BBOX)
    result = search(region, DATES, api_url=stac.url, collections=[COLLECTION], max_cloud=60,
                    settings=online)  # fmt: skip
    # Least cloudy first; the 95 % item is filtered out, the February one is outside the dates.
    assert next(i.id for i in result.items) == "S2A_18SVG_20160112_clear"
    assert "S2A_18SVG_20160105_cloudy" not in {i.id for i in result.items}
    assert "S2A_18SVG_20160215_late" not in {i.id for i in result.items}
    assert result.returned == 3, stac.searches  # the API applied the cloud query itself
    source = item_source(result.items[0])
    assert source.product_level == "L1C" and set(source.band_names) == set(S2_L1C_BANDS)
    assert source.bands[0].file.endswith(".tif")  # the COG, not the JP2 twin
    stac.reset_counts()
    with SceneReader(source) as reader:
        chip = reader.read(PixelWindow(112, 112, 112, 112), S2_L1C_BANDS)
    sizes = sum(
        (stac.data_dir / f"S2A_18SVG_20160112_clear_{b}.tif").stat().st_size for b in S2_L1C_BANDS
    )
    served = sum(stac.bytes_served.values())
    assert stac.range_requests >= len(S2_L1C_BANDS) and stac.full_requests == 0
    assert 0 < served < sizes / 2, (served, sizes)
    assert chip.mean() > 0


def test_embeddings_via_stac_equal_the_bundled_source(
    stac: StacTestServer, virginia: SceneSource, online: Settings, tmp_path: Path
) -> None:
    region = parse_bbox(VIRGINIA_SMALL_BBOX)
    model = create_model("test-vit")
    engine = EmbeddingEngine(model, device="cpu", batch_size=16, readers=0)
    result = search(region, DATES, api_url=stac.url, collections=[COLLECTION], settings=online)
    best = build_source(result, region, folder=tmp_path)
    with EmbeddingCache(tmp_path / "c.duckdb") as cache:
        ref = embed_region(region, virginia, model, cache, engine=engine, settings=online)
        got = embed_region(region, best.source, model, cache, engine=engine, settings=online)
        v_ref = _by_place(cache, ref.preprocessing_hash, ref.tile_ids, virginia.id, 0, 0)
        v_got = _by_place(cache, got.preprocessing_hash, got.tile_ids, best.source.id, 7, 4)
    assert got.tiles == ref.tiles == 16 and got.computed == 16
    assert set(v_got) == set(v_ref)
    for key, vec in v_ref.items():
        np.testing.assert_allclose(v_got[key], vec, rtol=1e-5, atol=1e-5)


def _by_place(
    cache: EmbeddingCache, phash: str, tile_ids: tuple[str, ...], sid: str, dr: int, dc: int
) -> dict[tuple[int, int], np.ndarray]:
    eset = cache.embedding_set("test-vit", phash)
    assert eset is not None
    ids, vectors = cache.embeddings(eset, list(tile_ids))
    out = {}
    for tid, v in zip(ids, vectors, strict=True):
        assert tid.startswith(sid + "/")
        row, col = (int(x) for x in tid.rsplit("/", 1)[1].split("_"))
        out[(row + dr, col + dc)] = v
    return out


def test_per_tile_least_cloudy_mosaic(
    stac: StacTestServer, virginia: SceneSource, online: Settings, tmp_path: Path
) -> None:
    region = parse_bbox(VIRGINIA_SMALL_BBOX)
    result = search(region, "2016-01-20/2016-01-31", api_url=stac.url,
                    collections=[COLLECTION], max_cloud=60, settings=online)  # fmt: skip
    assert {i.id for i in result.items} == {"S2A_18SVG_20160122_west", "S2A_18SVG_20160201_east"}
    mosaic = build_source(result, region, per_tile=True, chip=112, folder=tmp_path / "stac")
    assert mosaic.selection is not None
    cells = mosaic.selection.cells
    # Crop columns 0–2 are cloudy in "west", 3–5 in "east": each cell takes the clear item.
    for (_, col), pick in cells.items():
        want = "S2A_18SVG_20160201_east" if col < 3 else "S2A_18SVG_20160122_west"
        assert pick.item_id == want and pick.cloud_fraction == 0.0 and pick.basis == "scl"
    # The mosaic is cloud-free, so it reads exactly the clear scene.
    manifest = save_manifest(mosaic.source, tmp_path / "manifest")
    reopened = load_manifest(manifest)
    with SceneReader(reopened) as r1, SceneReader(virginia) as r2:
        a = r1.read(PixelWindow(112, 112, 336, 336), S2_L1C_BANDS)
        b = r2.read(PixelWindow(COL0 + 112, ROW0 + 112, 336, 336), S2_L1C_BANDS)
    np.testing.assert_array_equal(a, b)
    with EmbeddingCache(tmp_path / "c.duckdb") as cache:
        n = record_tiles(cache, mosaic, selection_tiles(mosaic, region, 112))
        rows = tile_acquisitions(cache, [t[0] for t in selection_tiles(mosaic, region, 112)])
    assert n == len(rows) == 16
    dates = {r["tile_id"].rsplit("_", 1)[1]: (r["item_id"], r["date"]) for r in rows}
    assert dates["1"] == ("S2A_18SVG_20160201_east", "2016-01-28")
    assert dates["4"] == ("S2A_18SVG_20160122_west", "2016-01-22")


def test_unreachable_offline_and_empty_give_one_clear_message(
    stac: StacTestServer, online: Settings, small_region: Region
) -> None:
    dead = f"http://127.0.0.1:{_free_port()}"
    with pytest.raises(CatalogueUnreachableError, match="unreachable") as e:
        search(small_region, DATES, api_url=dead, settings=online)
    assert dead in e.value.one_line() and "\n" not in e.value.one_line()
    offline = online.model_copy(update={"offline": True})
    with pytest.raises(CatalogueUnreachableError, match="offline"):
        search(small_region, DATES, api_url=stac.url, settings=offline)
    with pytest.raises(EmptySearchError) as empty:
        search(small_region, "2020-06-01/2020-06-30", api_url=stac.url,
               collections=[COLLECTION], settings=online)  # fmt: skip
    msg = empty.value.one_line()
    assert "2020-06-01/2020-06-30" in msg and COLLECTION in msg and "-75.6600" in msg


def test_cli_search_and_errors(
    stac: StacTestServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SOFTMAP_OFFLINE", "0")
    from backend.settings import get_settings

    get_settings.cache_clear()
    args = ["stac", "search", "--api", stac.url, "--collection", COLLECTION,
            "--max-cloud", "60", "--bbox", VIRGINIA_SMALL_BBOX, "--dates", DATES]  # fmt: skip
    assert main([*args, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert next(i["id"] for i in out["items"]) == "S2A_18SVG_20160112_clear"
    assert main(args) == 0
    assert "S2A_18SVG_20160122_west" in capsys.readouterr().out
    dead = f"http://127.0.0.1:{_free_port()}"
    assert main(["stac", "search", "--api", dead, "--bbox", VIRGINIA_SMALL_BBOX,
                 "--dates", DATES]) == 2  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert err.startswith("softmap: STAC catalogue unreachable") and "\n" not in err
    assert main([*args[:-1], "2016-13-01"]) == 2
    assert "Invalid dates" in capsys.readouterr().err


def test_cli_add_per_tile_registers_embeds_and_records_items(
    stac: StacTestServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("SOFTMAP_OFFLINE", "0")
    monkeypatch.setenv("SOFTMAP_DEVICE", "cpu")
    from backend.settings import get_settings

    get_settings.cache_clear()
    db = tmp_path / "cli.duckdb"
    assert main(["stac", "add", "--api", stac.url, "--collection", COLLECTION,
                 "--max-cloud", "60", "--bbox", VIRGINIA_SMALL_BBOX,
                 "--dates", "2016-01-20/2016-01-31", "--per-tile", "--model", "test-vit",
                 "--db", str(db), "--json"]) == 0  # fmt: skip
    out = json.loads(capsys.readouterr().out)
    assert out["mode"] == "per-tile" and out["embedded"]["computed"] == 16
    assert out["cells_per_item"] == {"S2A_18SVG_20160201_east": 8, "S2A_18SVG_20160122_west": 8}
    assert main(["sources", "--db", str(db), "--json"]) == 0
    ids = {s["id"] for s in json.loads(capsys.readouterr().out)["sources"]}
    assert out["source"] in ids
    with EmbeddingCache(db, read_only=True) as cache:
        rows = tile_acquisitions(cache, [f"{out['source']}/112/112/{r}_{c}" for r in range(1, 5)
                                         for c in range(1, 5)])  # fmt: skip
    assert len(rows) == 16
    assert {r["date"] for r in rows} == {"2016-01-22", "2016-01-28"}
