"""Embedding sets as partitioned GeoParquet, for outputs too big for one DuckDB file.

:func:`write_parquet_set` writes a model's embeddings under
``<root>/source=<id>/model=<id>/<preprocessing hash>-<cache>.parquet`` (Hive partitions; ids
are URL-quoted, so ``demo/virginia`` is ``demo%2Fvirginia``; several caches write side by
side). Each row is one tile: its id, vector
(``FLOAT[D]``), grid position, quality fractions, lon/lat bounds and footprint, both as WKB
``geometry`` (GeoParquet 1.1 ``geo`` metadata, lon/lat) and as the GeoJSON text the cache
stores. The file's ``softmap`` metadata carries the model, the preprocessing hash and
description, and the source's record, so a dataset describes itself.

:func:`attach_parquet_sets` registers such a dataset with a cache: its tiles and sources are
recorded and the embedding set becomes a view over ``read_parquet`` of its files, so every query
that reads embeddings (search, projections, classes) reads the Parquet files directly, without
copying the vectors. An attached set is read-only: embed new tiles into another cache.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import shapely

from backend.errors import CacheError, NoEmbeddingsError, NotFoundError
from backend.store.cache import EmbeddingCache, EmbeddingSet

#: Bumped when the layout of the files changes.
FORMAT_VERSION = 1
#: Rows per Parquet row group (and per batch read from the cache while writing).
ROWS_PER_GROUP = 50_000

_TILE_COLUMNS = (
    "chip", "stride", "row", "col", "col_off", "row_off", "width", "height", "min_lon",
    "min_lat", "max_lon", "max_lat", "lon", "lat", "nodata_fraction", "cloud_fraction",
    "footprint",
)  # fmt: skip

_SCHEMA = """
CREATE TABLE IF NOT EXISTS parquet_sets (
    set_id INTEGER PRIMARY KEY, root TEXT NOT NULL, files JSON NOT NULL, rows BIGINT,
    attached_at TIMESTAMPTZ
);
"""


@dataclass(frozen=True)
class ParquetSetInfo:
    """One embedding set in Parquet: where, what, how big."""

    root: str
    model_id: str
    preprocessing_hash: str
    dim: int
    sources: tuple[str, ...]
    rows: int
    files: tuple[str, ...]
    bytes: int

    def to_json(self) -> dict[str, Any]:
        return {
            "root": self.root,
            "model": self.model_id,
            "preprocessing_hash": self.preprocessing_hash,
            "dim": self.dim,
            "sources": list(self.sources),
            "rows": self.rows,
            "files": list(self.files),
            "bytes": self.bytes,
        }


def partition_path(
    root: Path, source_id: str, model_id: str, preprocessing_hash: str, part: str
) -> Path:
    """Where one cache's embeddings of one source and set live.

    ``part`` names the cache that wrote the file, so caches that embedded different parts of a
    source (a region split over several runs) write side by side instead of over each other.
    """
    return (
        root
        / f"source={quote(source_id, safe='')}"
        / f"model={quote(model_id, safe='')}"
        / f"{preprocessing_hash}-{part}.parquet"
    )


def cache_part_name(cache: EmbeddingCache) -> str:
    """A short stable name for the cache file that writes a partition."""
    return hashlib.sha1(str(cache.path.resolve()).encode()).hexdigest()[:10]


def write_parquet_set(
    cache: EmbeddingCache,
    model_id: str,
    root: str | Path,
    *,
    sources: Sequence[str] | None = None,
    rows_per_group: int = ROWS_PER_GROUP,
) -> ParquetSetInfo:
    """Write a model's cached embeddings (its largest set) as GeoParquet, one file per source.

    Streams from the cache in row groups, so memory stays bounded whatever the set's size.
    Writing again replaces the files of those sources.

    Raises:
        NoEmbeddingsError: the cache holds no embeddings of the model (or of those sources).
    """
    eset = _largest_set(cache, model_id)
    out = Path(root)
    with cache.cursor() as cur:
        found = [
            r[0]
            for r in cur.execute(
                f"""SELECT DISTINCT t.source_id FROM {eset.table_name} e
                JOIN tiles t USING (tile_id) ORDER BY 1"""
            ).fetchall()
        ]
        meta_row = cur.execute(
            "SELECT preprocessing FROM embedding_sets WHERE set_id = ?", [eset.set_id]
        ).fetchone()
    chosen = [s for s in found if sources is None or s in sources]
    if not chosen:
        raise NoEmbeddingsError(
            f"The cache {cache.path} holds no {model_id} embeddings of "
            + (", ".join(sources) if sources else "any source")
            + f" (it has: {', '.join(found) or 'none'})."
        )
    preprocessing = json.loads(meta_row[0]) if meta_row and meta_row[0] else {}
    files: list[str] = []
    total = 0
    for source_id in chosen:
        path = partition_path(
            out, source_id, model_id, eset.preprocessing_hash, cache_part_name(cache)
        )
        total += _write_source(cache, eset, source_id, preprocessing, path, rows_per_group)
        files.append(str(path))
    return ParquetSetInfo(
        root=str(out),
        model_id=model_id,
        preprocessing_hash=eset.preprocessing_hash,
        dim=eset.dim,
        sources=tuple(chosen),
        rows=total,
        files=tuple(files),
        bytes=sum(Path(f).stat().st_size for f in files),
    )


def _largest_set(cache: EmbeddingCache, model_id: str) -> EmbeddingSet:
    best: tuple[int, EmbeddingSet] | None = None
    with cache.cursor() as cur:
        for s in cache.embedding_sets():
            if s.model_id != model_id:
                continue
            (n,) = cur.execute(f"SELECT count(*) FROM {s.table_name}").fetchone() or (0,)
            if n and (best is None or n > best[0]):
                best = (int(n), s)
    if best is None:
        raise NoEmbeddingsError(
            f"The cache {cache.path} holds no embeddings of {model_id}. Embed a region first: "
            f"softmap embed --model {model_id} --source … --bbox …"
        )
    return best[1]


def _write_source(
    cache: EmbeddingCache,
    eset: EmbeddingSet,
    source_id: str,
    preprocessing: dict[str, Any],
    path: Path,
    rows_per_group: int,
) -> int:
    with cache.cursor() as cur:
        row = cur.execute(
            "SELECT to_json(s)::VARCHAR FROM sources s WHERE source_id = ?", [source_id]
        ).fetchone()
    source_record = json.loads(row[0]) if row else {"source_id": source_id}
    metadata = {
        b"geo": json.dumps(_geo_metadata()).encode(),
        b"softmap": json.dumps(
            {
                "format": FORMAT_VERSION,
                "model_id": eset.model_id,
                "preprocessing_hash": eset.preprocessing_hash,
                "dim": eset.dim,
                "preprocessing": preprocessing,
                "source": source_record,
            },
            default=str,
        ).encode(),
    }
    columns = ", ".join(f't."{c}"' for c in _TILE_COLUMNS)
    sql = f"""SELECT e.tile_id, t.source_id, e.model_id, e.preprocessing_hash, e.vector,
        e.run_id, e.created_at, {columns}
        FROM {eset.table_name} e JOIN tiles t USING (tile_id)
        WHERE t.source_id = ? ORDER BY e.tile_id"""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".parquet.partial")
    written = 0
    writer: pq.ParquetWriter | None = None
    try:
        with cache.cursor() as cur:
            reader = cur.execute(sql, [source_id]).to_arrow_reader(rows_per_group)
            for batch in reader:
                table = _with_geometry(pa.Table.from_batches([batch]), eset.dim)
                if writer is None:
                    schema = table.schema.with_metadata(metadata)
                    writer = pq.ParquetWriter(partial, schema, compression="zstd")
                writer.write_table(table.replace_schema_metadata(metadata))
                written += table.num_rows
    finally:
        if writer is not None:
            writer.close()
    # The finished file replaces the old one at once: a reader never sees half a partition.
    partial.replace(path)
    return written


def _with_geometry(table: pa.Table, dim: int) -> pa.Table:
    """Vectors as fixed-size lists and the footprint as WKB ``geometry`` (GeoParquet)."""
    vectors = table.column("vector").combine_chunks()
    flat = pa.array(vectors.flatten().to_numpy(zero_copy_only=False).astype(np.float32))
    table = table.set_column(
        table.schema.get_field_index("vector"),
        "vector",
        pa.FixedSizeListArray.from_arrays(flat, dim),
    )
    footprints = table.column("footprint").to_pylist()
    shapes = shapely.from_geojson(np.array(footprints, dtype=object))
    wkb = shapely.to_wkb(shapes)
    return table.append_column("geometry", pa.array(list(wkb), type=pa.binary()))


def _geo_metadata() -> dict[str, Any]:
    return {
        "version": "1.1.0",
        "primary_column": "geometry",
        "columns": {
            # No "crs": GeoParquet's default, OGC:CRS84 (lon/lat), which the footprints are in.
            "geometry": {"encoding": "WKB", "geometry_types": ["Polygon"]}
        },
    }


# --- attaching -------------------------------------------------------------------------------
def read_set_metadata(path: Path) -> dict[str, Any] | None:
    """The ``softmap`` metadata of one Parquet file, or None for a file SoftMap did not write."""
    try:
        meta = pq.read_schema(path).metadata or {}
    except (OSError, pa.ArrowInvalid):
        return None
    raw = meta.get(b"softmap")
    return json.loads(raw) if raw else None


def attach_parquet_sets(cache: EmbeddingCache, root: str | Path) -> list[ParquetSetInfo]:
    """Attach every embedding set found under ``root`` (idempotent: re-attach after adding).

    Raises:
        NotFoundError: no SoftMap Parquet file under ``root``.
        CacheError: the cache already holds its own embeddings of that model and
            preprocessing (attach into another ``--db``).
    """
    base = Path(root).resolve()
    groups: dict[tuple[str, str], list[tuple[Path, dict[str, Any]]]] = {}
    for path in sorted(base.rglob("*.parquet")):
        meta = read_set_metadata(path)
        if meta is not None:
            groups.setdefault((meta["model_id"], meta["preprocessing_hash"]), []).append(
                (path, meta)
            )
    if not groups:
        raise NotFoundError(
            f"{base} holds no SoftMap Parquet embeddings (write them with "
            "`softmap parquet-sets write`)."
        )
    cache.ensure_schema("parquet_sets", _SCHEMA)
    return [_attach_one(cache, base, entries) for entries in groups.values()]


def _attach_one(
    cache: EmbeddingCache, base: Path, entries: list[tuple[Path, dict[str, Any]]]
) -> ParquetSetInfo:
    meta = entries[0][1]
    model_id, prep, dim = meta["model_id"], meta["preprocessing_hash"], int(meta["dim"])
    files = [str(p) for p, _ in entries]
    existing = cache.embedding_set(model_id, prep)
    with cache.transaction() as cur:
        if existing is not None:
            attached = cur.execute(
                "SELECT count(*) FROM parquet_sets WHERE set_id = ?", [existing.set_id]
            ).fetchone()
            if not (attached and attached[0]):
                raise CacheError(
                    f"The cache {cache.path} already holds its own {model_id} embeddings with "
                    f"preprocessing {prep}: attach {base} into another cache with --db."
                )
            set_id = existing.set_id
        else:
            (set_id,) = cur.execute(
                "SELECT coalesce(max(set_id), 0) + 1 FROM embedding_sets"
            ).fetchone() or (1,)
            cur.execute(
                "INSERT INTO embedding_sets VALUES (?, ?, ?, ?, ?, ?, ?)",
                [set_id, model_id, prep, dim, f"embeddings_pq_{int(set_id)}",
                 json.dumps(meta.get("preprocessing", {})), datetime.now(timezone.utc)],
            )  # fmt: skip
        view = f"embeddings_pq_{int(set_id)}"
        listing = "[" + ", ".join(_sql_text(f) for f in files) + "]"
        source = f"read_parquet({listing}, hive_partitioning = false)"
        (copies,) = cur.execute(
            f"SELECT count(*) - count(DISTINCT tile_id) FROM {source}"
        ).fetchone() or (0,)
        if copies:
            # Caches whose regions touched wrote their shared edge tiles twice (same vectors):
            # the view keeps one row per tile, at the cost of a pass per query.
            source = f"(SELECT DISTINCT ON (tile_id) * FROM {source} ORDER BY tile_id)"
        cur.execute(
            f"""CREATE OR REPLACE VIEW {view} AS SELECT tile_id, model_id, preprocessing_hash,
            vector::FLOAT[{dim}] AS vector, run_id, created_at FROM {source}"""
        )
        for _, m in entries:
            _insert_source(cur, m.get("source") or {})
        columns = ", ".join(f'"{c}"' for c in ("tile_id", "source_id", *_TILE_COLUMNS))
        cur.execute(
            f"""INSERT INTO tiles ({columns}) SELECT DISTINCT ON (tile_id) {columns}
            FROM read_parquet({listing}, hive_partitioning = false)
            ON CONFLICT (tile_id) DO NOTHING"""
        )
        (rows,) = cur.execute(f"SELECT count(*) FROM {view}").fetchone() or (0,)
        cur.execute(
            """INSERT INTO parquet_sets VALUES (?, ?, ?, ?, ?) ON CONFLICT (set_id) DO UPDATE
            SET root = excluded.root, files = excluded.files, rows = excluded.rows,
                attached_at = excluded.attached_at""",
            [set_id, str(base), json.dumps(files), rows, datetime.now(timezone.utc)],
        )
    return ParquetSetInfo(
        root=str(base),
        model_id=model_id,
        preprocessing_hash=prep,
        dim=dim,
        sources=tuple(sorted({m["source"]["source_id"] for _, m in entries if m.get("source")})),
        rows=int(rows),
        files=tuple(files),
        bytes=sum(Path(f).stat().st_size for f in files),
    )


def _insert_source(cur: Any, record: dict[str, Any]) -> None:
    if not record.get("source_id"):
        return
    known = {
        r[0]
        for r in cur.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'sources'"
        ).fetchall()
    }
    cols = [c for c in record if c in known]
    names = ", ".join(f'"{c}"' for c in cols)
    marks = ", ".join("?" for _ in cols)
    cur.execute(
        f"INSERT INTO sources ({names}) VALUES ({marks}) ON CONFLICT (source_id) DO NOTHING",
        [json.dumps(record[c]) if isinstance(record[c], dict | list) else record[c] for c in cols],
    )


def parquet_sets(cache: EmbeddingCache) -> list[ParquetSetInfo]:
    """The Parquet embedding sets attached to the cache."""
    if not cache.ensure_schema("parquet_sets", _SCHEMA):
        return []
    with cache.cursor() as cur:
        rows = cur.execute(
            """SELECT p.root, s.model_id, s.preprocessing_hash, s.dim, p.files, p.rows
            FROM parquet_sets p JOIN embedding_sets s USING (set_id) ORDER BY p.set_id"""
        ).fetchall()
    out = []
    for root, model_id, prep, dim, files_json, rows_n in rows:
        files = tuple(json.loads(files_json))
        sources = tuple(
            sorted(
                {
                    m["source"]["source_id"]
                    for f in files
                    if (m := read_set_metadata(Path(f))) and m.get("source")
                }
            )
        )
        size = sum(Path(f).stat().st_size for f in files if Path(f).exists())
        out.append(
            ParquetSetInfo(root, model_id, prep, int(dim), sources, int(rows_n or 0), files, size)
        )
    return out


def _sql_text(value: str) -> str:
    """A string literal for DuckDB (file lists cannot be bound parameters of a view)."""
    return "'" + value.replace("'", "''") + "'"


__all__ = [
    "FORMAT_VERSION",
    "ParquetSetInfo",
    "attach_parquet_sets",
    "cache_part_name",
    "parquet_sets",
    "partition_path",
    "read_set_metadata",
    "write_parquet_set",
]
