"""``softmap eval``: linear probes on frozen embeddings, spatially blocked, against baselines."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from backend.cli.common import (
    add_db_option,
    add_json_option,
    print_json,
    print_table,
    request,
    workspace,
)
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
    e.add_argument(
        "target", nargs="?", choices=["probe", "landcover"], default="probe",
        help="probe (default): the linear-probe comparison; landcover: the land-cover map's "
        "accuracy on the held-out reference polygons of both bundled scenes",
    )  # fmt: skip
    e.add_argument("--model", default="softmap-default", help="model id (default: softmap-default)")
    e.add_argument("--head", help="landcover: head id (default: newest fitted, else bundled)")
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
    add_db_option(e)
    add_json_option(e)
    e.set_defaults(handler=_eval)


def _eval(args: argparse.Namespace) -> int:
    if args.target == "landcover":
        return _eval_landcover(args)
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
    outcome = evaluate_model(workspace(args), req)
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


def _eval_landcover(args: argparse.Namespace) -> int:
    from backend.service.landcover import LandCoverEvalRequest, evaluate_landcover_map

    req = request(LandCoverEvalRequest, model=args.model, head=args.head)
    ev = evaluate_landcover_map(workspace(args), req)
    out = ev.to_json()
    if args.json:
        print_json(out)
        return 0
    if not ev.pixels:
        print("no held-out reference polygons in these scenes")
        return 0
    print(
        f"{ev.model_id} / head {ev.head_id}: {out['polygons']} held-out reference polygons of "
        f"{', '.join(ev.scenes)}, {out['area_ha']:.0f} ha ({ev.pixels} pixels at 10 m)"
    )
    print(
        f"overall accuracy {100 * (ev.accuracy or 0):.1f} %, shown as unlike the training data "
        f"{100 * (ev.unlike_share or 0):.2f} %"
    )
    for sid, scene in out["per_scene"].items():
        acc = scene["overall_accuracy"]
        print(f"  {sid}: {scene['polygons']} polygons, accuracy {_pct(acc)}")
    print_table(
        ("CLASS", "REFERENCE_HA", "PRECISION_%", "RECALL_%"),
        [
            (c["class"], f"{c['reference_ha']:.1f}", _pct(c["precision"]), _pct(c["recall"]))
            for c in out["classes"]
        ],
    )
    conf = out["confusion"]
    print("confusion matrix (pixels; rows = reference, columns = map):")
    print_table(
        ("REFERENCE \\ MAP", *conf["columns"]),
        [(r, *(str(v) for v in row)) for r, row in zip(conf["rows"], conf["pixels"], strict=True)],
    )
    return 0


def _pct(v: float | None) -> str:
    return "—" if v is None else f"{100 * v:.1f}"
