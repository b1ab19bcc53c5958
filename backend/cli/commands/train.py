"""``softmap train softcon``: SoftCon pretraining on scenes with (optional) land-cover labels."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from backend.cli.common import add_json_option, invalid, print_json, workspace
from backend.cli.validation import (
    float_in,
    fraction,
    int_at_least,
    output_dir,
    positive_float,
    positive_int,
    seed,
)

ORDER = 60


def register(sub: Any) -> None:
    t = sub.add_parser("train", help="pretrain a model (SoftCon)")
    kinds = t.add_subparsers(dest="train_kind", required=True, metavar="KIND")
    s = kinds.add_parser(
        "softcon",
        help="soft contrastive pretraining with label-guided targets",
        description="SoftCon pretraining: two augmented views per chip, Siamese masking, an EMA "
        "momentum encoder, and targets softened by the similarity of the chips' land-cover "
        "labels. Writes NAME.pt (loadable with --checkpoint), NAME.config.json, NAME.data.json "
        "and NAME.loss.json into --out.",
    )
    s.add_argument("--out", type=output_dir, required=True, help="output folder")
    s.add_argument("--name", help="file stem of the outputs (default: the model id)")
    s.add_argument("--model", default="softmap-default", help="architecture (a ViT model id)")
    s.add_argument(
        "--init",
        default="scratch",
        help="'scratch', a checkpoint file, or model:ID to continue its pretraining",
    )
    s.add_argument(
        "--source",
        action="append",
        metavar="ID[=MAPPING]",
        help="a scene and its labels (repeatable): MAPPING is 'reference' (spectral rules, "
        "reference polygons and land-use raster combined, evaluation polygons kept out), a "
        "label raster's class mapping such as osm-brandenburg, or empty (unlabelled); default: "
        "both bundled scenes with 'reference'",
    )
    s.add_argument(
        "--stride",
        type=positive_int,
        help="step between chips (default: half a chip on "
        "labelled scenes, a chip on unlabelled ones)",
    )
    s.add_argument(
        "--no-holdout",
        action="store_true",
        help="train on the Brandenburg evaluation blocks too (evaluation is then no longer honest)",
    )
    s.add_argument("--epochs", type=positive_int, default=20)
    s.add_argument("--max-steps", type=positive_int, help="stop after this many steps")
    s.add_argument("--batch-size", type=int_at_least(2), default=64)
    s.add_argument("--lr", type=positive_float, default=1e-3)
    s.add_argument(
        "--no-soft",
        action="store_true",
        help="plain contrastive (InfoNCE) targets: the ablation of the soft part",
    )
    s.add_argument("--alpha", type=fraction, default=0.5, help="weight of label similarities")
    s.add_argument("--temperature", type=positive_float, default=0.2)
    s.add_argument(
        "--mask-ratio",
        type=float_in(0.0, 1.0, high_open=True),
        default=0.3,
        help="Siamese masking ratio",
    )
    s.add_argument(
        "--jitter-p",
        type=fraction,
        default=0.8,
        help="probability of a view's brightness and contrast jitter (one draw for all "
        "bands); 0 keeps every view's reflectances (Gaussian noise stays)",
    )
    s.add_argument("--seed", type=seed, default=0)
    s.add_argument("--device", default="auto", help="auto, cuda, cuda:N, mps or cpu")
    s.add_argument(
        "--precision",
        choices=["auto", "fp32", "bf16"],
        default="auto",
        help="auto = bf16 autocast on CUDA, fp32 elsewhere",
    )
    s.add_argument("--threads", type=positive_int, help="CPU threads (default: PyTorch's choice)")
    s.add_argument("--half", action="store_true", help="store the weights as float16")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    add_json_option(s)
    s.set_defaults(handler=_softcon)


def _sources(values: list[str] | None) -> dict[str, str | None] | None:
    if not values:
        return None
    out: dict[str, str | None] = {}
    for value in values:
        sid, _, mapping = value.partition("=")
        if not sid:
            raise invalid(f"--source {value!r}: expected ID or ID=MAPPING")
        out[sid] = mapping or None
    return out


def _softcon(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from backend.service import StepInfo, TrainConfig, TrainRequest, pretrain

    sources = _sources(args.source)
    fields: dict[str, Any] = {
        "model": args.model,
        "init": str(args.init),
        "stride": args.stride,
        "epochs": args.epochs,
        "max_steps": args.max_steps,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "soft": not args.no_soft,
        "alpha": args.alpha,
        "temperature": args.temperature,
        "mask_ratio": args.mask_ratio,
        "augment": {"jitter_p": args.jitter_p},
        "seed": args.seed,
        "device": args.device,
        "precision": args.precision,
        "threads": args.threads,
    }
    if sources is not None:
        fields["sources"] = sources
    if args.no_holdout:
        fields["holdout"] = None
    try:
        cfg = TrainConfig(**fields)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(x) for x in first["loc"])
        raise invalid(f"--{where.replace('_', '-')}: {first['msg']}") from None

    bar: Any = None

    def on_step(info: StepInfo) -> None:
        nonlocal bar
        if args.quiet:
            return
        if bar is None:
            from tqdm import tqdm

            bar = tqdm(total=info.total, unit="step", file=sys.stderr, leave=False)
        bar.n = info.step
        bar.set_postfix(epoch=info.epoch, loss=f"{info.loss:.3f}", refresh=False)
        bar.refresh()

    try:
        req = TrainRequest(config=cfg, out=args.out, name=args.name, half=args.half)
        result = pretrain(workspace(), req, on_step=on_step)
    finally:
        if bar is not None:
            bar.close()
    if args.json:
        print_json(result.to_json())
    else:
        print(
            f"Trained {result.model} ({'SoftCon' if result.soft else 'plain contrastive'}) for "
            f"{result.steps} steps ({result.epochs} epochs) on {result.chips} chips "
            f"({result.labelled_chips} labelled) in {result.seconds:.0f} s on {result.device}: "
            f"loss {result.first_loss:.3f} → {result.last_loss:.3f}."
        )
        print(f"checkpoint: {result.checkpoint}")
        print(f"config, data list, loss curve: {result.config}, {result.data}, {result.loss_curve}")
    return 0
