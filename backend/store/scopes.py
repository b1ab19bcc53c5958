"""Which cached tiles a feature works on: a region, a source or everything cached for a model.

Projections, user classes, similarity search and exports all start from "the embeddings of this
model over this area". ``resolve_scope`` turns that into an embedding set and a sorted tuple of
tile ids, and refuses with one clear message when the model has no embeddings there.
``tiles_at_point`` and ``tiles_in_geometry`` find cached tiles under a click or a drawn polygon.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import shapely
from numpy.typing import NDArray
from shapely.geometry import Point
from shapely.geometry.base import BaseGeometry

from backend.errors import EmptyScopeError, NoEmbeddingsError, NotFoundError
from backend.imagery.regions import Region
from backend.store.cache import EmbeddingCache, EmbeddingSet

ScopeKind = Literal["region", "source", "all"]


@dataclass(frozen=True)
class Scope:
    """The embedded tiles of one model over a region, a source or the whole cache."""

    kind: ScopeKind
    eset: EmbeddingSet
    tile_ids: tuple[str, ...]  # sorted
    source_id: str | None = None
    region: Region | None = None

    @property
    def key(self) -> str:
        """A stable text naming the scope (not its content), e.g. for cache keys."""
        if self.kind == "all":
            return "all"
        if self.kind == "source":
            return f"source:{self.source_id}"
        assert self.region is not None
        geo = json.dumps(self.region.to_geojson(), sort_keys=True)
        digest = hashlib.sha256(geo.encode()).hexdigest()[:16]
        return f"region:{self.source_id or '*'}:{digest}"

    def describe(self) -> str:
        where = {
            "all": "everything cached",
            "source": f"source {self.source_id}",
            "region": f"region {self.region.describe() if self.region else ''}",
        }[self.kind]
        return f"{len(self.tile_ids)} tiles of {self.eset.model_id} over {where}"


def embedding_sets_for(cache: EmbeddingCache, model_id: str) -> list[EmbeddingSet]:
    """The model's embedding sets (one per preprocessing); raises when there are none."""
    sets = [s for s in cache.embedding_sets() if s.model_id == model_id]
    if not sets:
        known = sorted({s.model_id for s in cache.embedding_sets()})
        hint = f" Models with embeddings: {', '.join(known)}." if known else ""
        raise NoEmbeddingsError(
            f"The cache {cache.path} holds no embeddings of {model_id}. Run `softmap embed "
            f"--model {model_id} …` on a region first.{hint}"
        )
    return sets


def resolve_scope(
    cache: EmbeddingCache,
    model_id: str,
    *,
    region: Region | None = None,
    source_id: str | None = None,
    preprocessing_hash: str | None = None,
) -> Scope:
    """The embedded tiles of ``model_id`` in a region (optionally of one source), a source or all.

    A region selects tiles whose footprint intersects it. When the model has several embedding
    sets (other preprocessing, e.g. L1C and L2A band fills) and no hash is given, the set with
    the most tiles in the scope is used, leaving out sets superseded by a later version of the
    model's weights (:meth:`EmbeddingCache.superseded_set_ids`).

    Raises:
        NotFoundError: the model has no embeddings (or none with that preprocessing hash).
        EmptyScopeError: it has embeddings, but none in the scope.
    """
    sets = embedding_sets_for(cache, model_id)
    if preprocessing_hash is not None:
        sets = [s for s in sets if s.preprocessing_hash == preprocessing_hash]
        if not sets:
            raise NoEmbeddingsError(
                f"No {model_id} embeddings with preprocessing {preprocessing_hash} are cached."
            )
    kind: ScopeKind = "region" if region is not None else "source" if source_id else "all"
    superseded = (
        cache.superseded_set_ids() if preprocessing_hash is None and len(sets) > 1 else set()
    )
    best: Scope | None = None
    for eset in sorted(sets, key=lambda s: s.set_id in superseded):  # current sets first
        ids = _scope_ids(cache, eset, region=region, source_id=source_id)
        if best is not None and best.tile_ids and eset.set_id in superseded:
            break  # a superseded set only serves when no current one has tiles here
        if best is None or len(ids) > len(best.tile_ids):
            best = Scope(kind, eset, ids, source_id, region)
    assert best is not None
    if not best.tile_ids:
        where = (
            f"region {region.describe()}"
            if region is not None
            else f"source {source_id}"
            if source_id
            else "the cache"
        )
        raise EmptyScopeError(
            f"No tiles of {where} are embedded with {model_id}. Run `softmap embed` on it first."
        )
    return best


def _scope_ids(
    cache: EmbeddingCache,
    eset: EmbeddingSet,
    *,
    region: Region | None,
    source_id: str | None,
) -> tuple[str, ...]:
    sql = (
        f"SELECT t.tile_id, t.footprint FROM {eset.table_name} e "
        "JOIN tiles t USING (tile_id) WHERE (?::TEXT IS NULL OR t.source_id = ?)"
    )
    params: list[object] = [source_id, source_id]
    if region is not None:
        w, s, e, n = region.bounds
        sql += " AND t.max_lon >= ? AND t.min_lon <= ? AND t.max_lat >= ? AND t.min_lat <= ?"
        params += [w, e, s, n]
    with cache.cursor() as cur:
        rows = cur.execute(sql + " ORDER BY t.tile_id", params).fetchall()
    if region is None or not rows:
        return tuple(r[0] for r in rows)
    footprints = shapely.from_geojson(np.array([r[1] for r in rows], dtype=object))
    hits = shapely.intersects(footprints, region.geometry)
    return tuple(r[0] for r, hit in zip(rows, hits, strict=True) if hit)


