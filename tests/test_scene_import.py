"""``softmap sources add``: the bundled Brandenburg scene re-packed the ways users bring imagery.

A 3.36 km × 3.36 km window of the bundled COG (with the top cloud streak) is written as a
multi-band GeoTIFF with band descriptions, as per-band 10 m GeoTIFFs, as per-band JPEG 2000 at
each band's native resolution (lossless), as a minimal L1C ``.SAFE`` folder and as a minimal L2A
``.SAFE`` folder with processing baseline 05.09 (DN + 1000 and ``BOA_ADD_OFFSET`` −1000, an SCL
layer). Every copy is registered through the CLI and embedded; the embeddings of the same tile
agree with those read from the bundled source.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import rasterio.shutil
from numpy.typing import NDArray
from rasterio.io import MemoryFile
from rasterio.transform import Affine, from_origin
from shapely.geometry import box

from backend.cli import main
from backend.embedding.pipeline import embed_region
from backend.errors import SceneImportError
from backend.imagery.bands import S2_L1C_BANDS, S2_L2A_BANDS, S2_RESOLUTION_M
from backend.imagery.regions import Region, parse_bbox
from backend.imagery.scene_import import import_scene
from backend.imagery.sources import SceneSource, to_lonlat
from backend.models import create_model
from backend.models.inference import EmbeddingEngine
from backend.settings import ASSETS_DIR, Settings
from backend.store.cache import EmbeddingCache
from backend.store.catalog import open_catalog, register_source

ASSETS = ASSETS_DIR / "scenes"

#: The window on the bundled Brandenburg grid: multiples of 336 px, so 20 m and 60 m pixels and
#: test-vit's 112 px tiles nest exactly (tile (r, c) of a copy is (r, c + 6) of the bundle).
COL_OFF, ROW_OFF, SIZE = 672, 0, 336
TILE_COL_SHIFT = COL_OFF // 112
SAFE_L1C = "S2A_MSIL1C_20170216T102101_N0204_R065_T33UUU_20170216T102204.SAFE"
SAFE_L2A = "S2B_MSIL2A_20230310T102029_N0509_R065_T33UUU_20230310T131419.SAFE"


# --- building the test data ------------------------------------------------------------------
def crop(source: SceneSource) -> tuple[NDArray[np.uint16], Affine]:
    """The 13 bands of the window, and its transform."""
    from rasterio.windows import Window

    with rasterio.open(source.root / source.bands[0].file) as ds:
        data = ds.read(window=Window(COL_OFF, ROW_OFF, SIZE, SIZE))
        transform = ds.window_transform(Window(COL_OFF, ROW_OFF, SIZE, SIZE))
    return data, transform


def write_tif(
    path: Path,
    data: NDArray[np.generic],
    transform: Affine,
    crs: str | None = "EPSG:32633",
    descriptions: tuple[str, ...] | None = None,
    **extra: object,
) -> Path:
    data = data if data.ndim == 3 else data[None]
    profile = dict(
        driver="GTiff", width=data.shape[2], height=data.shape[1], count=data.shape[0],
        dtype=data.dtype.name, transform=transform, compress="deflate", **extra,
    )  # fmt: skip
    if crs is not None:
        profile["crs"] = crs
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(data)
        for i, d in enumerate(descriptions or (), start=1):
            ds.set_band_description(i, d)
    return path


def write_jp2(path: Path, band: NDArray[np.uint16], transform: Affine) -> Path:
    """Lossless JPEG 2000 (JP2OpenJPEG is copy-only: write to memory, then copy)."""
    profile = dict(driver="GTiff", width=band.shape[1], height=band.shape[0], count=1,
                   dtype="uint16", crs="EPSG:32633", transform=transform)  # fmt: skip
    with MemoryFile() as mem:
        with mem.open(**profile) as ds:
            ds.write(band, 1)
        with mem.open() as ds:
            rasterio.shutil.copy(ds, path, driver="JP2OpenJPEG", QUALITY=100, REVERSIBLE="YES")
    return path


def native(band: NDArray[np.uint16], name: str, transform: Affine) -> tuple[NDArray[Any], Affine]:
    """A band at its native resolution: the bundle was upsampled with nearest, so every n-th
    pixel is the native one."""
    f = S2_RESOLUTION_M[name] // 10
    return band[::f, ::f], transform @ Affine.scale(f)


def mtd_l1c() -> str:
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<n1:Level-1C_User_Product xmlns:n1="https://psd-14.sentinel2.eo.esa.int/PSD/User_Product_Level-1C.xsd">
  <n1:General_Info><Product_Info>
    <PRODUCT_START_TIME>2017-02-16T10:21:01.026Z</PRODUCT_START_TIME>
    <PRODUCT_URI>{SAFE_L1C}</PRODUCT_URI>
    <PROCESSING_LEVEL>Level-1C</PROCESSING_LEVEL><PRODUCT_TYPE>S2MSI1C</PRODUCT_TYPE>
    <PROCESSING_BASELINE>02.04</PROCESSING_BASELINE>
  </Product_Info>
  <Product_Image_Characteristics>
    <QUANTIFICATION_VALUE unit="none">10000</QUANTIFICATION_VALUE>
  </Product_Image_Characteristics></n1:General_Info>
</n1:Level-1C_User_Product>
"""


