"""``softmap export``: results as files other tools open.

* ``predictions --class C``: tiles with P(class) as GeoJSON or GeoParquet (by suffix);
* ``map --class C``: the probability map as a Cloud-Optimized GeoTIFF;
* ``areas --class C``: expected km² with a 95 % range and tile counts, as CSV;
* ``embeddings``: the model's vectors with tile geometry and model id, as GeoParquet.

Class exports retrain the class's classifier on the current labels and predict the scope (and
store the predictions, as ``softmap classify`` does), so a file never shows stale labels.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from backend.cli.commands.project import add_scope_options, region_of, scope_json, scope_of
from backend.cli.common import add_db_option, add_json_option, db_path, invalid, print_json

ORDER = 34
KINDS = ("predictions", "map", "areas", "embeddings")


def register(sub: Any) -> None:
    e = sub.add_parser("export", help="predictions, maps, area tables or embeddings as files")
    e.add_argument("kind", choices=KINDS, help="what to export")
    e.add_argument("--class", dest="class_name", help="user class (predictions, map, areas)")
    add_scope_options(e)
    e.add_argument("--out", type=Path, required=True,
                   help=".geojson/.parquet (predictions), .tif (map), .csv (areas), "
                   ".parquet (embeddings)")  # fmt: skip
    add_db_option(e)
    add_json_option(e)
    e.set_defaults(handler=_export)


def _export(args: argparse.Namespace) -> int:
    from backend.classes.classifier import classify_scope
    from backend.cli.commands.classify import single_source
    from backend.cli.common import catalog
    from backend.outputs.exports import (
        export_areas_csv,
        export_embeddings,
        export_probability_map,
        export_tiles,
        tile_format,
    )
    from backend.store.cache import EmbeddingCache

    if args.kind != "embeddings" and not args.class_name:
        raise invalid(f"`softmap export {args.kind}` needs --class NAME.")
    if args.kind == "predictions":
        tile_format(args.out)
    region = region_of(args)
    with EmbeddingCache(db_path(args), read_only=args.kind == "embeddings") as cache:
        scope = scope_of(args, cache)
        if args.kind == "embeddings":
            written = export_embeddings(args.out, cache, scope.eset, list(scope.tile_ids))
        else:
            result = classify_scope(cache, args.class_name, scope)
            if args.kind == "predictions":
                written = export_tiles(
                    args.out, cache, result.tile_ids, {"probability": result.probabilities}
                )
            elif args.kind == "areas":
                areas = result.areas(cache, region.geometry if region else None)
                extra = {"model": scope.eset.model_id, "scope": scope.key}
                written = export_areas_csv(args.out, areas, extra)
    if args.kind == "map":
        source = catalog(args).get(single_source(result.tile_ids, scope.source_id))
        written = export_probability_map(
            args.out,
            source,
            result.tile_ids,
            result.probabilities,
            [args.class_name],
            tags={"class": args.class_name, "model": scope.eset.model_id},
        )
    if args.json:
        print_json({"kind": args.kind, "scope": scope_json(scope), **written.to_json()})
    else:
        print(f"{args.kind}: {written.rows} rows of {scope.describe()} → {written.path}")
    return 0
