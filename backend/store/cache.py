"""The DuckDB embedding cache: sources, tiles, embeddings and runs in one file.

Embeddings of one (model, preprocessing) pair form an *embedding set* stored in its own table
``embeddings_<set_id>`` with a fixed-size ``FLOAT[D]`` vector column, so that vector functions
(``array_cosine_similarity``) and an HNSW index apply directly. ``embedding_sets`` maps the pair to
its table. Every query is parameterised; every call uses its own cursor; every batch of embeddings
is written in one transaction, so a crash loses at most the batch in flight.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
from numpy.typing import NDArray
from shapely.geometry import mapping

from backend.errors import CacheError, CacheLockedError
from backend.imagery.sources import SceneSource
from backend.imagery.tiling import Tile

SCHEMA_VERSION = "1"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS softmap_meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS sources (
    source_id TEXT PRIMARY KEY, title TEXT, sensor TEXT, product_level TEXT, date TEXT,
    crs TEXT, footprint JSON, summary JSON, registered_at TIMESTAMPTZ
);
CREATE TABLE IF NOT EXISTS tiles (
    tile_id TEXT PRIMARY KEY, source_id TEXT NOT NULL, chip INTEGER, stride INTEGER,
    "row" INTEGER, col INTEGER, col_off INTEGER, row_off INTEGER, width INTEGER, height INTEGER,
    footprint JSON, min_lon DOUBLE, min_lat DOUBLE, max_lon DOUBLE, max_lat DOUBLE,
    lon DOUBLE, lat DOUBLE, nodata_fraction DOUBLE
);
CREATE TABLE IF NOT EXISTS embedding_sets (
    set_id INTEGER PRIMARY KEY, model_id TEXT NOT NULL, preprocessing_hash TEXT NOT NULL,
    dim INTEGER NOT NULL, table_name TEXT NOT NULL, preprocessing JSON, created_at TIMESTAMPTZ,
    UNIQUE (model_id, preprocessing_hash)
);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, started_at TIMESTAMPTZ, finished_at TIMESTAMPTZ, status TEXT,
    source_id TEXT, model_id TEXT, preprocessing_hash TEXT, region JSON, params JSON,
    tiles_total INTEGER, computed INTEGER, cached INTEGER, skipped INTEGER,
    seconds DOUBLE, tiles_per_s DOUBLE, device TEXT, error TEXT
);
"""

# Columns added after the first release: existing caches gain them when opened for writing.
_MIGRATIONS = """
ALTER TABLE sources ADD COLUMN IF NOT EXISTS manifest JSON;
ALTER TABLE sources ADD COLUMN IF NOT EXISTS registered BOOLEAN DEFAULT false;
ALTER TABLE tiles ADD COLUMN IF NOT EXISTS cloud_fraction DOUBLE;
"""

_LOCK_PID = re.compile(r"PID (\d+)")


@dataclass(frozen=True)
class EmbeddingSet:
    """The table holding one model's embeddings under one preprocessing."""

    set_id: int
    model_id: str
    preprocessing_hash: str
    dim: int
    table_name: str


@dataclass(frozen=True)
class CacheStats:
    """Sizes shown in the app's sidebar and ``softmap`` outputs."""

    path: str
    size_bytes: int
    sources: int
    tiles: int
    embeddings: int
    runs: int


def _now() -> datetime:
    return datetime.now(timezone.utc)


