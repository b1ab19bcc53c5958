"""Report & export: the land cover of an analysed region, its HTML report and its files.

The report and every export are built by the backend (``backend.outputs.report``), once per input:
``st.cache_data`` keys them by source, model, region, head and the user classes' label counts,
so reruns (and other sessions asking for the same region) reuse the bytes.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import streamlit as st

from app import resources
from app.analysis import LandCover, map_landcover
from app.state import Analysis
from backend.service import (
    LANDCOVER_EXPORTS,
    LandCoverExportKind,
    LandCoverResult,
    Region,
    RegionSpec,
    ReportRequest,
)
from backend.service import landcover_export_name as export_name

LANDCOVER_KEY = "report.landcover"
CLASSES_KEY = "report.classes"
#: Land-cover results kept per session (regions or models visited on this page).
KEEP = 4
HTML_MIME = "text/html"


@dataclass(frozen=True)
class ReportFile:
    """A file to download: name, MIME type, bytes."""

    label: str
    file_name: str
    mime: str
    data: bytes


def landcover(analysis: Analysis) -> LandCover:
    """The land cover of an analysed region with the model's default head (kept per session)."""
    kept: dict[tuple[str, str, str], LandCover] = st.session_state.setdefault(LANDCOVER_KEY, {})
    key = (analysis.source_id, analysis.model_id, analysis.region_wkt)
    found = kept.get(key)
    if found is None or not found.matches(analysis, None):
        found = map_landcover(analysis, resources.catalog().get(analysis.source_id))
        kept[key] = found
        for old in list(kept)[:-KEEP]:
            del kept[old]
    return found


def result_key(result: LandCoverResult, region_wkt: str) -> str:
    """Identifies a result's content: scene, head (and when it was made), region and tiles."""
    h = result.head
    parts = [result.source.id, str(h["model_id"]), str(h["head_id"]), str(h.get("created_at"))]
    text = "|".join([*parts, region_wkt, *result.tile_ids])
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def labelled_classes() -> dict[str, str]:
    """User classes with positive and negative labels → a version (their label counts)."""
    return {
        c.name: f"{c.positives}+/{c.negatives}-"
        for c in resources.operations().list_classes()
        if c.positives and c.negatives
    }


@st.cache_data(show_spinner="Writing the report…", max_entries=8)
def report_html(
    key: str, region_wkt: str, class_versions: tuple[tuple[str, str], ...], _result: LandCoverResult
) -> str:
    """The self-contained HTML report (``key``, region and class label counts are the cache key)."""
    from shapely import wkt

    request = ReportRequest(
        source=_result.source.id,
        region=RegionSpec.of(Region(wkt.loads(region_wkt))),
        model=str(_result.head["model_id"]),
        head=str(_result.head["head_id"]),
        classes=tuple(name for name, _ in class_versions),
    )
    return resources.operations().report_html(request, _result)


@st.cache_data(show_spinner=False, max_entries=32)
def export_bytes(kind: LandCoverExportKind, key: str, _result: LandCoverResult) -> bytes:
    """One export of a result, written by the backend into a temporary folder, as bytes."""
    return resources.operations().landcover_export(kind, _result)


def report_files(
    result: LandCoverResult, region_wkt: str, class_names: tuple[str, ...]
) -> list[ReportFile]:
    """The HTML report, then every export of ``LANDCOVER_EXPORTS``."""
    key = result_key(result, region_wkt)
    versions = labelled_classes()
    chosen = tuple((n, versions.get(n, "")) for n in class_names)
    html = report_html(key, region_wkt, chosen, result)
    stem = export_name("areas_csv", result).removesuffix("_areas.csv")
    files = [ReportFile("Report (HTML)", f"{stem}_report.html", HTML_MIME, html.encode())]
    for kind, spec in LANDCOVER_EXPORTS.items():
        data = export_bytes(kind, key, result)
        files.append(ReportFile(spec.label, export_name(kind, result), spec.mime, data))
    return files


def download_row(files: list[ReportFile]) -> None:
    """One download button per file (the report first, as the primary action)."""
    cols = st.columns(3)
    for i, f in enumerate(files):
        cols[i % 3].download_button(
            f"{f.label} · {len(f.data) / 1e3:,.0f} kB",
            f.data,
            file_name=f.file_name,
            mime=f.mime,
            key=f"report.download.{i}",
            type="primary" if i == 0 else "secondary",
            icon=":material/download:",
            on_click="ignore",
            width="stretch",
        )
