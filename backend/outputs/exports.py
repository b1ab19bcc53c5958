"""Files for other tools: tiles with values (GeoJSON, GeoParquet), rasters (COG), areas (CSV),
embeddings (GeoParquet with the vectors).

GeoParquet is written with pyarrow alone, following GeoParquet 1.1: a WKB ``geometry`` column,
a ``bbox`` covering column (``xmin``/``ymin``/``xmax``/``ymax``) and the ``geo`` file metadata
(``version``, ``primary_column``, per-column ``encoding``, ``geometry_types``, ``bbox`` and
``covering``). Footprints are lon/lat, which is GeoParquet's default CRS (OGC:CRS84), so no
``crs`` member is written. :func:`export_tiles` is the generic entry point: any feature (land
cover, user classes, search scores) passes its per-tile columns.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import shapely
from numpy.typing import NDArray

from backend.errors import SoftMapError
from backend.imagery.rasters import tiles_to_grid, write_cog
from backend.imagery.sources import SceneSource
from backend.imagery.tiling import parse_tile_id
from backend.landcover.areas import ClassArea
from backend.store.cache import EmbeddingCache, EmbeddingSet
from backend.store.scopes import scope_embeddings, tile_records

TileFormat = Literal["geojson", "geoparquet"]
GEOPARQUET_VERSION = "1.1.0"
_SUFFIXES: dict[str, TileFormat] = {
    ".geojson": "geojson",
    ".json": "geojson",
    ".parquet": "geoparquet",
    ".geoparquet": "geoparquet",
}


#: What each kind of export writes, by file suffix (the first one is the suggested name).
EXPORT_FORMATS: dict[str, dict[str, str]] = {
    "tiles": {".geojson": "GeoJSON", ".json": "GeoJSON", ".parquet": "GeoParquet",
              ".geoparquet": "GeoParquet"},
    "predictions": {".geojson": "GeoJSON", ".json": "GeoJSON", ".parquet": "GeoParquet",
                    ".geoparquet": "GeoParquet"},
    "embeddings": {".parquet": "GeoParquet", ".geoparquet": "GeoParquet"},
    "map": {".tif": "Cloud-Optimized GeoTIFF", ".tiff": "Cloud-Optimized GeoTIFF"},
    "areas": {".csv": "CSV"},
}  # fmt: skip


def check_export_path(kind: str, path: str | Path) -> str:
    """The format an export of ``kind`` (a key of :data:`EXPORT_FORMATS`) writes to ``path``.

    Call it before any work, so a wrong name fails at once.

    Raises:
        SoftMapError: the suffix is not one this kind of export writes (the message lists them),
            so an ``.xlsx`` name never receives a Parquet file.
    """
    formats = EXPORT_FORMATS[kind]
    suffix = Path(path).suffix.lower()
    if suffix in formats:
        return formats[suffix]
    allowed = ", ".join(f"{s} ({f})" for s, f in formats.items())
    found = f"'{Path(path).suffix}'" if suffix else "no extension"
    raise SoftMapError(
        f"Cannot write {kind} to {path} ({found} is not a format for {kind}): "
        f"name the file with one of {allowed}.",
        title="Unknown file format",
    )


@dataclass(frozen=True)
class ExportResult:
    """What was written."""

    path: str
    format: str
    rows: int

    def to_json(self) -> dict[str, object]:
        return {"path": self.path, "format": self.format, "rows": self.rows}


def tile_format(path: str | Path, fmt: str | None = None) -> TileFormat:
    """The format named, or the one the file suffix implies.

    Raises:
        SoftMapError: unknown format or suffix.
    """
    if fmt is not None:
        if fmt in ("geojson", "geoparquet"):
            return fmt  # type: ignore[return-value]
        raise SoftMapError(
            f"Unknown format '{fmt}': use geojson or geoparquet.", title="Invalid format"
        )
    check_export_path("tiles", path)
    return _SUFFIXES[Path(path).suffix.lower()]


def _tile_records(cache: EmbeddingCache, tile_ids: Sequence[str]) -> list[dict[str, Any]]:
    if len(tile_ids) == 0:
        raise SoftMapError("There are no tiles to export.", title="Nothing to export")
    records = tile_records(cache, tile_ids)
    if len(records) != len(tile_ids):
        missing = next(t for t in tile_ids if t not in {r["tile_id"] for r in records})
        raise SoftMapError(f"Tile '{missing}' is not in the cache.", title="Unknown tile")
    return records


def _column(values: Sequence[Any] | NDArray[Any], n: int, name: str) -> pa.Array:
    arr = np.asarray(values) if not isinstance(values, pa.Array) else values
    if len(arr) != n:
        raise ValueError(f"column {name!r} has {len(arr)} values for {n} tiles")
    if isinstance(arr, np.ndarray) and arr.ndim == 2:
        flat = pa.array(np.ascontiguousarray(arr).ravel())
        return pa.FixedSizeListArray.from_arrays(flat, arr.shape[1])
    return pa.array(arr) if isinstance(arr, np.ndarray) else arr


def _geo_metadata(geoms: NDArray[Any]) -> bytes:
    types = sorted({shapely.get_type_id(g) for g in geoms})
    names = {3: "Polygon", 6: "MultiPolygon", 0: "Point"}
    bounds = shapely.total_bounds(geoms)
    meta = {
        "version": GEOPARQUET_VERSION,
        "primary_column": "geometry",
        "columns": {
            "geometry": {
                "encoding": "WKB",
                "geometry_types": [names.get(int(t), "Unknown") for t in types],
                "bbox": [float(b) for b in bounds],
                "covering": {
                    "bbox": {
                        "xmin": ["bbox", "xmin"],
                        "ymin": ["bbox", "ymin"],
                        "xmax": ["bbox", "xmax"],
                        "ymax": ["bbox", "ymax"],
                    }
                },
            }
        },
    }
    return json.dumps(meta).encode()


def _write_geoparquet(path: Path, columns: dict[str, pa.Array], footprints: list[str]) -> None:
    geoms = shapely.from_geojson(np.array(footprints, dtype=object))
    b = shapely.bounds(geoms)
    bbox = pa.StructArray.from_arrays(
        [pa.array(b[:, i]) for i in range(4)], names=["xmin", "ymin", "xmax", "ymax"]
    )
    table = pa.table(
        {**columns, "bbox": bbox, "geometry": pa.array(shapely.to_wkb(geoms), pa.binary())}
    )
    table = table.replace_schema_metadata({b"geo": _geo_metadata(geoms)})
    pq.write_table(table, path, compression="zstd")


def _write_geojson(path: Path, columns: dict[str, pa.Array], footprints: list[str]) -> None:
    names = list(columns)
    rows = pa.table(columns).to_pylist()
    features = [
        {
            "type": "Feature",
            "id": row["tile_id"],
            "geometry": json.loads(fp),
            "properties": {k: _json_value(row[k]) for k in names},
        }
        for row, fp in zip(rows, footprints, strict=True)
    ]
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))


def _json_value(v: Any) -> Any:
    if isinstance(v, float) and not np.isfinite(v):
        return None
    return v


def export_tiles(
    path: str | Path,
    cache: EmbeddingCache,
    tile_ids: Sequence[str],
    columns: Mapping[str, Sequence[Any] | NDArray[Any]] | None = None,
    fmt: str | None = None,
) -> ExportResult:
    """Write tiles (footprint, id, source, centre) with per-tile columns as GeoJSON or GeoParquet.

    Args:
        path: output file; the format follows the suffix (``.geojson``/``.json``,
            ``.parquet``/``.geoparquet``) unless ``fmt`` is given.
        cache: where the tiles' footprints are.
        tile_ids: the tiles, in output order.
        columns: name → one value per tile (numbers, text, booleans; a 2-D array becomes a
            fixed-size list column in GeoParquet and a list in GeoJSON).
        fmt: ``geojson`` or ``geoparquet``.

    Raises:
        SoftMapError: no tiles, an unknown tile or an unknown format.
    """
    kind = tile_format(path, fmt)
    records = _tile_records(cache, tile_ids)
    n = len(records)
    cols: dict[str, pa.Array] = {
        "tile_id": pa.array([r["tile_id"] for r in records]),
        "source_id": pa.array([r["source_id"] for r in records]),
        "lon": pa.array([r["lon"] for r in records], pa.float64()),
        "lat": pa.array([r["lat"] for r in records], pa.float64()),
    }
    for name, values in (columns or {}).items():
        if name in cols or name in ("geometry", "bbox"):
            raise ValueError(f"column name {name!r} is reserved")
        cols[name] = _column(values, n, name)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    footprints = [r["footprint"] for r in records]
    if kind == "geoparquet":
        _write_geoparquet(out, cols, footprints)
    else:
        _write_geojson(out, cols, footprints)
    return ExportResult(str(out), kind, n)


def export_embeddings(
    path: str | Path,
    cache: EmbeddingCache,
    eset: EmbeddingSet,
    tile_ids: Sequence[str] | None = None,
) -> ExportResult:
    """Write embeddings as GeoParquet: tile geometry, model id, preprocessing hash, vector.

    The ``embedding`` column is a fixed-size list of float32 (``D`` values per tile).

    Raises:
        SoftMapError: ``path`` is not ``.parquet``/``.geoparquet``, or there is nothing to write.
    """
    check_export_path("embeddings", path)
    ids, vectors = (
        cache.embeddings(eset) if tile_ids is None else scope_embeddings(cache, eset, tile_ids)
    )
    n = len(ids)
    result = export_tiles(
        path,
        cache,
        ids,
        {
            "model_id": [eset.model_id] * n,
            "preprocessing_hash": [eset.preprocessing_hash] * n,
            "embedding": vectors,
        },
        fmt="geoparquet",
    )
    return result


def export_probability_map(
    path: str | Path,
    source: SceneSource,
    tile_ids: Sequence[str],
    probabilities: NDArray[np.floating],
    band_names: Sequence[str],
    *,
    tags: Mapping[str, str] | None = None,
) -> ExportResult:
    """Write per-tile probabilities ``(n,)`` or ``(n, bands)`` as a COG on the source grid.

    Only tiles of ``source`` are mapped (others are left out); NaN where there is no tile.

    Raises:
        SoftMapError: not a ``.tif`` path, no tile of the source, or overlapping tiles.
    """
    check_export_path("map", path)
    p = np.asarray(probabilities, dtype=np.float32)
    if p.ndim == 1:
        p = p[:, None]
    keep = [i for i, t in enumerate(tile_ids) if parse_tile_id(t)[0] == source.id]
    if not keep:
        raise SoftMapError(
            f"None of the tiles belong to {source.id}: pass the source they come from.",
            title="Nothing to map",
        )
    grid = tiles_to_grid(source, [tile_ids[i] for i in keep], p[keep])
    out = write_cog(
        path,
        grid.data,
        transform=grid.transform,
        crs=grid.crs,
        band_names=list(band_names),
        tags={"source": source.id, **(tags or {})},
    )
    return ExportResult(str(out), "cog", len(keep))


def export_areas_csv(
    path: str | Path, areas: Sequence[ClassArea], extra: Mapping[str, str] | None = None
) -> ExportResult:
    """Write an area table (one row per class) as CSV, with constant ``extra`` columns first.

    Raises:
        SoftMapError: ``path`` is not a ``.csv`` file.
    """
    check_export_path("areas", path)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    extra = dict(extra or {})
    fields = [*extra, "class_id", "name", "expected_km2", "low_km2", "high_km2", "share",
              "tiles_dominant", "map_km2"]  # fmt: skip
    with out.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for a in areas:
            writer.writerow({**extra, **a.to_json()})
    return ExportResult(str(out), "csv", len(areas))
