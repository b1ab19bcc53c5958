"""``softmap landcover fit --labels patches`` and ``softmap landcover --set``: heads on stored sets.

Both read only what a model's embedding set already holds (a fused ``<s2>+<s1>`` set included):
``fit`` labels its tiles with the CORINE labels of their BigEarthNet patches and evaluates
leaving one place out; ``--set`` maps the stored tiles and counts those one sensor covers.
"""

from __future__ import annotations

import argparse

from backend.cli.common import invalid, print_json, print_table, request, workspace


def _sources(args: argparse.Namespace) -> list[str] | None:
    return [s.strip() for s in args.source.split(",") if s.strip()] if args.source else None


def fit_patches(args: argparse.Namespace) -> int:
    """Fit a head on the model's set with its patches' CORINE labels; print the evaluation."""
    from backend.service import SetHeadRequest, fit_set_landcover_head

    if args.mapping or args.bundle or args.head or args.out or args.bbox or args.aoi:
        raise invalid(
            "--labels patches reads the CORINE labels of the set's patches: drop --mapping, "
            "--bundle, --head, --out and the region."
        )
    req = request(SetHeadRequest, model=args.model, sources=_sources(args))
    result = fit_set_landcover_head(workspace(args), req)
    if args.json:
        print_json(result.to_json())
        return 0
    info = result.head.info()
    t, m = info["training"], info["metrics"]["tile"]
    print(
        f"head {info['head_id']} for {info['model_id']} ({info['dim']}-d): "
        f"{t['labelled_tiles']} tiles of {t['places']} places ({t['labels']} → {t['mapping']}), "
        f"coverage {t['coverage']}, {result.seconds:.1f} s → cache"
    )
    print("held out one place at a time:")
    rows = [
        (g.group, str(g.tiles), ",".join(g.labels), ",".join(sorted(set(g.predicted))),
         f"{g.in_labels:.2f}")
        for g in result.per_group
    ]  # fmt: skip
    print_table(("PLACE", "TILES", "LABELS", "PREDICTED", "IN_LABELS"), rows)
    print(
        f"pooled: in-labels {result.in_labels:.3f}, top-1 {_fmt(m['top1'])} "
        f"(prior {_fmt(m['baseline_top1'])}), mAP {_fmt(m['mAP'])}, KL {_fmt(m['kl'])}"
    )
    return 0


def map_stored(args: argparse.Namespace) -> int:
    """Map the stored tiles of the model's set; tiles one sensor covers are counted apart."""
    from backend.service import SetMapRequest, map_set

    if args.bbox or args.aoi or args.out or args.labels or args.bundle:
        raise invalid(
            "--set maps the stored tiles of the set: drop the region, --out and fit options."
        )
    req = request(SetMapRequest, model=args.model, head=args.head, sources=_sources(args))
    result = map_set(workspace(args), req)
    if args.json:
        print_json(result.to_json())
        return 0
    fallback = int(result.fallback.sum())
    s1_only = sum(c == "s1" for c in result.coverage)
    print(
        f"{len(result.tile_ids)} stored tiles of {result.model_id} / head "
        f"{result.head['head_id']} ({result.area_km2:.2f} km²); {fallback} tiles from one sensor "
        f"only ({fallback - s1_only} s2-only, {s1_only} s1-only)"
    )
    rows = [
        (a.name, f"{a.map_km2 or 0.0:.2f}", f"{100 * a.share:.1f}", str(a.tiles_dominant))
        for a in sorted(result.areas, key=lambda a: -(a.map_km2 or 0.0))
        if a.tiles_dominant
    ]
    print_table(("CLASS", "MAP_KM2", "SHARE_%", "TILES_DOMINANT"), rows)
    return 0


def _fmt(v: float | None) -> str:
    return "—" if v is None else f"{v:.3f}"
