"""Fusing S2 + S1 embedding sets: what ``fuse_embeddings`` costs next to storing the vectors.

A synthetic square of ``n`` S2 tiles (640 m) and a radar grid of the same size shifted by a third
of a tile in x and y, so every S2 tile lies over four S1 tiles (the hard case: a share-weighted
mean of four parts); 384-d vectors for both, written to a DuckDB cache in a temporary folder. For
each size, in one run:

* ``write``: writing the S2 set's vectors (``EmbeddingCache.write_embeddings``, one transaction),
  the reference cost of one embedding set;
* ``match``: pairing the tiles by footprint (:func:`backend.embedding.fusion.match_tiles`);
* ``fuse``: the whole :func:`backend.embedding.fusion.fuse_embeddings` (read both sets and the
  tile records, match, combine, write the fused set and ``fused_tiles``).

Reported as seconds and as ratios to ``write`` measured in the same run (absolute times on a
shared 2-core machine are noisy). Prints a Markdown table and writes ``bench/results/fusion.json``.

    .venv/bin/python bench/bench_fusion.py --sizes 1024,10000
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
from shapely.geometry import box

from backend.embedding.fusion import FusionSpec, fuse_embeddings, match_tiles
from backend.imagery.reader import PixelWindow
from backend.imagery.tiling import Tile
from backend.store.cache import EmbeddingCache
from backend.store.scopes import tile_records

DIM = 384
TILE_DEG = 0.006  # about 640 m at mid latitudes


def _tiles(source: str, side: int, offset: float) -> list[Tile]:
    out = []
    for r in range(side):
        for c in range(side):
            x0, y0 = 13.0 + offset + c * TILE_DEG, 48.0 - offset - (r + 1) * TILE_DEG
            fp = box(x0, y0, x0 + TILE_DEG, y0 + TILE_DEG)
            out.append(Tile(f"{source}/64/64/{r}_{c}", source, 64, 64, r, c,
                            PixelWindow(c * 64, r * 64, 64, 64), fp, 0.0))  # fmt: skip
    return out


def run(n: int, folder: Path) -> dict[str, float]:
    side = math.isqrt(n)
    rng = np.random.default_rng(0)
    s2 = _tiles("s2/bench", side, 0.0)
    s1 = _tiles("s1/bench", side, TILE_DEG / 3)
    with EmbeddingCache(folder / f"fusion_{n}.duckdb") as cache:
        cache.upsert_tiles(s2 + s1)
        s2_set = cache.embedding_set("bench-s2", "h2", DIM)
        s1_set = cache.embedding_set("bench-s1", "h1", DIM)
        assert s2_set is not None and s1_set is not None
        v2 = rng.normal(size=(len(s2), DIM)).astype(np.float32)
        v1 = rng.normal(size=(len(s1), DIM)).astype(np.float32)
        start = time.perf_counter()
        cache.write_embeddings(s2_set, [t.tile_id for t in s2], v2)
        write = time.perf_counter() - start
        cache.write_embeddings(s1_set, [t.tile_id for t in s1], v1)
        days = {("s2/bench", "s1/bench"): 0}
        records2 = tile_records(cache, [t.tile_id for t in s2])
        records1 = tile_records(cache, [t.tile_id for t in s1])
        start = time.perf_counter()
        matches = match_tiles(records2, records1, days)
        match = time.perf_counter() - start
        assert sum(len(m.s1_parts) == 4 for m in matches) >= (side - 1) ** 2
        start = time.perf_counter()
        result = fuse_embeddings(
            cache,
            FusionSpec("bench-s2", "bench-s1"),
            s2_set,
            s1_set,
            [t.tile_id for t in s2],
            [t.tile_id for t in s1],
            days,
        )
        fuse = time.perf_counter() - start
    return {
        "tiles": len(s2),
        "fused_tiles": len(result.matches),
        "write_s": write,
        "match_s": match,
        "fuse_s": fuse,
        "match_ratio": match / write,
        "fuse_ratio": fuse / write,
        "fused_tiles_per_s": len(result.matches) / fuse,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1024,10000", help="S2 tiles per run, comma-separated")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in (int(x) for x in args.sizes.split(",")):
            rows.append(run(n, Path(tmp)))
    print("| S2 tiles | fused tiles | write s | match s (× write) | fuse s (× write) | fused/s |")
    print("|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['tiles']} | {r['fused_tiles']} | {r['write_s']:.3f} | {r['match_s']:.3f} "
              f"({r['match_ratio']:.1f}×) | {r['fuse_s']:.3f} ({r['fuse_ratio']:.1f}×) | "
              f"{r['fused_tiles_per_s']:.0f} |")  # fmt: skip
    out = Path(__file__).parent / "results" / "fusion.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"machine": platform.processor() or platform.machine(),
                               "dim": DIM, "runs": rows}, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
