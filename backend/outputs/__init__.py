"""Outputs: what leaves SoftMap: exports (GeoJSON, GeoParquet, COG, CSV, Parquet) and the report.

Files are written from stored results; the report is one self-contained HTML page.
"""

from backend.outputs.exports import (
    ExportResult,
    export_areas_csv,
    export_embeddings,
    export_probability_map,
    export_tiles,
)
from backend.outputs.report import build_report
from backend.outputs.report_model import MapImages, Report, UserClassSummary

__all__ = [
    "ExportResult",
    "MapImages",
    "Report",
    "UserClassSummary",
    "build_report",
    "export_areas_csv",
    "export_embeddings",
    "export_probability_map",
    "export_tiles",
]
