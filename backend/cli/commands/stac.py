"""``softmap stac search`` and ``softmap stac add``: imagery from a STAC API."""

from __future__ import annotations

import argparse
from typing import Any

from backend.cli.common import (
    add_db_option,
    add_json_option,
    add_model_options,
    invalid,
    print_json,
    print_table,
    request,
    required_region,
    workspace,
)
from backend.cli.validation import input_file, percent, positive_int

ORDER = 15


def _search_options(p: argparse.ArgumentParser) -> None:
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--bbox", help="W,S,E,N in lon/lat degrees")
    where.add_argument(
        "--aoi", type=input_file, help="GeoJSON file (Polygon/MultiPolygon/Feature…)"
    )
    p.add_argument("--dates", required=True, help="YYYY-MM-DD or START/END (either may be ..)")
    p.add_argument("--api", help="STAC API URL (default: SOFTMAP_STAC_API_URL, Earth Search)")
    p.add_argument(
        "--collection", action="append", help="collection id, repeatable (default: settings)"
    )
    p.add_argument("--max-cloud", type=percent, help="largest eo:cloud_cover in %% (default 30)")
    p.add_argument("--limit", type=positive_int, help="items fetched at most (default 50)")


def register(sub: Any) -> None:
    stac = sub.add_parser("stac", help="search a STAC API and add its imagery as a source")
    verbs = stac.add_subparsers(dest="stac_command", required=True, metavar="ACTION")

    s = verbs.add_parser("search", help="list items over a region and dates, least cloudy first")
    _search_options(s)
    add_json_option(s)
    s.set_defaults(handler=_search)

    a = verbs.add_parser(
        "add", help="make a source from the best item or a per-tile least-cloudy selection"
    )
    _search_options(a)
    a.add_argument("--item", help="use this item id instead of the least cloudy")
    a.add_argument("--per-tile", action="store_true",
                   help="per tile, the least-cloudy item on the same MGRS grid")  # fmt: skip
    a.add_argument(
        "--chip", type=positive_int, help="selection cell in px (default: the model's, or 224)"
    )
    add_model_options(a, required=False)
    add_db_option(a)
    add_json_option(a)
    a.set_defaults(handler=_add)


def _search_fields(args: argparse.Namespace) -> dict[str, Any]:
    if args.max_cloud is not None and not 0 <= args.max_cloud <= 100:
        raise invalid("--max-cloud must be between 0 and 100.")
    if args.limit is not None and args.limit < 1:
        raise invalid("--limit must be at least 1.")
    return {
        "region": required_region(args),
        "dates": args.dates,
        "api_url": args.api,
        "collections": tuple(args.collection) if args.collection else None,
        "max_cloud": args.max_cloud,
        "limit": args.limit,
    }


def _search(args: argparse.Namespace) -> int:
    from backend.service import StacSearchRequest, stac_search

    result = stac_search(workspace(args), request(StacSearchRequest, **_search_fields(args)))
    if args.json:
        print_json(
            {
                "query": result.query.__dict__,
                "returned": result.returned,
                "items": [i.summary() for i in result.items],
            }
        )
        return 0
    rows = [
        (
            i.id,
            i.datetime[:19].replace("T", " "),
            f"{i.cloud_cover:.1f}" if i.cloud_cover is not None else "",
            i.mgrs_tile or "",
            i.product_level,
            "yes" if i.scl else "no",
        )
        for i in result.items
    ]
    print_table(("ID", "ACQUIRED", "CLOUD%", "MGRS", "LEVEL", "SCL"), rows)
    return 0


def _add(args: argparse.Namespace) -> int:
    from backend.service import EngineOptions, StacAddRequest, stac_add

    if args.chip is not None and args.chip < 8:
        raise invalid("--chip must be at least 8.")
    req = request(
        StacAddRequest,
        **_search_fields(args),
        item_id=args.item,
        per_tile=args.per_tile,
        chip=args.chip,
        model=args.model,
        engine=EngineOptions(checkpoint=args.checkpoint),
    )
    added = stac_add(workspace(args), req)
    if args.json:
        print_json(added.to_json())
    else:
        print(
            f"Added {added.source.id} ({added.mode}, {len(added.items)} item(s), "
            f"{added.source.date}); use it as --source {added.source.id}"
        )
    return 0