def _candidate_tiles(
    cache: EmbeddingCache,
    bounds: tuple[float, float, float, float],
    eset: EmbeddingSet | None,
) -> list[tuple[str, str, float, float]]:
    w, s, e, n = bounds
    join = f"JOIN {eset.table_name} e USING (tile_id) " if eset is not None else ""
    with cache.cursor() as cur:
        rows = cur.execute(
            f"SELECT t.tile_id, t.footprint, t.lon, t.lat FROM tiles t {join}"
            "WHERE t.max_lon >= ? AND t.min_lon <= ? AND t.max_lat >= ? AND t.min_lat <= ? "
            "ORDER BY t.tile_id",
            [w, e, s, n],
        ).fetchall()
    return [(str(r[0]), str(r[1]), float(r[2]), float(r[3])) for r in rows]


def tiles_at_point(
    cache: EmbeddingCache, lon: float, lat: float, eset: EmbeddingSet | None = None
) -> str:
    """The cached tile containing a lon/lat point (embedded in ``eset`` when given).

    Where tiles overlap (stride < chip, several chip sizes), the one whose centre is nearest wins.

    Raises:
        NotFoundError: no cached tile contains the point.
    """
    rows = _candidate_tiles(cache, (lon, lat, lon, lat), eset)
    point = Point(lon, lat)
    inside = [r for r in rows if shapely.from_geojson(r[1]).covers(point)]
    if not inside:
        model = f" embedded with {eset.model_id}" if eset is not None else ""
        raise NotFoundError(
            f"No cached tile{model} contains the point {lon:.5f},{lat:.5f}: embed a region "
            "around it first."
        )
    return min(inside, key=lambda r: (r[2] - lon) ** 2 + (r[3] - lat) ** 2)[0]


def tiles_in_geometry(
    cache: EmbeddingCache, geometry: BaseGeometry, eset: EmbeddingSet | None = None
) -> list[str]:
    """Cached tiles whose centre lies inside a lon/lat polygon (sorted ids).

    Centres rather than any overlap, so a polygon drawn around a field does not also pick up the
    neighbouring tiles it grazes.
    """
    rows = _candidate_tiles(cache, geometry.bounds, eset)
    if not rows:
        return []
    centres = shapely.points(np.array([[r[2], r[3]] for r in rows]))
    hits = shapely.covers(geometry, centres)
    return [r[0] for r, hit in zip(rows, hits, strict=True) if hit]


def require_tiles(cache: EmbeddingCache, tile_ids: Sequence[str]) -> list[str]:
    """The ids, checked to be cached tiles.

    Raises:
        NotFoundError: naming the first unknown id.
    """
    found = {r["tile_id"] for r in tile_records(cache, tile_ids)}
    for t in tile_ids:
        if t not in found:
            raise NotFoundError(
                f"Tile '{t}' is not in the cache {cache.path}. Tile ids look like "
                "demo/virginia/224/224/3_4; `softmap embed` the region first."
            )
    return list(tile_ids)


def _id_table(tile_ids: Sequence[str]) -> pa.Table:
    return pa.table({"tile_id": pa.array(list(tile_ids), pa.string())})


def scope_embeddings(
    cache: EmbeddingCache, eset: EmbeddingSet, tile_ids: Sequence[str]
) -> tuple[list[str], NDArray[np.float32]]:
    """(ids sorted, ``[N, D]`` vectors) of some tiles, by a join: fast for 100k ids.

    A join with the ids as an Arrow table: milliseconds for 100k ids (``list_contains`` on a
    bound list took 8 s for 50k of 50k; the cache's own queries now use ``IN (SELECT unnest(?))``).
    """
    with cache.cursor() as cur:
        cur.register("_ids", _id_table(tile_ids))
        table = cur.execute(
            f"SELECT e.tile_id, e.vector FROM {eset.table_name} e "
            "JOIN _ids USING (tile_id) ORDER BY e.tile_id"
        ).to_arrow_table()
        cur.unregister("_ids")
    ids = table.column("tile_id").to_pylist()
    flat = table.column("vector").combine_chunks().flatten().to_numpy(zero_copy_only=False)
    return ids, np.asarray(flat, dtype=np.float32).reshape(len(ids), eset.dim)


def tile_records(cache: EmbeddingCache, tile_ids: Sequence[str]) -> list[dict[str, Any]]:
    """Stored tile records in the order asked (missing ids left out), by a join (see above)."""
    with cache.cursor() as cur:
        cur.register("_ids", _id_table(tile_ids))
        rows = cur.execute("SELECT t.* FROM tiles t JOIN _ids USING (tile_id)").to_arrow_table()
        cur.unregister("_ids")
    by_id = {r["tile_id"]: r for r in rows.to_pylist()}
    return [by_id[t] for t in tile_ids if t in by_id]
