"""Change between two dates, as the Change page shows it: sources that overlap, the compared
region, every matched tile ranked with its footprint, and the map and list as files.

The comparison itself is :func:`backend.service.analysis.detect_region_change` (``softmap
change``); :func:`compare_dates` embeds what the cache lacks for both dates first, with progress,
and clips the region to where both sources have pixels.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shapely.geometry import MultiPolygon, Polygon

from backend.analysis.change import ChangeResult
from backend.errors import ChangeError
from backend.imagery.rasters import write_cog
from backend.imagery.regions import Region
from backend.imagery.sources import SceneSource
from backend.models.inference import ProgressCallback
from backend.service.analysis import ChangeRequest, detect_region_change
from backend.service.embedding import EmbedRequest, embed
from backend.service.workspace import RegionSpec, Workspace

#: File suffixes of the ranked list, and what they hold.
LIST_FORMATS = {".geojson": "GeoJSON", ".csv": "CSV"}
#: Columns of the ranked list (CSV header, GeoJSON properties).
LIST_COLUMNS = ("rank", "before_tile", "after_tile", "lon", "lat", "distance")
#: Only overlaps larger than this share of the smaller footprint count (edge slivers do not).
MIN_OVERLAP = 0.01


@dataclass(frozen=True)
class ChangedTile:
    """One matched tile pair, ranked (1 = most changed), with the before tile's footprint."""

    rank: int
    before_tile: str
    after_tile: str
    lon: float
    lat: float
    distance: float
    footprint: dict[str, Any]

    def row(self) -> dict[str, Any]:
        return {
            "rank": self.rank,
            "before_tile": self.before_tile,
            "after_tile": self.after_tile,
            "lon": round(self.lon, 6),
            "lat": round(self.lat, 6),
            "distance": round(self.distance, 6),
        }


@dataclass(frozen=True)
class ChangeMap:
    """A comparison: the two sources, the region compared, the result and every pair ranked.

    ``computed`` and ``cached`` count the tiles of both dates embedded for this comparison and
    found in the cache (``result``'s own counts see everything cached: it runs after them).
    """

    before: SceneSource
    after: SceneSource
    region: Region
    result: ChangeResult
    tiles: tuple[ChangedTile, ...]
    computed: int = 0
    cached: int = 0

    @property
    def max_distance(self) -> float:
        return max((t.distance for t in self.tiles), default=0.0)

    def top(self, k: int) -> tuple[ChangedTile, ...]:
        """The ``k`` most-changed pairs."""
        return self.tiles[:k]

    def to_geojson(self) -> dict[str, Any]:
        """Every pair as a GeoJSON feature (the before tile's footprint), most changed first."""
        return {
            "type": "FeatureCollection",
            "properties": {"before": self.before.id, "after": self.after.id,
                           "model": self.result.model, "matching": self.result.matching},
            "features": [
                {"type": "Feature", "id": t.before_tile, "geometry": t.footprint,
                 "properties": t.row()}
                for t in self.tiles
            ],
        }  # fmt: skip

    def to_csv(self) -> str:
        """Every pair as CSV (``rank, before_tile, after_tile, lon, lat, distance``)."""
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=LIST_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(t.row() for t in self.tiles)
        return out.getvalue()

    def write_list(self, path: str | Path) -> Path:
        """Write the ranked list as GeoJSON or CSV (by the suffix).

        Raises:
            ChangeError: another suffix (the message names the two that work).
        """
        path = Path(path)
        suffix = path.suffix.lower()
        if suffix not in LIST_FORMATS:
            raise ChangeError(
                f"Cannot write the change list to {path.name}: name it .geojson or .csv."
            )
        text = json.dumps(self.to_geojson()) if suffix == ".geojson" else self.to_csv()
        path.write_text(text, encoding="utf-8")
        return path

    def write_map(self, path: str | Path) -> Path:
        """Write the per-tile change score (cosine distance) as a COG on the before grid.

        Raises:
            ChangeError: the name is not a ``.tif``.
        """
        path = Path(path)
        if path.suffix.lower() not in (".tif", ".tiff"):
            raise ChangeError(f"Cannot write the change map to {path.name}: name it .tif.")
        raster = self.result.raster
        if raster is None:  # detect_change always returns one; a result built elsewhere may not
            raise ChangeError("This change result holds no map to write.")
        return write_cog(
            path,
            raster.data,
            transform=raster.transform,
            crs=raster.crs,
            band_names=["cosine_distance"],
            tags={"before": self.before.id, "after": self.after.id, "model": self.result.model},
        )


def overlap_share(a: SceneSource, b: SceneSource) -> float:
    """The share of the smaller footprint that the other covers (0: disjoint, 1: inside)."""
    fa, fb = a.footprint_lonlat, b.footprint_lonlat
    smaller = min(fa.area, fb.area)
    return float(fa.intersection(fb).area / smaller) if smaller > 0 else 0.0


