"""The ``softmap`` command line: ``sources``, ``models``, ``embed`` and ``runs``.

User mistakes exit with status 2 and one line on stderr; no traceback reaches the user.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from backend.errors import SoftMapError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="softmap",
        description="Embed Sentinel imagery tile by tile with SoftCon models, cached in DuckDB.",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("sources", help="list the imagery sources (bundled demo scenes)")
    s.add_argument("--json", action="store_true", help="print JSON instead of a table")

    m = sub.add_parser("models", help="list the registered models and whether weights are found")
    m.add_argument("--json", action="store_true", help="print JSON instead of a table")

    r = sub.add_parser("runs", help="recent embedding runs and the cache's size")
    r.add_argument("--db", type=Path, help="DuckDB cache file (default: SOFTMAP_DB_PATH)")
    r.add_argument("--limit", type=int, default=10, help="how many runs (default 10)")
    r.add_argument("--json", action="store_true", help="print JSON instead of a table")

    e = sub.add_parser("embed", help="embed a region and cache the embeddings")
    e.add_argument("--source", required=True, help="source id, e.g. demo/virginia")
    where = e.add_mutually_exclusive_group(required=True)
    where.add_argument("--bbox", help="W,S,E,N in lon/lat degrees")
    where.add_argument("--aoi", type=Path, help="GeoJSON file (Polygon/MultiPolygon/Feature…)")
    e.add_argument("--model", required=True, help="model id (see `softmap models`)")
    e.add_argument("--checkpoint", type=Path, help="weights file (overrides the lookup)")
    e.add_argument("--device", help="auto, cuda, cuda:N, mps or cpu (default: SOFTMAP_DEVICE)")
    e.add_argument("--batch-size", type=int, help="tiles per batch (default: SOFTMAP_BATCH_SIZE)")
    e.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                   help="auto = bf16 autocast on CUDA, fp32 elsewhere")  # fmt: skip
    e.add_argument("--readers", type=int, help="reader threads (0 = read in line; default: auto)")
    e.add_argument("--chip", type=int, help="tile size in pixels (default: the model's)")
    e.add_argument("--stride", type=int, help="tile step in pixels (default: the chip size)")
    e.add_argument("--max-nodata", type=float, help="skip tiles with more nodata than this")
    e.add_argument("--db", type=Path, help="DuckDB cache file (default: SOFTMAP_DB_PATH)")
    e.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    e.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``softmap`` console script."""
    args = _parser().parse_args(_glue_bbox(sys.argv[1:] if argv is None else list(argv)))
    try:
        if args.command == "sources":
            return _sources(args)
        if args.command == "models":
            return _models(args)
        if args.command == "runs":
            return _runs(args)
        return _embed(args)
    except SoftMapError as e:
        print(f"softmap: {e.one_line()}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "softmap: interrupted. Finished batches are saved; run the same command to resume.",
            file=sys.stderr,
        )
        return 130


def _glue_bbox(argv: list[str]) -> list[str]:
    """Turn ``--bbox -75.7,37.6,…`` into ``--bbox=-75.7,37.6,…``.

    argparse takes a value starting with ``-`` for an option, and western longitudes do.
    """
    out: list[str] = []
    i = 0
    while i < len(argv):
        if argv[i] == "--bbox" and i + 1 < len(argv):
            out.append(f"--bbox={argv[i + 1]}")
            i += 2
        else:
            out.append(argv[i])
            i += 1
    return out


def _sources(args: argparse.Namespace) -> int:
    from backend.sources import demo_catalog

    sources = demo_catalog().list()
    if args.json:
        _print_json({"sources": [s.summary() for s in sources]})
        return 0
    rows = [
        (s.id, s.product_level, s.date, s.crs, "{} x {} km".format(*s.size_km), s.title)
        for s in sources
    ]
    _print_table(("ID", "LEVEL", "DATE", "CRS", "SIZE", "TITLE"), rows)
    return 0


def _models(args: argparse.Namespace) -> int:
    from backend.models import list_models
    from backend.models.weights import find_local_weights

    out: list[dict[str, Any]] = []
    for meta in list_models():
        path = find_local_weights(meta)
        if meta.random_init_seed is not None:
            weights = "built-in (seeded random init)"
        else:
            weights = str(path) if path else "not found locally"
        out.append(
            {
                "id": meta.id,
                "title": meta.title,
                "architecture": meta.architecture,
                "sensor": meta.sensor,
                "bands": list(meta.bands),
                "normalization": meta.normalization.scheme,
                "chip_size": meta.chip_size,
                "patch_size": meta.patch_size,
                "embed_dim": meta.embed_dim,
                "license": meta.license,
                "weights": weights,
            }
        )
    if args.json:
        _print_json({"models": out})
        return 0
    rows = [
        (
            m["id"],
            m["sensor"],
            str(len(m["bands"])),
            str(m["chip_size"]),
            str(m["embed_dim"]),
            m["weights"],
        )
        for m in out
    ]
    _print_table(("ID", "SENSOR", "BANDS", "CHIP", "DIM", "WEIGHTS"), rows)
    return 0


