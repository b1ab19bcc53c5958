"""Land-cover heads on S2, S1 and fused S2 + S1 sets of the six real BigEarthNet pairs.

    .venv/bin/python bench/bench_fused_heads.py [--pairs test-vit:test-vit-s1,...] [--chip 56]

The six S2 patches and their six S1 partners in ``../shared/data`` are registered in a
temporary cache, each S2 patch is fused with its partner (``fuse_region``), and a head is fitted
on each of the three sets with the patches' CORINE labels (``fit_set_landcover_head``), held out
one place at a time (the S2 patch with its radar partner). Reported per set: the share of
held-out tiles whose predicted class is one their patch holds (``in_labels``), top-1 of the
dominant label, mAP and KL, next to always predicting the most frequent class (``prior``).
Six places are six samples: the figures show that the path runs and how far from the prior a
head lands, not whether fusion helps. Prints a Markdown table; writes
``bench/results/fused_heads.json``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from backend.embedding.fusion import fused_model_id
from backend.landcover.corine import patch_fractions
from backend.service import (
    AddSourceRequest,
    FuseRequest,
    SetHeadRequest,
    Workspace,
    add_source,
    fit_set_landcover_head,
    fuse_region,
)
from backend.settings import Settings

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def _prior(fit_tiles: list[list[str]]) -> float:
    """In-labels share of always predicting the most frequent dominant class (leave-one-out)."""
    fr = np.stack([patch_fractions(labels) for labels in fit_tiles])
    hits = []
    for i in range(len(fr)):
        rest = np.delete(fr, i, axis=0)
        guess = np.bincount(rest.argmax(axis=1), minlength=fr.shape[1]).argmax()
        hits.append(fr[i, guess] >= 0.1)
    return float(np.mean(hits))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pairs", default="test-vit:test-vit-s1,softmap-default:test-vit-s1")
    parser.add_argument("--chip", type=int, default=56)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        ws = Workspace(Settings(db_path=Path(tmp) / "c.duckdb", models_dir=Path(tmp), offline=True))
        s1 = sorted((DATA / "bigearthnet_s1_examples").glob("S1*"))
        s2 = sorted((DATA / "bigearthnet_s2_examples").glob("S2*"))
        for folder in s1 + s2:
            add_source(ws, AddSourceRequest(path=folder, source_id="ben/" + folder.name.lower()))
        labels = []
        for folder in s2:
            meta = json.loads(next(folder.glob("*_labels_metadata.json")).read_text())
            labels.append(meta["labels"])
        prior = _prior(labels)
        for pair in args.pairs.split(","):
            s2_model, s1_model = pair.split(":")
            for folder in s2:
                req = FuseRequest(source="ben/" + folder.name.lower(), s2_model=s2_model,
                                  s1_model=s1_model, chip=args.chip)  # fmt: skip
                fuse_region(ws, req)
            for model in (s2_model, s1_model, fused_model_id(s2_model, s1_model)):
                if any(r["set"] == model for r in rows):
                    continue
                fit = fit_set_landcover_head(ws, SetHeadRequest(model=model))
                m = fit.head.metrics["tile"]
                rows.append(
                    {
                        "set": model,
                        "dim": fit.head.tile.dim,
                        "tiles": len(fit.tile_ids),
                        "places": len(fit.per_group),
                        "in_labels": round(fit.in_labels, 3),
                        "top1": m["top1"],
                        "prior_top1": m["baseline_top1"],
                        "prior_in_labels": round(prior, 3),
                        "mAP": m["mAP"],
                        "kl": m["kl"],
                        "per_place": {g.group: g.in_labels for g in fit.per_group},
                    }
                )
    print("| set | dim | tiles | in-labels | top-1 | prior top-1 | prior in-labels | mAP | KL |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['set']} | {r['dim']} | {r['tiles']} | {r['in_labels']} | {r['top1']} | "
              f"{r['prior_top1']} | {r['prior_in_labels']} | {r['mAP']} | {r['kl']} |")  # fmt: skip
    out = Path(__file__).parent / "results" / "fused_heads.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"chip": args.chip, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
