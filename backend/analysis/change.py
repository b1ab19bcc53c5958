"""Change between two dates: per-tile cosine distance between the embeddings of two sources.

Both sources are embedded over the same region (only what the cache lacks is computed), their
tiles are matched by location — the same row/column when both sources share a pixel grid (two
acquisitions of one MGRS tile), otherwise the nearest tile centre within half a tile — and each
pair gets ``1 − cos(before, after)``. The result is a map on the *before* source's grid and a
ranked list of the most-changed tiles ("where did the harvest fail?").
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from pyproj import Transformer

from backend.embedding.pipeline import EmbedResult, embed_region
from backend.errors import ChangeError
from backend.imagery.rasters import GridRaster, tiles_to_grid, write_cog
from backend.imagery.regions import Region
from backend.imagery.sources import SceneSource, SourceCatalog
from backend.imagery.tiling import parse_tile_id
from backend.models import EmbeddingModel
from backend.models.inference import EmbeddingEngine
from backend.settings import Settings, get_settings
from backend.store.cache import EmbeddingCache

Matching = Literal["grid", "centroid"]


@dataclass(frozen=True)
class TilePair:
    """A tile of the *before* source matched to one of the *after* source."""

    before: str
    after: str


@dataclass(frozen=True)
class ChangedTile:
    """One entry of the ranked list (1 = most changed)."""

    rank: int
    before_tile: str
    after_tile: str
    lon: float
    lat: float
    distance: float


@dataclass(frozen=True)
class ChangeResult:
    """Distances for every matched pair, the ranked top and (optionally) the map written."""

    model: str
    before: str
    after: str
    matching: Matching
    pairs: tuple[TilePair, ...]
    distances: NDArray[np.float32]
    top: tuple[ChangedTile, ...]
    unmatched_before: int
    unmatched_after: int
    computed: int
    cached: int
    raster: GridRaster | None = None
    out: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The CLI's ``--json`` output (no per-pair arrays beyond the ranked list)."""
        d = self.distances
        return {
            "model": self.model,
            "before": self.before,
            "after": self.after,
            "matching": self.matching,
            "pairs": len(self.pairs),
            "unmatched_before": self.unmatched_before,
            "unmatched_after": self.unmatched_after,
            "computed": self.computed,
            "cached": self.cached,
            "distance": {
                "mean": round(float(d.mean()), 6),
                "median": round(float(np.median(d)), 6),
                "max": round(float(d.max()), 6),
            },
            "out": self.out,
            "top": [
                {
                    "rank": t.rank,
                    "before_tile": t.before_tile,
                    "after_tile": t.after_tile,
                    "lon": round(t.lon, 6),
                    "lat": round(t.lat, 6),
                    "distance": round(t.distance, 6),
                }
                for t in self.top
            ],
        }


def same_grid(a: SceneSource, b: SceneSource) -> bool:
    """Whether two sources share CRS and 10 m pixel grid (so equal row/col = equal place)."""
    ta, tb = a.grid.transform, b.grid.transform
    return a.crs_obj == b.crs_obj and all(abs(x - y) < 1e-6 for x, y in zip(ta, tb, strict=True))


def match_tiles(
    before: SceneSource,
    after: SceneSource,
    before_tiles: list[dict[str, Any]],
    after_tiles: list[dict[str, Any]],
) -> tuple[list[TilePair], Matching]:
    """Pair tiles by location: same row/col on a shared grid, else nearest centre ≤ half a tile.

    ``*_tiles`` are tile records (``EmbeddingCache.tiles``) with ``tile_id``, ``lon``, ``lat``.
    Each after-tile is used at most once (the closest before-tile wins).
    """
    if same_grid(before, after):
        by_key = {parse_tile_id(t["tile_id"])[1:]: t["tile_id"] for t in after_tiles}
        pairs = [
            TilePair(t["tile_id"], by_key[key])
            for t in before_tiles
            if (key := parse_tile_id(t["tile_id"])[1:]) in by_key
        ]
        return pairs, "grid"
    if not before_tiles or not after_tiles:
        return [], "centroid"
    to_native = Transformer.from_crs("EPSG:4326", before.crs, always_xy=True)

    def xy(tiles: list[dict[str, Any]]) -> NDArray[np.float64]:
        lon = np.array([t["lon"] for t in tiles])
        lat = np.array([t["lat"] for t in tiles])
        x, y = to_native.transform(lon, lat)
        return np.column_stack([x, y])

    chip = parse_tile_id(before_tiles[0]["tile_id"])[1]
    half = chip * before.grid.resolution / 2
    dist, idx = _nearest(xy(before_tiles), xy(after_tiles))
    dist[dist > half] = np.inf
    best: dict[int, tuple[float, int]] = {}
    for i, (d, j) in enumerate(zip(dist, idx, strict=True)):
        if np.isfinite(d) and (int(j) not in best or d < best[int(j)][0]):
            best[int(j)] = (float(d), i)
    pairs = sorted(
        (
            TilePair(before_tiles[i]["tile_id"], after_tiles[j]["tile_id"])
            for j, (_, i) in best.items()
        ),
        key=lambda p: p.before,
    )
    return pairs, "centroid"


