"""``softmap sources``: list the imagery sources; ``sources add PATH`` and ``sources remove ID``."""

from __future__ import annotations

import argparse
from typing import Any

from backend.cli.common import (
    add_db_option,
    add_json_option,
    catalog,
    db_path,
    print_json,
    print_table,
)
from backend.cli.validation import finite_float, input_path

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
    actions = s.add_subparsers(dest="sources_command", metavar="{add,remove}")

    a = actions.add_parser("add", help="register local imagery as a source")
    a.add_argument(
        "path", type=input_path, help=".SAFE folder, folder of per-band files, or a multi-band file"
    )
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


def _list(args: argparse.Namespace) -> int:
    from backend.imagery.sources import BUNDLED_PREFIX

    sources = catalog(args).list()
    if args.json:
        print_json(
            {
                "sources": [
                    {**s.summary(), "registered": not s.id.startswith(BUNDLED_PREFIX)}
                    for s in sources
                ]
            }
        )
        return 0
    rows = [
        (
            s.id,
            s.product_level,
            s.date,
            s.crs,
            "{} x {} km".format(*s.size_km),
            "bundled" if s.id.startswith(BUNDLED_PREFIX) else "registered",
            s.title,
        )
        for s in sources
    ]
    print_table(("ID", "LEVEL", "DATE", "CRS", "SIZE", "KIND", "TITLE"), rows)
    return 0


def _add(args: argparse.Namespace) -> int:
    from backend.imagery.reader import PixelWindow, SceneReader
    from backend.imagery.scene_import import import_scene
    from backend.store.cache import EmbeddingCache
    from backend.store.catalog import register_source

    source = import_scene(
        args.path,
        bands=args.bands.split(",") if args.bands else None,
        source_id=args.source_id,
        title=args.title,
        date=args.date,
        dn_offset=args.dn_offset,
    )
    # One small read of every band proves the pixels (not only the headers) are readable.
    with SceneReader(source) as reader:
        reader.read(PixelWindow(0, 0, 16, 16), source.band_names)
    path = db_path(args)
    with EmbeddingCache(path) as cache:
        register_source(cache, source)
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
    from backend.store.cache import EmbeddingCache
    from backend.store.catalog import remove_source

    path = db_path(args)
    with EmbeddingCache(path) as cache:
        dropped = remove_source(cache, args.source_id)
    if args.json:
        print_json({"removed": args.source_id, "tiles_dropped": dropped, "db": str(path)})
    else:
        print(f"Removed {args.source_id} and {dropped} cached tile(s) from {path}")
    return 0
