"""Which features make the best land-cover map? SoftCon vs plain contrastive vs random init vs
band statistics, on the held-out reference polygons of both bundled scenes.

For every candidate, the same soft-label cell head (``backend.landcover.fit_reference``: 80 m
cells, training rows of the ``train`` blocks, each class capped, the water rule applied) is fitted
on its features and scored on the ``eval`` cells (reference labels of the evaluation polygons,
labelled share ≥ 0.5): top-1 accuracy of the dominant class, per-class recall, mean KL.

* ``softcon``: ``softmap-default`` patch tokens (the bundled SoftCon weights);
* ``no-soft``: the same recipe with the soft targets off
  (``assets/models/softmap-default-nosoft.pt``);
* ``random-init``: the same architecture with random weights (seed 0);
* ``band-stats``: the per-cell spectral features alone (no model; ``spectral-v2``, 39 features);
* ``softcon+bands``: SoftCon tokens and the spectral features together;
* ``--checkpoint NAME=PATH`` (repeatable): other ``softmap-default`` weights, e.g. an earlier
  training run, scored like ``softcon``.

For every model it also prints the **search purity**: over the 64 px tiles of both scenes whose
reference labels (all splits) give one class ≥ 60 % of the labelled pixels, the share of each
tile's 10 nearest tiles (cosine of the class tokens) with the same dominant class.

    .venv/bin/python scripts/compare_landcover_features.py [--db PATH] [--json OUT]
        [--checkpoint NAME=PATH ...]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from backend.imagery.sources import SceneSource, demo_catalog  # noqa: E402
from backend.imagery.tiling import make_tile_id  # noqa: E402
from backend.landcover.fit_reference import _cap, _stack, scene_rows  # noqa: E402
from backend.landcover.heads import evaluate, fit_linear_softmax  # noqa: E402
from backend.landcover.labels import DW_CLASSES, N_CLASSES  # noqa: E402
from backend.landcover.reference import reference_soft_labels  # noqa: E402
from backend.landcover.spectral import FEATURE_NAMES, apply_water_rule  # noqa: E402
from backend.models import create_model  # noqa: E402
from backend.models.inference import EmbeddingEngine  # noqa: E402
from backend.settings import get_settings  # noqa: E402
from backend.store.cache import EmbeddingCache  # noqa: E402

SCENES = ("demo/virginia", "demo/brandenburg")


def score(x, rules, train, held, seed=0):  # type: ignore[no-untyped-def]
    rows = _cap(train, 6000, seed)
    head = fit_linear_softmax(x[rows], train.fractions[rows], seed=seed)
    test = np.flatnonzero(held.has_label)
    p = apply_water_rule(head.predict(x[test]), rules[test])
    m = evaluate(p, held.subset(test), n_train=len(rows), prior=None).to_json()
    y = held.fractions[test].argmax(1)
    top = p.argmax(1)
    recall = {
        DW_CLASSES[c]: round(float((top[y == c] == c).mean()), 3)
        for c in range(N_CLASSES)
        if (y == c).any()
    }
    return {"top1": m["top1"], "mAP": m["mAP"], "kl": m["kl"], "recall": recall,
            "n_train": len(rows), "n_test": len(test)}  # fmt: skip


def dominant_tiles(sources: list[SceneSource], share: float = 0.6) -> dict[str, int]:
    """Tile id → dominant reference class, for tiles where one class has ≥ ``share``."""
    out: dict[str, int] = {}
    for src in sources:
        ids = [
            make_tile_id(src.id, 64, 64, r, c)
            for r in range(src.grid.height // 64)
            for c in range(src.grid.width // 64)
        ]
        labels = reference_soft_labels(src, ids, split="all", min_labelled=0.5)
        for tid, has, frac in zip(ids, labels.has_label, labels.fractions, strict=True):
            if has and frac.max() >= share:
                out[tid] = int(frac.argmax())
    return out


def search_purity(cache, labels, k=10):  # type: ignore[no-untyped-def]
    (eset,) = [s for s in cache.embedding_sets() if s.model_id == "softmap-default"]
    got, emb = cache.embeddings(eset, list(labels))
    y = np.array([labels[t] for t in got])
    e = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    sim = e @ e.T
    np.fill_diagonal(sim, -np.inf)
    same = y[np.argsort(-sim, axis=1)[:, :k]] == y[:, None]
    per = {DW_CLASSES[c]: round(float(same[y == c].mean()), 3) for c in range(N_CLASSES)
           if (y == c).sum() >= 5}  # fmt: skip
    return {"purity": round(float(same.mean()), 3), "tiles": len(y), "per_class": per}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--db", type=Path, default=Path("runs/compare_landcover.duckdb"))
    ap.add_argument("--json", type=Path)
    ap.add_argument("--checkpoint", action="append", default=[], metavar="NAME=PATH")
    args = ap.parse_args()
    args.db.parent.mkdir(parents=True, exist_ok=True)
    settings = get_settings()
    cat = demo_catalog()
    nosoft = ROOT / "assets" / "models" / "softmap-default-nosoft.pt"
    candidates = {
        "softcon": create_model("softmap-default"),
        "no-soft": create_model("softmap-default", nosoft),
        "random-init": create_model("softmap-default", pretrained=False),
    }
    for value in args.checkpoint:
        label, _, path = value.partition("=")
        candidates[label] = create_model("softmap-default", Path(path))
    results: dict[str, dict] = {}
    purity: dict[str, dict] = {}
    labels = dominant_tiles([cat.get(s) for s in SCENES])
    n_spec = len(FEATURE_NAMES)
    for name, model in candidates.items():
        start = time.perf_counter()
        # Each candidate embeds into its own cache file: their weights differ, not their id.
        db = args.db.with_name(f"{args.db.stem}-{name}.duckdb")
        engine = EmbeddingEngine(model, device="cpu", batch_size=32)
        with EmbeddingCache(db) as cache:
            rows = [scene_rows(cat.get(s), engine, cache, settings=settings) for s in SCENES]
            purity[name] = search_purity(cache, labels)
        x = np.concatenate([r.cell_x for r in rows])
        rules = np.concatenate([r.cell_rules for r in rows])
        train = _stack([r.cell_train for r in rows])
        held = _stack([r.cell_eval for r in rows])
        results[name] = score(x[:, :-n_spec], rules, train, held)
        if name == "softcon":
            results["softcon+bands"] = score(x, rules, train, held)
            results["band-stats"] = score(x[:, -n_spec:], rules, train, held)
        print(f"{name}: {results[name]} ({time.perf_counter() - start:.0f} s)", flush=True)
    print(f"{'features':15s} {'top1':>6s} {'mAP':>6s} {'KL':>6s}  recall per class")
    for name, r in results.items():
        rec = ", ".join(f"{k} {v:.2f}" for k, v in r["recall"].items())
        print(f"{name:15s} {r['top1']:6.3f} {r['mAP']:6.3f} {r['kl']:6.3f}  {rec}")
    print(f"search purity@10 on {len(labels)} tiles with a dominant reference class:")
    for name, p in purity.items():
        print(f"{name:15s} {p['purity']:.3f}  " + ", ".join(f"{k} {v:.2f}" for k, v in
              p["per_class"].items()))  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps({**results, "search_purity": purity}, indent=2) + "\n")


if __name__ == "__main__":
    main()
