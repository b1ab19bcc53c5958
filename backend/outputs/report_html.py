"""The report page as HTML: inline CSS, images as ``data:`` URLs in inline SVG, no script.

Pure functions of a :class:`backend.outputs.report.Report`. Nothing here refers to the network: text
from manifests loses the scheme of any web address it names (``github.com/…`` stays readable).
"""

from __future__ import annotations

import base64
import html
import math
import re
from collections.abc import Sequence
from typing import Any

from backend import __version__
from backend.landcover.areas import ClassArea
from backend.landcover.labels import DW_PALETTE, DW_TITLES
from backend.landcover.maps import LandCoverResult
from backend.landcover.render import UNLIKE_COLOR, UNLIKE_LABEL
from backend.models.weights import find_local_weights
from backend.outputs.report_model import MapImages, Report, UserClassSummary

#: Classes shown by name among the key numbers.
TOP_CLASSES = 3
_SCHEME = re.compile(r"\bhttps?://", re.IGNORECASE)


def _t(value: object) -> str:
    """Escaped text with any web address's scheme dropped (the report references no URL)."""
    return html.escape(_SCHEME.sub("", str(value)))


def _km2(v: float) -> str:
    return f"{v:,.2f}" if v < 100 else f"{v:,.0f}"


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.0f} %"


def _num(v: Any) -> str:
    return f"{v:.2f}" if isinstance(v, (int, float)) else "–"


def _colour(class_id: int) -> str:
    return f"#{DW_PALETTE[class_id]}"


def _scale_bar(width_px: int, pixel_m: float) -> tuple[float, str]:
    """A round length near a quarter of the view and its label."""
    target = width_px * pixel_m / 4
    exp = 10 ** math.floor(math.log10(target))
    length = max(m * exp for m in (1, 2, 5) if m * exp <= target)
    label = f"{length / 1000:g} km" if length >= 1000 else f"{length:g} m"
    return length / pixel_m, label


def map_svg(maps: MapImages, png: bytes, caption: str) -> str:
    """One map panel: the image, the region outline, a scale bar and a north arrow (SVG)."""
    w, h = maps.width, maps.height
    data = base64.b64encode(png).decode("ascii")
    path = " ".join(
        "M" + " L".join(f"{x:.1f},{y:.1f}" for x, y in ring) + " Z" for ring in maps.outline
    )
    bar_px, bar_label = _scale_bar(w, maps.pixel_m)
    fs = w / 44
    x0, y0 = fs, h - fs * 1.3
    return (
        f'<figure class="map"><svg viewBox="0 0 {w} {h}" role="img" '
        f'aria-label="{_t(caption)}">'
        f'<image width="{w}" height="{h}" href="data:image/png;base64,{data}" '
        'style="image-rendering:pixelated"/>'
        f'<path d="{path}" fill="none" stroke="#fff" stroke-width="{fs / 3.2:.1f}"/>'
        f'<path d="{path}" fill="none" stroke="#111" stroke-width="{fs / 8:.1f}" '
        f'stroke-dasharray="{fs / 2:.1f} {fs / 3:.1f}"/>'
        f'<rect x="{x0 - fs / 2:.1f}" y="{y0 - fs * 1.6:.1f}" width="{bar_px + fs:.1f}" '
        f'height="{fs * 2.3:.1f}" rx="3" fill="#fff" fill-opacity="0.85"/>'
        f'<rect x="{x0:.1f}" y="{y0:.1f}" width="{bar_px:.1f}" height="{fs / 3:.1f}" fill="#111"/>'
        f'<text x="{x0:.1f}" y="{y0 - fs / 3:.1f}" font-size="{fs:.1f}">{bar_label}</text>'
        f'<g transform="translate({w - fs * 1.8:.1f},{fs * 0.8:.1f})">'
        f'<rect x="{-fs * 0.9:.1f}" y="0" width="{fs * 1.8:.1f}" height="{fs * 2.6:.1f}" rx="3" '
        'fill="#fff" fill-opacity="0.85"/>'
        f'<path d="M0,{fs * 0.3:.1f} L{fs * 0.45:.1f},{fs * 1.2:.1f} L0,{fs:.1f} '
        f'L{-fs * 0.45:.1f},{fs * 1.2:.1f} Z" fill="#111"/>'
        f'<text x="0" y="{fs * 2.3:.1f}" font-size="{fs:.1f}" text-anchor="middle">N</text></g>'
        f"</svg><figcaption>{_t(caption)}</figcaption></figure>"
    )