def overlapping_sources(ws: Workspace, source_id: str) -> list[SceneSource]:
    """The other sources of the same kind of sensor whose footprints overlap this one, by date.

    Sentinel-2 L1C and L2A of any platform (2A, 2B…) pair up; Sentinel-1 pairs with
    Sentinel-1 (one embedding model must read both dates).

    Raises:
        UnknownSourceError: no such source.
    """
    return overlapping_in(ws.catalog().list(), ws.source(source_id))


def overlapping_in(sources: Iterable[SceneSource], source: SceneSource) -> list[SceneSource]:
    """:func:`overlapping_sources` among the given sources (a client's own catalogue)."""
    return sorted(
        (
            s
            for s in sources
            if s.id != source.id
            and _optical(s) == _optical(source)
            and overlap_share(source, s) > MIN_OVERLAP
        ),
        key=lambda s: (s.date, s.id),
    )


def _optical(source: SceneSource) -> bool:
    """Sentinel-2 (digital numbers) rather than Sentinel-1 backscatter."""
    return source.units == "dn"


def common_region(before: SceneSource, after: SceneSource, region: Region | None) -> Region:
    """The part of ``region`` (None: the whole overlap) where both sources have pixels.

    Raises:
        ChangeError: the sources do not overlap, or not inside the region.
    """
    overlap = before.footprint_lonlat.intersection(after.footprint_lonlat)
    if overlap.is_empty or overlap.area == 0:
        raise ChangeError(
            f"{before.id} and {after.id} do not overlap: pick two acquisitions of one place."
        )
    if region is None:
        return Region(_polygonal(overlap))
    clipped = region.geometry.intersection(overlap)
    if clipped.is_empty or clipped.area == 0:
        w, s, e, n = overlap.bounds
        raise ChangeError(
            f"The region {region.describe()} lies outside the overlap of {before.id} and "
            f"{after.id} ({w:.4f},{s:.4f},{e:.4f},{n:.4f}): choose a region inside it."
        )
    return Region(_polygonal(clipped))


def _polygonal(geom: Any) -> Polygon | MultiPolygon:
    """The polygons of an intersection (lines or points where footprints only touch dropped)."""
    if isinstance(geom, (Polygon, MultiPolygon)):
        return geom
    parts = [g for g in getattr(geom, "geoms", []) if isinstance(g, Polygon)]
    return MultiPolygon(parts) if len(parts) > 1 else parts[0]


def compare_dates(
    ws: Workspace,
    req: ChangeRequest,
    progress: Callable[[SceneSource], ProgressCallback | None] | None = None,
) -> ChangeMap:
    """Embed what the cache lacks for both dates, compare them, rank every matched tile.

    Args:
        ws: the workspace.
        req: the two sources, the region (clipped to where both have pixels), the model, k and
            an optional COG path.
        progress: gives each source's embedding a progress callback (the app's bars).

    Raises:
        ChangeError: same source twice, no overlap, no matching tiles.
        SoftMapError: from embedding (region, weights, cache).
    """
    if req.before == req.after:
        raise ChangeError(f"Before and after are both {req.before}: pick two acquisitions.")
    before, after = ws.source(req.before), ws.source(req.after)
    region = common_region(before, after, req.region.resolve())
    spec = RegionSpec.of(region)
    runs = [
        embed(
            ws,
            EmbedRequest(source=source.id, region=spec, model=req.model, engine=req.engine),
            progress=progress(source) if progress else None,
        )
        for source in (before, after)
    ]
    result = detect_region_change(ws, req.model_copy(update={"region": spec}))
    with ws.cache(read_only=True) as cache:
        records = {t["tile_id"]: t for t in cache.tiles([p.before for p in result.pairs])}
    order = sorted(range(len(result.pairs)), key=lambda i: -float(result.distances[i]))
    tiles = tuple(
        ChangedTile(
            rank=n + 1,
            before_tile=result.pairs[i].before,
            after_tile=result.pairs[i].after,
            lon=float(records[result.pairs[i].before]["lon"]),
            lat=float(records[result.pairs[i].before]["lat"]),
            distance=float(result.distances[i]),
            footprint=_footprint(records[result.pairs[i].before]),
        )
        for n, i in enumerate(order)
    )
    return ChangeMap(
        before=before,
        after=after,
        region=region,
        result=result,
        tiles=tiles,
        computed=sum(r.computed for r in runs),
        cached=sum(r.cached for r in runs),
    )


def _footprint(record: dict[str, Any]) -> dict[str, Any]:
    fp = record["footprint"]
    return json.loads(fp) if isinstance(fp, str) else dict(fp)
