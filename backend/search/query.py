"""Similarity search: "find places like this" over a model's cached embeddings.

A query is built from tiles (ids, or the tile under a lon/lat point) and optional negative
examples, then answered by :mod:`backend.search.index` within a scope (a region, a source or
everything cached for the model):

* tiles / a point: the normalised mean of their unit vectors;
* positives and negatives: ``normalise(mean(P) / |mean(P)| − w · mean(N))`` with ``w`` =
  :data:`NEGATIVE_WEIGHT`;
* at least :data:`MIN_CLASSIFIER_EXAMPLES` positives *and* negatives: a logistic regression
  (balanced class weights) on the unit vectors. Its decision function is linear, so ranking by it
  is ranking by the inner product with its weight vector ``w / |w|``: the same index answers, and
  the score reported is the classifier's probability instead of a cosine.

Query and negative tiles are never returned. Spatial suppression (on by default) keeps a result
only if its footprint does not touch (share an edge, corner or any area with) a better result
already kept, so one large field does not fill the top 10.

A search runs in one embedding set (model + preprocessing); when a model has several, the one
holding the query tiles is used (the largest if several do), or ``preprocessing_hash`` picks one.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import shapely
from numpy.typing import NDArray
from shapely.geometry import Point, shape

from backend.errors import EmptyScopeError, NoEmbeddingsError, NotFoundError, SoftMapError
from backend.imagery.regions import Region
from backend.search.index import Engine, VectorIndex, normalise
from backend.search.index_sync import get_index
from backend.store.cache import EmbeddingCache, EmbeddingSet

ScopeKind = Literal["region", "source", "all"]

#: Weight of the negatives' mean subtracted from the positives' mean.
NEGATIVE_WEIGHT = 0.5
#: Positives and negatives each needed before a classifier replaces the mean-vector query.
MIN_CLASSIFIER_EXAMPLES = 5
#: Most results one search returns.
MAX_K = 1000


@dataclass(frozen=True)
class Scope:
    """Where to search: a region (optionally of one source), a source, or everything."""

    kind: ScopeKind = "all"
    source_id: str | None = None
    region: Region | None = None

    def __post_init__(self) -> None:
        if self.kind == "region" and self.region is None:
            raise SoftMapError("A region scope needs a region (--bbox or --aoi).",
                               title="Invalid scope")  # fmt: skip
        if self.kind == "source" and not self.source_id:
            raise SoftMapError("A source scope needs a source (--source).", title="Invalid scope")

    def describe(self) -> str:
        if self.kind == "region" and self.region is not None:
            where = f"region {self.region.describe()}"
            return f"{where} of {self.source_id}" if self.source_id else where
        if self.kind == "source":
            return f"source {self.source_id}"
        return "everything cached"


@dataclass(frozen=True)
class SearchQuery:
    """A built query: the vector searched with and what it was built from."""

    vector: NDArray[np.float32]
    positive_ids: tuple[str, ...]
    negative_ids: tuple[str, ...]
    method: Literal["mean", "mean-minus-negatives", "classifier"]
    classifier: Any = None  # a fitted sklearn LogisticRegression for method == "classifier"

    @property
    def excluded_ids(self) -> tuple[str, ...]:
        return self.positive_ids + self.negative_ids

    def scores(self, unit_vectors: NDArray[np.float32]) -> NDArray[np.float32]:
        """The reported score of unit vectors: cosine, or the classifier's probability."""
        if self.classifier is not None:
            proba = self.classifier.predict_proba(unit_vectors)[:, 1]
            return np.asarray(proba, dtype=np.float32)
        return np.asarray(unit_vectors @ self.vector, dtype=np.float32)


@dataclass(frozen=True)
class SearchResult:
    """One match, best first by ``rank`` (1-based)."""

    tile_id: str
    score: float
    lon: float
    lat: float
    footprint: dict[str, Any]
    rank: int
    source_id: str


@dataclass(frozen=True)
class SearchResponse:
    """Results of one search and how it ran."""

    model_id: str
    preprocessing_hash: str
    scope: str
    method: str
    engine: str
    query_tile_ids: tuple[str, ...]
    negative_tile_ids: tuple[str, ...]
    candidates: int
    suppressed: int
    seconds: float
    results: tuple[SearchResult, ...] = field(default_factory=tuple)
    #: The query searched with (its vector feeds :mod:`backend.search.heatmap`); not in JSON.
    query: SearchQuery | None = field(default=None, repr=False, compare=False)

    def to_json(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "query"}
        out["query_tile_ids"] = list(self.query_tile_ids)
        out["negative_tile_ids"] = list(self.negative_tile_ids)
        out["results"] = [asdict(r) for r in self.results]
        return out