def area_chart_svg(areas: Sequence[ClassArea], *, width: int = 560) -> str:
    """Horizontal bars of expected km² per class with the 95 % range as whiskers (inline SVG)."""
    rows = [a for a in sorted(areas, key=lambda a: -a.expected_km2) if a.high_km2 > 0]
    label_w, pad, bar_h, gap = 150, 60, 18, 8
    height = len(rows) * (bar_h + gap) + 30
    top = max([a.high_km2 for a in rows] or [1.0]) or 1.0
    scale = (width - label_w - pad) / top
    parts = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" '
        'aria-label="Expected area per class" '
        'font-size="12">'
    ]
    for i, a in enumerate(rows):
        y = 6 + i * (bar_h + gap)
        x1 = label_w + a.expected_km2 * scale
        lo, hi = label_w + a.low_km2 * scale, label_w + a.high_km2 * scale
        mid = y + bar_h / 2
        parts.append(
            f'<text x="{label_w - 8}" y="{mid + 4:.1f}" text-anchor="end">'
            f"{_t(DW_TITLES[a.class_id])}</text>"
            f'<rect x="{label_w}" y="{y}" width="{max(x1 - label_w, 0.5):.1f}" height="{bar_h}" '
            f'fill="{_colour(a.class_id)}"><title>{_t(DW_TITLES[a.class_id])}: '
            f"{_km2(a.expected_km2)} km² ({_km2(a.low_km2)}–{_km2(a.high_km2)})</title></rect>"
            f'<path d="M{lo:.1f},{mid:.1f} H{hi:.1f} M{lo:.1f},{mid - 5:.1f} V{mid + 5:.1f} '
            f'M{hi:.1f},{mid - 5:.1f} V{mid + 5:.1f}" stroke="#222" stroke-width="1.3"/>'
            f'<text x="{hi + 6:.1f}" y="{mid + 4:.1f}" fill="#444">{_km2(a.expected_km2)}</text>'
        )
    axis_y = height - 18
    parts.append(
        f'<path d="M{label_w},{axis_y} H{width - pad}" stroke="#999"/>'
        f'<text x="{label_w}" y="{axis_y + 14}" fill="#666">0</text>'
        f'<text x="{width - pad}" y="{axis_y + 14}" fill="#666" text-anchor="end">'
        f"{_km2(top)} km²</text></svg>"
    )
    return "".join(parts)


def area_table_html(areas: Sequence[ClassArea], unlike_km2: float | None = None) -> str:
    """The class-area table: map km² and share (what the map paints), expected km² with its
    95 % range, cells where dominant; the area unlike the training data in its own row."""
    body = "".join(
        f'<tr><td><span class="swatch" style="background:{_colour(a.class_id)}"></span>'
        f"{_t(DW_TITLES[a.class_id])}</td>"
        f"<td class=num>{_km2(a.map_km2) if a.map_km2 is not None else '–'}</td>"
        f"<td class=num>{100 * a.share:.1f} %</td><td class=num>{_km2(a.expected_km2)}</td>"
        f"<td class=num>{_km2(a.low_km2)} – {_km2(a.high_km2)}</td>"
        f"<td class=num>{a.tiles_dominant}</td></tr>"
        for a in sorted(areas, key=lambda a: -a.expected_km2)
    )
    if unlike_km2 is not None:
        total = sum(a.map_km2 or 0.0 for a in areas) + unlike_km2
        share = 100 * unlike_km2 / total if total > 0 else 0.0
        body += (
            f'<tr><td><span class="swatch" style="background:#{UNLIKE_COLOR}"></span>'
            f"{_t(UNLIKE_LABEL)}</td><td class=num>{_km2(unlike_km2)}</td>"
            f"<td class=num>{share:.1f} %</td><td class=num>–</td><td class=num>–</td>"
            "<td class=num>–</td></tr>"
        )
    return (
        '<table class="areas"><thead><tr><th>Class</th><th>Map km²</th><th>Share</th>'
        "<th>Expected km²</th><th>95 % range km²</th><th>Cells dominant</th></tr></thead>"
        f"<tbody>{body}</tbody></table>"
    )


