"""Regions of interest: parse a bbox or GeoJSON in EPSG:4326, validate it, check it against sources.

Every problem is reported as an :class:`~backend.errors.InvalidRegionError` (or a subclass) with a
message that says what is wrong and how to fix it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from pyproj import Geod, Transformer
from shapely.errors import GEOSException
from shapely.geometry import MultiPolygon, Polygon, box, mapping, shape
from shapely.geometry.base import BaseGeometry
from shapely.validation import explain_validity

from backend.errors import InvalidRegionError, RegionOutsideSourceError, RegionTooLargeError
from backend.imagery.sources import SceneSource, SourceCatalog

_GEOD = Geod(ellps="WGS84")
# Lambert cylindrical equal-area on the WGS84 ellipsoid: exact areas for lon/lat edges, and
# finite at the poles and at ±180°, where geodesic polygon areas break down (see lonlat_area_km2).
_EQUAL_AREA = Transformer.from_crs("EPSG:4326", "+proj=cea +ellps=WGS84 +units=m", always_xy=True)
#: Edges longer than this (degrees) are split before projecting to the equal-area plane.
_AREA_STEP_DEG = 0.01
_AREAL = ("Polygon", "MultiPolygon")


@dataclass(frozen=True)
class Region:
    """A validated lon/lat (EPSG:4326) polygon or multipolygon."""

    geometry: Polygon | MultiPolygon

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        w, s, e, n = self.geometry.bounds
        return (w, s, e, n)

    @property
    def area_km2(self) -> float:
        """Area on the WGS84 ellipsoid, in km² (edges straight in lon/lat, as tiles read them)."""
        return lonlat_area_km2(self.geometry)

    def to_geojson(self) -> dict[str, Any]:
        return dict(mapping(self.geometry))

    def describe(self) -> str:
        w, s, e, n = self.bounds
        return f"{w:.4f},{s:.4f},{e:.4f},{n:.4f} ({self.area_km2:,.1f} km²)"


def geodesic_area_km2(geom: BaseGeometry) -> float:
    """Area of a small lon/lat geometry (edges as geodesics) on the WGS84 ellipsoid, in km².

    Geodesic polygon areas wrap beyond half the Earth and make no sense for edges along ±180°
    or a pole: use :func:`lonlat_area_km2` for anything a user draws or types.
    """
    area, _ = _GEOD.geometry_area_perimeter(geom)
    return abs(float(area)) / 1e6


def lonlat_area_km2(geom: BaseGeometry) -> float:
    """Area of a lon/lat geometry whose edges are straight in lon/lat, in km² (WGS84).

    Exact for bboxes of any size (the whole world is 510,065,622 km²): edges are split every
    0.01° and the geometry is measured in a cylindrical equal-area projection, where parallels
    and meridians stay straight.
    """
    if geom.is_empty:
        return 0.0
    fine = geom.segmentize(_AREA_STEP_DEG)
    flat = shapely.transform(
        fine, lambda xy: np.column_stack(_EQUAL_AREA.transform(xy[:, 0], xy[:, 1]))
    )
    return float(flat.area) / 1e6


def parse_bbox(text: str) -> Region:
    """Parse ``"W,S,E,N"`` (degrees, lon/lat) into a region.

    Raises:
        InvalidRegionError: for a malformed, inverted or out-of-range bbox.
    """
    parts = [p for p in text.replace(" ", ",").split(",") if p]
    if len(parts) != 4:
        raise InvalidRegionError(
            f"A bbox needs four numbers W,S,E,N (lon/lat degrees), got '{text}'. "
            "Example: -75.66,37.64,-75.60,37.69"
        )
    try:
        w, s, e, n = (float(p) for p in parts)
    except ValueError:
        raise InvalidRegionError(
            f"The bbox '{text}' contains something that is not a number."
        ) from None
    if not all(math.isfinite(v) for v in (w, s, e, n)):
        raise InvalidRegionError(f"The bbox '{text}' contains a non-finite number.")
    _check_lonlat_range([(w, s), (e, n)], what="bbox")
    if w >= e or s >= n:
        raise InvalidRegionError(
            f"The bbox '{text}' is empty or inverted: it must be W,S,E,N with W < E and S < N."
        )
    return _with_area(Region(box(w, s, e, n)), f"The bbox '{text}'")


def parse_geojson(data: str | bytes | dict[str, Any]) -> Region:
    """Parse GeoJSON (Polygon, MultiPolygon, Feature or FeatureCollection) in EPSG:4326.

    A FeatureCollection becomes the union of its polygons.

    Raises:
        InvalidRegionError: for invalid JSON, unsupported or invalid geometry, or a non-4326 CRS.
    """
    if isinstance(data, (str, bytes)):
        try:
            obj = json.loads(data)
        except json.JSONDecodeError as e:
            raise InvalidRegionError(
                f"The region is not valid JSON ({e.msg} at line {e.lineno})."
            ) from e
        except UnicodeDecodeError as e:
            raise InvalidRegionError(f"The region is not text in UTF-8 ({e.reason}).") from e
    else:
        obj = data
    if not isinstance(obj, dict) or "type" not in obj:
        raise InvalidRegionError("The region is not a GeoJSON object (it has no 'type').")
    _check_crs_member(obj)
    geoms = _collect_geometries(obj)
    if not geoms:
        raise InvalidRegionError("The GeoJSON contains no geometry.")
    polys: list[Polygon] = []
    for g in geoms:
        gtype = g.get("type")
        if gtype not in _AREAL:
            hint = (
                " A point is not a region: draw a rectangle or polygon." if gtype == "Point" else ""
            )
            raise InvalidRegionError(
                f"Unsupported geometry type '{gtype}': "
                f"a region must be a Polygon or MultiPolygon.{hint}"
            )
        try:
            geom = shape(g)
        except (ValueError, TypeError, AttributeError, IndexError, GEOSException) as e:
            raise InvalidRegionError(f"The {gtype} coordinates are malformed ({e}).") from e
        if geom.is_empty:
            raise InvalidRegionError(f"The {gtype} is empty.")
        _check_lonlat_range(_coords(geom), what=gtype)
        if not geom.is_valid:
            raise InvalidRegionError(
                f"The {gtype} is not a valid geometry: {explain_validity(geom)}. "
                "Fix self-intersections or unclosed rings and try again."
            )
        polys.extend(geom.geoms if isinstance(geom, MultiPolygon) else [geom])
    merged = polys[0] if len(polys) == 1 else MultiPolygon(polys).buffer(0)
    if merged.is_empty or merged.area == 0:
        raise InvalidRegionError("The region has zero area.")
    if not isinstance(merged, (Polygon, MultiPolygon)):
        raise InvalidRegionError("The region does not form a polygon.")
    return _with_area(Region(merged), "The region")


def load_aoi(path: str | Path) -> Region:
    """Read a GeoJSON file as a region.

    Raises:
        InvalidRegionError: if the file cannot be read or is not a valid region.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InvalidRegionError(f"The AOI file {p} does not exist.") from None
    except (OSError, UnicodeDecodeError) as e:
        raise InvalidRegionError(f"The AOI file {p} cannot be read as text: {e}.") from e
    return parse_geojson(text)


