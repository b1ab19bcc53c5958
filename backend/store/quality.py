"""Stored tile quality: the nodata and cloud fractions measured at planning time, as filters.

The fractions themselves are measured by :mod:`backend.imagery.quality`; this module reads them
back from the ``tiles`` table and drops the tiles whose known quality fails a limit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from backend.store.cache import EmbeddingCache


@dataclass(frozen=True)
class TileQuality:
    """Stored quality of one tile."""

    tile_id: str
    nodata_fraction: float | None
    cloud_fraction: float | None


def tile_quality(cache: EmbeddingCache, tile_ids: Sequence[str]) -> dict[str, TileQuality]:
    """Stored nodata and cloud fractions of the tiles the cache knows (others are left out)."""
    if not tile_ids:
        return {}
    has_cloud = cache.has_column("tiles", "cloud_fraction")
    cloud = "cloud_fraction" if has_cloud else "NULL::DOUBLE"
    with cache.cursor() as cur:
        rows = cur.execute(
            f"SELECT tile_id, nodata_fraction, {cloud} FROM tiles "
            "WHERE tile_id IN (SELECT unnest(?::VARCHAR[]))",
            [list(tile_ids)],
        ).fetchall()
    return {r[0]: TileQuality(r[0], r[1], r[2]) for r in rows}


def filter_tile_ids(
    cache: EmbeddingCache,
    tile_ids: Sequence[str],
    *,
    max_cloud_fraction: float | None = None,
    max_nodata_fraction: float | None = None,
) -> list[str]:
    """The tiles (in the order given) whose stored quality passes the limits.

    A limit of None does not filter. Tiles whose fraction is unknown (not measured, Sentinel-1,
    or not in the cache) pass: quality filters drop only what is known to be bad.
    """
    if max_cloud_fraction is None and max_nodata_fraction is None:
        return list(tile_ids)
    quality = tile_quality(cache, tile_ids)

    def passes(tile_id: str) -> bool:
        q = quality.get(tile_id)
        if q is None:
            return True
        cloudy = (
            max_cloud_fraction is not None
            and q.cloud_fraction is not None
            and q.cloud_fraction > max_cloud_fraction
        )
        empty = (
            max_nodata_fraction is not None
            and q.nodata_fraction is not None
            and q.nodata_fraction > max_nodata_fraction
        )
        return not (cloudy or empty)

    return [t for t in tile_ids if passes(t)]
