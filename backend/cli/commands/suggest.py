"""``softmap suggest``: the tiles to label next for a user class (uncertain and spread out)."""

from __future__ import annotations

import argparse
from typing import Any

from backend.cli.commands.project import add_scope_options, scope_json, scope_of
from backend.cli.common import add_db_option, add_json_option, db_path, invalid, print_json

ORDER = 33


def register(sub: Any) -> None:
    s = sub.add_parser("suggest", help="tiles to label next for a class (uncertain, diverse)")
    s.add_argument("name", help="class name")
    add_scope_options(s)
    s.add_argument("--k", type=int, default=10, help="how many tiles (10)")
    add_db_option(s)
    add_json_option(s)
    s.set_defaults(handler=_suggest)


def _suggest(args: argparse.Namespace) -> int:
    from backend.classes.active_learning import suggest
    from backend.cli.common import print_table
    from backend.store.cache import EmbeddingCache

    if args.k < 1:
        raise invalid("--k must be at least 1.")
    with EmbeddingCache(db_path(args), read_only=True) as cache:
        scope = scope_of(args, cache)
        found = suggest(cache, args.name, scope, k=args.k)
    if args.json:
        print_json(
            {
                "class": args.name,
                "scope": scope_json(scope),
                "classifier": found.report.to_json(),
                "candidates": found.candidates,
                "suggestions": [s.to_json() for s in found.suggestions],
            }
        )
        return 0
    rows = [
        (s.tile_id, f"{s.probability:.3f}", f"{s.uncertainty:.3f}", f"{s.lon:.5f},{s.lat:.5f}")
        for s in found.suggestions
    ]
    print_table(("TILE", "P", "UNCERTAINTY", "LON,LAT"), rows)
    return 0
