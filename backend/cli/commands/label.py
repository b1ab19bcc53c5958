"""``softmap label``: user classes and their positive/negative tiles.

``label add CLASS --tile ID | --point LON,LAT | --bbox/--aoi [--negative]`` (creates the class),
``label remove``, ``label list [CLASS]``, ``label rename OLD NEW``, ``label delete CLASS``,
``label export [CLASS] --out FILE.geojson``, ``label import FILE.geojson``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from backend.cli.common import (
    add_db_option,
    add_json_option,
    add_region_options,
    db_path,
    invalid,
    print_json,
    print_table,
)

if TYPE_CHECKING:
    from backend.store.cache import EmbeddingCache

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
    e.add_argument("--out", type=Path, required=True, help="GeoJSON file to write")
    im = actions.add_parser("import", help="labels from GeoJSON written by `label export`")
    im.add_argument("file", type=Path)
    for q in (a, r, li, rn, d, e, im):
        add_db_option(q)
        add_json_option(q)
    p.set_defaults(handler=_label)


def _resolve_tiles(args: argparse.Namespace, cache: EmbeddingCache) -> tuple[list[str], str]:
    from backend.imagery.regions import load_aoi, parse_bbox
    from backend.store.scopes import embedding_sets_for, tiles_at_point, tiles_in_geometry

    eset = None
    if args.model:
        sets = embedding_sets_for(cache, args.model)
        eset = max(sets, key=lambda s: s.set_id)
    ids = list(args.tile)
    origins = ["id"] if args.tile else []
    for text in args.point:
        try:
            lon, lat = (float(v) for v in text.split(","))
        except ValueError:
            raise invalid(f"--point takes LON,LAT (e.g. -75.64,37.65), not '{text}'.") from None
        ids.append(tiles_at_point(cache, lon, lat, eset))
        origins.append("point")
    if args.bbox or args.aoi:
        region = parse_bbox(args.bbox) if args.bbox else load_aoi(args.aoi)
        inside = tiles_in_geometry(cache, region.geometry, eset)
        if not inside:
            raise invalid(f"No cached tile has its centre inside {region.describe()}.")
        ids += inside
        origins.append("polygon")
    if not ids:
        raise invalid("Name the tiles: --tile ID, --point LON,LAT, --bbox W,S,E,N or --aoi FILE.")
    return ids, "+".join(origins)


def _label(args: argparse.Namespace) -> int:
    from backend.classes import user_classes as uc
    from backend.store.cache import EmbeddingCache

    read_only = args.action in ("list", "export")
    with EmbeddingCache(db_path(args), read_only=read_only) as cache:
        out: dict[str, Any]
        if args.action in ("add", "remove"):
            ids, origin = _resolve_tiles(args, cache)
            if args.action == "add":
                change = uc.add_labels(
                    cache, args.name, ids, positive=not args.negative, origin=args.origin or origin
                )
            else:
                change = uc.remove_labels(cache, args.name, ids)
            out = change.to_json()
            verb = "removed" if args.action == "remove" else (
                "positive" if change.positive else "negative"
            )  # fmt: skip
            text = f"{change.class_name}: {change.tiles} tiles {verb}"
            if change.created_class:
                text += " (new class)"
        elif args.action == "list" and args.name is None:
            found = uc.classes(cache)
            out = {"classes": [c.to_json() for c in found]}
            text = ""
            if not args.json:
                rows = [(c.name, str(c.positives), str(c.negatives)) for c in found]
                print_table(("CLASS", "POSITIVE", "NEGATIVE"), rows)
        elif args.action == "list":
            found_labels = uc.labels(cache, args.name)
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
            cls = uc.rename_class(cache, args.name, args.new_name)
            out = {"renamed": args.name, "class": cls.to_json()}
            text = f"{args.name} → {cls.name}"
        elif args.action == "delete":
            removed = uc.delete_class(cache, args.name)
            out = {"deleted": args.name, "labels": removed}
            text = f"deleted {args.name} and its {removed} labels"
        elif args.action == "export":
            n = uc.export_labels(cache, args.out, args.name)
            out = {"path": str(args.out), "features": n}
            text = f"{n} labels → {args.out}"
        else:
            changes = uc.import_labels(cache, args.file)
            out = {"imported": [c.to_json() for c in changes]}
            text = "; ".join(
                f"{c.class_name}: {c.tiles} {'positive' if c.positive else 'negative'}"
                for c in changes
            )
    if args.json:
        print_json(out)
    elif text:
        print(text)
    return 0
