"""``softmap eval``: linear probes on frozen embeddings, spatially blocked, against baselines."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from backend.cli.common import add_json_option, print_json, print_table

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
    e.add_argument("--checkpoint", type=Path, help="weights of the model (overrides the lookup)")
    e.add_argument(
        "--ablation",
        type=Path,
        help="weights trained with the soft part off (default: the bundled "
        "assets/models/<model>-nosoft.pt when it exists)",
    )
    e.add_argument("--source", default="demo/brandenburg", help="scene with a label layer")
    e.add_argument("--mapping", default="osm-brandenburg", help="class mapping of its labels")
    e.add_argument(
        "--c", type=float, help="fixed probe regularisation C (default: chosen by block-grouped CV)"
    )
    add_json_option(e)
    e.set_defaults(handler=_eval)


def _eval(args: argparse.Namespace) -> int:
    from backend.cli.common import catalog
    from backend.models import create_model
    from backend.models.weights import find_local_weights
    from backend.settings import get_settings
    from backend.training.config import DEFAULT_HOLDOUT
    from backend.training.evaluation import C_GRID, Candidate, evaluate

    source = catalog(None).get(args.source)
    model = create_model(args.model, args.checkpoint)
    candidates = [Candidate(model.meta.id, "the model (SoftCon loss)", model)]
    ablation: Path | None = args.ablation
    if ablation is None:
        default = get_settings().assets_dir / "models" / f"{model.meta.id}-nosoft.pt"
        ablation = default if default.is_file() else None
    if ablation is not None:
        candidates.append(
            Candidate(
                "no-soft", "same recipe, soft targets off", create_model(model.meta.id, ablation)
            )
        )
    else:
        print("softmap: no ablation weights (--ablation); skipping 'no-soft'", file=sys.stderr)
    random = create_model(model.meta.id, pretrained=False)
    candidates.append(
        Candidate("random-init", "same architecture, random weights (seed 0)", random)
    )
    candidates.append(Candidate("band-stats", "per-band mean and std of the chip (no model)"))
    holdout = (
        DEFAULT_HOLDOUT.model_copy(update={"source": source.id})
        if source.id != DEFAULT_HOLDOUT.source
        else DEFAULT_HOLDOUT
    )
    grid = (args.c,) if args.c else C_GRID
    report = evaluate(source, candidates, holdout, mapping=args.mapping, c_grid=grid)
    if args.json:
        out = report.to_json()
        out["weights"] = str(
            model.load_report.path if model.load_report else find_local_weights(model.meta)
        )
        print_json(out)
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
