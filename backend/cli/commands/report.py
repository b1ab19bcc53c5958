"""``softmap report``: a region's land-cover report as one self-contained HTML file."""

from __future__ import annotations

import argparse
from typing import Any

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
    request,
    required_region,
    workspace,
)
from backend.cli.validation import output_file

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
    p.add_argument(
        "--out", type=output_file(".html", ".htm"), required=True, help="the report file (.html)"
    )
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
    from backend.service import ReportRequest, report

    if args.out.suffix.lower() not in (".html", ".htm"):
        raise invalid(f"--out {args.out}: the report is HTML, give a .html path.")
    if args.classes and args.no_classes:
        raise invalid("--class and --no-classes contradict each other.")
    names: tuple[str, ...] | None = () if args.no_classes else args.classes
    req = request(
        ReportRequest,
        source=args.source,
        region=required_region(args),
        model=args.model,
        head=args.head,
        classes=tuple(names) if names is not None else None,
        out=args.out,
        engine=engine_options(args),
    )
    with ProgressBar(disable=args.quiet) as bar:
        page = report(workspace(args), req, progress=bar.update)
    if args.json:
        print_json({**page.to_json(), "out": str(args.out), "db": str(db_path(args))})
        return 0
    lc = page.landcover
    crops = next(a for a in lc.areas if a.name == "crops")
    top = ", ".join(f"{a.name} {a.expected_km2:.2f} km²" for a in page.ranked_areas[:3])
    print(
        f"{page.title}: {len(lc.tile_ids)} tiles, {lc.region_km2:.2f} km² mapped; cropland "
        f"{crops.expected_km2:.2f} km² (95% {crops.low_km2:.2f}–{crops.high_km2:.2f}); top: {top}"
    )
    for u in page.user_classes:
        if u.area is None:
            print(f"class {u.name}: {u.error}")
        else:
            print(f"class {u.name}: {u.area.expected_km2:.2f} km² expected")
    print(f"report → {args.out} ({len(page.html.encode()) / 1e6:.2f} MB)")
    return 0