# --- embedding sets and tiles ---------------------------------------------------------------
def model_sets(cache: EmbeddingCache, model_id: str, preprocessing_hash: str | None = None
               ) -> list[EmbeddingSet]:  # fmt: skip
    """The model's embedding sets (largest first).

    Without ``preprocessing_hash``, sets superseded by a later version of the model's weights
    (:meth:`EmbeddingCache.superseded_set_ids`) are left out.

    Raises:
        NoEmbeddingsError: the cache holds no embeddings of that model (and preprocessing).
    """
    sets = [
        s
        for s in cache.embedding_sets()
        if s.model_id == model_id
        and (preprocessing_hash is None or s.preprocessing_hash == preprocessing_hash)
    ]
    sizes = {s.set_id: _rows(cache, s) for s in sets}
    sets = sorted((s for s in sets if sizes[s.set_id]), key=lambda s: -sizes[s.set_id])
    if preprocessing_hash is None and len(sets) > 1:
        superseded = cache.superseded_set_ids()
        sets = [s for s in sets if s.set_id not in superseded] or sets
    if not sets:
        which = f" with preprocessing {preprocessing_hash}" if preprocessing_hash else ""
        raise NoEmbeddingsError(
            f"The cache {cache.path} holds no embeddings of {model_id}{which}. "
            f"Embed a region first: softmap embed --model {model_id} --source … --bbox …"
        )
    return sets


def _rows(cache: EmbeddingCache, eset: EmbeddingSet) -> int:
    with cache.cursor() as cur:
        row = cur.execute(f"SELECT count(*) FROM {eset.table_name}").fetchone()
    return int(row[0]) if row else 0


def tile_at_point(cache: EmbeddingCache, eset: EmbeddingSet, lon: float, lat: float) -> str | None:
    """The embedded tile of a set containing a lon/lat point (nearest centre if several)."""
    with cache.cursor() as cur:
        rows = cur.execute(
            f"""SELECT t.tile_id, t.footprint, t.lon, t.lat FROM tiles t
            JOIN {eset.table_name} e USING (tile_id)
            WHERE ? BETWEEN t.min_lon AND t.max_lon AND ? BETWEEN t.min_lat AND t.max_lat""",
            [lon, lat],
        ).fetchall()
    p = Point(lon, lat)
    inside = [(r[0], (r[2] - lon) ** 2 + (r[3] - lat) ** 2)
              for r in rows if shape(json.loads(r[1])).covers(p)]  # fmt: skip
    return min(inside, key=lambda x: x[1])[0] if inside else None


def scope_tile_ids(cache: EmbeddingCache, eset: EmbeddingSet, scope: Scope) -> list[str] | None:
    """Ids of the set's tiles inside a scope; None for everything."""
    if scope.kind == "all":
        return None
    sql = f"SELECT t.tile_id, t.footprint FROM tiles t JOIN {eset.table_name} e USING (tile_id)"
    where: list[str] = []
    params: list[object] = []
    if scope.source_id:
        where.append("t.source_id = ?")
        params.append(scope.source_id)
    if scope.kind == "region" and scope.region is not None:
        w, s, e, n = scope.region.bounds
        where.append("t.max_lon >= ? AND t.min_lon <= ? AND t.max_lat >= ? AND t.min_lat <= ?")
        params += [w, e, s, n]
    with cache.cursor() as cur:
        rows = cur.execute(f"{sql} WHERE {' AND '.join(where)}", params).fetchall()
    if scope.kind == "region" and scope.region is not None and rows:
        # GEOS parses the GeoJSON in one vectorised call: 900 footprints in ms, not a second.
        shapes = shapely.from_geojson(np.array([r[1] for r in rows], dtype=object))
        hits = shapely.intersects(shapes, scope.region.geometry)
        rows = [r for r, hit in zip(rows, hits, strict=True) if hit]
    return [r[0] for r in rows]


