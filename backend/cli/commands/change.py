"""``softmap change``: per-tile embedding change between two dates of the same region."""

from __future__ import annotations

import argparse
from typing import Any

from backend.cli.common import (
    add_db_option,
    add_engine_options,
    add_json_option,
    add_model_options,
    engine_options,
    invalid,
    print_json,
    print_table,
    request,
    required_region,
    workspace,
)
from backend.cli.validation import input_file, output_file, positive_int

ORDER = 30


def register(sub: Any) -> None:
    c = sub.add_parser(
        "change", help="rank tiles by embedding change between two dates (cosine distance)"
    )
    c.add_argument("--before", required=True, help="source id of the earlier acquisition")
    c.add_argument("--after", required=True, help="source id of the later acquisition")
    where = c.add_mutually_exclusive_group(required=True)
    where.add_argument("--bbox", help="W,S,E,N in lon/lat degrees")
    where.add_argument(
        "--aoi", type=input_file, help="GeoJSON file (Polygon/MultiPolygon/Feature…)"
    )
    add_model_options(c)
    add_engine_options(c)
    c.add_argument(
        "--k", type=positive_int, default=10, help="most-changed tiles to list (default 10)"
    )
    c.add_argument(
        "--out", type=output_file(".tif", ".tiff"), help="write the distance map as a COG (.tif)"
    )
    c.add_argument(
        "--list",
        type=output_file(".geojson", ".csv"),
        help="write every matched tile, most changed first (.geojson with footprints, or .csv)",
    )
    add_db_option(c)
    add_json_option(c)
    c.set_defaults(handler=_change)


def _change(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from backend.service import ChangeRequest, compare_dates, detect_region_change

    if args.k < 1:
        raise invalid("--k must be at least 1.")
    if args.out is not None and args.out.suffix.lower() not in (".tif", ".tiff"):
        raise invalid("--out must be a .tif path (the map is written as a COG).")
    req = request(
        ChangeRequest,
        before=args.before,
        after=args.after,
        region=required_region(args),
        model=args.model,
        engine=engine_options(args),
        k=args.k,
        out=args.out,
    )
    listed = None
    if args.list is not None:
        # The Change page's operation: the region clipped to the overlap, every pair ranked.
        change = compare_dates(workspace(args), req.model_copy(update={"out": None}))
        result = change.result
        if args.out is not None:
            change.write_map(args.out)
            result = replace(result, out=str(args.out))
        listed = str(change.write_list(args.list))
        result = replace(result, computed=change.computed, cached=change.cached)
    else:
        result = detect_region_change(workspace(args), req)
    payload = {**result.to_json(), **({"list": listed} if listed else {})}
    if args.json:
        print_json(payload)
        return 0
    d = payload["distance"]
    print(
        f"{len(result.pairs)} tile pairs ({result.matching} matching) of {result.before} → "
        f"{result.after} with {result.model}: mean distance {d['mean']:.4f}, max {d['max']:.4f}"
        + (f"; map → {result.out}" if result.out else "")
        + (f"; list → {listed}" if listed else "")
    )
    rows = [
        (str(t.rank), t.before_tile, f"{t.lon:.5f}", f"{t.lat:.5f}", f"{t.distance:.4f}")
        for t in result.top
    ]
    print_table(("RANK", "TILE", "LON", "LAT", "DISTANCE"), rows)
    return 0