def _nearest(
    query: NDArray[np.float64], points: NDArray[np.float64], chunk: int = 1024
) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """Distance to and index of the nearest of ``points`` for each query point (brute force)."""
    dist = np.empty(len(query))
    idx = np.empty(len(query), dtype=np.int64)
    for i in range(0, len(query), chunk):
        d = np.linalg.norm(query[i : i + chunk, None, :] - points[None, :, :], axis=2)
        idx[i : i + chunk] = d.argmin(axis=1)
        dist[i : i + chunk] = d[np.arange(len(d)), idx[i : i + chunk]]
    return dist, idx


def cosine_distance(a: NDArray[np.float32], b: NDArray[np.float32]) -> NDArray[np.float32]:
    """Row-wise ``1 − cos(a_i, b_i)`` (0 = same direction, 2 = opposite)."""
    na = np.linalg.norm(a, axis=1)
    nb = np.linalg.norm(b, axis=1)
    cos = (a * b).sum(axis=1) / np.maximum(na * nb, 1e-12)
    return np.asarray(1.0 - np.clip(cos, -1.0, 1.0), dtype=np.float32)


def _vectors(cache: EmbeddingCache, model: EmbeddingModel, result: EmbedResult) -> dict[str, Any]:
    eset = cache.embedding_set(model.meta.id, result.preprocessing_hash)
    if eset is None:
        raise ChangeError(f"No embeddings of {result.source} with {model.meta.id} in the cache.")
    ids, vectors = cache.embeddings(eset, list(result.tile_ids))
    return dict(zip(ids, vectors, strict=True))


def detect_change(
    region: Region,
    before: SceneSource,
    after: SceneSource,
    model: EmbeddingModel,
    cache: EmbeddingCache,
    *,
    k: int = 10,
    out: Path | None = None,
    engine: EmbeddingEngine | None = None,
    settings: Settings | None = None,
    catalog: SourceCatalog | None = None,
) -> ChangeResult:
    """Embed ``region`` in both sources (what is missing), match tiles, rank by cosine distance.

    Args:
        region: the area to compare; must overlap both sources.
        before, after: the two acquisitions (sources or STAC-built sources).
        model: the embedding model (the same for both dates).
        cache: where embeddings are read and written.
        k: how many of the most-changed tiles to list.
        out: when given, the distance map is written there as a COG (before's grid).

    Raises:
        ChangeError: same source twice, or no tile of one date matches a tile of the other.
        SoftMapError: from embedding (region outside a source, bands, weights, cache).
    """
    if before.id == after.id:
        raise ChangeError(f"--before and --after are both {before.id}; pick two acquisitions.")
    if k < 1:
        raise ChangeError("k must be at least 1.")
    settings = settings or get_settings()
    engine = engine or EmbeddingEngine.from_settings(model, settings)
    runs = [
        embed_region(region, s, model, cache, engine=engine, settings=settings, catalog=catalog)
        for s in (before, after)
    ]
    vec_b, vec_a = (_vectors(cache, model, r) for r in runs)
    tiles_b = cache.tiles([t for t in runs[0].tile_ids if t in vec_b])
    tiles_a = cache.tiles([t for t in runs[1].tile_ids if t in vec_a])
    pairs, matching = match_tiles(before, after, tiles_b, tiles_a)
    if not pairs:
        raise ChangeError(
            f"No tile of {before.id} lies within half a tile of a tile of {after.id} in "
            f"{region.describe()}; the two sources do not overlap there."
        )
    dist = cosine_distance(
        np.stack([vec_b[p.before] for p in pairs]), np.stack([vec_a[p.after] for p in pairs])
    )
    lonlat = {t["tile_id"]: (float(t["lon"]), float(t["lat"])) for t in tiles_b}
    order = np.argsort(-dist, kind="stable")[:k]
    top = tuple(
        ChangedTile(
            rank=n + 1,
            before_tile=pairs[i].before,
            after_tile=pairs[i].after,
            lon=lonlat[pairs[i].before][0],
            lat=lonlat[pairs[i].before][1],
            distance=float(dist[i]),
        )
        for n, i in enumerate(order)
    )
    raster = tiles_to_grid(before, [p.before for p in pairs], dist[:, None])
    written = None
    if out is not None:
        written = str(
            write_cog(
                out,
                raster.data,
                transform=raster.transform,
                crs=raster.crs,
                band_names=["cosine_distance"],
                tags={"before": before.id, "after": after.id, "model": model.meta.id},
            )
        )
    matched_b = {p.before for p in pairs}
    matched_a = {p.after for p in pairs}
    return ChangeResult(
        model=model.meta.id,
        before=before.id,
        after=after.id,
        matching=matching,
        pairs=tuple(pairs),
        distances=dist,
        top=top,
        unmatched_before=sum(t["tile_id"] not in matched_b for t in tiles_b),
        unmatched_after=sum(t["tile_id"] not in matched_a for t in tiles_a),
        computed=sum(r.computed for r in runs),
        cached=sum(r.cached for r in runs),
        raster=raster,
        out=written,
    )
