"""``softmap fuse``: a fused Sentinel-2 + Sentinel-1 embedding set over a region."""

from __future__ import annotations

import argparse
from typing import Any

from backend.cli.common import (
    ProgressBar,
    add_db_option,
    add_engine_options,
    add_json_option,
    engine_options,
    print_json,
    region_of,
    request,
    workspace,
)
from backend.cli.validation import fraction, input_file, non_negative_int, positive_int

ORDER = 12


def register(sub: Any) -> None:
    f = sub.add_parser(
        "fuse",
        help="embed a region with an S2 and an S1 model and store their fused embedding set",
        description="For an S2 source (or an S1 source), its partners of the other sensor "
        "(`softmap sources pairs`) are embedded over the same region, and each S2 tile's "
        "vector is joined with its S1 partner's: [sqrt(1-w)·v2/|v2|, sqrt(w)·v1/|v1|]. The set "
        "is searched, projected and classified as model '<s2 model>+<s1 model>'. Tiles only "
        "one sensor covers keep that sensor's half (the other is zero) and are marked.",
    )
    f.add_argument("--source", required=True, help="an S2 or S1 source id")
    where = f.add_mutually_exclusive_group()
    where.add_argument("--bbox", help="W,S,E,N in lon/lat degrees (default: the whole source)")
    where.add_argument("--aoi", type=input_file, help="GeoJSON file (default: the whole source)")
    f.add_argument("--s2-model", required=True, help="Sentinel-2 model id (see `softmap models`)")
    f.add_argument("--s1-model", required=True, help="Sentinel-1 model id, e.g. softcon-vits14-s1")
    f.add_argument("--s1-weight", type=fraction, default=0.5,
                   help="S1 share of the fused cosine, 0-1 (default 0.5)")  # fmt: skip
    f.add_argument("--window-days", type=non_negative_int, default=12,
                   help="pair acquisitions at most this many days apart (default 12)")  # fmt: skip
    f.add_argument("--min-tile-overlap", type=fraction, default=0.5,
                   help="share of an S2 tile its S1 partner must cover (default 0.5)")  # fmt: skip
    f.add_argument(
        "--chip", type=positive_int, help="tile size for both models (default: each model's)"
    )
    f.add_argument(
        "--s1-chip", type=positive_int, help="S1 tile size when it differs (default: --chip)"
    )
    add_engine_options(f)
    add_db_option(f)
    add_json_option(f)
    f.set_defaults(handler=_fuse)


def _fuse(args: argparse.Namespace) -> int:
    from backend.service import FuseRequest, fuse_region

    req = request(
        FuseRequest,
        source=args.source,
        region=region_of(args),
        s2_model=args.s2_model,
        s1_model=args.s1_model,
        s1_weight=args.s1_weight,
        window_days=args.window_days,
        min_tile_overlap=args.min_tile_overlap,
        chip=args.chip,
        s1_chip=args.s1_chip,
        engine=engine_options(args),
    )
    with ProgressBar(disable=args.quiet or args.json) as bar:
        out = fuse_region(workspace(args), req, progress=bar.update)
    if args.json:
        print_json(out.to_json())
        return 0
    f = out.fusion
    print(
        f"Fused {f.model_id}: {len(f.matches)} tiles ({f.count('both')} from both sensors, "
        f"{f.count('s2')} S2 only, {f.count('s1')} S1 only), {f.dim}-d "
        f"({f.s2_dim} S2 + {f.s1_dim} S1, S1 weight {f.s1_weight:g})"
    )
    for p in out.pairs:
        print(f"  {p.s2.id} + {p.s1.id} ({p.apart()})")
    print(f"Search it: softmap search --model {f.model_id} --tile {f.tile_ids[0]}")
    return 0
