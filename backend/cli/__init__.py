"""The ``softmap`` command line.

Each command lives in its own module under ``backend.cli.commands`` (see ``backend.cli.common``).
User mistakes exit with status 2 and one line on stderr; no traceback reaches the user.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence

from backend.cli import commands
from backend.cli.remote import lock_hint, run_remote
from backend.cli.validation import Parser, check_paths, report_os_error
from backend.errors import CacheLockedError, SoftMapError


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="softmap",
        description="Embed Sentinel imagery tile by tile with SoftCon models, cached in DuckDB; "
        "land-cover maps, similarity search, projections and your own classes.",
    )
    p.add_argument(
        "--server",
        metavar="URL",
        help="run runs/embed/search through this SoftMap service (default: SOFTMAP_BACKEND_URL, "
        "else the service that owns the cache, if any; token: SOFTMAP_BACKEND_TOKEN)",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    modules = [
        importlib.import_module(f"{commands.__name__}.{m.name}")
        for m in pkgutil.iter_modules(commands.__path__)
        if not m.name.startswith("_")
    ]
    for module in sorted(modules, key=lambda m: (getattr(m, "ORDER", 100), m.__name__)):
        module.register(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``softmap`` console script."""
    parser = build_parser()
    args = parser.parse_args(_glue_negative(sys.argv[1:] if argv is None else list(argv)))
    try:
        check_paths(parser, args)  # before any work: a path that cannot be used is one line
        remote = run_remote(args)  # through the service that owns the cache, if there is one
        return int(args.handler(args)) if remote is None else remote
    except SoftMapError as e:
        print(f"softmap: {e.one_line()}", file=sys.stderr)
        if isinstance(e, CacheLockedError) and (hint := lock_hint(args)):
            print(f"softmap: {hint}", file=sys.stderr)
        return 2
    except OSError as e:  # the file system failed under a check that passed (disk full, …)
        print(f"softmap: {report_os_error(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "softmap: interrupted. Finished batches are saved; run the same command to resume.",
            file=sys.stderr,
        )
        return 130


# Options whose values may start with "-" (western longitudes, southern latitudes).
_NEGATIVE_OK = ("--bbox", "--point")


def _glue_negative(argv: list[str]) -> list[str]:
    """Turn ``--bbox -75.7,37.6,…`` into ``--bbox=-75.7,37.6,…`` (also ``--point``).

    argparse takes a value starting with ``-`` for an option, and western longitudes do.
    """
    out: list[str] = []
    i = 0
    while i < len(argv):
        if argv[i] in _NEGATIVE_OK and i + 1 < len(argv):
            out.append(f"{argv[i]}={argv[i + 1]}")
            i += 2
        else:
            out.append(argv[i])
            i += 1
    return out