def check_area(region: Region, max_km2: float) -> None:
    """Refuse regions above the configured area limit.

    Raises:
        RegionTooLargeError: with the area and the limit.
    """
    area = region.area_km2
    if area > max_km2:
        raise RegionTooLargeError(
            f"The region covers {area:,.0f} km², more than the limit of {max_km2:,.0f} km². "
            "Choose a smaller region, or raise the limit with SOFTMAP_MAX_REGION_KM2."
        )


def check_overlap(
    region: Region, source: SceneSource, catalog: SourceCatalog | None = None
) -> None:
    """Refuse regions that do not touch the chosen source's footprint.

    Raises:
        RegionOutsideSourceError: naming which sources cover the region, or what each covers.
    """
    if source.footprint_lonlat.intersects(region.geometry):
        return
    msg = f"The region {region.describe()} does not overlap {source.id} ({_bbox_text(source)})."
    if catalog is not None:
        covering = [s.id for s in catalog.covering(region.geometry) if s.id != source.id]
        if covering:
            msg += f" Sources that cover it: {', '.join(covering)}."
        else:
            others = "; ".join(f"{s.id} covers {_bbox_text(s)}" for s in catalog.list())
            msg += f" No source covers it: {others}."
    raise RegionOutsideSourceError(msg)


def validate_region(
    region: Region, source: SceneSource, *, max_km2: float, catalog: SourceCatalog | None = None
) -> Region:
    """All region checks in order: overlap with the source, then the area limit.

    Overlap first: a region far away is "outside the scene" whatever its size (issue 12).
    """
    check_overlap(region, source, catalog)
    check_area(region, max_km2)
    return region


def _bbox_text(source: SceneSource) -> str:
    w, s, e, n = source.bbox_lonlat
    return f"lon {w:.3f}…{e:.3f}, lat {s:.3f}…{n:.3f}"


