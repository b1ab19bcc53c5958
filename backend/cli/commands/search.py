"""``softmap search``: tiles like the query tiles, within a region, a source or everything."""

from __future__ import annotations

import argparse
from typing import Any

from backend.cli.common import (
    add_db_option,
    add_json_option,
    invalid,
    print_json,
    print_table,
    request,
    workspace,
)
from backend.cli.remote import region_for_service, remote_client, via
from backend.cli.validation import float_in, input_file, positive_int

ORDER = 20


def register(sub: Any) -> None:
    s = sub.add_parser(
        "search",
        help="find tiles like given tiles (cosine similarity of cached embeddings)",
        description="Query with --tile, --point or --positive (and optionally --negative); "
        "results exclude the query tiles. The scope defaults to the region when --bbox/--aoi is "
        "given, else the source when --source is given, else everything cached for the model.",
    )
    s.add_argument("--model", required=True, help="model id whose embeddings are searched")
    s.add_argument("--source", help="source id (limits the scope to it)")
    where = s.add_mutually_exclusive_group()
    where.add_argument("--bbox", help="W,S,E,N in lon/lat degrees (a region scope)")
    where.add_argument("--aoi", type=input_file, help="GeoJSON file (a region scope)")
    s.add_argument("--tile", action="append", default=[], metavar="ID", help="query tile id")
    s.add_argument("--point", metavar="LON,LAT", help="query with the tile containing this point")
    s.add_argument("--positive", action="append", default=[], metavar="ID",
                   help="positive example tile (repeatable)")  # fmt: skip
    s.add_argument("--negative", action="append", default=[], metavar="ID",
                   help="negative example tile (repeatable)")  # fmt: skip
    s.add_argument("--k", type=positive_int, default=10, help="results (default 10)")
    s.add_argument("--threshold", type=float_in(-1.0, 1.0), help="drop results scoring below this")
    s.add_argument("--scope", choices=["region", "source", "all"], help="where to search")
    s.add_argument("--no-suppress", action="store_true",
                   help="keep results that touch a better result")  # fmt: skip
    s.add_argument("--engine", choices=["auto", "exact", "hnsw"], default="auto",
                   help="exact scan, HNSW index, or auto by size (default)")  # fmt: skip
    s.add_argument("--preprocessing", metavar="HASH", help="embedding set to use, if several")
    add_db_option(s)
    add_json_option(s)
    s.set_defaults(handler=_search)


def _parse_point(text: str) -> tuple[float, float]:
    from backend.service import parse_point

    return parse_point(text)


def _search(args: argparse.Namespace) -> int:
    from backend.service import SearchRequest, find_similar

    if not (args.tile or args.point or args.positive):
        raise invalid("Give a query: --tile ID, --point LON,LAT or --positive ID.")
    point = _parse_point(args.point) if args.point else None
    region = region_for_service(args)
    if args.scope == "source" and not args.source:
        raise invalid("--scope source needs --source.")
    if args.scope == "region" and region is None:
        raise invalid("--scope region needs --bbox or --aoi.")
    req = request(
        SearchRequest,
        model=args.model,
        source=args.source,
        region=region,
        tiles=tuple(args.tile),
        point=point,
        positives=tuple(args.positive),
        negatives=tuple(args.negative),
        k=args.k,
        threshold=args.threshold,
        scope=args.scope,
        suppress=not args.no_suppress,
        engine=args.engine,
        preprocessing=args.preprocessing,
    )
    client = remote_client(args)
    response = client.find_similar(req) if client else find_similar(workspace(args), req)
    if args.json:
        print_json(response.to_json())
        return 0
    print(
        f"{len(response.results)} of {response.candidates} {response.model_id} tiles in "
        f"{response.scope} ({response.method}, {response.engine}, {response.suppressed} "
        f"suppressed, {response.seconds * 1000:.0f} ms); "
        f"query: {', '.join(response.query_tile_ids)}{via(args)}"
    )
    rows = [
        (str(r.rank), f"{r.score:.4f}", r.tile_id, f"{r.lon:.5f}", f"{r.lat:.5f}")
        for r in response.results
    ]
    print_table(("RANK", "SCORE", "TILE", "LON", "LAT"), rows)
    return 0
