"""Windowed reading: band order, resampling of 20/60 m bands, L2A fill, edges, corrupt files."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

from backend.errors import BandMismatchError, RasterReadError
from backend.imagery.bands import S2_L1C_BANDS, S2_L2A_BANDS, S2_RESOLUTION_M
from backend.imagery.reader import PixelWindow, SceneReader
from backend.imagery.sources import BandAsset, SceneSource, load_manifest

WINDOW = PixelWindow(600, 700, 96, 96)  # aligned to 60 m cells (multiples of 6 px)


def _full_stack(source: SceneSource, window: PixelWindow) -> np.ndarray:
    with SceneReader(source) as reader:
        return reader.read(window, S2_L1C_BANDS)


def write_per_band_scene(
    tmp_path: Path,
    source: SceneSource,
    bands: tuple[str, ...] = S2_L1C_BANDS,
    *,
    level: str = "L1C",
) -> SceneSource:
    """Re-pack a crop of ``source`` as one GeoTIFF per band at its native resolution.

    The 20 m and 60 m rasters take every 2nd/6th pixel of the 10 m stack on grids that share the
    10 m origin, so nearest resampling back to 10 m must repeat each value 2×2 / 6×6 times.
    """
    crop = PixelWindow(0, 0, 1200, 1200)
    stack = _full_stack(source, crop)
    a = source.grid.affine
    assets = []
    for band in bands:
        res = S2_RESOLUTION_M[band]
        k = res // 10
        data = stack[S2_L1C_BANDS.index(band), ::k, ::k].astype(np.uint16)
        path = tmp_path / f"T18SVG_{band}.tif"
        profile = {
            "driver": "GTiff", "width": data.shape[1], "height": data.shape[0], "count": 1,
            "dtype": "uint16", "crs": source.crs, "nodata": 0,
            "transform": Affine(res, 0, a.c, 0, -res, a.f),
        }  # fmt: skip
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(data, 1)
        assets.append(BandAsset(name=band, resolution_m=res, file=path.name, index=1))
    grid = source.grid.model_copy(update={"width": crop.width, "height": crop.height})
    return source.model_copy(
        update={"root": tmp_path, "bands": tuple(assets), "grid": grid, "product_level": level}
    )


def test_bands_come_in_l1c_order_with_plausible_values(virginia: SceneSource) -> None:
    assert virginia.band_names == S2_L1C_BANDS
    x = _full_stack(virginia, WINDOW)
    assert x.shape == (13, 96, 96) and x.dtype == np.float32
    by_band = dict(zip(S2_L1C_BANDS, x, strict=True))
    # Virginia (SOURCE.md): B10 cirrus is ~0–97 DN; visible and NIR bands hundreds–thousands.
    assert by_band["B10"].max() <= 97
    assert 700 < by_band["B02"].mean() < 5700
    assert by_band["B01"].min() >= 1219


def test_native_resolution_bands_are_resampled_onto_the_10m_grid(
    tmp_path: Path, virginia: SceneSource
) -> None:
    per_band = write_per_band_scene(tmp_path, virginia)
    got = _full_stack(per_band, WINDOW)
    full = _full_stack(virginia, PixelWindow(0, 0, 1200, 1200))
    for i, band in enumerate(S2_L1C_BANDS):
        k = S2_RESOLUTION_M[band] // 10
        native = full[i, ::k, ::k]
        expected = np.repeat(np.repeat(native, k, axis=0), k, axis=1)
        w = WINDOW
        window = expected[w.row_off : w.row_off + w.height, w.col_off : w.col_off + w.width]
        np.testing.assert_array_equal(got[i], window, err_msg=band)
    # 20 m bands really are blocky at 10 m, 10 m bands are not.
    b05 = got[S2_L1C_BANDS.index("B05")]
    assert np.array_equal(b05[0::2], b05[1::2])
    b02 = got[S2_L1C_BANDS.index("B02")]
    assert not np.array_equal(b02[0::2], b02[1::2])


def test_bundled_stack_matches_original_band_files(
    shared_data: Path, virginia: SceneSource
) -> None:
    folder = shared_data / "s2_l1c_virginia_18SVG_20160112"
    assets = tuple(
        BandAsset(name=b, resolution_m=S2_RESOLUTION_M[b], file=str(folder / f"{b}.tif"))
        for b in S2_L1C_BANDS
    )
    original = virginia.model_copy(update={"bands": assets, "root": folder})
    window = PixelWindow(1000, 400, 224, 224)
    np.testing.assert_array_equal(_full_stack(original, window), _full_stack(virginia, window))


def test_l2a_without_b10_is_filled_when_asked(tmp_path: Path, virginia: SceneSource) -> None:
    l2a = write_per_band_scene(tmp_path, virginia, S2_L2A_BANDS, level="L2A")
    with SceneReader(l2a) as reader:
        with pytest.raises(BandMismatchError, match="lacks band\\(s\\) B10"):
            reader.read(WINDOW, S2_L1C_BANDS)
        x = reader.read(WINDOW, S2_L1C_BANDS, fill={"B10": 22.0})
    assert np.all(x[S2_L1C_BANDS.index("B10")] == 22.0)
    np.testing.assert_array_equal(x[1], _full_stack(virginia, WINDOW)[1])


def test_missing_non_fillable_band_names_it(tmp_path: Path, virginia: SceneSource) -> None:
    partial = write_per_band_scene(tmp_path, virginia, ("B02", "B03", "B04"))
    with SceneReader(partial) as reader, pytest.raises(BandMismatchError, match="B01, B05"):
        reader.read(WINDOW, S2_L1C_BANDS)


def test_windows_past_the_edge_are_nodata(virginia: SceneSource) -> None:
    g = virginia.grid
    edge = PixelWindow(g.width - 100, g.height - 50, 224, 224)
    x = _full_stack(virginia, edge)
    assert np.all(x[:, :, 100:] == 0) and np.all(x[:, 50:, :] == 0)
    assert np.all(x[1, :50, :100] > 0)
    with SceneReader(virginia) as reader:
        mask = reader.valid_mask(PixelWindow(g.width - 96, 0, 192, 96), 8)
    assert mask[:, :12].all() and not mask[:, 12:].any()


def test_dn_offset_applies_to_valid_pixels_only(virginia: SceneSource) -> None:
    shifted = virginia.model_copy(update={"dn_offset": -1000.0})
    g = virginia.grid
    edge = PixelWindow(g.width - 100, 0, 224, 64)
    base, off = _full_stack(virginia, edge), _full_stack(shifted, edge)
    # Per band: a band's nodata pixel (Virginia's 60 m bands miss the last columns) stays 0,
    # as it reads from a product without the offset.
    inside = base[:, :, :100]
    np.testing.assert_array_equal(off[:, :, :100], np.where(inside > 0, inside - 1000, 0))
    assert (inside == 0).any() and (inside > 0).any()
    assert np.all(off[:, :, 100:] == 0)


def test_corrupt_and_truncated_rasters_raise_read_errors(
    tmp_path: Path, virginia: SceneSource
) -> None:
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / "B.tif").write_bytes(b"II*\x00not really a tiff" * 100)
    bad = virginia.model_copy(
        update={
            "root": garbage,
            "bands": tuple(b.model_copy(update={"file": "B.tif"}) for b in virginia.bands),
        }
    )
    with SceneReader(bad) as reader, pytest.raises(RasterReadError, match="missing or corrupt"):
        reader.read(WINDOW, S2_L1C_BANDS)

    truncated = tmp_path / "truncated"
    truncated.mkdir()
    for f in {b.file for b in virginia.bands}:
        data = (virginia.root / f).read_bytes()
        (truncated / f).write_bytes(data[: len(data) // 3])
    cut = virginia.model_copy(update={"root": truncated})
    g = virginia.grid
    with SceneReader(cut) as reader, pytest.raises(RasterReadError):
        reader.read(PixelWindow(g.width - 224, g.height - 224, 224, 224), S2_L1C_BANDS)


def test_manifest_errors_are_read_errors(tmp_path: Path, virginia: SceneSource) -> None:
    with pytest.raises(RasterReadError, match="does not exist"):
        load_manifest(tmp_path / "scene.json")
    (tmp_path / "scene.json").write_text('{"id": "x"}')
    with pytest.raises(RasterReadError, match="not a valid scene description"):
        load_manifest(tmp_path / "scene.json")
    shutil.copy(virginia.root / "scene.json", tmp_path / "scene.json")
    assert load_manifest(tmp_path / "scene.json").id == "demo/virginia"


def test_preview_is_a_georeferenced_stretched_quicklook(virginia: SceneSource) -> None:
    from backend.imagery.preview import scene_preview

    true = scene_preview(virginia, "true", max_size=256)
    false = scene_preview(virginia, "false", max_size=256)
    assert true.rgba.shape[2] == 4 and max(true.rgba.shape[:2]) == 256
    w, _, _, n = true.bounds
    fw, _, _, fn = virginia.bbox_lonlat
    assert w == pytest.approx(fw, abs=0.01) and n == pytest.approx(fn, abs=0.01)
    alpha = true.rgba[..., 3]
    # The UTM square is a tilted quadrilateral in lon/lat: the corners of the image are empty.
    assert alpha[0, 0] == 0 and alpha[alpha.shape[0] // 2, alpha.shape[1] // 2] == 255
    rgb = true.rgba[..., :3][alpha == 255]
    assert rgb.min() == 0 and rgb.max() == 255  # 2–98 % stretch saturates both ends
    assert not np.array_equal(true.rgba, false.rgba)