# --- queries --------------------------------------------------------------------------------
def build_query(
    index: VectorIndex,
    positive_ids: Sequence[str],
    negative_ids: Sequence[str] = (),
    *,
    negative_weight: float = NEGATIVE_WEIGHT,
    min_classifier_examples: int = MIN_CLASSIFIER_EXAMPLES,
) -> SearchQuery:
    """A query vector (or classifier) from example tiles of an index.

    Raises:
        NotFoundError: an id is not embedded in the set.
        SoftMapError: no positive example.
    """
    pos, neg = _dedupe(positive_ids), _dedupe(negative_ids)
    if not pos:
        raise SoftMapError("Give at least one query tile (--tile, --point or --positive).",
                           title="Invalid query")  # fmt: skip
    both = set(pos) & set(neg)
    if both:
        raise SoftMapError(f"{sorted(both)[0]} is both a positive and a negative example.",
                           title="Invalid query")  # fmt: skip
    missing = [t for t in pos + neg if t not in index.row_of]
    if missing:
        raise NotFoundError(
            f"Tile {missing[0]} has no embedding in this set"
            + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
            + ". Check the id (softmap search prints ids) or embed its region first."
        )
    m = index.matrix
    p = m[[index.row_of[t] for t in pos]]
    if len(neg) >= min_classifier_examples and len(pos) >= min_classifier_examples:
        from sklearn.linear_model import LogisticRegression

        n = m[[index.row_of[t] for t in neg]]
        x = np.concatenate([p, n])
        y = np.r_[np.ones(len(p)), np.zeros(len(n))]
        clf = LogisticRegression(class_weight="balanced", max_iter=1000).fit(x, y)
        w = np.asarray(clf.coef_[0], dtype=np.float32)
        return SearchQuery(normalise(w), tuple(pos), tuple(neg), "classifier", clf)
    mean_p = normalise(p.mean(axis=0))
    if not neg:
        return SearchQuery(mean_p, tuple(pos), (), "mean")
    mean_n = m[[index.row_of[t] for t in neg]].mean(axis=0)
    q = normalise(mean_p - negative_weight * mean_n)
    return SearchQuery(q, tuple(pos), tuple(neg), "mean-minus-negatives")


def _dedupe(ids: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(ids))


# --- search ---------------------------------------------------------------------------------
def search(
    cache: EmbeddingCache,
    model_id: str,
    *,
    tiles: Sequence[str] = (),
    point: tuple[float, float] | None = None,
    positives: Sequence[str] = (),
    negatives: Sequence[str] = (),
    scope: Scope | None = None,
    k: int = 10,
    threshold: float | None = None,
    suppress: bool = True,
    engine: Engine = "auto",
    preprocessing_hash: str | None = None,
) -> SearchResponse:
    """Find the ``k`` tiles most like the query within a scope.

    Args:
        cache: The embedding cache (read-only is fine).
        model_id: Whose embeddings to search.
        tiles: Query tile ids (treated as positives).
        point: ``(lon, lat)``: the embedded tile containing it is a query tile.
        positives: More positive example ids.
        negatives: Negative example ids (pushed away; never returned).
        scope: Where to search (default: everything cached for the model).
        k: Results wanted.
        threshold: Drop results scoring below it (cosine, or probability for a classifier).
        suppress: Drop results whose footprint touches a better result's.
        engine: ``auto``, ``exact`` or ``hnsw`` (see :mod:`backend.search.index`).
        preprocessing_hash: Pick one of the model's embedding sets.

    Raises:
        NoEmbeddingsError: no embeddings of the model.
        NotFoundError: an unknown tile, or a point outside every embedded tile.
        EmptyScopeError: the scope holds no embedded tile.
        SoftMapError: an invalid query (no query tile, k out of range).
    """
    start = time.perf_counter()
    scope = scope or Scope()
    if not 1 <= k <= MAX_K:
        raise SoftMapError(f"k must be between 1 and {MAX_K}.", title="Invalid query")
    sets = model_sets(cache, model_id, preprocessing_hash)
    wanted = _dedupe([*tiles, *positives, *negatives])
    eset = _pick_set(cache, sets, wanted)
    pos = list(tiles)
    if point is not None:
        hit = tile_at_point(cache, eset, *point)
        if hit is None:
            raise NotFoundError(
                f"No embedded {model_id} tile contains the point {point[0]:.5f},{point[1]:.5f}. "
                "Embed the region around it first, or pick a point inside an embedded region."
            )
        pos.append(hit)
    pos += list(positives)
    index = get_index(cache, eset)
    with index.lock:
        query = build_query(index, pos, negatives)
        in_scope = scope_tile_ids(cache, eset, scope)
        rows = None
        if in_scope is not None:
            rows = np.fromiter((index.row_of[t] for t in in_scope if t in index.row_of),
                               dtype=np.int64)  # fmt: skip
        exclude = np.array([index.row_of[t] for t in query.excluded_ids], dtype=np.int64)
        available = len(index) if rows is None else len(rows)
        if available == 0:
            raise EmptyScopeError(
                f"No {model_id} embeddings in {scope.describe()}. Embed it first "
                "(softmap embed), or widen the scope (--scope source or all)."
            )
        results, suppressed, used = _ranked(
            cache, index, query, rows, exclude, k, threshold, suppress, engine
        )
    return SearchResponse(
        model_id=model_id,
        preprocessing_hash=eset.preprocessing_hash,
        scope=scope.describe(),
        method=query.method,
        engine=used,
        query_tile_ids=query.positive_ids,
        negative_tile_ids=query.negative_ids,
        candidates=available,
        suppressed=suppressed,
        seconds=round(time.perf_counter() - start, 4),
        results=tuple(results),
        query=query,
    )


