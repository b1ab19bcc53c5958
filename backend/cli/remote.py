"""``softmap runs``, ``embed`` and ``search`` through a running SoftMap service.

The service is the one named by ``--server URL`` / ``SOFTMAP_BACKEND_URL``, or else the one
whose locator file sits next to the cache file (``softmap serve`` or the app on the same
``--db``): DuckDB lets one process hold the file, so instead of failing on the lock the command
goes through the process that holds it. Output is the same as in-process.
"""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING

from backend.cli.common import ProgressBar, db_path, invalid, print_json, print_table

if TYPE_CHECKING:
    from backend.client import SoftMapClient

#: Commands that go through a service when one owns the cache.
REMOTE_COMMANDS = ("runs", "embed", "search")


def client_for(args: argparse.Namespace) -> SoftMapClient | None:
    """The service this command should use, or None to run in-process."""
    from backend.client import TOKEN_ENV, URL_ENV, SoftMapClient

    url = getattr(args, "server", None) or os.environ.get(URL_ENV, "").strip()
    if url:
        return SoftMapClient(url, token=os.environ.get(TOKEN_ENV) or None)
    from backend.server.locator import read_locator

    found = read_locator(db_path(args))
    if found is None:
        return None
    return SoftMapClient(found.url, token=found.token or os.environ.get(TOKEN_ENV) or None)


def run_remote(args: argparse.Namespace) -> int | None:
    """Run the command through a service if one is to be used; None: run it in-process."""
    if args.command not in REMOTE_COMMANDS:
        if getattr(args, "server", None):
            raise invalid(
                f"`softmap {args.command}` runs in-process only; through a service, use "
                f"runs, embed or search (or the HTTP API at {args.server}/docs)."
            )
        return None
    client = client_for(args)
    if client is None:
        return None
    with client:
        if args.command == "runs":
            return _runs(client, args)
        if args.command == "embed":
            return _embed(client, args)
        return _search(client, args)


def lock_hint(args: argparse.Namespace) -> str | None:
    """When a service holds the cache: where it is and what goes through it."""
    from backend.server.locator import read_locator

    try:
        found = read_locator(db_path(args))
    except (OSError, ValueError):
        return None
    if found is None:
        return None
    return (
        f"A SoftMap service (process {found.pid}) at {found.url} owns this cache: "
        f"`softmap {'/'.join(REMOTE_COMMANDS)}` go through it; for other work use its API "
        f"({found.url}/docs) or stop it."
    )


def _runs(client: SoftMapClient, args: argparse.Namespace) -> int:
    report = client.recent_runs(limit=args.limit)
    stats, runs = report.stats, report.runs
    if args.json:
        print_json(report.to_json())
        return 0
    print(
        f"{stats.path}: {stats.size_bytes / 2**20:.1f} MB, {stats.sources} sources, "
        f"{stats.tiles} tiles, {stats.embeddings} embeddings, {stats.runs} runs "
        f"(via {client.url})"
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


def _region(args: argparse.Namespace) -> object:
    """The region as the service takes it: a bbox, or the local GeoJSON file's content."""
    from backend.imagery.regions import load_aoi
    from backend.service import RegionSpec

    if getattr(args, "bbox", None):
        return RegionSpec(bbox=args.bbox)
    if getattr(args, "aoi", None):
        # Validated here as in-process; the service validates it again.
        return RegionSpec.of(load_aoi(args.aoi))
    return None


def _embed(client: SoftMapClient, args: argparse.Namespace) -> int:
    from backend.cli.common import engine_options, request
    from backend.service import EmbedRequest

    if args.checkpoint is not None:
        raise invalid(
            "--checkpoint names a file on this machine: with a service, put the weights in "
            "its models folder (or upload them to its data folder) instead."
        )
    if args.max_nodata is not None and not 0 <= args.max_nodata <= 1:
        raise invalid("--max-nodata must be between 0 and 1.")
    if args.max_cloud is not None and not 0 <= args.max_cloud <= 1:
        raise invalid("--max-cloud must be between 0 and 1.")
    req = request(
        EmbedRequest,
        source=args.source,
        region=_region(args),
        model=args.model,
        engine=engine_options(args),
        chip=args.chip,
        stride=args.stride,
        max_nodata=args.max_nodata,
        max_cloud=args.max_cloud,
    )
    with ProgressBar(disable=args.quiet) as bar:
        result = client.embed(req, progress=bar.update)
    if args.json:
        payload = result.to_json()
        payload.pop("tile_ids")
        print_json(payload)
    else:
        print(
            f"{result.tiles} tiles of {result.source} with {result.model}: "
            f"{result.computed} computed, {result.cached} cached, {result.skipped} skipped "
            f"(nodata or cloud) in {result.seconds:.1f} s ({result.tiles_per_s:.1f} tiles/s on "
            f"{result.device}) → {result.db} (via {client.url})"
        )
    return 0


def _search(client: SoftMapClient, args: argparse.Namespace) -> int:
    from backend.cli.common import request
    from backend.service import SearchRequest

    if not (args.tile or args.point or args.positive):
        raise invalid("Give a query: --tile ID, --point LON,LAT or --positive ID.")
    point = None
    if args.point:
        try:
            lon, lat = (float(v) for v in args.point.split(","))
        except ValueError:
            raise invalid(f"--point takes LON,LAT (two numbers), not '{args.point}'.") from None
        point = (lon, lat)
    region = _region(args)
    if args.scope == "source" and not args.source:
        raise invalid("--scope source needs --source.")
    if args.scope == "region" and region is None:
        raise invalid("--scope region needs --bbox or --aoi.")
    req = request(
        SearchRequest,
        model=args.model,
        source=args.source,
        region=region,
        tiles=tuple(args.tile),
        point=point,
        positives=tuple(args.positive),
        negatives=tuple(args.negative),
        k=args.k,
        threshold=args.threshold,
        scope=args.scope,
        suppress=not args.no_suppress,
        engine=args.engine,
        preprocessing=args.preprocessing,
    )
    response = client.find_similar(req)
    if args.json:
        print_json(response.to_json())
        return 0
    print(
        f"{len(response.results)} of {response.candidates} {response.model_id} tiles in "
        f"{response.scope} ({response.method}, {response.engine}, {response.suppressed} "
        f"suppressed, {response.seconds * 1000:.0f} ms); "
        f"query: {', '.join(response.query_tile_ids)}"
    )
    rows = [
        (str(r.rank), f"{r.score:.4f}", r.tile_id, f"{r.lon:.5f}", f"{r.lat:.5f}")
        for r in response.results
    ]
    print_table(("RANK", "SCORE", "TILE", "LON", "LAT"), rows)
    return 0
