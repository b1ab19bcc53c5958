"""``softmap classify``: train a user class's classifier, predict it over a scope, map it."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from backend.cli.commands.project import add_scope_options, region_of, scope_json, scope_of
from backend.cli.common import add_db_option, add_json_option, db_path, invalid, print_json

ORDER = 32


def register(sub: Any) -> None:
    c = sub.add_parser(
        "classify", help="train a class's classifier and predict it over a scope (stored)"
    )
    c.add_argument("name", help="class name (see `softmap label list`)")
    add_scope_options(c)
    c.add_argument("--map", type=Path, help="also write the probability map as a COG (.tif)")
    c.add_argument("--out", type=Path, help="also write tiles + probability (.geojson/.parquet)")
    c.add_argument("--areas", type=Path, help="also write the area table (.csv)")
    add_db_option(c)
    add_json_option(c)
    c.set_defaults(handler=_classify)


def single_source(tile_ids: tuple[str, ...], source_id: str | None) -> str:
    """The one source a map is drawn on (``--source`` or the only source in the scope)."""
    from backend.imagery.tiling import parse_tile_id

    if source_id:
        return source_id
    sources = sorted({parse_tile_id(t)[0] for t in tile_ids})
    if len(sources) != 1:
        raise invalid(f"The scope spans {len(sources)} sources: pass --source for the map.")
    return sources[0]


def _classify(args: argparse.Namespace) -> int:
    from backend.classes.classifier import classify_scope
    from backend.cli.common import catalog
    from backend.outputs.exports import (
        export_areas_csv,
        export_probability_map,
        export_tiles,
        tile_format,
    )
    from backend.store.cache import EmbeddingCache

    if args.out is not None:
        tile_format(args.out)
    region = region_of(args)
    files: list[dict[str, object]] = []
    with EmbeddingCache(db_path(args)) as cache:
        scope = scope_of(args, cache)
        result = classify_scope(cache, args.name, scope)
        areas = result.areas(cache, region.geometry if region else None)
        if args.out is not None:
            files.append(
                export_tiles(
                    args.out, cache, result.tile_ids, {"probability": result.probabilities}
                ).to_json()
            )
    if args.map is not None:
        source = catalog(args).get(single_source(result.tile_ids, scope.source_id))
        files.append(
            export_probability_map(
                args.map,
                source,
                result.tile_ids,
                result.probabilities,
                [args.name],
                tags={"class": args.name, "model": scope.eset.model_id},
            ).to_json()
        )
    if args.areas is not None:
        extra = {"model": scope.eset.model_id, "scope": scope.key}
        files.append(export_areas_csv(args.areas, areas, extra).to_json())
    probs = result.probabilities
    payload = {
        "class": args.name,
        "scope": scope_json(scope),
        "classifier": result.report.to_json(),
        "tiles": len(result.tile_ids),
        "predicted_positive": int((probs >= 0.5).sum()),
        "mean_probability": round(float(probs.mean()), 4),
        "areas": [a.to_json() for a in areas],
        "files": files,
        "seconds": result.seconds,
    }
    if args.json:
        print_json(payload)
        return 0
    rep = result.report
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
    for f in files:
        print(f"→ {f['path']}")
    return 0
