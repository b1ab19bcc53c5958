"""``softmap landcover`` (map a region) and ``softmap landcover fit`` (train a head).

``fit`` is an optional first word rather than a sub-command, so that the map form reads exactly
``softmap landcover --source … --bbox … --model …``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from backend.cli.commands._landcover_sets import fit_patches, map_stored
from backend.cli.common import (
    ProgressBar,
    add_db_option,
    add_engine_options,
    add_json_option,
    add_model_options,
    add_region_options,
    db_path,
    engine_options,
    invalid,
    print_json,
    print_table,
    region_of,
    request,
    required_region,
    workspace,
)
from backend.cli.validation import fraction, input_file, output_file

ORDER = 20
#: ``--features`` value → whether a reference head reads the embedding.
_FEATURES = {"bands": False, "embedding+bands": True}

_USAGE = """softmap landcover --source ID (--bbox W,S,E,N | --aoi FILE) --model ID [--head ID]
                         [--out PATH.tif] [--no-tokens] [--db PATH] [--json]
       softmap landcover fit --source ID --model ID [--labels PATH --mapping NAME |
                         --labels worldcover]
       softmap landcover fit --labels reference --model ID [--source ID]
                         [--features bands|embedding+bands] [--bundle]
                         [--bbox W,S,E,N | --aoi FILE] [--db PATH] [--json]
       softmap landcover fit --labels patches --model ID [--source ID,ID]
       softmap landcover --set --model ID [--head ID] [--source ID,ID]
       softmap landcover heads [--model ID] [--db PATH] [--json]"""


def register(sub: Any) -> None:
    p = sub.add_parser(
        "landcover",
        usage=_USAGE,
        help="land-cover map of a region (Dynamic World classes), or fit/list heads",
        description="Map a region's land cover with a model's land-cover head: per-tile class "
        "probabilities (stored in the cache), expected km² per class with a 95% range, and a "
        "COG with 9 probability bands plus dominant class, confidence and entropy. "
        "`landcover fit` trains a head on a scene's labels or your own raster.",
    )
    p.add_argument(
        "action", nargs="?", choices=["map", "fit", "heads"], default="map",
        help="map (default), fit a head, or list heads",
    )  # fmt: skip
    add_region_options(p, required=False)
    add_model_options(p, required=False)
    p.add_argument("--head", help="head id (default: newest fitted for the model, else bundled)")
    p.add_argument("--out", type=output_file(".tif", ".tiff"),
                   help="write the map as a Cloud-Optimized GeoTIFF")  # fmt: skip
    p.add_argument("--no-tokens", action="store_true", help="tile-level map only (no sub-tile)")
    p.add_argument(
        "--set",
        action="store_true",
        help="map the stored tiles of the model's embedding set (fused <s2>+<s1> sets too); "
        "nothing is embedded, tiles one sensor covers are counted apart",
    )
    p.add_argument(
        "--labels",
        type=_labels_arg,
        help="fit: a categorical land-cover raster (any CRS), `reference` (the bundled scenes' "
        "reference polygons, spectral rules and land-use raster) or `worldcover` (ESA WorldCover "
        "10 m v200 over HTTP for the region) or `patches` (the CORINE labels of the BigEarthNet "
        "patches in the model's stored set, fused sets included)",
    )
    p.add_argument("--mapping", help="fit: class mapping of --labels (e.g. esa-worldcover)")
    p.add_argument("--min-labelled", type=fraction, help="fit: minimum labelled share of a tile")
    p.add_argument(
        "--features",
        choices=list(_FEATURES),
        help="fit --labels reference: what the head reads, `bands` (spectral band and texture "
        "features per cell, the default) or `embedding+bands` (the model's embedding as well)",
    )
    p.add_argument(
        "--bundle", action="store_true", help="fit: write the head to assets/models/heads/"
    )
    add_engine_options(p)
    add_db_option(p)
    add_json_option(p)
    p.set_defaults(handler=_landcover)


def _landcover(args: argparse.Namespace) -> int:
    if args.action == "heads":
        return _heads(args)
    on_set = args.labels == "patches" if args.action == "fit" else args.set
    if on_set and not args.model:
        raise invalid(f"softmap landcover {args.action} on a stored set needs --model ID.")
    if on_set:
        return fit_patches(args) if args.action == "fit" else map_stored(args)
    if args.set:
        raise invalid("--set belongs to the map form (softmap landcover --set --model ID).")
    if not args.source and not (args.action == "fit" and args.labels == "reference"):
        raise invalid(f"softmap landcover {args.action} needs --source ID.")
    if not args.model:
        raise invalid(f"softmap landcover {args.action} needs --model ID.")
    if args.action == "fit":
        return _fit(args)
    if not (args.bbox or args.aoi):
        raise invalid("softmap landcover needs a region: --bbox W,S,E,N or --aoi FILE.")
    fit_only = (args.labels, args.mapping, args.min_labelled)
    if args.bundle or any(v is not None for v in fit_only):
        raise invalid("--labels, --mapping, --min-labelled and --bundle belong to `fit`.")
    return _map(args)


def _map(args: argparse.Namespace) -> int:
    from backend.service import LandCoverRequest, map_landcover

    if args.out and not str(args.out).lower().endswith((".tif", ".tiff")):
        raise invalid(f"--out {args.out}: the map is a GeoTIFF, give a .tif path.")
    req = request(
        LandCoverRequest,
        source=args.source,
        region=required_region(args),
        model=args.model,
        head=args.head,
        tokens=not args.no_tokens,
        out=args.out,
        engine=engine_options(args),
    )
    with ProgressBar(disable=args.quiet) as bar:
        result = map_landcover(workspace(args), req, progress=bar.update)
    out = str(args.out) if args.out else None
    if args.json:
        print_json({**result.to_json(), "out": out, "db": str(db_path(args))})
        return 0
    source = result.source
    cells = result.token_probabilities is not None
    print(
        f"{len(result.tile_ids)} tiles of {source.id} with {result.head['model_id']} / head "
        f"{result.head['head_id']} ({'sub-tile' if cells else 'tile'} map, "
        f"{result.region_km2:.2f} km²)"
    )
    # MAP_KM2 and SHARE_% are what the map paints (the same cells as the COG); EXPECTED_KM2
    # and its 95 % range are the probability-weighted area of the same cells.
    rows = [
        (
            a.name,
            f"{a.map_km2 or 0.0:.2f}",
            f"{100 * a.share:.1f}",
            f"{a.expected_km2:.2f}",
            f"{a.low_km2:.2f}–{a.high_km2:.2f}",
            str(a.tiles_dominant),
        )
        for a in sorted(result.areas, key=lambda a: -(a.map_km2 or 0.0))
    ]
    rows.append(
        (
            "unlike_training_data",
            f"{result.unlike_km2:.2f}",
            f"{100 * result.unlike_share:.1f}",
            "—",
            "—",
            "—",
        )
    )
    unit = "CELLS" if cells else "TILES"
    header = ("CLASS", "MAP_KM2", "SHARE_%", "EXPECTED_KM2", "95%_RANGE_KM2", f"{unit}_DOMINANT")
    print_table(header, rows)
    if out:
        print(f"map → {out}")
    return 0


def _labels_arg(value: str) -> str | Path:
    """``reference``, ``worldcover``, ``patches`` or an existing raster file."""
    return value if value in ("reference", "worldcover", "patches") else input_file(value)


def _fit(args: argparse.Namespace) -> int:
    from backend.service import FitHeadRequest, fit_landcover_head

    if args.head or args.out:
        raise invalid("--head and --out belong to the map form, not `fit`.")
    if args.labels == "reference":
        return _fit_reference(args)
    if args.features:
        raise invalid("--features belongs to `fit --labels reference`.")
    if args.labels == "worldcover":
        if args.mapping not in (None, "esa-worldcover"):
            raise invalid("--labels worldcover uses the esa-worldcover mapping.")
        args.mapping = "esa-worldcover"
    if args.labels and not args.mapping:
        raise invalid("--labels needs --mapping NAME (e.g. esa-worldcover, dynamic-world).")
    if args.min_labelled is not None and not 0 < args.min_labelled <= 1:
        raise invalid("--min-labelled must be in (0, 1].")
    fields: dict[str, Any] = (
        {} if args.min_labelled is None else {"min_labelled": args.min_labelled}
    )
    req = request(
        FitHeadRequest,
        source=args.source,
        model=args.model,
        region=region_of(args),
        labels=args.labels,
        mapping=args.mapping,
        bundle=args.bundle,
        engine=engine_options(args),
        **fields,
    )
    with ProgressBar(disable=args.quiet) as bar:
        if args.labels == "worldcover":
            from backend.service.landcover import WorldCoverFitRequest, fit_worldcover_head

            wreq = request(
                WorldCoverFitRequest,
                source=args.source,
                model=args.model,
                region=region_of(args),
                bundle=args.bundle,
                engine=engine_options(args),
                **fields,
            )
            result = fit_worldcover_head(workspace(args), wreq, progress=bar.update)
        else:
            result = fit_landcover_head(workspace(args), req, progress=bar.update)
    if args.json:
        print_json(result.to_json())
        return 0
    info = result.head.info()
    t = info["training"]
    print(
        f"head {info['head_id']} for {info['model_id']}: {t['labelled_tiles']} labelled tiles "
        f"of {t['tiles']} ({t['labels']} → {t['mapping']}), {t['labelled_tokens']} labelled "
        f"tokens, {result.seconds:.1f} s → {result.stored}"
    )
    rows = [
        (
            level,
            str(m["n_train"]),
            str(m["n_test"]),
            _fmt(m["mAP"]),
            _fmt(m["top1"]),
            _fmt(m["baseline_top1"]),
            _fmt(m["kl"]),
        )
        for level, m in info["metrics"].items()
    ]
    print("held-out evaluation (spatially blocked):")
    print_table(("LEVEL", "TRAIN", "TEST", "mAP", "TOP1", "PRIOR_TOP1", "KL"), rows)
    return 0


def _fit_reference(args: argparse.Namespace) -> int:
    from backend.service.landcover import ReferenceFitRequest, fit_reference_landcover_head

    if args.mapping:
        raise invalid("--labels reference has its own classes; drop --mapping.")
    fields: dict[str, Any] = {"sources": [args.source]} if args.source else {}
    req = request(
        ReferenceFitRequest,
        model=args.model,
        embedding=_FEATURES[args.features or "bands"],
        bundle=args.bundle,
        engine=engine_options(args),
        **fields,
    )
    with ProgressBar(disable=args.quiet) as bar:
        result = fit_reference_landcover_head(workspace(args), req, progress=bar.update)
    info = result.head.info()
    if args.json:
        print_json({**info, "stored": result.stored, "seconds": round(result.seconds, 1)})
        return 0
    t = info["training"]
    print(
        f"head {info['head_id']} for {info['model_id']} on {', '.join(result.scenes)} "
        f"({t['features']}; {t['labelled_tiles']} labelled tiles, {t['labelled_tokens']} "
        f"labelled cells), {result.seconds:.1f} s → {result.stored}"
    )
    rows = [
        (level, str(m["n_train"]), str(m["n_test"]), _fmt(m["mAP"]), _fmt(m["top1"]),
         _fmt(m["baseline_top1"]), _fmt(m["kl"]))
        for level, m in info["metrics"].items() if level in ("tile", "token")
    ]  # fmt: skip
    print("held-out evaluation (reference polygons of the eval blocks):")
    print_table(("LEVEL", "TRAIN", "TEST", "mAP", "TOP1", "PRIOR_TOP1", "KL"), rows)
    pixels = info["metrics"].get("pixels") or {}
    if pixels.get("overall_accuracy") is not None:
        print(
            f"map accuracy on {pixels['polygons']} held-out polygons: "
            f"{100 * pixels['overall_accuracy']:.1f} % of {pixels['area_ha']:.0f} ha "
            "(per class and confusion matrix: softmap eval landcover)"
        )
    return 0


def _heads(args: argparse.Namespace) -> int:
    from backend.service import landcover_heads

    heads = landcover_heads(workspace(args), args.model)
    infos = [h.info() for h in heads]
    if args.json:
        print_json({"heads": infos})
        return 0
    rows = [
        (
            i["head_id"],
            i["model_id"],
            i["mapping"],
            "bundled" if i["bundled"] else "fitted",
            "yes" if i["token_head"] else "no",
            _fmt(i["metrics"].get("tile", {}).get("mAP")),
            _fmt(i["metrics"].get("tile", {}).get("top1")),
        )
        for i in infos
    ]
    print_table(("HEAD", "MODEL", "MAPPING", "KIND", "TOKENS", "mAP", "TOP1"), rows)
    return 0


def _fmt(v: float | None) -> str:
    return "—" if v is None else f"{v:.3f}"
