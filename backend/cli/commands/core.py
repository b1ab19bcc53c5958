"""``softmap models``, ``runs`` and ``embed`` (``sources`` is in ``commands.sources``)."""

from __future__ import annotations

import argparse
from typing import Any

from backend.cli.common import (
    ProgressBar,
    add_db_option,
    add_engine_options,
    add_json_option,
    add_model_options,
    add_region_options,
    engine_options,
    invalid,
    print_json,
    print_table,
    request,
    required_region,
    workspace,
)
from backend.cli.remote import region_for_service, remote_client, via
from backend.cli.validation import fraction, int_at_least, positive_int

ORDER = 0


def register(sub: Any) -> None:
    m = sub.add_parser("models", help="list the registered models and whether weights are found")
    add_json_option(m)
    m.set_defaults(handler=_models)

    r = sub.add_parser("runs", help="recent embedding runs and the cache's size")
    add_db_option(r)
    r.add_argument("--limit", type=positive_int, default=10, help="how many runs (default 10)")
    add_json_option(r)
    r.set_defaults(handler=_runs)

    e = sub.add_parser(
        "embed",
        help="embed a region and cache the embeddings",
        description="Embed a region and cache the embeddings. --source takes one id, a "
        "comma-separated list, or auto (every source the region touches): several sources are "
        "planned and embedded as one job, with --ray on a Ray cluster.",
    )
    add_region_options(e)
    add_model_options(e)
    add_engine_options(e)
    e.add_argument(
        "--chip", type=int_at_least(8), help="tile size in pixels (default: the model's)"
    )
    e.add_argument(
        "--stride", type=positive_int, help="tile step in pixels (default: the chip size)"
    )
    e.add_argument("--max-nodata", type=fraction, help="skip tiles with more nodata than this")
    e.add_argument(
        "--max-cloud", type=fraction, help="skip tiles with a larger cloud fraction (0-1)"
    )
    add_db_option(e)
    add_json_option(e)
    e.set_defaults(handler=_embed)


def _models(args: argparse.Namespace) -> int:
    from backend.service import list_model_infos

    out = [m.to_json() for m in list_model_infos()]
    if args.json:
        print_json({"models": out})
        return 0
    rows = [
        (
            m["id"],
            m["sensor"],
            str(len(m["bands"])),
            str(m["chip_size"]),
            str(m["embed_dim"]),
            m["weights"],
        )
        for m in out
    ]
    print_table(("ID", "SENSOR", "BANDS", "CHIP", "DIM", "WEIGHTS"), rows)
    return 0


def _runs(args: argparse.Namespace) -> int:
    from backend.service import recent_runs

    client = remote_client(args)
    if client is not None:
        report = client.recent_runs(limit=args.limit)
    else:
        report = recent_runs(workspace(args), limit=args.limit)
    stats, runs = report.stats, report.runs
    if args.json:
        print_json(report.to_json())
        return 0
    print(
        f"{stats.path}: {stats.size_bytes / 2**20:.1f} MB, {stats.sources} sources, "
        f"{stats.tiles} tiles, {stats.embeddings} embeddings, {stats.runs} runs{via(args)}"
    )
    rows = [
        (
            f"{r['started_at']:%Y-%m-%d %H:%M:%S}",
            r["status"],
            r["source_id"],
            r["model_id"],
            f"{r['computed']}/{r['tiles_total'] - r['cached'] - r['skipped']}",
            str(r["cached"]),
            str(r["skipped"]),
            f"{r['seconds']:.1f}" if r["seconds"] is not None else "",
            r["error"] or "",
        )
        for r in runs
    ]
    header = ("STARTED", "STATUS", "SOURCE", "MODEL", "COMPUTED", "CACHED", "SKIPPED", "SECONDS")
    print_table((*header, "ERROR"), rows)
    return 0


def _embed(args: argparse.Namespace) -> int:
    from backend.service import EmbedRequest, embed

    if args.max_nodata is not None and not 0 <= args.max_nodata <= 1:
        raise invalid("--max-nodata must be between 0 and 1.")
    if args.max_cloud is not None and not 0 <= args.max_cloud <= 1:
        raise invalid("--max-cloud must be between 0 and 1.")
    client = remote_client(args)
    if args.source == "auto" or "," in args.source:
        if client is not None:
            raise invalid(
                f"Several sources (--source {args.source}) are embedded in-process only; "
                "through a service, embed one source at a time."
            )
        return _embed_sources(args)
    if client is not None and args.checkpoint is not None:
        raise invalid(
            "--checkpoint names a file on this machine: with a service, put the weights in "
            "its models folder (or upload them to its data folder) instead."
        )
    region = region_for_service(args)
    if region is None:
        raise invalid("Give a region: --bbox W,S,E,N or --aoi FILE.")
    req = request(
        EmbedRequest,
        source=args.source,
        region=region,
        model=args.model,
        engine=engine_options(args),
        chip=args.chip,
        stride=args.stride,
        max_nodata=args.max_nodata,
        max_cloud=args.max_cloud,
    )
    with ProgressBar(disable=args.quiet) as bar:
        if client is not None:
            result = client.embed(req, progress=bar.update)
        else:
            result = embed(workspace(args), req, progress=bar.update)
    if args.json:
        payload = result.to_json()
        payload.pop("tile_ids")
        print_json(payload)
    else:
        print(
            f"{result.tiles} tiles of {result.source} with {result.model}: "
            f"{result.computed} computed, {result.cached} cached, {result.skipped} skipped "
            f"(nodata or cloud) in {result.seconds:.1f} s ({result.tiles_per_s:.1f} tiles/s on "
            f"{result.device}) → {result.db}{via(args)}"
        )
    return 0


def _embed_sources(args: argparse.Namespace) -> int:
    """``--source A,B`` or ``--source auto``: several scenes planned and embedded as one job."""
    from backend.service.scale import EmbedSourcesRequest, embed_sources

    ids = [] if args.source == "auto" else [s.strip() for s in args.source.split(",") if s.strip()]
    req = request(
        EmbedSourcesRequest,
        sources=ids,
        region=required_region(args),
        model=args.model,
        engine=engine_options(args),
        chip=args.chip,
        stride=args.stride,
        max_nodata=args.max_nodata,
        max_cloud=args.max_cloud,
    )
    with ProgressBar(disable=args.quiet) as bar:
        result = embed_sources(workspace(args), req, progress=bar.update)
    if args.json:
        print_json(result.to_json())
        return 0
    for r in result.runs:
        print(
            f"{r.tiles} tiles of {r.source}: {r.computed} computed, {r.cached} cached, "
            f"{r.skipped} skipped (nodata or cloud)"
        )
    out = result.to_json()
    print(
        f"{out['tiles']} tiles of {len(result.runs)} sources with {args.model} in "
        f"{result.seconds:.1f} s ({result.tiles_per_s:.1f} tiles/s on {result.device}) → "
        f"{out['db']}"
    )
    return 0
