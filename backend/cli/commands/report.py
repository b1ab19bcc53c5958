"""``softmap report``: a region's land-cover report as one self-contained HTML file."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from backend.cli.common import (
    ProgressBar,
    add_db_option,
    add_engine_options,
    add_json_option,
    add_model_options,
    add_region_options,
    db_path,
    engine_from_args,
    invalid,
    print_json,
    region_and_source,
)

ORDER = 36


def register(sub: Any) -> None:
    p = sub.add_parser(
        "report",
        help="a region's land-cover report as one HTML file (maps, areas, provenance)",
        description="Map a region's land cover (embedding what the cache lacks) and write a "
        "one-page HTML report that opens offline: map images, key numbers, the class-area "
        "table and chart, your classes, data and model provenance and caveats.",
    )
    add_region_options(p)
    add_model_options(p)
    p.add_argument("--out", type=Path, required=True, help="the report file (.html)")
    p.add_argument("--head", help="land-cover head id (default: newest fitted, else bundled)")
    p.add_argument("--class", dest="classes", action="append", metavar="NAME",
                   help="include this user class (repeatable; default: every class with "
                   "positive and negative labels)")  # fmt: skip
    p.add_argument("--no-classes", action="store_true", help="leave user classes out")
    add_engine_options(p)
    add_db_option(p)
    add_json_option(p)
    p.set_defaults(handler=_report)


def _report(args: argparse.Namespace) -> int:
    from backend.landcover.maps import resolve_head
    from backend.outputs.report import build_report
    from backend.store.cache import EmbeddingCache

    if args.out.suffix.lower() not in (".html", ".htm"):
        raise invalid(f"--out {args.out}: the report is HTML, give a .html path.")
    if args.classes and args.no_classes:
        raise invalid("--class and --no-classes contradict each other.")
    region, source = region_and_source(args)
    engine = engine_from_args(args)
    names: tuple[str, ...] | None = () if args.no_classes else args.classes
    with EmbeddingCache(db_path(args)) as cache, ProgressBar(disable=args.quiet) as bar:
        resolve_head(cache, engine.model.meta.id, args.head)  # fail before embedding
        report = build_report(
            region, source, engine.model, cache, class_names=names, head=args.head,
            engine=engine, progress=bar.update,
        )  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report.html, encoding="utf-8")
    if args.json:
        print_json({**report.to_json(), "out": str(args.out), "db": str(db_path(args))})
        return 0
    lc = report.landcover
    crops = next(a for a in lc.areas if a.name == "crops")
    top = ", ".join(f"{a.name} {a.expected_km2:.2f} km²" for a in report.ranked_areas[:3])
    print(
        f"{report.title}: {len(lc.tile_ids)} tiles, {lc.region_km2:.2f} km² mapped; cropland "
        f"{crops.expected_km2:.2f} km² (95% {crops.low_km2:.2f}–{crops.high_km2:.2f}); top: {top}"
    )
    for u in report.user_classes:
        if u.area is None:
            print(f"class {u.name}: {u.error}")
        else:
            print(f"class {u.name}: {u.area.expected_km2:.2f} km² expected")
    print(f"report → {args.out} ({len(report.html.encode()) / 1e6:.2f} MB)")
    return 0
