"""What STAC sources were built from, stored in the cache: the query and items of a source and
the item and acquisition date behind each tile (``stac_sources``, ``stac_tiles``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from backend.imagery.stac import StacSource
from backend.store.cache import EmbeddingCache

_STAC_DDL = """
CREATE TABLE IF NOT EXISTS stac_sources (
    source_id TEXT PRIMARY KEY, api_url TEXT, query JSON, mode TEXT, chip INTEGER,
    items JSON, manifest TEXT, created_at TIMESTAMPTZ
);
CREATE TABLE IF NOT EXISTS stac_tiles (
    tile_id TEXT PRIMARY KEY, source_id TEXT NOT NULL, item_id TEXT NOT NULL, collection TEXT,
    acquired TEXT, date TEXT, cloud_fraction DOUBLE, cloud_basis TEXT
);
"""


def record_source(cache: EmbeddingCache, stac: StacSource, manifest: Path | None = None) -> None:
    """Store what a STAC source was built from (query, items, mode, manifest path)."""
    cache.ensure_schema("stac", _STAC_DDL)
    with cache.transaction() as cur:
        cur.execute(
            """INSERT INTO stac_sources VALUES (?, ?, ?, ?, ?, ?, ?, ?)
            ON CONFLICT (source_id) DO UPDATE SET items = excluded.items,
                manifest = excluded.manifest""",
            [
                stac.source.id,
                stac.query.api_url,
                json.dumps(stac.query.__dict__),
                "per-tile" if stac.selection else "best",
                stac.selection.chip if stac.selection else None,
                json.dumps([i.summary() for i in stac.items]),
                str(manifest) if manifest else None,
                datetime.now(timezone.utc),
            ],
        )


def record_tiles(
    cache: EmbeddingCache, stac: StacSource, tiles: Sequence[tuple[str, int, int, int]]
) -> int:
    """Record the item and acquisition date of each tile ``(tile_id, row_off, col_off, size)``."""
    cache.ensure_schema("stac", _STAC_DDL)
    rows = []
    for tile_id, row_off, col_off, size in tiles:
        item, pick = stac.item_for(row_off, col_off, size)
        rows.append(
            [
                tile_id,
                stac.source.id,
                item.id,
                item.collection,
                item.datetime,
                item.date,
                pick.cloud_fraction,
                pick.basis,
            ]
        )
    if rows:
        with cache.transaction() as cur:
            cur.executemany(
                """INSERT INTO stac_tiles VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT (tile_id) DO UPDATE SET item_id = excluded.item_id,
                    acquired = excluded.acquired, date = excluded.date,
                    cloud_fraction = excluded.cloud_fraction, cloud_basis = excluded.cloud_basis""",
                rows,
            )
    return len(rows)


def tile_acquisitions(cache: EmbeddingCache, tile_ids: Sequence[str]) -> list[dict[str, Any]]:
    """Item id, acquisition time and cloud fraction of STAC tiles (unrecorded ids left out)."""
    if not cache.ensure_schema("stac", _STAC_DDL):
        return []
    with cache.cursor() as cur:
        rows = (
            cur.execute(
                "SELECT * FROM stac_tiles WHERE tile_id IN (SELECT unnest(?::VARCHAR[])) "
                "ORDER BY tile_id",
                [list(tile_ids)],
            )
            .to_arrow_table()
            .to_pylist()
        )
    return list(rows)