def _legend(areas: Sequence[ClassArea]) -> str:
    present = [a for a in sorted(areas, key=lambda a: -a.expected_km2) if a.expected_km2 > 0]
    items = "".join(
        f'<span><span class="swatch" style="background:{_colour(a.class_id)}"></span>'
        f"{_t(DW_TITLES[a.class_id])}</span>"
        for a in present
    )
    return (
        f'<div class="legend">{items}<span class="note">stronger colour = more confident; '
        "dashed line = region</span></div>"
    )


def _cards(report: Report) -> str:
    """Region, mapped area and tiles, cropland, and the leading classes."""
    lc = report.landcover
    crops = next(a for a in lc.areas if a.name == "crops")
    w, s, e, n = report.region.bounds
    top = "".join(
        f'<div class="row"><span><span class="swatch" style="background:{_colour(a.class_id)}">'
        f"</span>{_t(DW_TITLES[a.class_id])}</span><span>{_km2(a.expected_km2)} km² "
        f"({100 * a.share:.0f} %)</span></div>"
        for a in report.ranked_areas[:TOP_CLASSES]
    )
    cards = [
        ("Region", f"{_km2(report.region.area_km2)} km²", f"W {w:.4f} · S {s:.4f} · E {e:.4f} · "
         f"N {n:.4f}"),
        ("Tiles analysed", f"{len(lc.tile_ids)}", f"{_km2(lc.region_km2)} km² mapped · "
         f"{lc.embed.skipped} skipped (no data)"),
        ("Cropland", f"{_km2(crops.map_km2 if crops.map_km2 is not None else crops.expected_km2)}"
         " km²",
         f"on the map, {100 * crops.share:.0f} % of the mapped area · expected "
         f"{_km2(crops.expected_km2)} km², 95 % range {_km2(crops.low_km2)} – "
         f"{_km2(crops.high_km2)} km²"),
        ("Leading classes", "", top),
    ]  # fmt: skip
    return (
        '<div class="cards">'
        + "".join(
            f'<div class="card"><div class="label">{_t(k)}</div>'
            + (f'<div class="value">{v}</div>' if v else "")
            + f'<div class="sub">{s}</div></div>'
            for k, v, s in cards
        )
        + "</div>"
    )


def _user_classes(users: Sequence[UserClassSummary]) -> str:
    if not users:
        return ""
    rows = []
    for u in users:
        if u.area is None:
            rows.append(
                f"<tr><td>{_t(u.name)}</td><td class=num>{u.positives} / {u.negatives}</td>"
                f'<td colspan="3">{_t(u.error or "no classifier")}</td></tr>'
            )
            continue
        acc = (
            f"{_pct(u.cv_balanced_accuracy)} ({u.cv_folds}-fold)"
            if u.cv_balanced_accuracy is not None
            else "too few labels to cross-validate"
        )
        rows.append(
            f"<tr><td>{_t(u.name)}</td><td class=num>{u.positives} / {u.negatives}</td>"
            f"<td class=num>{acc}</td><td class=num>{_km2(u.area.expected_km2)}</td>"
            f"<td class=num>{_km2(u.area.low_km2)} – {_km2(u.area.high_km2)}</td></tr>"
        )
    return (
        "<section><h2>Your classes</h2><p>Classifiers trained on the tiles you marked "
        "(logistic regression on the embeddings, balanced accuracy cross-validated on your "
        "labels; 50 % is chance).</p>"
        '<table class="areas"><thead><tr><th>Class</th><th>Labels + / −</th>'
        "<th>Balanced accuracy</th><th>Expected km²</th><th>95 % range km²</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table></section>"
    )


