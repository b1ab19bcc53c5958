"""``softmap eval``: linear probes on frozen embeddings, spatially blocked, against baselines."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from backend.cli.common import add_json_option, print_json, print_table, request, workspace
from backend.cli.validation import input_file, positive_float

ORDER = 61


def register(sub: Any) -> None:
    e = sub.add_parser(
        "eval",
        help="linear-probe a model on held-out labelled tiles against baselines",
        description="Compare, on one spatially blocked split of the labelled Brandenburg tiles "
        "(test = the blocks held out of pretraining, no train tile touching a test tile): the "
        "model, the same recipe without the soft targets (--ablation), a random init of the "
        "same architecture, per-band mean/std of the chip, and the class prior. Metrics: "
        "multi-label mAP and top-1 accuracy of the dominant class.",
    )
    e.add_argument("--model", default="softmap-default", help="model id (default: softmap-default)")
    e.add_argument(
        "--checkpoint", type=input_file, help="weights of the model (overrides the lookup)"
    )
    e.add_argument(
        "--ablation",
        type=input_file,
        help="weights trained with the soft part off (default: the bundled "
        "assets/models/<model>-nosoft.pt when it exists)",
    )
    e.add_argument("--source", default="demo/brandenburg", help="scene with a label layer")
    e.add_argument("--mapping", default="osm-brandenburg", help="class mapping of its labels")
    e.add_argument(
        "--c",
        type=positive_float,
        help="fixed probe regularisation C (default: chosen by block-grouped CV)",
    )
    add_json_option(e)
    e.set_defaults(handler=_eval)


def _eval(args: argparse.Namespace) -> int:
    from backend.service import EvalRequest, evaluate_model

    req = request(
        EvalRequest,
        model=args.model,
        checkpoint=args.checkpoint,
        ablation=args.ablation,
        source=args.source,
        mapping=args.mapping,
        c=args.c,
    )
    outcome = evaluate_model(workspace(), req)
    for line in outcome.skipped:
        print(f"softmap: {line}", file=sys.stderr)
    report = outcome.report
    if args.json:
        print_json(outcome.to_json())
        return 0
    print(
        f"{report.source}: {report.labelled} labelled tiles of {report.tiles} ({report.chip} px); "
        f"train {report.train_tiles}, test {report.test_tiles} (held-out blocks "
        f"{', '.join(f'{r}:{c}' for r, c in report.holdout_blocks)}; nearest train/test tiles "
        f"{report.min_train_test_distance} tiles apart)"
    )
    header, rows = report.table()
    print_table(header, rows)
    return 0