def mtd_l2a() -> str:
    offsets = "".join(f'<BOA_ADD_OFFSET band_id="{i}">-1000</BOA_ADD_OFFSET>' for i in range(13))
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<n1:Level-2A_User_Product xmlns:n1="https://psd-14.sentinel2.eo.esa.int/PSD/User_Product_Level-2A.xsd">
  <n1:General_Info><Product_Info>
    <PRODUCT_START_TIME>2023-03-10T10:20:29.024Z</PRODUCT_START_TIME>
    <PRODUCT_URI>{SAFE_L2A}</PRODUCT_URI>
    <PROCESSING_LEVEL>Level-2A</PROCESSING_LEVEL><PRODUCT_TYPE>S2MSI2A</PRODUCT_TYPE>
    <PROCESSING_BASELINE>05.09</PROCESSING_BASELINE>
  </Product_Info>
  <Product_Image_Characteristics>
    <QUANTIFICATION_VALUES_LIST>
      <BOA_QUANTIFICATION_VALUE unit="none">10000</BOA_QUANTIFICATION_VALUE>
    </QUANTIFICATION_VALUES_LIST>
    <BOA_ADD_OFFSET_VALUES_LIST>{offsets}</BOA_ADD_OFFSET_VALUES_LIST>
  </Product_Image_Characteristics></n1:General_Info>
</n1:Level-2A_User_Product>
"""


def build_scenes(root: Path, source: SceneSource) -> dict[str, Path]:
    """Every layout of the window; returns {kind: path}."""
    data, transform = crop(source)
    out: dict[str, Path] = {}
    out["multiband"] = write_tif(
        root / "S2A_T33UUU_20170216_stack.tif", data, transform, descriptions=S2_L1C_BANDS
    )
    tif_dir = root / "S2A_20170216_bands_tif"
    tif_dir.mkdir()
    for i, name in enumerate(S2_L1C_BANDS):
        write_tif(tif_dir / f"{name}.tif", data[i], transform, nodata=0)
    out["tif_folder"] = tif_dir
    jp2_dir = root / "T33UUU_20170216T102101_jp2"
    jp2_dir.mkdir()
    for i, name in enumerate(S2_L1C_BANDS):
        band, tr = native(data[i], name, transform)
        write_jp2(jp2_dir / f"T33UUU_20170216T102101_{name}.jp2", band, tr)
    out["jp2_folder"] = jp2_dir

    l1c = root / SAFE_L1C
    img = l1c / "GRANULE" / "L1C_T33UUU_A008643_20170216T102204" / "IMG_DATA"
    img.mkdir(parents=True)
    for f in jp2_dir.iterdir():
        shutil.copy(f, img / f.name)
    (l1c / "MTD_MSIL1C.xml").write_text(mtd_l1c())
    out["safe_l1c"] = l1c

    l2a = root / SAFE_L2A
    granule = l2a / "GRANULE" / "L2A_T33UUU_A031538_20230310T102029" / "IMG_DATA"
    shifted = np.where(data > 0, data + 1000, 0).astype(np.uint16)  # baseline 04.00+: DN + 1000
    for i, name in enumerate(S2_L1C_BANDS):
        if name == "B10":
            continue
        res = S2_RESOLUTION_M[name]
        band, tr = native(shifted[i], name, transform)
        (granule / f"R{res}m").mkdir(parents=True, exist_ok=True)
        write_jp2(granule / f"R{res}m" / f"T33UUU_20230310T102029_{name}_{res}m.jp2", band, tr)
        if res == 10:  # real products also carry 20 m copies of the 10 m bands
            coarse, tr20 = shifted[i][::2, ::2], transform @ Affine.scale(2)
            (granule / "R20m").mkdir(parents=True, exist_ok=True)
            write_jp2(granule / "R20m" / f"T33UUU_20230310T102029_{name}_20m.jp2", coarse, tr20)
    scl = np.full((SIZE // 2, SIZE // 2), 4, dtype=np.uint16)  # 4 = vegetation
    scl[:56, :56] = 9  # cloud (high probability) over the first 112 px tile
    scl[:28, 56:84] = 3  # cloud shadow over half of the second tile's top rows
    write_jp2(granule / "R20m" / "T33UUU_20230310T102029_SCL_20m.jp2", scl,
              transform @ Affine.scale(2))  # fmt: skip
    (l2a / "MTD_MSIL2A.xml").write_text(mtd_l2a())
    out["safe_l2a"] = l2a
    return out


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory, brandenburg: SceneSource) -> dict[str, Path]:
    return build_scenes(tmp_path_factory.mktemp("scenes"), brandenburg)


def inner_region(source: SceneSource, margin_m: float = 200.0) -> Region:
    """A lon/lat box inside the source's footprint (the UTM grid is rotated ~2° in lon/lat)."""
    left, bottom, right, top = source.grid.bounds()
    inner = box(left + margin_m, bottom + margin_m, right - margin_m, top - margin_m)
    w, s, e, n = to_lonlat(inner, source.crs).bounds
    # Shrink to the largest lon/lat box inside the rotated square: a further 3 % per side.
    dw, dh = (e - w) * 0.03, (n - s) * 0.03
    return parse_bbox(f"{w + dw},{s + dh},{e - dw},{n - dh}")