class EmbeddingCache:
    """A connection to the cache file; use as a context manager.

    Raises (on open):
        CacheLockedError: another process holds the file.
        CacheError: the file is not a usable DuckDB database.
    """

    def __init__(self, path: str | Path, *, read_only: bool = False) -> None:
        self.path = Path(path)
        self.read_only = read_only
        self._schemas: set[str] = set()
        if not read_only:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise CacheError(
                    f"Cannot create the folder of the cache {self.path} ({e.strerror or e}). "
                    "Pass --db (or set SOFTMAP_DB_PATH) to a writable location."
                ) from e
        elif not self.path.exists():
            raise CacheError(f"The cache {self.path} does not exist yet: embed a region first.")
        try:
            self._con = duckdb.connect(str(self.path), read_only=read_only)
        except duckdb.IOException as e:
            text = str(e)
            if "lock" in text.lower():
                pid = _LOCK_PID.search(text)
                who = f"process {pid.group(1)}" if pid else "another process"
                raise CacheLockedError(
                    f"The cache {self.path} is in use by {who} (another SoftMap CLI or app). "
                    "Wait for it to finish or close it, or pass --db to use another file."
                ) from e
            raise CacheError(f"Cannot open the cache {self.path}: {text}") from e
        except duckdb.Error as e:
            raise CacheError(
                f"{self.path} is not a usable SoftMap cache ({e}). Move it aside or pass --db."
            ) from e
        if not read_only:
            self._init_schema()

    # --- lifecycle ------------------------------------------------------------------------
    def __enter__(self) -> EmbeddingCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._con.close()

    @contextmanager
    def cursor(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A cursor of its own for one operation; DuckDB errors become ``CacheError``."""
        cur = self._con.cursor()
        try:
            yield cur
        except duckdb.Error as e:
            raise CacheError(f"Cache operation on {self.path} failed: {e}") from e
        finally:
            cur.close()

    @contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A cursor inside one transaction: committed on success, rolled back on any error."""
        with self.cursor() as cur:
            cur.begin()
            try:
                yield cur
            except BaseException:
                cur.rollback()
                raise
            cur.commit()

    def ensure_schema(self, name: str, ddl: str) -> bool:
        """Create a feature's tables (``CREATE … IF NOT EXISTS`` statements) once per connection.

        Feature modules (land cover, user classes, projections, …) own their tables and call
        this before using them. On a read-only cache nothing is created; returns whether the
        feature's tables can be used (they exist or were just created).
        """
        if name in self._schemas:
            return True
        if self.read_only:
            first = re.search(r"CREATE TABLE IF NOT EXISTS (\w+)", ddl)
            if first is None or not self.has_table(first.group(1)):
                return False
        else:
            with self.transaction() as cur:
                cur.execute(ddl)
        self._schemas.add(name)
        return True

    def has_column(self, table: str, column: str) -> bool:
        """Whether ``table`` has ``column`` (an old read-only cache may lack newer columns)."""
        with self.cursor() as cur:
            row = cur.execute(
                "SELECT count(*) FROM information_schema.columns "
                "WHERE table_name = ? AND column_name = ?",
                [table, column],
            ).fetchone()
        return bool(row and row[0])

    def has_table(self, table: str) -> bool:
        with self.cursor() as cur:
            row = cur.execute(
                "SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [table]
            ).fetchone()
        return bool(row and row[0])

    def _init_schema(self) -> None:
        with self.transaction() as cur:
            cur.execute(_SCHEMA)
            cur.execute(_MIGRATIONS)
            cur.execute(
                "INSERT INTO softmap_meta VALUES ('schema_version', ?) ON CONFLICT DO NOTHING",
                [SCHEMA_VERSION],
            )
            # We hold the write lock, so no other process can be running: a run still marked
            # 'running' was killed mid-way. Its committed batches stay; the run is marked.
            cur.execute(
                "UPDATE runs SET status = 'interrupted', finished_at = ? WHERE status = 'running'",
                [_now()],
            )

    @contextmanager
    def single_threaded(self) -> Iterator[None]:
        """Keep DuckDB to one thread inside the block, then restore its default.

        While a model runs, the per-batch inserts gain nothing from DuckDB's worker threads,
        and idle workers must not compete with PyTorch's threads for the cores.
        """
        with self.cursor() as cur:
            (threads,) = cur.execute("SELECT current_setting('threads')").fetchone() or (None,)
            cur.execute("SET threads = 1")
        try:
            yield
        finally:
            with self.cursor() as cur:
                cur.execute(f"SET threads = {int(threads or 1)}")

    # --- sources and tiles ----------------------------------------------------------------
    def upsert_source(self, source: SceneSource) -> None:
        summary = source.summary()
        with self.cursor() as cur:
            cur.execute(
                """INSERT INTO sources (source_id, title, sensor, product_level, date, crs,
                    footprint, summary, registered_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT (source_id) DO UPDATE SET title = excluded.title,
                    footprint = excluded.footprint, summary = excluded.summary""",
                [
                    source.id,
                    source.title,
                    source.sensor,
                    source.product_level,
                    source.date,
                    source.crs,
                    json.dumps(summary["footprint"]),
                    json.dumps(summary),
                    _now(),
                ],
            )

    def register_source(self, source: SceneSource, manifest: dict[str, Any]) -> None:
        """Store a registered source with its full description (see ``sources.register_source``)."""
        summary = source.summary()
        with self.cursor() as cur:
            cur.execute(
                """INSERT INTO sources (source_id, title, sensor, product_level, date, crs,
                    footprint, summary, registered_at, manifest, registered)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, true)
                ON CONFLICT (source_id) DO UPDATE SET title = excluded.title,
                    sensor = excluded.sensor, product_level = excluded.product_level,
                    date = excluded.date, crs = excluded.crs, footprint = excluded.footprint,
                    summary = excluded.summary, registered_at = excluded.registered_at,
                    manifest = excluded.manifest, registered = true""",
                [
                    source.id,
                    source.title,
                    source.sensor,
                    source.product_level,
                    source.date,
                    source.crs,
                    json.dumps(summary["footprint"]),
                    json.dumps(summary),
                    _now(),
                    json.dumps(manifest),
                ],
            )

    def registered_source_manifests(self) -> dict[str, dict[str, Any]]:
        """Stored descriptions of registered sources by id (empty on a cache from before them)."""
        if not self.has_column("sources", "registered"):
            return {}
        with self.cursor() as cur:
            rows = cur.execute(
                "SELECT source_id, manifest FROM sources WHERE registered AND manifest IS NOT NULL"
            ).fetchall()
        return {r[0]: json.loads(r[1]) for r in rows}

    def remove_source(self, source_id: str) -> int:
        """Delete a source, its tiles, their embeddings and feature rows in one transaction.

        Feature rows are those of every table created through :meth:`ensure_schema` (land cover,
        labels, class predictions, projections, STAC records, …), found by their ``tile_id`` or
        ``source_id`` column, so a feature added later is covered without listing it here. Run
        history (``runs``) is kept. Returns the number of tiles dropped.
        """
        prefix = source_id + "/"
        fused = self.has_table("fused_tiles")
        with self.transaction() as cur:
            if fused:
                _drop_fused_rows(cur, prefix)
            tables = [r[0] for r in cur.execute("SELECT table_name FROM embedding_sets").fetchall()]
            for table in tables:
                cur.execute(f"DELETE FROM {table} WHERE starts_with(tile_id, ?)", [prefix])
            _drop_feature_rows(cur, source_id)
            row = cur.execute(
                "SELECT count(*) FROM tiles WHERE source_id = ?", [source_id]
            ).fetchone()
            cur.execute("DELETE FROM tiles WHERE source_id = ?", [source_id])
            cur.execute("DELETE FROM sources WHERE source_id = ?", [source_id])
        return int(row[0]) if row else 0

    def upsert_tiles(self, tiles: Sequence[Tile]) -> None:
        """Record tiles (idempotent: a tile id always describes the same window)."""
        if not tiles:
            return
        table = pa.table(
            {
                "tile_id": [t.tile_id for t in tiles],
                "source_id": [t.source_id for t in tiles],
                "chip": [t.chip for t in tiles],
                "stride": [t.stride for t in tiles],
                "row": [t.row for t in tiles],
                "col": [t.col for t in tiles],
                "col_off": [t.window.col_off for t in tiles],
                "row_off": [t.window.row_off for t in tiles],
                "width": [t.window.width for t in tiles],
                "height": [t.window.height for t in tiles],
                "footprint": [json.dumps(mapping(t.footprint)) for t in tiles],
                "min_lon": [t.footprint.bounds[0] for t in tiles],
                "min_lat": [t.footprint.bounds[1] for t in tiles],
                "max_lon": [t.footprint.bounds[2] for t in tiles],
                "max_lat": [t.footprint.bounds[3] for t in tiles],
                "lon": [t.centroid[0] for t in tiles],
                "lat": [t.centroid[1] for t in tiles],
                "nodata_fraction": [t.nodata_fraction for t in tiles],
                "cloud_fraction": pa.array([t.cloud_fraction for t in tiles], type=pa.float64()),
            }
        )
        with self.transaction() as cur:
            cur.register("_tiles", table)
            cur.execute(
                """INSERT INTO tiles BY NAME SELECT * FROM _tiles
                ON CONFLICT (tile_id) DO UPDATE SET nodata_fraction = excluded.nodata_fraction,
                    cloud_fraction = excluded.cloud_fraction"""
            )
            cur.unregister("_tiles")

    def tiles(self, tile_ids: Sequence[str]) -> list[dict[str, Any]]:
        """Stored tile records, in the order asked (missing ids are left out)."""
        with self.cursor() as cur:
            rows = (
                cur.execute(
                    "SELECT * FROM tiles WHERE tile_id IN (SELECT unnest(?::VARCHAR[]))",
                    [list(tile_ids)],
                )
                .to_arrow_table()
                .to_pylist()
            )
        by_id = {r["tile_id"]: r for r in rows}
        return [by_id[t] for t in tile_ids if t in by_id]

    # --- embedding sets -------------------------------------------------------------------
    def embedding_set(
        self,
        model_id: str,
        preprocessing_hash: str,
        dim: int | None = None,
        preprocessing: dict[str, object] | None = None,
    ) -> EmbeddingSet | None:
        """The set for (model, preprocessing); created when ``dim`` is given and it is absent."""
        with self.cursor() as cur:
            row = cur.execute(
                """SELECT set_id, model_id, preprocessing_hash, dim, table_name FROM embedding_sets
                WHERE model_id = ? AND preprocessing_hash = ?""",
                [model_id, preprocessing_hash],
            ).fetchone()
        if row is not None:
            found = EmbeddingSet(*row)
            if dim is not None and found.dim != dim:
                raise CacheError(
                    f"The cache holds {model_id} embeddings of dimension {found.dim}, "
                    f"but the model now produces {dim}. Use another --db or delete the old set."
                )
            return found
        if dim is None:
            return None
        with self.transaction() as cur:
            (set_id,) = cur.execute(
                "SELECT coalesce(max(set_id), 0) + 1 FROM embedding_sets"
            ).fetchone() or (1,)
            table = f"embeddings_{int(set_id)}"
            cur.execute(
                f"""CREATE TABLE {table} (
                    tile_id TEXT PRIMARY KEY, model_id TEXT NOT NULL,
                    preprocessing_hash TEXT NOT NULL, vector FLOAT[{int(dim)}] NOT NULL,
                    run_id TEXT, created_at TIMESTAMPTZ)"""
            )
            cur.execute(
                "INSERT INTO embedding_sets VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    set_id,
                    model_id,
                    preprocessing_hash,
                    dim,
                    table,
                    json.dumps(preprocessing or {}),
                    _now(),
                ],
            )
        return EmbeddingSet(int(set_id), model_id, preprocessing_hash, int(dim), table)

    def set_preprocessing(self, eset: EmbeddingSet) -> dict[str, Any] | None:
        """The preprocessing description stored with a set (None when it was not recorded)."""
        with self.cursor() as cur:
            row = cur.execute(
                "SELECT preprocessing FROM embedding_sets WHERE set_id = ?", [eset.set_id]
            ).fetchone()
        if row is None or row[0] is None:
            return None
        value = json.loads(row[0])
        return value if isinstance(value, dict) and value else None

    def set_precisions(self, eset: EmbeddingSet) -> dict[str, int]:
        """How many of a set's embeddings each numeric precision computed (from their runs).

        fp32 (CPU) and bf16 autocast (CUDA) vectors of one tile differ by ``1 - cos`` ≈ 1e-6
        (``bench/bench_precision.py``), far below the gaps search resolves, so both share one
        set and the precision is provenance, not part of the key. ``unknown`` counts vectors
        whose run did not record it.
        """
        with self.cursor() as cur:
            rows = cur.execute(
                f"""SELECT coalesce(json_extract_string(r.params, '$.precision'), 'unknown'),
                    count(*) FROM {eset.table_name} e LEFT JOIN runs r USING (run_id)
                GROUP BY ALL ORDER BY 1"""
            ).fetchall()
        return {str(p): int(n) for p, n in rows}

    def embedding_sets(self) -> list[EmbeddingSet]:
        with self.cursor() as cur:
            rows = cur.execute(
                "SELECT set_id, model_id, preprocessing_hash, dim, table_name "
                "FROM embedding_sets ORDER BY set_id"
            ).fetchall()
        return [EmbeddingSet(*r) for r in rows]

    def superseded_set_ids(self) -> set[int]:
        """Sets replaced by a later set of the same model made with other weights.

        Two sets of one model whose recorded preprocessing differs only in ``weights`` (or in
        that one lacks it: sets made before the weights were recorded) hold embeddings of the
        same pixels by two versions of the model, e.g. before and after the bundled
        ``softmap-default`` was retrained. The one embedded into last is current; the others are
        superseded: searches, scopes and projections that name no preprocessing leave them out
        (naming a set's hash still reaches it). Sets without a recorded preprocessing are
        never superseded.
        """
        with self.cursor() as cur:
            rows = cur.execute(
                """SELECT e.set_id, e.model_id, e.preprocessing::TEXT,
                    epoch(greatest(any_value(e.created_at), max(r.started_at)))
                FROM embedding_sets e LEFT JOIN runs r
                    ON r.model_id = e.model_id AND r.preprocessing_hash = e.preprocessing_hash
                GROUP BY e.set_id, e.model_id, e.preprocessing::TEXT"""
            ).fetchall()
        groups: dict[tuple[str, str], list[tuple[float, int]]] = {}
        for set_id, model_id, raw, last in rows:
            prep = json.loads(raw) if raw else None
            if not isinstance(prep, dict) or not prep:
                continue
            rest = json.dumps({k: v for k, v in prep.items() if k != "weights"}, sort_keys=True)
            groups.setdefault((str(model_id), rest), []).append(
                (float(last) if last is not None else float("-inf"), int(set_id))
            )
        out: set[int] = set()
        for members in groups.values():
            if len(members) > 1:
                newest = max(members)  # the last embedded into; the later set on a tie
                out.update(set_id for _, set_id in members if set_id != newest[1])
        return out

    def cached_tile_ids(self, eset: EmbeddingSet, tile_ids: Sequence[str]) -> set[str]:
        """Which of ``tile_ids`` already have an embedding in the set."""
        if not tile_ids:
            return set()
        with self.cursor() as cur:
            rows = cur.execute(
                f"SELECT tile_id FROM {eset.table_name} "
                "WHERE tile_id IN (SELECT unnest(?::VARCHAR[]))",
                [list(tile_ids)],
            ).fetchall()
        return {r[0] for r in rows}

    def write_embeddings(
        self,
        eset: EmbeddingSet,
        tile_ids: Sequence[str],
        vectors: NDArray[np.float32],
        *,
        run_id: str | None = None,
        run_progress: int | None = None,
    ) -> None:
        """Write one batch atomically (and the run's progress in the same transaction)."""
        if vectors.shape != (len(tile_ids), eset.dim):
            raise ValueError(f"vectors {vectors.shape} do not match {len(tile_ids)}×{eset.dim}")
        flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).ravel())
        n = len(tile_ids)
        batch = pa.table(
            {
                "tile_id": list(tile_ids),
                "model_id": [eset.model_id] * n,
                "preprocessing_hash": [eset.preprocessing_hash] * n,
                "vector": pa.FixedSizeListArray.from_arrays(flat, eset.dim),
                "run_id": [run_id] * n,
                "created_at": pa.array([_now()] * n, type=pa.timestamp("us", tz="UTC")),
            }
        )
        with self.transaction() as cur:
            cur.register("_batch", batch)
            cur.execute(
                f"INSERT INTO {eset.table_name} SELECT * FROM _batch ON CONFLICT DO NOTHING"
            )
            cur.unregister("_batch")
            if run_id is not None and run_progress is not None:
                cur.execute("UPDATE runs SET computed = ? WHERE run_id = ?", [run_progress, run_id])

    def embeddings(
        self, eset: EmbeddingSet, tile_ids: Sequence[str] | None = None
    ) -> tuple[list[str], NDArray[np.float32]]:
        """(tile ids, ``[N, D]`` float32 matrix) of a set, optionally restricted to some tiles."""
        with self.cursor() as cur:
            if tile_ids is None:
                rel = cur.execute(f"SELECT tile_id, vector FROM {eset.table_name} ORDER BY tile_id")
            else:
                rel = cur.execute(
                    f"SELECT tile_id, vector FROM {eset.table_name} "
                    "WHERE tile_id IN (SELECT unnest(?::VARCHAR[])) ORDER BY tile_id",
                    [list(tile_ids)],
                )
            table = rel.to_arrow_table()
        ids = table.column("tile_id").to_pylist()
        flat = table.column("vector").combine_chunks().flatten().to_numpy(zero_copy_only=False)
        return ids, np.asarray(flat, dtype=np.float32).reshape(len(ids), eset.dim)

    # --- runs -----------------------------------------------------------------------------
    def start_run(
        self,
        *,
        source_id: str,
        model_id: str,
        preprocessing_hash: str,
        region: dict[str, Any],
        params: dict[str, Any],
        tiles_total: int,
        cached: int,
        skipped: int,
        device: str,
    ) -> str:
        run_id = uuid.uuid4().hex
        with self.cursor() as cur:
            cur.execute(
                """INSERT INTO runs VALUES (?, ?, NULL, 'running', ?, ?, ?, ?, ?, ?, 0, ?, ?,
                NULL, NULL, ?, NULL)""",
                [
                    run_id,
                    _now(),
                    source_id,
                    model_id,
                    preprocessing_hash,
                    json.dumps(region),
                    json.dumps(params),
                    tiles_total,
                    cached,
                    skipped,
                    device,
                ],
            )
        return run_id

    def finish_run(
        self,
        run_id: str,
        *,
        status: str,
        computed: int,
        seconds: float,
        tiles_per_s: float,
        error: str | None = None,
    ) -> None:
        with self.cursor() as cur:
            cur.execute(
                """UPDATE runs SET status = ?, finished_at = ?, computed = ?, seconds = ?,
                tiles_per_s = ?, error = ? WHERE run_id = ?""",
                [status, _now(), computed, seconds, tiles_per_s, error, run_id],
            )

    def runs(self, limit: int = 20) -> list[dict[str, Any]]:
        with self.cursor() as cur:
            table = cur.execute(
                "SELECT * FROM runs ORDER BY started_at DESC LIMIT ?", [limit]
            ).to_arrow_table()
        return list(table.to_pylist())

    # --- statistics -----------------------------------------------------------------------
    def stats(self) -> CacheStats:
        with self.cursor() as cur:
            n_sources = _count(cur, "sources")
            n_tiles = _count(cur, "tiles")
            n_runs = _count(cur, "runs")
            tables = [r[0] for r in cur.execute("SELECT table_name FROM embedding_sets").fetchall()]
            n_emb = sum(_count(cur, t) for t in tables)
        size = self.path.stat().st_size if self.path.exists() else 0
        return CacheStats(str(self.path), size, n_sources, n_tiles, n_emb, n_runs)