def _caveats(report: Report) -> list[str]:
    lc, meta = report.landcover, report.model
    head = lc.head
    training = head.get("training") or {}
    metrics = head.get("metrics") or {}
    out: list[str] = []
    if meta.random_init_seed is not None and not meta.weight_files:
        out.append(
            f"<strong>{_t(meta.id)} has random weights: this map exercises the pipeline and "
            "says nothing about the land.</strong>"
        )
    tile = metrics.get("tile") or {}
    if tile:
        out.append(
            f"The land-cover head gets the dominant class of {_pct(tile.get('top1'))} of "
            f"held-out tiles right (always answering the most common class: "
            f"{_pct(tile.get('baseline_top1'))}); multi-label mAP {_num(tile.get('mAP'))} on "
            f"{tile.get('n_test', '?')} tiles held out in spatial blocks. Read the areas as "
            "estimates at that level of skill."
        )
    pixels = metrics.get("pixels") or {}
    if pixels.get("overall_accuracy") is not None:
        out.append(
            f"On {pixels.get('polygons')} held-out reference polygons of "
            f"{_t(', '.join(pixels.get('scenes', [])))} ({pixels.get('area_ha', 0):.0f} ha), "
            f"the map's class is right for {_pct(pixels['overall_accuracy'])} of the area "
            "(softmap eval landcover prints the confusion matrix)."
        )
    if lc.unlike_km2 > 0:
        out.append(
            f"<strong>{_km2(lc.unlike_km2)} km² ({100 * lc.unlike_share:.1f} %) of the region "
            "is unlike anything the model was trained on</strong>: those cells are grey on the "
            "map and counted in no class."
        )
    if training.get("source") and training.get("source") != lc.source.id:
        out.append(
            f"The head was trained on {_t(training.get('labels', '?'))} labels of "
            f"{_t(training['source'])}, not of this scene: accuracy here may be lower."
        )
    out.append(
        "The 95 % ranges show how unsure the model is about each tile (tiles treated as "
        "independent); they do not correct for a biased model. Whether the model is biased is "
        "what the held-out scores above measure."
    )
    cell = _cell_m(lc)
    out.append(
        f"Land cover is mapped in cells of {cell:.0f} m: features smaller than that (a narrow "
        "field, a farm track) are blended with their surroundings. Good for the share of land "
        "in each class over a region, not for field-by-field statements."
    )
    out.append(
        f"One image, {_t(lc.source.date)}: classes that change with the season (crops, bare "
        "ground, flooded vegetation) reflect that date only."
    )
    return out


def _cell_m(lc: LandCoverResult) -> float:
    from backend.imagery.tiling import tile_from_id

    chip = tile_from_id(lc.tile_ids[0], lc.source)[0]
    grid = lc.token_probabilities.shape[-1] if lc.token_probabilities is not None else 1
    return float(chip * lc.source.grid.resolution / grid)


def _dl(rows: Sequence[tuple[str, str]]) -> str:
    return "<dl>" + "".join(f"<dt>{_t(k)}</dt><dd>{v}</dd>" for k, v in rows) + "</dl>"