def add(db: Path, path: Path, *extra: str, capsys: pytest.CaptureFixture[str]) -> dict[str, object]:
    code = main(["sources", "add", str(path), "--db", str(db), "--json", *extra])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    out: dict[str, object] = json.loads(captured.out)
    return out


def embed(
    source: SceneSource, region: Region, db: Path, tmp_path: Path
) -> dict[tuple[int, int], NDArray[np.float32]]:
    """test-vit embeddings of the region's tiles, by (row, col) on the bundled grid."""
    model = create_model("test-vit")
    engine = EmbeddingEngine(model, device="cpu", batch_size=16, readers=0)
    settings = Settings(db_path=db, models_dir=tmp_path / "models", offline=True)
    with EmbeddingCache(db) as cache:
        result = embed_region(region, source, model, cache, engine=engine, settings=settings)
        eset = cache.embedding_set(model.meta.id, result.preprocessing_hash)
        assert eset is not None
        ids, vectors = cache.embeddings(eset, list(result.tile_ids))
    shift = 0 if source.id.startswith("demo/") or source.id.startswith("ref/") else TILE_COL_SHIFT
    out = {}
    for tile_id, vec in zip(ids, vectors, strict=True):
        row, col = (int(v) for v in tile_id.rsplit("/", 1)[1].split("_"))
        out[(row, col + shift)] = vec
    return out


# --- registration and agreement ----------------------------------------------------------------
EXPECTED = {
    # kind: (level, dn_offset, number of bands, scl)
    "multiband": ("L1C", 0.0, 13, False),
    "tif_folder": ("L1C", 0.0, 13, False),
    "jp2_folder": ("L1C", 0.0, 13, False),
    "safe_l1c": ("L1C", 0.0, 13, False),
    "safe_l2a": ("L2A", -1000.0, 12, True),
}


