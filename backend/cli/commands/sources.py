"""``softmap sources``: list the imagery sources; ``sources add PATH`` and ``sources remove ID``."""

from __future__ import annotations

import argparse
from typing import Any

from backend.cli.common import (
    add_db_option,
    add_json_option,
    db_path,
    print_json,
    print_table,
    request,
    workspace,
)
from backend.cli.validation import finite_float, fraction, input_file, input_path, non_negative_int

ORDER = 0


def register(sub: Any) -> None:
    s = sub.add_parser(
        "sources",
        help="list the imagery sources (bundled and registered); add or remove your own",
        description="Without a subcommand: list every source. `sources add PATH` registers a "
        "Sentinel-2 .SAFE folder, a folder of per-band GeoTIFF/JP2 files or a multi-band "
        "GeoTIFF/COG (Sentinel-2 L1C/L2A or Sentinel-1 VV+VH) in the cache.",
    )
    add_db_option(s)
    add_json_option(s)
    s.set_defaults(handler=_list)
    actions = s.add_subparsers(dest="sources_command", metavar="{add,remove,pairs}")

    a = actions.add_parser("add", help="register local imagery as a source")
    a.add_argument(
        "path", type=input_path, help=".SAFE folder, folder of per-band files, or a multi-band file"
    )
    a.add_argument("second_path", nargs="?", metavar="PATH2", type=input_file,
                   help="with two Sentinel-1 files: the other one of VV and VH")  # fmt: skip
    a.add_argument("--units", choices=["db", "linear"],
                   help="Sentinel-1 backscatter units (default: detected)")  # fmt: skip
    a.add_argument("--bands", help="band names of a multi-band file in file order: B01,B02,…")
    a.add_argument("--id", dest="source_id", help="source id (default: local/<file name>)")
    a.add_argument("--title", help="a title shown in lists and the app")
    a.add_argument("--date", help="acquisition date YYYY-MM-DD when the files do not say")
    a.add_argument(
        "--dn-offset",
        type=finite_float,
        help="DN offset to add (default: from metadata; -1000 for baseline 04.00+, 2022-01-25 on)",
    )
    add_db_option(a)
    add_json_option(a)
    a.set_defaults(handler=_add)

    r = actions.add_parser("remove", help="unregister a source and drop its cached tiles")
    r.add_argument("source_id", metavar="ID", help="the registered source id")
    add_db_option(r)
    add_json_option(r)
    r.set_defaults(handler=_remove)

    p = actions.add_parser("pairs", help="Sentinel-1 / Sentinel-2 sources over the same ground")
    p.add_argument("source_id", nargs="?", metavar="ID", help="one source (default: all)")
    p.add_argument("--window-days", type=non_negative_int, default=12,
                   help="acquisitions this many days apart at most (default 12)")  # fmt: skip
    p.add_argument("--min-overlap", type=fraction, default=0.25,
                   help="share of the smaller footprint covered (default 0.25)")  # fmt: skip
    add_db_option(p)
    add_json_option(p)
    p.set_defaults(handler=_pairs)


def _list(args: argparse.Namespace) -> int:
    from backend.service import list_pairs, list_sources

    ws = workspace(args)
    infos = list_sources(ws)
    pairs = list_pairs(ws)
    partners: dict[str, list[str]] = {}
    for pair in pairs:
        partners.setdefault(pair.s2.id, []).append(pair.s1.id)
        partners.setdefault(pair.s1.id, []).append(pair.s2.id)
    if args.json:
        print_json(
            {
                "sources": [
                    {**i.to_json(), "partners": partners.get(i.source.id, [])} for i in infos
                ],
                "pairs": [p.to_json() for p in pairs],
            }
        )
        return 0
    rows = [
        (
            i.source.id,
            i.source.product_level,
            i.source.date,
            i.source.crs,
            "{} x {} km".format(*i.source.size_km),
            "registered" if i.registered else "bundled",
            i.source.title,
        )
        for i in infos
    ]
    print_table(("ID", "LEVEL", "DATE", "CRS", "SIZE", "KIND", "TITLE"), rows)
    if pairs:
        print(f"\nSentinel-2 + Sentinel-1 pairs ({len(pairs)}; `softmap sources pairs`):")
        for pair in pairs:
            print(f"  {pair.s2.id}  +  {pair.s1.id}  ({_pair_text(pair)})")
    return 0


def _pair_text(pair: Any) -> str:
    share = f"{pair.s2_covered:.0%} of the S2 scene"
    return f"{pair.apart()}, {pair.overlap_km2:.2f} km² in common, {share}"


def _pair_row(p: Any) -> tuple[str, ...]:
    covered = (f"{p.s2_covered:.0%}", f"{p.s1_covered:.0%}")
    return (p.s2.id, p.s2.date, p.s1.id, p.s1.date, str(p.days_apart), f"{p.overlap_km2:.2f}",
            *covered)  # fmt: skip


def _pairs(args: argparse.Namespace) -> int:
    from backend.service import PairsRequest, list_pairs

    req = request(
        PairsRequest,
        source=args.source_id,
        window_days=args.window_days,
        min_overlap=args.min_overlap,
    )
    pairs = list_pairs(workspace(args), req)
    if args.json:
        print_json({"pairs": [p.to_json() for p in pairs], "window_days": req.window_days})
        return 0
    if not pairs:
        which = f"{args.source_id} has" if args.source_id else "No sources have"
        print(f"{which} no Sentinel-2/Sentinel-1 partner within {req.window_days} days.")
        return 0
    rows = [_pair_row(p) for p in pairs]
    print_table(("S2", "S2 DATE", "S1", "S1 DATE", "DAYS", "KM2", "OF S2", "OF S1"), rows)
    return 0


def _add(args: argparse.Namespace) -> int:
    from backend.service import AddSourceRequest, add_source

    req = request(
        AddSourceRequest,
        path=args.path,
        bands=tuple(args.bands.split(",")) if args.bands else None,
        source_id=args.source_id,
        title=args.title,
        date=args.date,
        dn_offset=args.dn_offset,
        second_path=args.second_path,
        units=args.units,
    )
    source = add_source(workspace(args), req)
    path = db_path(args)
    if args.json:
        print_json({**source.summary(), "registered": True, "db": str(path)})
        return 0
    w, h = source.size_km
    offset = f", DN offset {source.dn_offset:g}" if source.dn_offset else ""
    units = f", {source.units}" if source.product_level == "GRD" else ""
    print(
        f"Registered {source.id}: {source.sensor} {source.product_level}, {source.date}, "
        f"{source.crs}, {w} x {h} km, {len(source.bands)} bands{units}{offset}"
        f"{', SCL cloud mask' if source.scl else ''} → {path}"
    )
    return 0


def _remove(args: argparse.Namespace) -> int:
    from backend.service import remove_source

    path = db_path(args)
    dropped = remove_source(workspace(args), args.source_id)
    if args.json:
        print_json({"removed": args.source_id, "tiles_dropped": dropped, "db": str(path)})
    else:
        print(f"Removed {args.source_id} and {dropped} cached tile(s) from {path}")
    return 0