def _runs(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from backend.cache import EmbeddingCache
    from backend.settings import get_settings

    with EmbeddingCache(args.db or get_settings().db_path, read_only=True) as cache:
        stats = cache.stats()
        runs = cache.runs(limit=args.limit)
    if args.json:
        _print_json({"cache": asdict(stats), "runs": runs})
        return 0
    print(
        f"{stats.path}: {stats.size_bytes / 2**20:.1f} MB, {stats.sources} sources, "
        f"{stats.tiles} tiles, {stats.embeddings} embeddings, {stats.runs} runs"
    )
    rows = [
        (
            f"{r['started_at']:%Y-%m-%d %H:%M:%S}",
            r["status"],
            r["source_id"],
            r["model_id"],
            f"{r['computed']}/{r['tiles_total'] - r['cached'] - r['skipped']}",
            str(r["cached"]),
            str(r["skipped"]),
            f"{r['seconds']:.1f}" if r["seconds"] is not None else "",
            r["error"] or "",
        )
        for r in runs
    ]
    _print_table(
        (
            "STARTED",
            "STATUS",
            "SOURCE",
            "MODEL",
            "COMPUTED",
            "CACHED",
            "SKIPPED",
            "SECONDS",
            "ERROR",
        ),
        rows,
    )
    return 0


def _embed(args: argparse.Namespace) -> int:
    from backend.cache import EmbeddingCache
    from backend.inference import EmbeddingEngine
    from backend.models import create_model
    from backend.pipeline import embed_region
    from backend.regions import load_aoi, parse_bbox
    from backend.settings import get_settings
    from backend.sources import demo_catalog

    settings = get_settings()
    if args.batch_size is not None and args.batch_size < 1:
        raise SoftMapError("--batch-size must be at least 1.", title="Invalid option")
    if args.max_nodata is not None and not 0 <= args.max_nodata <= 1:
        raise SoftMapError("--max-nodata must be between 0 and 1.", title="Invalid option")
    catalog = demo_catalog()
    source = catalog.get(args.source)
    region = parse_bbox(args.bbox) if args.bbox else load_aoi(args.aoi)
    model = create_model(args.model, checkpoint=args.checkpoint)
    engine = EmbeddingEngine.from_settings(
        model,
        settings,
        device=args.device,
        batch_size=args.batch_size,
        readers=args.readers,
        precision=args.precision,
    )
    db = args.db or settings.db_path
    with EmbeddingCache(db) as cache, _ProgressBar(disable=args.quiet) as bar:
        result = embed_region(
            region,
            source,
            model,
            cache,
            engine=engine,
            settings=settings,
            catalog=catalog,
            chip=args.chip,
            stride=args.stride,
            max_nodata_fraction=args.max_nodata,
            progress=bar.update,
        )
    if args.json:
        payload = result.to_json()
        payload.pop("tile_ids")
        _print_json(payload)
    else:
        print(
            f"{result.tiles} tiles of {result.source} with {result.model}: "
            f"{result.computed} computed, {result.cached} cached, {result.skipped} skipped "
            f"(nodata) in {result.seconds:.1f} s ({result.tiles_per_s:.1f} tiles/s on "
            f"{result.device}) → {result.db}"
        )
    return 0


class _ProgressBar:
    """A tqdm bar on stderr fed by the engine's progress callback.

    Created on the first update, so a run refused up front prints only its error line.
    """

    def __init__(self, *, disable: bool) -> None:
        self._disable = disable
        self._bar: Any = None

    def __enter__(self) -> _ProgressBar:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.close()

    def update(self, p: Any) -> None:
        if self._disable:
            return
        if self._bar is None:
            from tqdm import tqdm

            self._bar = tqdm(total=p.total, unit="tile", file=sys.stderr, leave=False)
        self._bar.n = p.done
        self._bar.refresh()


def _print_json(obj: object) -> None:
    json.dump(obj, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


def _print_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=False)]
    for row in (header, *rows):
        print("  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=False)).rstrip())


if __name__ == "__main__":
    raise SystemExit(main())
