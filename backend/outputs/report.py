"""A one-page land-cover report of a region, as one self-contained HTML file, and its exports.

The report is what a stakeholder reads: the region and scene, two map images (true colour with
the region outlined; land cover over the imagery, with legend and scale bar), key numbers
(area, tiles, cropland and the leading classes with expected km² and 95 % ranges), the class-area
table and a bar chart, the user's own classes (cross-validated accuracy with label counts and
expected area), data and model provenance and honest caveats.

Self-contained means it opens with no network: CSS is inline, images are ``data:`` URLs inside
inline SVG, there is no script, and no text names an ``http(s)`` address (web addresses from
manifests are shown without their scheme). :func:`build_report` gathers the numbers
(:class:`Report`); ``backend.outputs.report_html.render_html`` turns them into the page.
:func:`write_export` writes the files offered next to the report (tiles with predictions as
GeoJSON/GeoParquet, the probability map as a COG, the area table as CSV, the embeddings as
GeoParquet).
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import numpy as np
import rasterio
from numpy.typing import NDArray
from rasterio.enums import Resampling
from rasterio.errors import RasterioError
from rasterio.vrt import WarpedVRT
from rasterio.windows import from_bounds
from shapely.geometry import MultiPolygon, Polygon

from backend.errors import RasterReadError, SoftMapError
from backend.imagery.preview import COMPOSITES, composite_stretch, encode_png
from backend.imagery.regions import Region
from backend.imagery.sources import SceneSource, from_lonlat
from backend.landcover.labels import DW_CLASSES, N_CLASSES
from backend.landcover.maps import LandCoverResult, predict_landcover, summary_layers
from backend.landcover.render import colorize
from backend.models import EmbeddingModel
from backend.models.inference import EmbeddingEngine, ProgressCallback
from backend.outputs.exports import ExportResult, export_areas_csv, export_embeddings, export_tiles
from backend.outputs.report_html import render_html
from backend.outputs.report_model import MapImages, Report, UserClassSummary
from backend.settings import Settings, get_settings
from backend.store.cache import EmbeddingCache

#: Longest side of each map image, in pixels.
MAP_PX = 720
#: Margin around the region in the map images, as a share of its size.
MAP_MARGIN = 0.12
#: Opacity of a land-cover cell: this floor plus the rest times the cell's confidence.
ALPHA_FLOOR, ALPHA_SPAN = 0.35, 0.6

ExportKind = Literal[
    "tiles_geojson", "tiles_geoparquet", "probability_cog", "areas_csv", "embeddings_parquet"
]


@dataclass(frozen=True)
class ExportSpec:
    """One downloadable file: suffix, MIME type and a label."""

    suffix: str
    mime: str
    label: str


PARQUET = "application/vnd.apache.parquet"
#: The files offered next to the report, in the order they are listed.
EXPORTS: dict[ExportKind, ExportSpec] = {
    "tiles_geojson": ExportSpec(".geojson", "application/geo+json", "Tiles (GeoJSON)"),
    "tiles_geoparquet": ExportSpec(".parquet", PARQUET, "Tiles (GeoParquet)"),
    "probability_cog": ExportSpec(".tif", "image/tiff", "Probability map (COG)"),
    "areas_csv": ExportSpec(".csv", "text/csv", "Class areas (CSV)"),
    "embeddings_parquet": ExportSpec(".parquet", PARQUET, "Embeddings (GeoParquet)"),
}


# --- building ----------------------------------------------------------------------------------
def build_report(
    region: Region,
    source: SceneSource,
    model: EmbeddingModel,
    cache: EmbeddingCache,
    *,
    landcover: LandCoverResult | None = None,
    class_names: Sequence[str] | None = None,
    head: str | None = None,
    engine: EmbeddingEngine | None = None,
    settings: Settings | None = None,
    progress: ProgressCallback | None = None,
) -> Report:
    """Gather a region's land cover, user classes and provenance, and render the report.

    Args:
        region: The region (lon/lat).
        source: The scene.
        model: The embedding model.
        cache: The cache (tiles the region lacks are embedded; predictions are stored).
        landcover: An already computed result for this region (else it is computed).
        class_names: User classes to include; None: every class with positive and negative
            labels; ``()``: none.
        head: Land-cover head id (default: the model's newest, else bundled).
        engine: Reused engine.
        settings: Settings.
        progress: Embedding progress callback.

    Raises:
        SoftMapError: the region, imagery, model, head or cache cannot be used.
    """
    start = time.perf_counter()
    settings = settings or get_settings()
    if landcover is None:
        landcover = predict_landcover(
            region,
            source,
            model,
            cache,
            engine=engine,
            settings=settings,
            head=head,
            progress=progress,
        )
    users = user_class_summaries(cache, region, landcover, class_names)
    maps = report_maps(source, region, landcover)
    title = f"Land cover of {source.title}"
    report = Report(
        title=title,
        region=region,
        source=source,
        model=model.meta,
        landcover=landcover,
        user_classes=tuple(users),
        maps=maps,
        generated_at=datetime.now(timezone.utc),
        seconds=0.0,
    )
    timed = replace(report, seconds=time.perf_counter() - start)
    return replace(timed, html=render_html(timed))


def user_class_summaries(
    cache: EmbeddingCache,
    region: Region,
    landcover: LandCoverResult,
    class_names: Sequence[str] | None = None,
) -> list[UserClassSummary]:
    """Train each user class's classifier on its labels and predict the region's tiles.

    Nothing is stored. A class without enough labels is reported with the reason.
    """
    from backend.classes.classifier import classify_scope
    from backend.classes.user_classes import classes, get_class
    from backend.store.scopes import resolve_scope

    if class_names is None:
        names = [c.name for c in classes(cache) if c.positives and c.negatives]
    else:
        names = [get_class(cache, n).name for n in class_names]  # unknown → UnknownClassError
    if not names:
        return []
    scope = resolve_scope(
        cache,
        str(landcover.head["model_id"]),
        region=region,
        source_id=landcover.source.id,
        preprocessing_hash=landcover.embed.preprocessing_hash,
    )
    out: list[UserClassSummary] = []
    for name in names:
        cls = get_class(cache, name)
        try:
            result = classify_scope(cache, name, scope, store=False)
        except SoftMapError as e:
            out.append(
                UserClassSummary(
                    name,
                    cls.positives,
                    cls.negatives,
                    None,
                    0,
                    "none",
                    None,
                    error=" ".join(e.message.split()),
                )
            )
            continue
        r = result.report
        area = result.areas(cache, region.geometry)[1]
        out.append(
            UserClassSummary(
                name,
                r.positives,
                r.negatives,
                r.cv_balanced_accuracy,
                r.cv_folds,
                r.calibration,
                area,
            )
        )
    return out


# --- map images --------------------------------------------------------------------------------
def _view_bounds(source: SceneSource, region: Region) -> tuple[float, float, float, float]:
    """The region's native-CRS bounds plus a margin, clipped to the scene grid."""
    left, bottom, right, top = from_lonlat(region.geometry, source.crs).bounds
    pad = MAP_MARGIN * max(right - left, top - bottom)
    gl, gb, gr, gt = source.grid.bounds()
    return (max(gl, left - pad), max(gb, bottom - pad), min(gr, right + pad), min(gt, top + pad))


def _read_true_colour(
    source: SceneSource, bounds: tuple[float, float, float, float], shape: tuple[int, int]
) -> NDArray[np.uint8] | None:
    """RGB of the view, stretched like the whole scene; None without red/green/blue bands."""
    slots = {b.name: b for b in source.bands}
    names = COMPOSITES["true"]
    if any(n not in slots for n in names) or source.units != "dn":
        return None
    lo, hi = composite_stretch(source, "true")
    nodata = source.nodata or 0
    rgb = np.zeros((*shape, 3), dtype=np.uint8)
    valid = np.ones(shape, dtype=bool)
    try:
        for i, name in enumerate(names):
            slot = slots[name]
            with rasterio.open(source.band_path(slot)) as ds:
                src = ds if ds.crs == source.crs_obj else WarpedVRT(ds, crs=source.crs)
                window = from_bounds(*bounds, transform=src.transform)
                band = src.read(
                    slot.index, window=window, out_shape=shape, resampling=Resampling.average
                ).astype(np.float32)
            valid &= band != nodata
            scaled = (band + source.dn_offset - lo[i]) / max(float(hi[i] - lo[i]), 1e-6) * 255
            rgb[..., i] = np.clip(scaled, 0, 255).astype(np.uint8)
    except (RasterioError, OSError) as err:
        raise RasterReadError(f"Cannot read the imagery of {source.id}: {err}") from err
    rgb[~valid] = 255
    return rgb


def _rings(geom: Polygon | MultiPolygon) -> list[Polygon]:
    return list(geom.geoms) if isinstance(geom, MultiPolygon) else [geom]


def report_maps(source: SceneSource, region: Region, result: LandCoverResult) -> MapImages:
    """True colour and land cover of the region (plus a margin) in the scene's CRS, north up.

    Raises:
        RasterReadError: the imagery cannot be read.
    """
    left, bottom, right, top = _view_bounds(source, region)
    pixel_m = max(right - left, top - bottom) / MAP_PX
    # Never finer than the 10 m grid: the browser enlarges small regions (crisp pixels).
    pixel_m = max(pixel_m, source.grid.resolution)
    width = max(1, round((right - left) / pixel_m))
    height = max(1, round((top - bottom) / pixel_m))
    rgb = _read_true_colour(source, (left, bottom, right, top), (height, width))

    raster = result.probability_raster(tokens=True)
    ood = result.ood_raster(tokens=True)
    colours = colorize(raster.data, "dominant", unlike=ood.data[0] > 1.0 if ood else None)
    xs = left + (np.arange(width) + 0.5) * pixel_m
    ys = top - (np.arange(height) + 0.5) * pixel_m
    t = raster.transform
    cols = np.floor((xs - t.c) / t.a).astype(np.int64)
    rows = np.floor((ys - t.f) / t.e).astype(np.int64)
    inside = (rows[:, None] >= 0) & (rows[:, None] < colours.shape[0])
    inside = inside & (cols[None, :] >= 0) & (cols[None, :] < colours.shape[1])
    cells = colours[rows.clip(0, colours.shape[0] - 1)][:, cols.clip(0, colours.shape[1] - 1)]
    cells[~inside] = 0
    conf = cells[..., 3].astype(np.float32) / 255
    alpha = np.where(cells[..., 3] > 0, ALPHA_FLOOR + ALPHA_SPAN * conf, 0.0)[..., None]
    if rgb is not None:
        grey = rgb.astype(np.float32).mean(axis=2, keepdims=True) * 0.6 + 255 * 0.4
        base = np.repeat(grey, 3, axis=2)
    else:
        base = np.full((height, width, 3), 245.0, dtype=np.float32)
    blended = (base * (1 - alpha) + cells[..., :3].astype(np.float32) * alpha).astype(np.uint8)

    outline: list[tuple[tuple[float, float], ...]] = []
    for poly in _rings(from_lonlat(region.geometry, source.crs)):
        for ring in (poly.exterior, *poly.interiors):
            outline.append(
                tuple(((x - left) / pixel_m, (top - y) / pixel_m) for x, y in ring.coords)
            )
    return MapImages(
        imagery_png=encode_png(rgb) if rgb is not None else None,
        landcover_png=encode_png(blended),
        width=width,
        height=height,
        pixel_m=float(pixel_m),
        outline=tuple(outline),
    )


# --- exports -----------------------------------------------------------------------------------
def export_name(kind: ExportKind, result: LandCoverResult) -> str:
    """A file name for an export: source, model and what it holds, then the format's suffix.

    E.g. ``softmap_virginia_test-vit_areas.csv``: the kind's format part (``_csv``) is left out,
    the suffix says it (``tiles_geojson`` and ``tiles_geoparquet`` differ by suffix).
    """
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", result.source.id.split("/")[-1])
    model = re.sub(r"[^A-Za-z0-9._-]+", "-", str(result.head["model_id"]))
    what = kind.rsplit("_", 1)[0]
    return f"softmap_{stem}_{model}_{what}{EXPORTS[kind].suffix}"


def tile_columns(result: LandCoverResult) -> dict[str, Any]:
    """Per-tile columns of the tile exports: dominant class, confidence, entropy, p_<class>."""
    p = np.asarray(result.probabilities, dtype=np.float64)
    summary = summary_layers(p.T[:, :, None].astype(np.float32))[:, :, 0]
    dominant = p.argmax(axis=1)
    columns: dict[str, Any] = {
        "model_id": [str(result.head["model_id"])] * len(p),
        "head_id": [str(result.head["head_id"])] * len(p),
        "dominant": [DW_CLASSES[i] for i in dominant],
        "confidence": summary[1].astype(np.float64),
        "entropy": summary[2].astype(np.float64),
    }
    for c in range(N_CLASSES):
        columns[f"p_{DW_CLASSES[c]}"] = p[:, c]
    return columns


def write_export(
    kind: ExportKind, path: str | Path, result: LandCoverResult, cache: EmbeddingCache
) -> ExportResult:
    """Write one of :data:`EXPORTS` for a land-cover result.

    Raises:
        SoftMapError: the tiles or embeddings are not in the cache.
    """
    out = Path(path)
    if kind in ("tiles_geojson", "tiles_geoparquet"):
        fmt = "geojson" if kind == "tiles_geojson" else "geoparquet"
        return export_tiles(out, cache, list(result.tile_ids), tile_columns(result), fmt=fmt)
    if kind == "probability_cog":
        written = result.write_cog(out)
        return ExportResult(str(written), "cog", len(result.tile_ids))
    if kind == "areas_csv":
        extra = {
            "source": result.source.id,
            "model": str(result.head["model_id"]),
            "head": str(result.head["head_id"]),
        }
        return export_areas_csv(out, result.areas, extra)
    if kind == "embeddings_parquet":
        eset = cache.embedding_set(str(result.head["model_id"]), result.embed.preprocessing_hash)
        if eset is None:
            raise SoftMapError(
                "The region's embeddings are not in the cache: analyse it again.",
                title="No cached embeddings",
            )
        return export_embeddings(out, cache, eset, list(result.tile_ids))
    raise ValueError(f"unknown export {kind!r}")