def _provenance(report: Report) -> str:
    src, meta, lc = report.source, report.model, report.landcover
    head, emb = lc.head, lc.embed
    if meta.weight_files:
        found = find_local_weights(meta)
        weights = f"{found.name}" if found is not None else "not found locally"
    else:
        weights = "built in (seeded random initialisation)"
    data = [
        ("Scene", _t(f"{src.id} — {src.title}")),
        ("Sensor, level", _t(f"{src.sensor}, {src.product_level}")),
        ("Acquired", _t(src.date)),
        ("Tile, CRS", _t(f"{src.mgrs_tile or '–'}, {src.crs}")),
        ("Attribution", f"<strong>{_t(src.attribution or '–')}</strong>"),
        ("Licence", _t(src.license or "–")),
        (
            "Origin",
            f"<details><summary>where the file comes from</summary>{_t(src.origin or '–')}"
            "</details>",
        ),
    ]
    model = [
        ("Model", _t(f"{meta.id} — {meta.title}")),
        ("Architecture", _t(f"{meta.architecture}, {meta.embed_dim}-d, {meta.chip_size} px chips")),
        ("Weights", _t(weights)),
        ("Weights source", _t(meta.source)),
        ("Licence", _t(meta.license)),
    ]
    training = head.get("training") or {}
    metrics = head.get("metrics") or {}
    scores = "; ".join(
        f"{level}s: mAP {_num(m.get('mAP'))}, top-1 {_num(m.get('top1'))} (majority "
        f"{_num(m.get('baseline_top1'))}), n = {m.get('n_test', '?')}"
        for level, m in metrics.items()
        if m
    )
    head_rows = [
        ("Head", _t(f"{head['head_id']} ({'bundled' if head.get('bundled') else 'fitted'})")),
        (
            "Trained on",
            _t(
                f"{training.get('labels', '?')} labels of "
                f"{training.get('source', '?')} ({training.get('labelled_tiles', '?')} "
                f"tiles), mapping {head.get('mapping', '?')}"
            ),
        ),
        ("Held-out scores", _t(scores or "none recorded")),
    ]
    run = [
        ("SoftMap", _t(__version__)),
        (
            "Embedding run",
            _t(
                f"{emb.run_id[:12]} on {emb.device}: {emb.computed} tiles "
                f"computed, {emb.cached} from the cache, {emb.skipped} skipped, "
                f"{emb.seconds:.1f} s"
            ),
        ),
        (
            "Predictions",
            _t(
                f"{lc.predicted} tiles predicted now, "
                f"{len(lc.tile_ids) - lc.predicted} read back from the cache"
            ),
        ),
        (
            "Report",
            _t(f"built in {report.seconds:.1f} s, {report.generated_at:%Y-%m-%d %H:%M} UTC"),
        ),
    ]
    return (
        '<section class="prov"><h2>Data and model</h2><div class="cols">'
        f"<div><h3>Imagery</h3>{_dl(data)}</div><div><h3>Model</h3>{_dl(model)}"
        f"<h3>Land-cover head</h3>{_dl(head_rows)}</div><div><h3>This report</h3>{_dl(run)}</div>"
        "</div></section>"
    )


_CSS = """
*{box-sizing:border-box}
body{margin:0;background:#f4f5f2;color:#1d2521;font:15px/1.5 system-ui,-apple-system,
"Segoe UI",Roboto,sans-serif}
main{max-width:1120px;margin:0 auto;padding:28px 32px 40px;background:#fff}
h1{font-size:26px;margin:0 0 4px}h2{font-size:19px;margin:28px 0 10px;border-bottom:2px solid
#e4e7e1;padding-bottom:4px}h3{font-size:14px;margin:12px 0 4px;color:#44524a}
.sub,.subtitle{color:#5b6660}.subtitle{margin:0 0 18px}
.warn{background:#fff4e0;border-left:4px solid #e49635;padding:8px 12px;margin:12px 0}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(190px,1fr));gap:10px}
.card{border:1px solid #e1e5de;border-radius:8px;padding:10px 12px}
.card .label{font-size:12px;text-transform:uppercase;letter-spacing:.04em;color:#5b6660}
.card .value{font-size:22px;font-weight:650}.card .sub{font-size:12.5px;overflow-wrap:anywhere}
.card .row{display:flex;justify-content:space-between;gap:8px;font-size:13px;margin-top:3px}
.card .row>span:last-child{white-space:nowrap}
td.num{white-space:nowrap}summary{cursor:pointer;color:#44524a}
.maps{display:grid;grid-template-columns:repeat(auto-fit,minmax(320px,1fr));gap:14px}
figure.map{margin:0}figure.map svg{width:100%;height:auto;display:block;border:1px solid #ccd}
figcaption{font-size:13px;color:#5b6660;margin-top:4px}
.legend{display:flex;flex-wrap:wrap;gap:6px 16px;font-size:13px;margin:8px 0}
.legend .note{color:#5b6660}
.swatch{display:inline-block;width:13px;height:13px;border-radius:2px;margin-right:6px;
vertical-align:-2px;border:1px solid rgba(0,0,0,.2)}
.areas-grid{display:grid;grid-template-columns:minmax(360px,1.15fr) minmax(300px,1fr);gap:20px;
align-items:start}
table.areas{border-collapse:collapse;width:100%;font-size:14px}
table.areas th{text-align:left;font-weight:600;border-bottom:1px solid #ccd;padding:4px 6px}
table.areas td{border-bottom:1px solid #eef;padding:4px 6px}td.num,th:not(:first-child)
{text-align:right;font-variant-numeric:tabular-nums}
svg.chart{width:100%;height:auto}
ul.caveats li{margin:4px 0}
.prov .cols{display:grid;grid-template-columns:repeat(auto-fit,minmax(300px,1fr));gap:18px}
dl{margin:0;display:grid;grid-template-columns:max-content 1fr;gap:2px 10px;font-size:13px}
dt{color:#5b6660}dd{margin:0;overflow-wrap:anywhere}
footer{margin-top:26px;font-size:12.5px;color:#5b6660}
@media (max-width:760px){.areas-grid{grid-template-columns:1fr}main{padding:16px}}
@media print{body{background:#fff}main{padding:0}}
"""


