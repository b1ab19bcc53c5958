"""``softmap classify``: train a user class's classifier, predict it over a scope, map it."""

from __future__ import annotations

import argparse
from typing import Any

from backend.cli.commands.project import add_scope_options, scope_request
from backend.cli.common import add_db_option, add_json_option, print_json, request, workspace
from backend.cli.validation import TILE_SUFFIXES, output_file

ORDER = 32


def register(sub: Any) -> None:
    c = sub.add_parser(
        "classify", help="train a class's classifier and predict it over a scope (stored)"
    )
    c.add_argument("name", help="class name (see `softmap label list`)")
    add_scope_options(c)
    c.add_argument(
        "--map",
        type=output_file(".tif", ".tiff"),
        help="also write the probability map as a COG (.tif)",
    )
    c.add_argument(
        "--out",
        type=output_file(*TILE_SUFFIXES),
        help="also write tiles + probability (.geojson/.parquet)",
    )
    c.add_argument("--areas", type=output_file(".csv"), help="also write the area table (.csv)")
    add_db_option(c)
    add_json_option(c)
    c.set_defaults(handler=_classify)


def _classify(args: argparse.Namespace) -> int:
    from backend.service import ClassifyRequest, classify

    req = request(
        ClassifyRequest,
        name=args.name,
        scope=scope_request(args),
        map=args.map,
        out=args.out,
        areas=args.areas,
    )
    outcome = classify(workspace(args), req)
    payload = outcome.to_json()
    if args.json:
        print_json(payload)
        return 0
    rep = outcome.classification.report
    probs = outcome.classification.probabilities
    areas = outcome.areas
    acc = (
        f"cross-validated balanced accuracy {rep.cv_balanced_accuracy:.2f} ({rep.cv_folds} folds)"
        if rep.cv_balanced_accuracy is not None
        else "too few labels to cross-validate"
    )
    cls_area = areas[1]
    print(
        f"{args.name} with {rep.model_id}: {rep.positives} positive / {rep.negatives} negative "
        f"labels, {acc}, calibration {rep.calibration}.\n"
        f"{len(probs)} tiles predicted, {payload['predicted_positive']} with p ≥ 0.5; "
        f"expected area {cls_area.expected_km2:.2f} km² "
        f"(95 % {cls_area.low_km2:.2f}–{cls_area.high_km2:.2f}) of "
        f"{sum(a.expected_km2 for a in areas):.2f} km²."
    )
    for f in outcome.files:
        print(f"→ {f.path}")
    return 0
