"""``softmap suggest``: the tiles to label next for a user class (uncertain and spread out)."""

from __future__ import annotations

import argparse
from typing import Any

from backend.cli.commands.project import add_scope_options, scope_request
from backend.cli.common import (
    add_db_option,
    add_json_option,
    invalid,
    print_json,
    print_table,
    request,
    workspace,
)
from backend.cli.validation import positive_int

ORDER = 33


def register(sub: Any) -> None:
    s = sub.add_parser("suggest", help="tiles to label next for a class (uncertain, diverse)")
    s.add_argument("name", help="class name")
    add_scope_options(s)
    s.add_argument("--k", type=positive_int, default=10, help="how many tiles (10)")
    add_db_option(s)
    add_json_option(s)
    s.set_defaults(handler=_suggest)


def _suggest(args: argparse.Namespace) -> int:
    from backend.service import SuggestRequest, suggest_labels

    if args.k < 1:
        raise invalid("--k must be at least 1.")
    req = request(SuggestRequest, name=args.name, scope=scope_request(args), k=args.k)
    outcome = suggest_labels(workspace(args), req)
    if args.json:
        print_json(outcome.to_json())
        return 0
    rows = [
        (s.tile_id, f"{s.probability:.3f}", f"{s.uncertainty:.3f}", f"{s.lon:.5f},{s.lat:.5f}")
        for s in outcome.suggestions.suggestions
    ]
    print_table(("TILE", "P", "UNCERTAINTY", "LON,LAT"), rows)
    return 0
