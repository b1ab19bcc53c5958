"""``softmap label``: user classes and their positive/negative tiles.

``label add CLASS --tile ID | --point LON,LAT | --bbox/--aoi [--negative]`` (creates the class),
``label remove``, ``label list [CLASS]``, ``label rename OLD NEW``, ``label delete CLASS``,
``label export [CLASS] --out FILE.geojson``, ``label import FILE.geojson``.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from backend.cli.common import (
    add_db_option,
    add_json_option,
    add_region_options,
    invalid,
    print_json,
    print_table,
    region_of,
    request,
    workspace,
)
from backend.cli.validation import input_file, output_file

if TYPE_CHECKING:
    from backend.service import TileSelection

ORDER = 31


def _which_tiles(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tile", action="append", default=[], help="tile id (repeatable)")
    p.add_argument("--point", action="append", default=[], help="LON,LAT: the tile there")
    add_region_options(p, required=False)
    p.add_argument("--model", help="only tiles embedded with this model (for --point/--bbox)")


def register(sub: Any) -> None:
    p = sub.add_parser("label", help="your own classes: mark tiles positive or negative")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")

    a = actions.add_parser("add", help="mark tiles for a class (created if new)")
    a.add_argument("name", help="class name")
    _which_tiles(a)
    a.add_argument("--negative", action="store_true", help="mark as negative (default positive)")
    a.add_argument("--origin", help="what to record as the labels' origin (default: how chosen)")
    r = actions.add_parser("remove", help="remove tiles' labels from a class")
    r.add_argument("name")
    _which_tiles(r)
    li = actions.add_parser("list", help="classes with counts, or one class's labels")
    li.add_argument("name", nargs="?")
    rn = actions.add_parser("rename", help="rename a class")
    rn.add_argument("name")
    rn.add_argument("new_name")
    d = actions.add_parser("delete", help="delete a class, its labels and predictions")
    d.add_argument("name")
    e = actions.add_parser("export", help="labels as GeoJSON")
    e.add_argument("name", nargs="?", help="one class (default: all)")
    e.add_argument("--out", type=output_file(".geojson", ".json"), required=True,
                   help="GeoJSON file to write")  # fmt: skip
    im = actions.add_parser("import", help="labels from GeoJSON written by `label export`")
    im.add_argument("file", type=input_file)
    for q in (a, r, li, rn, d, e, im):
        add_db_option(q)
        add_json_option(q)
    p.set_defaults(handler=_label)


def _selection(args: argparse.Namespace) -> TileSelection:
    """The tiles ``--tile``, ``--point``, ``--bbox``/``--aoi`` name (``--model``: its tiles)."""
    from backend.service import TileSelection, parse_point

    points = [parse_point(text) for text in args.point]
    region = region_of(args)
    if not (args.tile or points or region):
        raise invalid("Name the tiles: --tile ID, --point LON,LAT, --bbox W,S,E,N or --aoi FILE.")
    return request(
        TileSelection, tiles=tuple(args.tile), points=tuple(points), region=region, model=args.model
    )


def _label(args: argparse.Namespace) -> int:
    from backend import service

    ws = workspace(args)
    out: dict[str, Any]
    if args.action in ("add", "remove"):
        if args.action == "add":
            change = service.add_labels(
                ws, args.name, _selection(args), positive=not args.negative, origin=args.origin
            )
        else:
            change = service.remove_labels(ws, args.name, _selection(args))
        out = change.to_json()
        verb = "removed" if args.action == "remove" else (
            "positive" if change.positive else "negative"
        )  # fmt: skip
        text = f"{change.class_name}: {change.tiles} tiles {verb}"
        if change.created_class:
            text += " (new class)"
    elif args.action == "list" and args.name is None:
        found = service.list_classes(ws)
        out = {"classes": [c.to_json() for c in found]}
        text = ""
        if not args.json:
            rows = [(c.name, str(c.positives), str(c.negatives)) for c in found]
            print_table(("CLASS", "POSITIVE", "NEGATIVE"), rows)
    elif args.action == "list":
        found_labels = service.class_labels(ws, args.name)
        out = {"class": args.name, "labels": [lb.to_json() for lb in found_labels]}
        text = ""
        if not args.json:
            label_rows = [
                (
                    lb.tile_id,
                    "positive" if lb.positive else "negative",
                    lb.origin,
                    f"{lb.labelled_at:%Y-%m-%d %H:%M:%S}" if lb.labelled_at else "",
                )
                for lb in found_labels
            ]
            print_table(("TILE", "LABEL", "ORIGIN", "LABELLED"), label_rows)
    elif args.action == "rename":
        cls = service.rename_class(ws, args.name, args.new_name)
        out = {"renamed": args.name, "class": cls.to_json()}
        text = f"{args.name} → {cls.name}"
    elif args.action == "delete":
        removed = service.delete_class(ws, args.name)
        out = {"deleted": args.name, "labels": removed}
        text = f"deleted {args.name} and its {removed} labels"
    elif args.action == "export":
        n = service.export_labels(ws, args.out, args.name)
        out = {"path": str(args.out), "features": n}
        text = f"{n} labels → {args.out}"
    else:
        changes = service.import_labels(ws, args.file)
        out = {"imported": [c.to_json() for c in changes]}
        text = "; ".join(
            f"{c.class_name}: {c.tiles} {'positive' if c.positive else 'negative'}" for c in changes
        )
    if args.json:
        print_json(out)
    elif text:
        print(text)
    return 0