def _drop_fused_rows(cur: duckdb.DuckDBPyConnection, prefix: str) -> None:
    """Fused S2+S1 rows built from a removed source's tiles (``backend.embedding.fusion``)."""
    rows = cur.execute(
        """SELECT s.table_name, f.tile_id FROM fused_tiles f JOIN embedding_sets s USING (set_id)
        WHERE starts_with(f.s2_tile_id, ?) OR starts_with(f.s1_tile_id, ?)""",
        [prefix, prefix],
    ).fetchall()
    by_table: dict[str, list[str]] = {}
    for table, tile_id in rows:
        by_table.setdefault(table, []).append(tile_id)
    for table, ids in by_table.items():
        cur.execute(f"DELETE FROM {table} WHERE tile_id IN (SELECT unnest(?::VARCHAR[]))", [ids])
    cur.execute(
        "DELETE FROM fused_tiles WHERE starts_with(s2_tile_id, ?) OR starts_with(s1_tile_id, ?)",
        [prefix, prefix],
    )


#: Tables ``remove_source`` handles itself (or keeps, as history), not as feature tables.
_CORE_TABLES = ("sources", "tiles", "embedding_sets", "runs", "softmap_meta")


def _drop_feature_rows(cur: duckdb.DuckDBPyConnection, source_id: str) -> None:
    """Rows of a source's tiles (``tile_id`` under ``source_id/``) or of the source itself."""
    rows = cur.execute(
        """SELECT table_name, list(column_name) FROM information_schema.columns
        WHERE table_schema = current_schema() AND column_name IN ('tile_id', 'source_id')
            AND table_name NOT IN (SELECT unnest(?::VARCHAR[]))
            AND table_name NOT IN (SELECT table_name FROM embedding_sets)
        GROUP BY table_name ORDER BY table_name""",
        [list(_CORE_TABLES)],
    ).fetchall()
    for table, columns in rows:
        if "tile_id" in columns:
            cur.execute(f'DELETE FROM "{table}" WHERE starts_with(tile_id, ?)', [source_id + "/"])
        if "source_id" in columns:
            cur.execute(f'DELETE FROM "{table}" WHERE source_id = ?', [source_id])


def _count(cur: duckdb.DuckDBPyConnection, table: str) -> int:
    row = cur.execute(f"SELECT count(*) FROM {table}").fetchone()
    return int(row[0]) if row else 0
