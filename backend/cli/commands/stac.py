"""``softmap stac search`` and ``softmap stac add``: imagery from a STAC API."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from backend.cli.common import (
    add_db_option,
    add_json_option,
    add_model_options,
    db_path,
    invalid,
    print_json,
    print_table,
)

if TYPE_CHECKING:
    from backend.imagery.regions import Region

ORDER = 15


def _search_options(p: argparse.ArgumentParser) -> None:
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--bbox", help="W,S,E,N in lon/lat degrees")
    where.add_argument("--aoi", type=Path, help="GeoJSON file (Polygon/MultiPolygon/Feature…)")
    p.add_argument("--dates", required=True, help="YYYY-MM-DD or START/END (either may be ..)")
    p.add_argument("--api", help="STAC API URL (default: SOFTMAP_STAC_API_URL, Earth Search)")
    p.add_argument(
        "--collection", action="append", help="collection id, repeatable (default: settings)"
    )
    p.add_argument("--max-cloud", type=float, help="largest eo:cloud_cover in %% (default 30)")
    p.add_argument("--limit", type=int, help="items fetched at most (default 50)")


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
    a.add_argument("--chip", type=int, help="selection cell in px (default: the model's, or 224)")
    add_model_options(a, required=False)
    add_db_option(a)
    add_json_option(a)
    a.set_defaults(handler=_add)


def _region(args: argparse.Namespace) -> Region:
    from backend.imagery.regions import load_aoi, parse_bbox

    return parse_bbox(args.bbox) if args.bbox else load_aoi(args.aoi)


def _run_search(args: argparse.Namespace) -> tuple[Region, Any]:
    from backend.imagery.stac import search

    if args.max_cloud is not None and not 0 <= args.max_cloud <= 100:
        raise invalid("--max-cloud must be between 0 and 100.")
    if args.limit is not None and args.limit < 1:
        raise invalid("--limit must be at least 1.")
    region = _region(args)
    result = search(
        region,
        args.dates,
        api_url=args.api,
        collections=args.collection,
        max_cloud=args.max_cloud,
        max_items=args.limit,
    )
    return region, result


def _search(args: argparse.Namespace) -> int:
    _, result = _run_search(args)
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
    from backend.imagery.stac import build_source, save_manifest, selection_tiles
    from backend.store.acquisitions import record_source, record_tiles
    from backend.store.cache import EmbeddingCache
    from backend.store.catalog import register_source

    model = None
    if args.model:
        from backend.models import create_model

        model = create_model(args.model, checkpoint=args.checkpoint)
    chip = args.chip or (model.meta.chip_size if model else 224)
    if chip < 8:
        raise invalid("--chip must be at least 8.")
    region, result = _run_search(args)
    db = db_path(args)
    folder = db.parent / "stac"
    stac = build_source(result, region, per_tile=args.per_tile, chip=chip, item_id=args.item,
                        folder=folder)  # fmt: skip
    manifest = save_manifest(stac.source, folder / stac.source.id.replace("/", "_"))
    payload: dict[str, Any] = {
        "source": stac.source.id,
        "manifest": str(manifest),
        "mode": "per-tile" if stac.selection else "best",
        "items": [i.summary() for i in stac.items],
        "cells_per_item": stac.selection.counts() if stac.selection else None,
    }
    with EmbeddingCache(db) as cache:
        register_source(cache, stac.source)
        record_source(cache, stac, manifest)
        record_tiles(cache, stac, selection_tiles(stac, region, chip))
        if model is not None:
            from backend.embedding.pipeline import embed_region

            embedded = embed_region(region, stac.source, model, cache)
            record_tiles(cache, stac, [_offsets(t) for t in embedded.tile_ids])
            payload["embedded"] = {k: v for k, v in embedded.to_json().items() if k != "tile_ids"}
    if args.json:
        print_json(payload)
    else:
        print(
            f"Added {stac.source.id} ({payload['mode']}, {len(stac.items)} item(s), "
            f"{stac.source.date}); use it as --source {stac.source.id}"
        )
    return 0


def _offsets(tile_id: str) -> tuple[str, int, int, int]:
    from backend.imagery.tiling import parse_tile_id

    _, size, stride, row, col = parse_tile_id(tile_id)
    return tile_id, row * stride, col * stride, size
