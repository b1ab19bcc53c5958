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
from typing import Any

from backend.cli.commands.project import add_scope_options, scope_request
from backend.cli.common import (
    add_db_option,
    add_json_option,
    invalid,
    print_json,
    request,
    workspace,
)
from backend.cli.validation import output_file

ORDER = 34
KINDS = ("predictions", "map", "areas", "embeddings")


def register(sub: Any) -> None:
    e = sub.add_parser("export", help="predictions, maps, area tables or embeddings as files")
    e.add_argument("kind", choices=KINDS, help="what to export")
    e.add_argument("--class", dest="class_name", help="user class (predictions, map, areas)")
    add_scope_options(e)
    e.add_argument("--out", type=output_file(), required=True,
                   help=".geojson/.parquet (predictions), .tif (map), .csv (areas), "
                   ".parquet (embeddings)")  # fmt: skip
    add_db_option(e)
    add_json_option(e)
    e.set_defaults(handler=_export)


def _export(args: argparse.Namespace) -> int:
    from backend.service import ExportRequest, export

    if args.kind != "embeddings" and not args.class_name:
        raise invalid(f"`softmap export {args.kind}` needs --class NAME.")
    req = request(
        ExportRequest,
        kind=args.kind,
        class_name=args.class_name,
        scope=scope_request(args),
        out=args.out,
    )
    outcome = export(workspace(args), req)
    if args.json:
        print_json(outcome.to_json())
    else:
        print(
            f"{args.kind}: {outcome.written.rows} rows of {outcome.scope.describe()} "
            f"→ {outcome.written.path}"
        )
    return 0