def test_every_layout_registers_and_embeds_like_the_bundled_scene(
    scenes: dict[str, Path],
    brandenburg: SceneSource,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    db = tmp_path / "cache.duckdb"
    for kind, path in scenes.items():
        summary = add(db, path, "--id", f"local/{kind}", capsys=capsys)
        level, offset, n_bands, scl = EXPECTED[kind]
        assert summary["product_level"] == level, kind
        assert summary["dn_offset"] == offset, kind
        assert len(summary["bands"]) == n_bands and summary["scl"] is scl, kind  # type: ignore[arg-type]
        assert summary["crs"] == "EPSG:32633" and summary["size_km"] == [3.36, 3.36], kind
        assert summary["date"] == ("2023-03-10" if kind == "safe_l2a" else "2017-02-16"), kind
    # Registered sources persist: a fresh catalogue (as a new process builds it) offers them.
    catalog = open_catalog(db)
    assert {f"local/{k}" for k in scenes} <= {s.id for s in catalog}
    safe = catalog.get("local/safe_l2a")
    assert safe.processing_baseline == "05.09" and safe.mgrs_tile == "33UUU"
    assert {b.name: b.file.split("/")[-1] for b in safe.bands}["B02"].endswith("_B02_10m.jp2")

    region = inner_region(catalog.get("local/multiband"))
    reference = embed(brandenburg, region, db, tmp_path)
    l2a_reference_source = brandenburg.model_copy(
        update={
            "id": "ref/l2a",
            "product_level": "L2A",
            "bands": tuple(b for b in brandenburg.bands if b.name != "B10"),
        }
    )
    l2a_reference = embed(l2a_reference_source, region, db, tmp_path)
    for kind in scenes:
        vectors = embed(catalog.get(f"local/{kind}"), region, db, tmp_path)
        assert len(vectors) == 9, kind  # the 3 × 3 tiles of the window
        expected = l2a_reference if kind == "safe_l2a" else reference
        for cell, vec in vectors.items():
            np.testing.assert_allclose(vec, expected[cell], rtol=1e-5, atol=1e-5, err_msg=kind)
    # The L2A reference really differs from L1C (B10 filled): the comparison above is not vacuous.
    cell = next(iter(l2a_reference))
    assert not np.allclose(l2a_reference[cell], reference[cell], atol=1e-3)


def test_l2a_offset_is_what_makes_them_agree(scenes: dict[str, Path]) -> None:
    source = import_scene(scenes["safe_l2a"], dn_offset=0.0)
    assert source.dn_offset == 0.0
    assert "given by the user" in source.caveats[0]
    from backend.imagery.reader import PixelWindow, SceneReader

    with SceneReader(source) as raw, SceneReader(import_scene(scenes["safe_l2a"])) as fixed:
        window = PixelWindow(0, 0, 64, 64)
        a = raw.read(window, S2_L2A_BANDS)
        b = fixed.read(window, S2_L2A_BANDS)
    np.testing.assert_array_equal(a - b, 1000.0)


def test_cli_embed_and_list_a_registered_source(
    scenes: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "cli.duckdb"
    assert main(["sources", "add", str(scenes["jp2_folder"]), "--db", str(db)]) == 0
    line = capsys.readouterr().out
    assert line.startswith("Registered local/t33uuu_20170216t102101_jp2: Sentinel-2 MSI L1C")
    assert main(["sources", "--db", str(db)]) == 0
    table = capsys.readouterr().out
    assert "demo/virginia" in table and "local/t33uuu_20170216t102101_jp2" in table
    assert "registered" in table
    source = open_catalog(db).get("local/t33uuu_20170216t102101_jp2")
    w, s, e, n = inner_region(source).geometry.bounds
    code = main(["embed", "--source", source.id, "--bbox", f"{w},{s},{e},{n}", "--model",
                 "test-vit", "--device", "cpu", "--db", str(db), "--json", "--quiet"])  # fmt: skip
    out = capsys.readouterr()
    assert code == 0, out.err
    assert json.loads(out.out)["computed"] == 9
    assert main(["sources", "remove", source.id, "--db", str(db)]) == 0
    assert "9 cached tile(s)" in capsys.readouterr().out
    assert source.id not in {s.id for s in open_catalog(db)}
    with EmbeddingCache(db, read_only=True) as cache:
        assert cache.stats().tiles == 0 and cache.stats().embeddings == 0


# --- refusals --------------------------------------------------------------------------------
def bad_inputs(
    root: Path, scenes: dict[str, Path], source: SceneSource
) -> dict[str, tuple[list[str], str]]:
    data, transform = crop(source)
    cases: dict[str, tuple[list[str], str]] = {}
    missing = root / "missing_b05"
    shutil.copytree(scenes["tif_folder"], missing)
    (missing / "B05.tif").unlink()
    (missing / "B11.tif").unlink()
    cases["missing band"] = ([str(missing)], "lacks band(s) B05, B11 of a Sentinel-2 L1C product")
    no_crs = write_tif(root / "nocrs.tif", data, transform, crs=None, descriptions=S2_L1C_BANDS)
    cases["no CRS"] = ([str(no_crs)], "has no coordinate reference system (unknown CRS)")
    geo = write_tif(root / "lonlat.tif", data, from_origin(12.6, 52.5, 1e-4, 1e-4),
                    crs="EPSG:4326", descriptions=S2_L1C_BANDS)  # fmt: skip
    cases["geographic CRS"] = ([str(geo)], "EPSG:4326, a geographic CRS (degrees)")
    rgb = np.clip(data[[3, 2, 1]] / 16, 0, 255).astype(np.uint8)
    photo = write_tif(root / "photo.tif", rgb, transform, photometric="RGB")
    cases["RGB image"] = (
        [str(photo)],
        "not recognisably Sentinel-2 or Sentinel-1: 3 band(s) of uint8 with colour "
        "interpretation red, green, blue",
    )
    plain = write_tif(root / "plain.tif", data, transform)
    cases["no descriptions"] = ([str(plain)], "13 band(s) of uint16 without band descriptions")
    cases["band count"] = ([str(plain), "--bands", "B02,B03,B04"], "has 13 band(s) but 3 band")
    broken = root / "broken.tif"
    broken.write_bytes(b"II*\x00" + b"\x17" * 200)
    cases["unreadable"] = ([str(broken)], "Cannot read")
    cases["absent"] = ([str(root / "nowhere.tif")], "does not exist")
    empty = root / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("x")
    cases["empty folder"] = ([str(empty)], "holds no GeoTIFF or JPEG 2000 file")
    cases["reserved id"] = ([str(scenes["multiband"]), "--id", "demo/mine"], "reserved")
    return cases


def test_each_bad_input_gives_one_clear_line(
    scenes: dict[str, Path],
    brandenburg: SceneSource,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    db = tmp_path / "bad.duckdb"
    for name, (args, fragment) in bad_inputs(tmp_path, scenes, brandenburg).items():
        code = main(["sources", "add", *args, "--db", str(db)])
        err = capsys.readouterr().err
        assert code == 2, name
        assert err.count("\n") == 1 and err.startswith("softmap: "), (name, err)
        assert fragment in err, (name, err)
    # The same id twice with other imagery would reuse stale tiles: refused.
    assert (
        main(["sources", "add", str(scenes["multiband"]), "--id", "local/x", "--db", str(db)]) == 0
    )
    assert (
        main(["sources", "add", str(scenes["multiband"]), "--id", "local/x", "--db", str(db)]) == 0
    )
    capsys.readouterr()
    assert (
        main(["sources", "add", str(scenes["tif_folder"]), "--id", "local/x", "--db", str(db)]) == 2
    )
    assert "already registered" in capsys.readouterr().err
    assert main(["sources", "remove", "demo/virginia", "--db", str(db)]) == 2
    assert "bundled sources cannot be removed" in capsys.readouterr().err


def test_missing_or_locked_cache_contributes_nothing(tmp_path: Path) -> None:
    from .conftest import another_process_holding

    assert {s.id for s in open_catalog(tmp_path / "absent.duckdb")} == {
        "demo/brandenburg",
        "demo/virginia",
    }
    db = tmp_path / "locked.duckdb"
    EmbeddingCache(db).close()
    with another_process_holding(db):
        assert len(open_catalog(db)) == 2
    source = import_scene(ASSETS / "brandenburg" / "S2_L1C_T33UUU_20170216_10m.tif")
    assert source.id == "local/s2_l1c_t33uuu_20170216_10m" and source.product_level == "L1C"
    with EmbeddingCache(db) as cache:  # this process holds it for writing: still listed
        register_source(cache, source)
        assert source.id in {s.id for s in open_catalog(db)}


def test_explicit_band_list_and_date_rule(
    scenes: dict[str, Path], brandenburg: SceneSource, tmp_path: Path
) -> None:
    data, transform = crop(brandenburg)
    plain = write_tif(
        tmp_path / "S2_L2A_20230601_plain.tif", data[[b != "B10" for b in S2_L1C_BANDS]], transform
    )
    source = import_scene(plain, bands=list(S2_L2A_BANDS))
    assert source.product_level == "L2A" and source.date == "2023-06-01"
    assert source.dn_offset == -1000.0  # acquired after 2022-01-25: baseline 04.00+ assumed
    with pytest.raises(SceneImportError, match="mixes Sentinel-1"):
        import_scene(plain, bands=[*S2_L2A_BANDS[:-1], "VV"])
