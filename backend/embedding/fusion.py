"""Fused Sentinel-2 + Sentinel-1 embedding sets: one vector per place from both sensors.

A fused set belongs to one pair of models (an S2 model and an S1 model) and is stored like any
other embedding set: model id ``"<s2 model>+<s1 model>"`` (e.g.
``softcon-vits14-s2+softcon-vits14-s1``), a preprocessing hash covering both sets' hashes and the
fusion settings, and a ``FLOAT[D2 + D1]`` vector per tile. Search, projections, user classes and
exports read it unchanged, because it *is* an embedding set of the cache.

The combination, for an S2 tile whose ground an S1 tile of a paired source covers::

    fused = [ sqrt(1 − w) · v2 / |v2| ,  sqrt(w) · v1 / |v1| ]          (w = s1_weight)

Both halves are L2-normalised first, so neither model's scale dominates, and the fused vector has
unit length. Its cosine similarity with another fused vector is exactly the weighted mean of the
two sensors' cosines, ``(1 − w) · cos_S2 + w · cos_S1``: w = 0.5 (the default) gives both
sensors equal say, w = 0 is S2 alone, w = 1 is S1 alone.

Tiles only one sensor covers fall back to that sensor and are marked (``fused_tiles.coverage``
``"s2"`` or ``"s1"``): an S2-only tile is ``[v2 / |v2|, 0]``, an S1-only tile ``[0, v1 / |v1|]``.
Their cosine with a fused tile is ``sqrt(1 − w)`` (resp. ``sqrt(w)``) times the one sensor's
cosine, and an S2-only tile has cosine 0 with an S1-only tile: with nothing seen in common,
nothing is claimed.

Matching: fused tiles are the S2 tiles (their ids, so the S2 grid is the reference) plus the S1
tiles that no S2 tile covers. An S2 tile takes its S1 half from a paired source (see
:mod:`backend.imagery.pairing`) whose tiles cover at least :data:`MIN_TILE_OVERLAP` of it (the
source closest in time, then the one covering most): the mean of the unit vectors of that
source's tiles under it, each weighted by the share of the S2 tile it covers. On one grid that
is the one S1 tile in the same place; with other chip sizes or grids (64 px S2 tiles, 224 px S1
tiles, a radar scene on its own grid) it is the radar seen over the S2 tile. An S1 tile is
S1-only when S2 tiles of the set cover less than half of it. Both sets must be computed first
(:func:`backend.embedding.pipeline.embed_region`); :func:`fuse_embeddings` only combines them.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import shapely
from numpy.typing import NDArray

from backend.errors import SoftMapError
from backend.models.registry import FUSED_SEPARATOR
from backend.store.cache import EmbeddingCache, EmbeddingSet
from backend.store.scopes import scope_embeddings, tile_records

Coverage = Literal["both", "s2", "s1"]

#: Share of the S1 weight in the fused vector's cosine (0 = S2 alone, 1 = S1 alone).
DEFAULT_S1_WEIGHT = 0.5
#: Share of an S2 tile an S1 tile must cover to be its partner.
MIN_TILE_OVERLAP = 0.5
#: S1 tiles covering less of an S2 tile are left out (shared edges give slivers in lon/lat).
MIN_PART_SHARE = 0.01
#: Bumped when the combination changes, so old fused vectors are never reused.
FUSION_VERSION = 2

_DDL = """
CREATE TABLE IF NOT EXISTS fused_tiles (
    set_id INTEGER NOT NULL, tile_id TEXT NOT NULL, coverage TEXT NOT NULL,
    s2_tile_id TEXT, s1_tile_id TEXT, overlap DOUBLE, days_apart INTEGER, s1_parts TEXT,
    PRIMARY KEY (set_id, tile_id)
);
ALTER TABLE fused_tiles ADD COLUMN IF NOT EXISTS s1_parts TEXT;
"""


def fused_model_id(s2_model: str, s1_model: str) -> str:
    """The model id of a fused set, ``"<s2 model>+<s1 model>"``."""
    return f"{s2_model}{FUSED_SEPARATOR}{s1_model}"


def split_fused_model_id(model_id: str) -> tuple[str, str] | None:
    """(S2 model, S1 model) of a fused model id, or None for an ordinary model id."""
    parts = model_id.split(FUSED_SEPARATOR)
    if len(parts) != 2 or not all(p.strip() for p in parts):
        return None
    return parts[0], parts[1]


@dataclass(frozen=True)
class FusionSpec:
    """Which models are fused and how."""

    s2_model: str
    s1_model: str
    s1_weight: float = DEFAULT_S1_WEIGHT
    min_tile_overlap: float = MIN_TILE_OVERLAP

    def __post_init__(self) -> None:
        if not 0.0 <= self.s1_weight <= 1.0:
            raise SoftMapError(
                f"The S1 weight is a share in 0…1, not {self.s1_weight}.", title="Invalid option"
            )
        if not 0.0 < self.min_tile_overlap <= 1.0:
            raise SoftMapError(
                f"The minimum tile overlap is a share in (0, 1], not {self.min_tile_overlap}.",
                title="Invalid option",
            )

    @property
    def model_id(self) -> str:
        return fused_model_id(self.s2_model, self.s1_model)

    def preprocessing(self, s2_hash: str, s1_hash: str) -> dict[str, object]:
        """What the fused vectors depend on (stored with the set, hashed into its key)."""
        return {
            "fusion": "concat-l2",
            "fusion_version": FUSION_VERSION,
            "s2": {"model": self.s2_model, "preprocessing_hash": s2_hash},
            "s1": {"model": self.s1_model, "preprocessing_hash": s1_hash},
            "s1_weight": self.s1_weight,
            "min_tile_overlap": self.min_tile_overlap,
        }

    def preprocessing_hash(self, s2_hash: str, s1_hash: str) -> str:
        blob = json.dumps(self.preprocessing(s2_hash, s1_hash), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


@dataclass(frozen=True)
class TileMatch:
    """One tile of a fused set: what it is made of."""

    tile_id: str
    coverage: Coverage
    s2_tile_id: str | None
    s1_tile_id: str | None
    overlap: float | None  # share of the S2 tile its S1 tiles cover (at most 1)
    days_apart: int | None
    #: Every S1 tile of the chosen source under the S2 tile, with the share of it each covers.
    s1_parts: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class FusionResult:
    """A fused set written to the cache."""

    model_id: str
    preprocessing_hash: str
    dim: int
    s2_dim: int
    s1_dim: int
    s1_weight: float
    matches: tuple[TileMatch, ...]
    seconds: float

    @property
    def tile_ids(self) -> tuple[str, ...]:
        return tuple(m.tile_id for m in self.matches)

    def count(self, coverage: Coverage) -> int:
        return sum(m.coverage == coverage for m in self.matches)

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model_id,
            "preprocessing_hash": self.preprocessing_hash,
            "dim": self.dim,
            "s2_dim": self.s2_dim,
            "s1_dim": self.s1_dim,
            "s1_weight": self.s1_weight,
            "tiles": len(self.matches),
            "both": self.count("both"),
            "s2_only": self.count("s2"),
            "s1_only": self.count("s1"),
            "seconds": round(self.seconds, 3),
        }


def ensure_tables(cache: EmbeddingCache) -> bool:
    """Create the ``fused_tiles`` table (once per connection); False on a read-only old cache."""
    return cache.ensure_schema("fused_tiles", _DDL)


# --- the combination -------------------------------------------------------------------------
def _unit(x: NDArray[np.float32]) -> NDArray[np.float32]:
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return np.asarray(x / np.maximum(norm, 1e-12), dtype=np.float32)


def fuse_vectors(
    s2: NDArray[np.float32] | None,
    s1: NDArray[np.float32] | None,
    s1_weight: float,
    *,
    s2_dim: int | None = None,
    s1_dim: int | None = None,
) -> NDArray[np.float32]:
    """Fused unit vectors ``[N, D2 + D1]`` of rows of S2 and/or S1 embeddings (see module doc).

    With both, rows are paired; with one missing (``None``) its dimension must be given and that
    half is zero (the fallback).
    """
    if s2 is None and s1 is None:
        raise ValueError("at least one of s2 and s1 is needed")
    n = len(s2) if s2 is not None else len(s1)  # type: ignore[arg-type]
    d2 = s2.shape[1] if s2 is not None else s2_dim
    d1 = s1.shape[1] if s1 is not None else s1_dim
    if d2 is None or d1 is None:
        raise ValueError("the dimension of a missing half must be given")
    out = np.zeros((n, d2 + d1), dtype=np.float32)
    if s2 is not None and s1 is not None:
        if len(s1) != n:
            raise ValueError(f"{n} S2 rows but {len(s1)} S1 rows")
        out[:, :d2] = np.sqrt(1.0 - s1_weight) * _unit(s2)
        out[:, d2:] = np.sqrt(s1_weight) * _unit(s1)
    elif s2 is not None:
        out[:, :d2] = _unit(s2)
    elif s1 is not None:
        out[:, d2:] = _unit(s1)
    return out


# --- matching tiles --------------------------------------------------------------------------
def match_tiles(
    s2_tiles: Sequence[Mapping[str, Any]],
    s1_tiles: Sequence[Mapping[str, Any]],
    days_apart: Mapping[tuple[str, str], int],
    *,
    min_overlap: float = MIN_TILE_OVERLAP,
) -> list[TileMatch]:
    """Pair S2 tile records with S1 tile records of paired sources by footprint overlap.

    Args:
        s2_tiles: Records (``tile_id``, ``source_id``, ``footprint`` GeoJSON) of embedded S2 tiles.
        s1_tiles: The same for embedded S1 tiles.
        days_apart: ``(s2 source, s1 source)`` → days, for the pairs that may be matched.
        min_overlap: Share of an S2 tile an S1 tile must cover.

    Returns:
        One match per S2 tile (``both`` or ``s2``), then the S1-only tiles (``s1``).
    """
    f2 = shapely.from_geojson(np.array([t["footprint"] for t in s2_tiles], dtype=object))
    f1 = shapely.from_geojson(np.array([t["footprint"] for t in s1_tiles], dtype=object))
    tree = shapely.STRtree(f1)
    out: list[TileMatch] = []
    if len(f2):
        pairs = tree.query(f2, predicate="intersects") if len(f1) else np.zeros((2, 0), int)
        # S2 tile → S1 source → [(S1 tile, share of the S2 tile it covers)]
        parts: dict[int, dict[str, list[tuple[int, float]]]] = {}
        # One vectorised intersection for every candidate pair (a loop would cost ms per pair).
        shares = shapely.area(shapely.intersection(f2[pairs[0]], f1[pairs[1]])) / shapely.area(
            f2[pairs[0]]
        )
        for i2, i1, share in zip(
            pairs[0].tolist(), pairs[1].tolist(), shares.tolist(), strict=True
        ):
            s1_source = str(s1_tiles[i1]["source_id"])
            if (str(s2_tiles[i2]["source_id"]), s1_source) not in days_apart:
                continue
            if share >= MIN_PART_SHARE:
                parts.setdefault(i2, {}).setdefault(s1_source, []).append((i1, share))
        for i2, t2 in enumerate(s2_tiles):
            s2_source = str(t2["source_id"])
            # Among S1 sources covering enough of the tile: the closest in time, then the most.
            options = [
                (days_apart[(s2_source, src)], -min(1.0, sum(sh for _, sh in got)), src)
                for src, got in parts.get(i2, {}).items()
                if min(1.0, sum(sh for _, sh in got)) >= min_overlap
            ]
            if not options:
                out.append(TileMatch(t2["tile_id"], "s2", t2["tile_id"], None, None, None))
                continue
            days, neg_total, src = min(options)
            got = sorted(parts[i2][src], key=lambda x: (-x[1], x[0]))
            share_of = tuple((str(s1_tiles[i1]["tile_id"]), sh) for i1, sh in got)
            out.append(TileMatch(t2["tile_id"], "both", t2["tile_id"], share_of[0][0],
                                 -neg_total, days, share_of))  # fmt: skip
    if len(f1):
        covered = np.zeros(len(f1))
        if len(f2):
            union = shapely.union_all(f2)
            covered = shapely.area(shapely.intersection(f1, union)) / shapely.area(f1)
        for i1, t1 in enumerate(s1_tiles):
            if covered[i1] < 0.5:
                out.append(TileMatch(t1["tile_id"], "s1", None, t1["tile_id"], None, None))
    return out


# --- writing the fused set -------------------------------------------------------------------
def fuse_embeddings(
    cache: EmbeddingCache,
    spec: FusionSpec,
    s2_set: EmbeddingSet,
    s1_set: EmbeddingSet,
    s2_tile_ids: Sequence[str],
    s1_tile_ids: Sequence[str],
    days_apart: Mapping[tuple[str, str], int],
) -> FusionResult:
    """Combine cached S2 and S1 embeddings of some tiles into the pair's fused set.

    Rows of these tiles already in the fused set are replaced (a tile that was S2-only gains its
    S1 half once the S1 scene is embedded); other rows stay. One transaction: a failure leaves
    the set as it was.

    Raises:
        SoftMapError: the sets are not of the spec's models, or no tile was given.
    """
    start = time.perf_counter()
    if (s2_set.model_id, s1_set.model_id) != (spec.s2_model, spec.s1_model):
        raise SoftMapError(
            f"The sets are of {s2_set.model_id} and {s1_set.model_id}, not of "
            f"{spec.s2_model} and {spec.s1_model}.",
            title="Wrong embedding sets",
        )
    s2_ids, v2 = scope_embeddings(cache, s2_set, s2_tile_ids)
    s1_ids, v1 = scope_embeddings(cache, s1_set, s1_tile_ids)
    if not s2_ids and not s1_ids:
        raise SoftMapError(
            "None of the tiles has an embedding to fuse: embed the region with both models first.",
            title="Nothing to fuse",
        )
    matches = match_tiles(tile_records(cache, s2_ids), tile_records(cache, s1_ids), days_apart,
                          min_overlap=spec.min_tile_overlap)  # fmt: skip
    row2 = {t: i for i, t in enumerate(s2_ids)}
    row1 = {t: i for i, t in enumerate(s1_ids)}
    d2, d1 = s2_set.dim, s1_set.dim
    vectors = np.zeros((len(matches), d2 + d1), dtype=np.float32)
    u1 = _unit(v1) if len(v1) else v1
    for coverage in ("both", "s2", "s1"):
        idx = [i for i, m in enumerate(matches) if m.coverage == coverage]
        if not idx:
            continue
        a = v2[[row2[matches[i].s2_tile_id] for i in idx]] if coverage != "s1" else None  # type: ignore[index]
        b = None
        if coverage == "s1":
            b = v1[[row1[matches[i].s1_tile_id] for i in idx]]  # type: ignore[index]
        elif coverage == "both":
            # The S1 tiles under the S2 tile, weighted by the share of it each covers.
            b = np.stack([_s1_under(matches[i], u1, row1) for i in idx])
        vectors[idx] = fuse_vectors(a, b, spec.s1_weight, s2_dim=d2, s1_dim=d1)
    prep_hash = spec.preprocessing_hash(s2_set.preprocessing_hash, s1_set.preprocessing_hash)
    preprocessing = spec.preprocessing(s2_set.preprocessing_hash, s1_set.preprocessing_hash)
    eset = cache.embedding_set(spec.model_id, prep_hash, d2 + d1, preprocessing)
    assert eset is not None
    ensure_tables(cache)
    _write(cache, eset, matches, vectors)
    return FusionResult(
        model_id=spec.model_id,
        preprocessing_hash=prep_hash,
        dim=d2 + d1,
        s2_dim=d2,
        s1_dim=d1,
        s1_weight=spec.s1_weight,
        matches=tuple(matches),
        seconds=time.perf_counter() - start,
    )


def _s1_under(
    m: TileMatch, u1: NDArray[np.float32], row1: Mapping[str, int]
) -> NDArray[np.float32]:
    parts = m.s1_parts or (((m.s1_tile_id or ""), 1.0),)
    out = np.zeros(u1.shape[1], dtype=np.float32)
    for tile_id, share in parts:
        out += np.float32(share) * u1[row1[tile_id]]
    return out


def _write(
    cache: EmbeddingCache,
    eset: EmbeddingSet,
    matches: Sequence[TileMatch],
    vectors: NDArray[np.float32],
) -> None:
    ids = [m.tile_id for m in matches]
    n = len(ids)
    flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).ravel())
    rows = pa.table(
        {
            "tile_id": ids,
            "model_id": [eset.model_id] * n,
            "preprocessing_hash": [eset.preprocessing_hash] * n,
            "vector": pa.FixedSizeListArray.from_arrays(flat, eset.dim),
            "run_id": pa.array([None] * n, type=pa.string()),
        }
    )
    marks = pa.table(
        {
            "set_id": [eset.set_id] * n,
            "tile_id": ids,
            "coverage": [m.coverage for m in matches],
            "s2_tile_id": pa.array([m.s2_tile_id for m in matches], type=pa.string()),
            "s1_tile_id": pa.array([m.s1_tile_id for m in matches], type=pa.string()),
            "overlap": pa.array([m.overlap for m in matches], type=pa.float64()),
            "days_apart": pa.array([m.days_apart for m in matches], type=pa.int32()),
            "s1_parts": pa.array(
                [json.dumps(m.s1_parts) if m.s1_parts else None for m in matches],
                type=pa.string(),
            ),
        }
    )
    with cache.transaction() as cur:
        cur.register("_fused", rows)
        cur.register("_marks", marks)
        table = eset.table_name
        cur.execute(f"DELETE FROM {table} WHERE tile_id IN (SELECT tile_id FROM _fused)")
        cur.execute(
            f"INSERT INTO {eset.table_name} SELECT tile_id, model_id, preprocessing_hash, "
            "vector, run_id, now() FROM _fused"
        )
        cur.execute(
            "DELETE FROM fused_tiles WHERE set_id = ? AND tile_id IN (SELECT tile_id FROM _marks)",
            [eset.set_id],
        )
        cur.execute("INSERT INTO fused_tiles BY NAME SELECT * FROM _marks")
        cur.unregister("_fused")
        cur.unregister("_marks")


def fused_coverage(
    cache: EmbeddingCache, eset: EmbeddingSet, tile_ids: Sequence[str] | None = None
) -> dict[str, TileMatch]:
    """What each tile of a fused set is made of (all tiles, or those asked for)."""
    if not cache.has_table("fused_tiles"):
        return {}
    sql = (
        "SELECT tile_id, coverage, s2_tile_id, s1_tile_id, overlap, days_apart, s1_parts "
        "FROM fused_tiles WHERE set_id = ?"
    )
    params: list[object] = [eset.set_id]
    if tile_ids is not None:
        sql += " AND tile_id IN (SELECT unnest(?::VARCHAR[]))"
        params.append(list(tile_ids))
    with cache.cursor() as cur:
        rows = cur.execute(sql, params).fetchall()
    out = {}
    for r in rows:
        parts = tuple((str(t), float(sh)) for t, sh in json.loads(r[6])) if r[6] else ()
        out[r[0]] = TileMatch(r[0], r[1], r[2], r[3], r[4], r[5], parts)
    return out


def coverage_counts(matches: Mapping[str, TileMatch]) -> dict[str, int]:
    """Tiles per coverage (``both``, ``s2``, ``s1``)."""
    counts = {"both": 0, "s2": 0, "s1": 0}
    for m in matches.values():
        counts[m.coverage] += 1
    return counts


def match_json(m: TileMatch) -> dict[str, Any]:
    return asdict(m)
