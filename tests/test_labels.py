"""Soft labels: class fractions on known arrays, the mappings, and the bundled OSM raster."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from backend.errors import UnknownMappingError
from backend.imagery.reader import PixelWindow
from backend.imagery.sources import SceneSource
from backend.landcover.labels import (
    DW_CLASSES,
    DW_PALETTE,
    MAPPINGS,
    MIN_LABELLED_FRACTION,
    MULTI_HOT_THRESHOLD,
    NO_LABEL,
    class_fractions,
    get_mapping,
    read_label_window,
    scene_label_raster,
    soft_labels,
    tile_soft_labels,
    user_label_raster,
)


def test_dw_label_space() -> None:
    assert DW_CLASSES[0] == "water" and DW_CLASSES[4] == "crops" and len(DW_CLASSES) == 9
    assert DW_PALETTE[0] == "419bdf" and DW_PALETTE[6] == "c4281b"


def test_class_fractions_on_known_arrays() -> None:
    osm = get_mapping("osm-brandenburg")
    # 4×4 window: 8 px farmland (crops), 4 px forest (trees), 4 px unlabelled.
    window = np.array([[1, 1, 1, 1], [1, 1, 1, 1], [5, 5, 5, 5], [0, 0, 0, 0]])
    fractions, labelled = class_fractions(window, osm)
    assert fractions.shape == (9,) and labelled.shape == ()
    assert labelled == pytest.approx(0.75)
    expected = np.zeros(9)
    expected[DW_CLASSES.index("crops")] = 8 / 12
    expected[DW_CLASSES.index("trees")] = 4 / 12
    np.testing.assert_allclose(fractions, expected, atol=1e-6)
    # meadow and grass both map to grass; a stack of windows keeps its leading axis.
    stack = np.stack([np.full((2, 2), 2), np.array([[3, 3], [0, 0]]), np.zeros((2, 2), int)])
    fr, lab = class_fractions(stack, osm)
    assert fr.shape == (3, 9)
    np.testing.assert_allclose(lab, [1.0, 0.5, 0.0])
    assert fr[0, 2] == fr[1, 2] == 1.0 and not fr[2].any()
    # Other pixel axes (per-token sub-windows): pool axis 0 of a (pixels, cells) array.
    per_cell, _ = class_fractions(np.array([[8, 7], [8, 0]]), osm, axis=0)
    np.testing.assert_allclose(per_cell[0, 0], 1.0)
    np.testing.assert_allclose(per_cell[1, 6], 1.0)


def test_soft_labels_threshold_and_min_labelled() -> None:
    osm = get_mapping("osm-brandenburg")
    a = np.ones((10, 10), int)  # crops
    a[0, :5] = 8  # 5 % water: below the multi-hot threshold
    a[1:3, :] = 5  # 20 % trees
    b = np.zeros((10, 10), int)
    b[0, :10] = 7  # only 10 % labelled: below MIN_LABELLED_FRACTION
    sl = soft_labels(np.stack([a, b]), osm)
    assert MULTI_HOT_THRESHOLD == 0.10 and MIN_LABELLED_FRACTION == 0.25
    assert sl.has_label.tolist() == [True, False]
    assert sl.multi_hot[0].nonzero()[0].tolist() == [1, 4]  # trees, crops; not water
    assert sl.fractions[0, 0] == pytest.approx(0.05) and not sl.fractions[1].any()
    assert not sl.multi_hot[1].any()
    np.testing.assert_allclose(sl.fractions[0].sum(), 1.0, rtol=1e-6)


def test_mappings_cover_every_legend_value(brandenburg: SceneSource) -> None:
    assert set(MAPPINGS) == {"esa-worldcover", "dynamic-world", "osm-brandenburg",
                             "eolearn-slovenia"}  # fmt: skip
    for m in MAPPINGS.values():
        assert set(m.values) == set(m.legend)
        assert all(v is None or 0 <= v < 9 for v in m.values.values())
    worldcover = MAPPINGS["esa-worldcover"]
    assert len([v for v in worldcover.values.values() if v is not None]) == 11
    assert worldcover.values[40] == DW_CLASSES.index("crops")
    assert MAPPINGS["dynamic-world"].values == {i: i for i in range(9)}
    layer = brandenburg.labels[0]
    osm = MAPPINGS["osm-brandenburg"]
    assert {int(k) for k in layer.legend} | {0} == set(osm.values)
    assert osm.values[0] is None and osm.values[8] == 0 and osm.values[5] == 1
    slovenia = MAPPINGS["eolearn-slovenia"]
    assert set(slovenia.values) == set(range(11)) and slovenia.values[0] is None


def test_unknown_mapping_lists_names() -> None:
    with pytest.raises(UnknownMappingError, match="esa-worldcover"):
        get_mapping("corine")


def test_osm_raster_windows_and_tiles(brandenburg: SceneSource) -> None:
    raster = scene_label_raster(brandenburg)
    assert raster.mapping == "osm-brandenburg"
    full = read_label_window(brandenburg, PixelWindow(0, 0, 1536, 768))
    counts = np.bincount(full.ravel(), minlength=9)
    # The pixel counts documented for the raster (SOURCE.md).
    assert counts[1] == 112837 and counts[8] == 14904 and counts[0] == 814604
    edge = read_label_window(brandenburg, PixelWindow(1500, 700, 100, 100))
    assert (edge[68:, :] == 0).all() and (edge[:, 36:] == 0).all()
    ids = [f"demo/brandenburg/112/112/{r}_{c}" for r in range(7) for c in range(14)]
    tiles = tile_soft_labels(brandenburg, ids)
    assert tiles.fractions.shape == (98, 9) and 40 <= tiles.has_label.sum() <= 70
    np.testing.assert_allclose(tiles.fractions[tiles.has_label].sum(axis=1), 1.0, rtol=1e-5)
    tokens = tile_soft_labels(brandenburg, ids[:4], grid=8)
    assert tokens.fractions.shape == (4, 64, 9) and tokens.has_label.shape == (4, 64)
    # The mean of the token label counts equals the tile's: check on labelled-pixel weights.
    first = read_label_window(brandenburg, PixelWindow(0, 0, 112, 112))
    cell = first[14:28, 28:42]  # token (1, 2)
    cell_fractions, lab = class_fractions(cell, "osm-brandenburg")
    np.testing.assert_allclose(tokens.labelled_fraction[0, 1 * 8 + 2], lab, rtol=1e-6)
    np.testing.assert_allclose(tokens.fractions[0, 1 * 8 + 2], cell_fractions, rtol=1e-6)


def test_user_raster_in_another_crs_is_reprojected(
    brandenburg: SceneSource, tmp_path: Path
) -> None:
    # A 5 m raster in EPSG:3857 over the scene's top-left corner: class 10 (trees) on the
    # west half, 40 (crops) on the east half, 0 outside.
    from pyproj import Transformer

    tr = Transformer.from_crs(brandenburg.crs, "EPSG:3857", always_xy=True)
    x0, y0 = tr.transform(330000, 5822040)
    x1, y1 = tr.transform(331120, 5820920)
    w, h = int((x1 - x0) / 5), int((y0 - y1) / 5)
    data = np.zeros((h, w), np.uint8)
    data[:, : w // 2] = 10
    data[:, w // 2 :] = 40
    path = tmp_path / "worldcover.tif"
    profile = {"driver": "GTiff", "width": w, "height": h, "count": 1, "dtype": "uint8",
               "crs": "EPSG:3857", "transform": from_origin(x0, y0, 5, 5), "nodata": 0}  # fmt: skip
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(data, 1)
    raster = user_label_raster(path)
    assert raster.nodata == 0
    win = read_label_window(brandenburg, PixelWindow(0, 0, 112, 112), raster)
    assert set(np.unique(win)) <= {0, 10, 40} and (win == 10).mean() > 0.3
    assert (win == 40).mean() > 0.3
    sl = tile_soft_labels(brandenburg, ["demo/brandenburg/112/112/0_0"], "esa-worldcover",
                          layer=raster)  # fmt: skip
    assert sl.has_label[0]
    assert sl.fractions[0, 1] == pytest.approx(0.5, abs=0.1)
    assert sl.fractions[0, 4] == pytest.approx(0.5, abs=0.1)
    far = read_label_window(brandenburg, PixelWindow(800, 400, 16, 16), raster)
    assert (far == 0).all() and NO_LABEL == -1
