"""``softmap change``: per-tile embedding change between two dates of the same region."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from backend.cli.common import (
    add_db_option,
    add_engine_options,
    add_json_option,
    add_model_options,
    catalog,
    db_path,
    engine_from_args,
    invalid,
    print_json,
    print_table,
)

ORDER = 30


def register(sub: Any) -> None:
    c = sub.add_parser(
        "change", help="rank tiles by embedding change between two dates (cosine distance)"
    )
    c.add_argument("--before", required=True, help="source id of the earlier acquisition")
    c.add_argument("--after", required=True, help="source id of the later acquisition")
    where = c.add_mutually_exclusive_group(required=True)
    where.add_argument("--bbox", help="W,S,E,N in lon/lat degrees")
    where.add_argument("--aoi", type=Path, help="GeoJSON file (Polygon/MultiPolygon/Feature…)")
    add_model_options(c)
    add_engine_options(c)
    c.add_argument("--k", type=int, default=10, help="most-changed tiles to list (default 10)")
    c.add_argument("--out", type=Path, help="write the distance map as a COG (.tif)")
    add_db_option(c)
    add_json_option(c)
    c.set_defaults(handler=_change)


def _change(args: argparse.Namespace) -> int:
    from backend.analysis.change import detect_change
    from backend.imagery.regions import load_aoi, parse_bbox
    from backend.settings import get_settings
    from backend.store.cache import EmbeddingCache

    if args.k < 1:
        raise invalid("--k must be at least 1.")
    if args.out is not None and args.out.suffix.lower() not in (".tif", ".tiff"):
        raise invalid("--out must be a .tif path (the map is written as a COG).")
    settings = get_settings()
    sources = catalog(args)
    before, after = sources.get(args.before), sources.get(args.after)
    region = parse_bbox(args.bbox) if args.bbox else load_aoi(args.aoi)
    engine = engine_from_args(args)
    model = engine.model
    with EmbeddingCache(db_path(args)) as cache:
        result = detect_change(
            region,
            before,
            after,
            model,
            cache,
            k=args.k,
            out=args.out,
            engine=engine,
            settings=settings,
            catalog=sources,
        )
    payload = result.to_json()
    if args.json:
        print_json(payload)
        return 0
    d = payload["distance"]
    print(
        f"{len(result.pairs)} tile pairs ({result.matching} matching) of {result.before} → "
        f"{result.after} with {result.model}: mean distance {d['mean']:.4f}, max {d['max']:.4f}"
        + (f"; map → {result.out}" if result.out else "")
    )
    rows = [
        (str(t.rank), t.before_tile, f"{t.lon:.5f}", f"{t.lat:.5f}", f"{t.distance:.4f}")
        for t in result.top
    ]
    print_table(("RANK", "TILE", "LON", "LAT", "DISTANCE"), rows)
    return 0
