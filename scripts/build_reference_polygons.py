"""Build the reference polygons of the bundled scenes: ``assets/reference/<scene>.geojson``.

Two kinds of polygon, both drawn by photo-interpretation of the scenes' true-colour (B04 B03 B02)
and false-colour (B08 B04 B03) composites (2–98 % stretch, full 10 m resolution, with a 1 km
grid drawn over them):

* ``manual``: rectangles placed by eye inside areas whose class is unambiguous on both composites
  (open sea, lagoons, lakes, salt marsh, forest blocks, fields, towns and villages). Their pixel
  corners on the scene grid are listed below, so they can be re-read and re-checked.
* ``clusters`` (Virginia only, forest and fields): k-means (k = 10, seed 0) on 80 m cells of
  clear land (spectral features of :mod:`backend.landcover.spectral`); every cluster was looked
  at over the false-colour composite and named by eye (``VIRGINIA_CLUSTER_CLASS``; clusters that
  mix classes are not used); a polygon is a 240 m square whose nine cells all fall in clusters of
  one class, on a 400 m lattice so polygons do not overlap.

Every polygon is then cut along a 2.56 km block grid (4 × 4 tiles of the 64 px models) and each
piece takes its block's split: ``eval`` for blocks with ``(block_row + 2·block_col) % 3 == 0``,
``train`` otherwise. Training pieces within 100 m of an evaluation piece are clipped away, so no
evaluation polygon touches a training one. Properties: ``class`` (a Dynamic World class name),
``name``, ``method``, ``date`` (of the imagery interpreted), ``split``, ``block``, ``scene``.

    .venv/bin/python scripts/build_reference_polygons.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from pyproj import Transformer
from shapely.geometry import box, mapping
from shapely.ops import transform as shp_transform
from shapely.ops import unary_union

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from backend.imagery.reader import PixelWindow, SceneReader  # noqa: E402
from backend.imagery.sources import SceneSource, demo_catalog  # noqa: E402
from backend.landcover.reference import (  # noqa: E402
    BLOCK_PX,
    BUFFER_M,
    block_split,
)
from backend.landcover.spectral import cell_features, stack_reflectance  # noqa: E402

# (class, name, x0, y0, x1, y1) in pixels of the scene's 10 m grid (x = column, y = row).
VIRGINIA: list[tuple[str, str, int, int, int, int]] = [
    ("water", "Atlantic Ocean, north", 1500, 100, 1900, 600),
    ("water", "Atlantic Ocean, off the inlet", 1550, 650, 1900, 950),
    ("water", "Atlantic Ocean, centre", 1350, 1000, 1900, 1500),
    ("water", "Atlantic Ocean, south", 1150, 1600, 1900, 1900),
    ("water", "lagoon behind the northern barrier island", 1240, 260, 1380, 420),
    ("water", "lagoon at the inlet", 1150, 500, 1290, 630),
    ("water", "bay, centre-south", 620, 1420, 780, 1500),
    ("water", "bay, south-west", 310, 1830, 440, 1920),
    ("water", "channel among the marsh islands", 700, 1240, 790, 1330),
    ("flooded_vegetation", "salt marsh, north", 1440, 100, 1520, 190),
    ("flooded_vegetation", "salt marsh island, centre-east", 840, 1380, 980, 1480),
    ("flooded_vegetation", "salt marsh near Wachapreague", 430, 1660, 560, 1760),
    ("flooded_vegetation", "salt marsh behind the barrier island", 1030, 830, 1170, 940),
    ("flooded_vegetation", "salt marsh behind the southern island", 1010, 1080, 1110, 1250),
    ("flooded_vegetation", "salt marsh, centre", 910, 860, 990, 990),
    ("flooded_vegetation", "salt marsh island, south", 630, 1610, 720, 1700),
    ("flooded_vegetation", "salt marsh island at the inlet", 1020, 720, 1120, 790),
    ("flooded_vegetation", "salt marsh, south", 560, 1780, 660, 1840),
    ("flooded_vegetation", "salt marsh, west shore", 820, 1010, 900, 1090),
    ("flooded_vegetation", "salt marsh, north-east", 1410, 10, 1480, 70),
    ("built", "Onley / Accomac", 30, 660, 120, 760),
    ("built", "Accomac, south", 20, 800, 100, 880),
    ("built", "Wachapreague", 300, 1660, 355, 1740),
    ("built", "village on the ridge road", 490, 415, 550, 465),
    ("built", "industrial site with ponds", 610, 280, 670, 320),
    ("built", "Onley, industrial", 100, 620, 160, 700),
    ("built", "Onley, east", 180, 570, 240, 630),
    ("built", "village, north-centre", 560, 340, 610, 390),
    ("built", "poultry houses, west", 80, 1055, 135, 1095),
    ("built", "poultry houses, centre", 355, 1295, 395, 1350),
]
BRANDENBURG: list[tuple[str, str, int, int, int, int]] = [
    ("water", "Beetzsee, southern arm", 475, 530, 525, 690),
    ("water", "Beetzsee, middle", 730, 395, 830, 435),
    ("water", "Beetzsee, eastern basin", 1180, 270, 1290, 330),
    ("water", "Beetzsee, north-east", 1310, 215, 1380, 250),
    ("water", "Beetzsee, narrows", 910, 385, 970, 415),
    ("water", "narrow lake, north-east (ice)", 1455, 30, 1485, 80),
    ("trees", "forest, west", 10, 400, 85, 455),
    ("trees", "pine forest block, west", 160, 330, 270, 420),
    ("trees", "forest strip, north", 340, 140, 385, 175),
    ("trees", "forest block, north-centre", 585, 60, 640, 130),
    ("trees", "forest, north", 415, 15, 470, 70),
    ("trees", "forest, north-west corner", 10, 5, 150, 50),
    ("trees", "forest patch, centre", 545, 255, 585, 300),
    ("trees", "forest by the sand pit", 215, 225, 275, 258),
    ("crops", "field, west", 315, 330, 385, 385),
    ("crops", "large field, north-centre", 610, 200, 690, 280),
    ("crops", "field south of the lake", 1010, 510, 1080, 580),
    ("crops", "field, east", 1290, 440, 1350, 490),
    ("crops", "fields, south-centre", 710, 520, 780, 590),
    ("crops", "field, south", 600, 570, 680, 630),
    ("crops", "ploughed field, east", 1410, 425, 1470, 480),
    ("crops", "field, south-east", 1210, 570, 1280, 630),
    ("crops", "field, centre-east", 1110, 480, 1170, 540),
    ("crops", "striped field, north-west", 30, 110, 90, 190),
    ("crops", "fields, south-east", 1300, 530, 1370, 590),
    ("built", "Brandenburg an der Havel, north", 505, 450, 600, 490),
    ("built", "street village, north", 262, 60, 290, 150),
    ("built", "village, south-east", 1440, 570, 1510, 620),
    ("built", "village, south", 1170, 655, 1240, 690),
    ("built", "village on the lake", 705, 335, 740, 385),
    ("built", "village, north-east", 1470, 140, 1525, 190),
    ("built", "town, west edge", 2, 230, 35, 290),
    # Re-checked 2026-12-02 at 4× zoom: the first rectangle (215–280, 630–690) held a pond and a
    # field west of the village street; now the street's roofs only.
    ("built", "town, south-west", 248, 628, 285, 700),
    # Added 2026-12-02 (towns were too few to train on), each checked at 4× zoom on the
    # true-colour composite: red and grey roofs among gardens, no field or water inside.
    ("built", "village north of the ponds, south-west", 260, 520, 310, 555),
    ("built", "farm buildings and houses, south-west", 215, 570, 250, 610),
    ("built", "housing blocks and village, south-west", 312, 670, 352, 712),
]
#: k-means cluster (k = 10, seed 0, Virginia clear-land cells) → class, named by eye on the
#: false-colour composite; -1: mixed, not used. 1, 7: dark red (evergreen and leafless
#: forest); 2, 8: pale bare soil; 3, 5, 6: pink winter crops; 0, 9: mixed edges; 4: bright bare
#: patches inland (sandy fields, yards), not named.
VIRGINIA_CLUSTER_CLASS = {0: None, 1: "trees", 2: "crops", 3: "crops", 4: None, 5: "crops",
                          6: "crops", 7: "trees", 8: "crops", 9: None}  # fmt: skip
CLUSTER_FEATURES = list(range(11))  # six band means and four indices, std of B08
CELL = 8  # 80 m cells
SQUARE = 3  # cells per side of a cluster polygon (240 m)
LATTICE = 5  # cells between cluster polygon origins (400 m)


def _read_scene(source: SceneSource) -> dict[str, np.ndarray]:
    bands = ["B02", "B03", "B04", "B08", "B10", "B11", "B12"]
    g = source.grid
    with SceneReader(source) as reader:
        data = reader.read(PixelWindow(0, 0, g.width, g.height), bands)
    return stack_reflectance(data, bands, source.dn_scale)


def _cluster_polygons(
    source: SceneSource, raster_path: Path | None = None
) -> list[tuple[str, str, int, int, int, int]]:
    from sklearn.cluster import KMeans

    refl = _read_scene(source)
    h, w = refl["B03"].shape
    nr, nc = h // CELL, w // CELL
    cells = {
        b: v[: nr * CELL, : nc * CELL]
        .reshape(nr, CELL, nc, CELL)
        .transpose(0, 2, 1, 3)
        .reshape(nr * nc, CELL, CELL)
        for b, v in refl.items()
    }
    f = cell_features(cells, 1)[:, 0, 0, :]
    land = f[:, 14] > 0.9
    x = f[land][:, CLUSTER_FEATURES]
    x = (x - x.mean(0)) / x.std(0)
    labels = np.full(len(f), -1)
    km = KMeans(10, n_init=4, random_state=0).fit(x)
    labels[land] = km.labels_
    if raster_path is not None:
        _pixel_raster(source, refl, f[land][:, CLUSTER_FEATURES], km, raster_path)
    grid = labels.reshape(nr, nc)
    cls = np.full(grid.shape, "", dtype=object)
    for k, name in VIRGINIA_CLUSTER_CLASS.items():
        if name:
            cls[grid == k] = name
    out = []
    manual = unary_union([box(x0, y0, x1, y1) for _, _, x0, y0, x1, y1 in VIRGINIA])
    # Beach sand comes in narrow strips: 2 × 2-cell squares on a 3-cell lattice for it.
    for size, step, wanted in ((SQUARE, LATTICE, {"trees", "crops"}), (2, 3, {"bare"})):
        for r in range(0, nr - size, step):
            for c in range(0, nc - size, step):
                block = cls[r : r + size, c : c + size]
                name = block[0, 0]
                if name in wanted and (block == name).all():
                    x0, y0 = c * CELL, r * CELL
                    x1, y1 = x0 + size * CELL, y0 + size * CELL
                    if not box(x0, y0, x1, y1).buffer(10).intersects(manual):
                        out.append((str(name), f"{name} square {r}:{c}", x0, y0, x1, y1))
    return out


def _pixel_raster(source, refl, cell_x, km, path: Path) -> None:
    """Every clear-land pixel → the class of its nearest cluster centre (255: none), as a COG.

    Pixels have no texture feature, so the distance uses the ten band and index features; the
    cell scaler is reused so the centres keep their meaning.
    """
    import rasterio

    from backend.landcover.labels import DW_CLASSES
    from backend.landcover.spectral import pixel_rules

    mu, sd = cell_x.mean(0), cell_x.std(0)
    b = refl

    def ratio(p, q):
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.nan_to_num((p - q) / (p + q))

    feats = np.stack(
        [b["B02"], b["B03"], b["B04"], b["B08"], b["B11"], b["B12"],
         ratio(b["B08"], b["B04"]), ratio(b["B03"], b["B08"]), ratio(b["B03"], b["B11"]),
         ratio(b["B11"], b["B08"])], axis=-1,
    )  # fmt: skip
    z = (feats - mu[:10]) / sd[:10]
    centres = km.cluster_centers_[:, :10]
    h, w = z.shape[:2]
    flat = z.reshape(-1, 10)
    nearest = np.empty(len(flat), dtype=np.int64)
    for i in range(0, len(flat), 500_000):
        part = flat[i : i + 500_000]
        nearest[i : i + 500_000] = ((part[:, None, :] - centres[None]) ** 2).sum(-1).argmin(1)
    table = np.full(10, 255, dtype=np.uint8)
    for k, name in VIRGINIA_CLUSTER_CLASS.items():
        if name in ("trees", "crops"):
            table[k] = DW_CLASSES.index(name)
    out = table[nearest].reshape(h, w)
    out[~pixel_rules(refl).land] = 255
    with rasterio.open(
        path, "w", driver="GTiff", width=w, height=h, count=1, dtype="uint8",
        crs=source.crs, transform=source.grid.affine, nodata=255, compress="deflate",
        tiled=True, blockxsize=256, blockysize=256,
    ) as dst:  # fmt: skip
        dst.write(out, 1)
        dst.update_tags(
            SOFTMAP_PRODUCT="photo-interpreted spectral clusters (trees, crops) per pixel",
            LEGEND='{"1": "trees", "4": "crops", "255": "unlabelled"}',
        )


def build(source: SceneSource, items: list[tuple[str, str, int, int, int, int, str]]) -> dict:
    """Cut, split and georeference the polygons of one scene (see the module docstring)."""
    aff = source.grid.affine
    to_lonlat = Transformer.from_crs(source.crs, "EPSG:4326", always_xy=True).transform

    def to_utm(geom):  # pixel → scene CRS
        return shp_transform(lambda x, y: aff * (x, y), geom)

    pieces = []
    for cls, name, x0, y0, x1, y1, method in items:
        poly = box(x0, y0, x1, y1)
        b0r, b1r = y0 // BLOCK_PX, (y1 - 1) // BLOCK_PX
        b0c, b1c = x0 // BLOCK_PX, (x1 - 1) // BLOCK_PX
        for br in range(b0r, b1r + 1):
            for bc in range(b0c, b1c + 1):
                cell = box(bc * BLOCK_PX, br * BLOCK_PX, (bc + 1) * BLOCK_PX, (br + 1) * BLOCK_PX)
                part = poly.intersection(cell)
                if part.area >= 16:  # at least 4 × 4 pixels
                    pieces.append((cls, name, method, br, bc, to_utm(part)))
    evals = unary_union([p[5] for p in pieces if block_split(p[3], p[4]) == "eval"])
    features = []
    for cls, name, method, br, bc, geom in pieces:
        split = block_split(br, bc)
        if split == "train" and not evals.is_empty:
            geom = geom.difference(evals.buffer(BUFFER_M))
            if geom.is_empty or geom.area < 1600:  # under 4 × 4 pixels left
                continue
        features.append(
            {
                "type": "Feature",
                "properties": {
                    "class": cls,
                    "name": name,
                    "method": method,
                    "date": source.date,
                    "split": split,
                    "block": f"{br}:{bc}",
                    "scene": source.id,
                },
                "geometry": mapping(shp_transform(to_lonlat, geom)),
            }
        )
    return {
        "type": "FeatureCollection",
        "name": f"SoftMap reference polygons of {source.id}",
        "description": (
            "Photo-interpretation of the scene's true- and false-colour composites; built by "
            "scripts/build_reference_polygons.py, split by 2.56 km blocks (see docs/landcover.md)."
        ),
        "features": features,
    }


def main() -> None:
    cat = demo_catalog()
    out_dir = ROOT / "assets" / "reference"
    out_dir.mkdir(parents=True, exist_ok=True)
    manual = "photo-interpretation (manual rectangle on true/false-colour composites)"
    clustered = (
        "photo-interpretation of k-means spectral clusters on the false-colour composite "
        "(homogeneous 240 m square)"
    )
    for sid, table, clusters in (
        ("demo/virginia", VIRGINIA, True),
        ("demo/brandenburg", BRANDENBURG, False),
    ):
        source = cat.get(sid)
        items = [(*t, manual) for t in table]
        if clusters:
            raster = out_dir / f"{sid.split('/')[1]}_clusters.tif"
            items += [(*t, clustered) for t in _cluster_polygons(source, raster)]
        fc = build(source, items)
        path = out_dir / f"{sid.split('/')[1]}.geojson"
        path.write_text(json.dumps(fc, indent=1) + "\n")
        counts: dict[tuple[str, str], int] = {}
        for f in fc["features"]:
            key = (f["properties"]["class"], f["properties"]["split"])
            counts[key] = counts.get(key, 0) + 1
        print(path.relative_to(ROOT), len(fc["features"]), dict(sorted(counts.items())))


if __name__ == "__main__":
    main()
