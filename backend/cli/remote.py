"""``softmap runs``, ``embed`` and ``search`` through a running SoftMap service.

The service is the one named by ``--server URL`` / ``SOFTMAP_BACKEND_URL``, or else the one
whose locator file sits next to the cache file (``softmap serve`` or the app on the same
``--db``): DuckDB lets one process hold the file, so instead of failing on the lock the command
goes through the process that holds it. The command's own handler runs either way and asks
:func:`remote_client` whether to call the service or the application layer: the output is the
same, with ``(via URL)`` added.
"""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING

from backend.cli.common import db_path, invalid, region_of

if TYPE_CHECKING:
    from backend.client import SoftMapClient
    from backend.service import RegionSpec

#: Commands that go through a service when one owns the cache.
REMOTE_COMMANDS = ("runs", "embed", "search")


def client_for(args: argparse.Namespace) -> SoftMapClient | None:
    """The service this command should use, or None to run in-process."""
    # Light imports first: the client pulls in the whole backend, needed only with a service.
    from backend.server.locator import TOKEN_ENV, URL_ENV, read_locator

    url = getattr(args, "server", None) or os.environ.get(URL_ENV, "").strip()
    found = None if url else read_locator(db_path(args))
    if not url and found is None:
        return None
    from backend.client import SoftMapClient

    if url:
        return SoftMapClient(url, token=os.environ.get(TOKEN_ENV) or None)
    assert found is not None
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
        args.client = client  # the command's own handler calls the service through it
        return int(args.handler(args))


def remote_client(args: argparse.Namespace) -> SoftMapClient | None:
    """The service client :func:`run_remote` gave this command, or None (in-process)."""
    client: SoftMapClient | None = getattr(args, "client", None)
    return client


def via(args: argparse.Namespace) -> str:
    """`` (via URL)`` after a line of output that came from a service, else nothing."""
    client = remote_client(args)
    return f" (via {client.url})" if client is not None else ""


def region_for_service(args: argparse.Namespace) -> RegionSpec | None:
    """The region of ``--bbox``/``--aoi``; through a service an AOI file travels as its
    GeoJSON (the file is on this machine, not the service's), validated here first."""
    spec = region_of(args)
    if spec is not None and spec.path is not None and remote_client(args) is not None:
        from backend.service import RegionSpec

        return RegionSpec.of(spec.resolve())
    return spec


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