def render_html(report: Report) -> str:
    """The report as one self-contained HTML page (inline CSS and images, no script, no URL)."""
    lc, src, region = report.landcover, report.source, report.region
    maps = report.maps
    subtitle = (
        f"{_t(src.sensor)} {_t(src.product_level)} image of {_t(src.date)} · region "
        f"{_t(region.describe())} · model {_t(report.model.id)} · "
        f"generated {report.generated_at:%Y-%m-%d}"
    )
    warn = ""
    if report.model.random_init_seed is not None and not report.model.weight_files:
        warn = (
            f'<p class="warn"><strong>Demo model.</strong> {_t(report.model.id)} has random '
            "weights: every number below exercises the pipeline and means nothing about the "
            "land.</p>"
        )
    figures = []
    if maps.imagery_png is not None:
        figures.append(map_svg(maps, maps.imagery_png, f"True colour, {src.date}"))
    figures.append(
        map_svg(maps, maps.landcover_png, f"Dominant land-cover class ({_cell_m(lc):.0f} m cells)")
    )
    caveats = "".join(f"<li>{c}</li>" for c in _caveats(report))
    notes = "".join(f"<li>{_t(c)}</li>" for c in src.caveats)
    if notes:
        caveats += (
            f"<li><details><summary>Notes on the image ({len(src.caveats)})</summary>"
            f"<ul>{notes}</ul></details></li>"
        )
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{_t(report.title)} — SoftMap report</title><style>{_CSS}</style></head>"
        f"<body><main><header><h1>{_t(report.title)}</h1>"
        f'<p class="subtitle">{subtitle}</p></header>{warn}'
        f"<section><h2>Key numbers</h2>{_cards(report)}</section>"
        f'<section><h2>Map</h2><div class="maps">{"".join(figures)}</div>{_legend(lc.areas)}'
        "</section>"
        '<section><h2>Area by class</h2><div class="areas-grid">'
        f"<div>{area_table_html(lc.areas, lc.unlike_km2)}</div>"
        f"<div>{area_chart_svg(lc.areas)}</div></div>"
        "<p class=sub>Expected area = Σ tile area inside the region × class probability; "
        "bars show the expected area, whiskers the 95 % range.</p></section>"
        f"{_user_classes(report.user_classes)}"
        f'<section><h2>Caveats</h2><ul class="caveats">{caveats}</ul></section>'
        f"{_provenance(report)}"
        f"<footer>{_t(src.attribution)}. Made with SoftMap {_t(__version__)}.</footer>"
        "</main></body></html>"
    )