def _pick_set(cache: EmbeddingCache, sets: list[EmbeddingSet], ids: list[str]) -> EmbeddingSet:
    if len(sets) == 1 or not ids:
        return sets[0]
    for s in sets:  # largest first
        if len(cache.cached_tile_ids(s, ids)) == len(ids):
            return s
    return sets[0]


def _ranked(
    cache: EmbeddingCache,
    index: VectorIndex,
    query: SearchQuery,
    rows: NDArray[np.int64] | None,
    exclude: NDArray[np.int64],
    k: int,
    threshold: float | None,
    suppress: bool,
    engine: Engine,
) -> tuple[list[SearchResult], int, str]:
    """Top-k after threshold and suppression, fetching more candidates while suppression eats."""
    available = (len(index) if rows is None else len(rows)) - len(exclude)
    m = min(max(available, 0), k * 8 if suppress else k)
    while True:
        found = index.top(query.vector, m, rows=rows, exclude=exclude, engine=engine)
        scores = query.scores(index.matrix[found.rows])
        ids = [index.ids[r] for r in found.rows]
        records = {r["tile_id"]: r for r in cache.tiles(ids)}
        kept: list[tuple[str, float]] = []
        suppressed = 0
        exhausted = False
        if suppress:  # footprints parsed at once; exact tests only where bounding boxes meet
            geoms = shapely.from_geojson(
                np.array(
                    [records[t]["footprint"] if t in records else None for t in ids], dtype=object
                )
            )
            boxes = shapely.bounds(geoms)
            kept_rows: list[int] = []
        for i, (tile_id, score) in enumerate(zip(ids, scores, strict=True)):
            if threshold is not None and score < threshold:
                exhausted = True  # scores only fall from here
                break
            if tile_id not in records:
                continue
            if suppress:
                if kept_rows and _touches_kept(i, kept_rows, geoms, boxes):
                    suppressed += 1
                    continue
                kept_rows.append(i)
            kept.append((tile_id, float(score)))
            if len(kept) == k:
                break
        if len(kept) == k or exhausted or m >= available:
            break
        m = min(available, m * 4)
    results = [
        SearchResult(
            tile_id=t,
            score=s,
            lon=float(records[t]["lon"]),
            lat=float(records[t]["lat"]),
            footprint=json.loads(records[t]["footprint"]),
            rank=i + 1,
            source_id=str(records[t]["source_id"]),
        )
        for i, (t, s) in enumerate(kept)
    ]
    return results, suppressed, found.engine


def _touches_kept(i: int, kept: list[int], geoms: NDArray[Any], boxes: NDArray[np.float64]
                  ) -> bool:  # fmt: skip
    """Whether footprint ``i`` touches any kept footprint (bounding boxes first, then GEOS)."""
    k = boxes[kept]
    b = boxes[i]
    near = (k[:, 0] <= b[2]) & (k[:, 2] >= b[0]) & (k[:, 1] <= b[3]) & (k[:, 3] >= b[1])
    if not near.any():
        return False
    others = geoms[np.asarray(kept)[near]]
    return bool(shapely.intersects(others, geoms[i]).any())