def _collect_geometries(obj: dict[str, Any]) -> list[dict[str, Any]]:
    kind = obj.get("type")
    if kind == "FeatureCollection":
        features = obj.get("features")
        if not isinstance(features, list):
            raise InvalidRegionError("The FeatureCollection has no 'features' list.")
        out: list[dict[str, Any]] = []
        for f in features:
            if not isinstance(f, dict):
                raise InvalidRegionError("A FeatureCollection member is not a Feature object.")
            out.extend(_collect_geometries(f))
        return out
    if kind == "Feature":
        geom = obj.get("geometry")
        if geom is None:
            return []
        if not isinstance(geom, dict):
            raise InvalidRegionError("The Feature's 'geometry' is not a GeoJSON geometry.")
        return _collect_geometries(geom)
    if kind == "GeometryCollection":
        members = obj.get("geometries")
        if not isinstance(members, list) or not all(isinstance(g, dict) for g in members):
            raise InvalidRegionError("The GeometryCollection has no 'geometries' list of objects.")
        return [g for sub in members for g in _collect_geometries(sub)]
    if kind in _AREAL or kind in ("Point", "MultiPoint", "LineString", "MultiLineString"):
        if "coordinates" not in obj:
            raise InvalidRegionError(f"The {kind} has no 'coordinates'.")
        return [obj]
    raise InvalidRegionError(f"'{kind}' is not a GeoJSON type SoftMap understands.")


def _check_crs_member(obj: dict[str, Any]) -> None:
    crs = obj.get("crs")
    if not crs:
        return
    name = str(crs.get("properties", {}).get("name", "")) if isinstance(crs, dict) else str(crs)
    if not any(tag in name.upper() for tag in ("4326", "CRS84")):
        raise InvalidRegionError(
            f"The GeoJSON declares CRS '{name}'. Regions must be lon/lat in EPSG:4326; "
            "reproject it first (e.g. ogr2ogr -t_srs EPSG:4326)."
        )


def _coords(geom: BaseGeometry) -> list[tuple[float, float]]:
    polys = geom.geoms if isinstance(geom, MultiPolygon) else [geom]
    out: list[tuple[float, float]] = []
    for p in polys:
        for ring in (p.exterior, *p.interiors):
            out.extend((float(x), float(y)) for x, y, *_ in ring.coords)
    return out


def _check_lonlat_range(points: list[tuple[float, float]], *, what: str) -> None:
    for lon, lat in points:
        if not (-180.0 <= lon <= 180.0 and -90.0 <= lat <= 90.0):
            hint = (
                " These look like projected coordinates (e.g. UTM metres): give lon/lat degrees."
                if abs(lon) > 360 or abs(lat) > 360
                else " Longitude must be within ±180 and latitude within ±90 (lon, lat order)."
            )
            raise InvalidRegionError(
                f"The {what} has a coordinate ({lon:g}, {lat:g}) outside lon/lat range.{hint}"
            )


def parse_point(text: str) -> tuple[float, float]:
    """Parse ``"LON,LAT"`` (degrees) into a lon/lat pair.

    Raises:
        InvalidRegionError: not two finite numbers, or outside lon/lat range.
    """
    parts = [p.strip() for p in str(text).split(",")]
    try:
        lon, lat = (float(p) for p in parts)
    except ValueError:
        raise InvalidRegionError(
            f"A point is LON,LAT (two numbers in degrees, e.g. -75.64,37.65), not '{text}'.",
            title="Invalid point",
        ) from None
    if not (math.isfinite(lon) and math.isfinite(lat)):
        raise InvalidRegionError(
            f"The point '{text}' contains a non-finite number.", title="Invalid point"
        )
    try:
        _check_lonlat_range([(lon, lat)], what="point")
    except InvalidRegionError as e:
        raise InvalidRegionError(e.message, title="Invalid point") from None
    return lon, lat


def point_region(lon: float, lat: float, half_size_m: float) -> Region:
    """A square region of ``2 * half_size_m`` metres a side centred on a lon/lat point.

    Raises:
        InvalidRegionError: the point is outside lon/lat range or the size is not positive.
    """
    _check_lonlat_range([(lon, lat)], what="point")
    if not (math.isfinite(half_size_m) and half_size_m > 0):
        raise InvalidRegionError(
            f"A region around a point needs a positive size, not {half_size_m}."
        )
    lon_w, _, _ = _GEOD.fwd(lon, lat, 270.0, half_size_m)
    lon_e, _, _ = _GEOD.fwd(lon, lat, 90.0, half_size_m)
    _, lat_s, _ = _GEOD.fwd(lon, lat, 180.0, half_size_m)
    _, lat_n, _ = _GEOD.fwd(lon, lat, 0.0, half_size_m)
    w, s, e, n = lon_w, max(lat_s, -90.0), lon_e, min(lat_n, 90.0)
    if not (w < e and s < n):
        raise InvalidRegionError(
            f"A square of {2 * half_size_m:g} m around ({lon:g}, {lat:g}) is too small or too "
            "close to a pole to be a region."
        )
    return _with_area(Region(box(w, s, e, n)), f"The square around ({lon:g}, {lat:g})")


#: Smallest region accepted, km² (1 m²): below it, areas are rounding noise.
MIN_REGION_KM2 = 1e-6


def _with_area(region: Region, what: str) -> Region:
    if not region.geometry.is_valid or region.area_km2 < MIN_REGION_KM2:
        raise InvalidRegionError(
            f"{what} covers less than 1 m²: give a region of at least one pixel (10 m)."
        )
    return region
