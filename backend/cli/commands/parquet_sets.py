"""``softmap parquet-sets``: embeddings as partitioned GeoParquet, written, attached, listed.

For outputs too big for one DuckDB file: ``write`` moves a model's cached embeddings to
``DIR/source=…/model=…/*.parquet``; ``attach`` makes a cache read such a folder in place, so
``softmap search`` (and every other command that reads embeddings) works over it.
"""

from __future__ import annotations

import argparse
from typing import Any

from backend.cli.common import add_db_option, add_json_option, print_json, print_table, workspace
from backend.cli.validation import input_path, output_dir

ORDER = 35


def register(sub: Any) -> None:
    p = sub.add_parser(
        "parquet-sets",
        help="embeddings as partitioned GeoParquet: write, attach to a cache, list",
        description="Write a model's cached embeddings as GeoParquet partitioned by source and "
        "model, attach such a folder to a cache (searches then read the Parquet files "
        "directly), or list the attached folders.",
    )
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    w = actions.add_parser("write", help="write a model's embeddings under DIR")
    w.add_argument("--model", required=True, help="model id whose embeddings to write")
    w.add_argument("--out", required=True, type=output_dir, help="folder of the dataset")
    w.add_argument("--source", action="append", default=[], help="only this source (repeat)")
    add_db_option(w)
    add_json_option(w)
    w.set_defaults(handler=_write)
    a = actions.add_parser("attach", help="make the cache read a Parquet dataset in place")
    a.add_argument("path", type=input_path, help="folder written by `parquet-sets write`")
    add_db_option(a)
    add_json_option(a)
    a.set_defaults(handler=_attach)
    add_db_option(p)
    add_json_option(p)
    p.set_defaults(handler=_list)


def _write(args: argparse.Namespace) -> int:
    from backend.service.scale import ParquetExportRequest, export_parquet_set

    info = export_parquet_set(
        workspace(args), ParquetExportRequest(model=args.model, out=args.out, sources=args.source)
    )
    if args.json:
        print_json(info.to_json())
    else:
        print(
            f"{info.rows} {info.model_id} embeddings of {', '.join(info.sources)} → {info.root} "
            f"({len(info.files)} files, {info.bytes / 2**20:.1f} MB)"
        )
    return 0


def _attach(args: argparse.Namespace) -> int:
    from backend.service.scale import attach_parquet_set

    infos = attach_parquet_set(workspace(args), args.path)
    if args.json:
        print_json({"attached": [i.to_json() for i in infos]})
        return 0
    for i in infos:
        print(f"attached {i.rows} {i.model_id} embeddings ({', '.join(i.sources)}) from {i.root}")
    return 0


def _list(args: argparse.Namespace) -> int:
    from backend.service.scale import list_parquet_sets

    infos = list_parquet_sets(workspace(args))
    if args.json:
        print_json({"parquet_sets": [i.to_json() for i in infos]})
        return 0
    rows = [
        (i.model_id, i.preprocessing_hash, str(i.rows), ", ".join(i.sources), i.root) for i in infos
    ]
    print_table(("MODEL", "PREPROCESSING", "ROWS", "SOURCES", "ROOT"), rows)
    return 0
