"""Region parsing and validation: every bad input gets a clear InvalidRegionError."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from backend.errors import InvalidRegionError, RegionOutsideSourceError, RegionTooLargeError
from backend.imagery.regions import check_area, load_aoi, parse_bbox, parse_geojson, validate_region
from backend.imagery.sources import SceneSource, SourceCatalog

SQUARE = [[-75.66, 37.64], [-75.62, 37.64], [-75.62, 37.67], [-75.66, 37.67], [-75.66, 37.64]]


def test_bbox_parses_and_has_geodesic_area() -> None:
    r = parse_bbox("-75.66, 37.64, -75.62, 37.67")
    assert r.bounds == pytest.approx((-75.66, 37.64, -75.62, 37.67))
    # 0.04° lon × cos(37.655°) × 111.32 km ≈ 3.524 km; 0.03° lat ≈ 3.330 km.
    assert r.area_km2 == pytest.approx(3.524 * 3.330, rel=0.01)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("1,2,3", "four numbers"),
        ("a,b,c,d", "not a number"),
        ("-75.6,37.7,-75.7,37.6", "inverted"),
        ("-75,37,-75,38", "inverted"),
        ("-190,37,-75,38", "outside lon/lat range"),
        ("435730,4179460,445730,4189460", "projected"),
        ("nan,1,2,3", "non-finite"),
    ],
)
def test_bad_bbox(text: str, fragment: str) -> None:
    with pytest.raises(InvalidRegionError, match=fragment):
        parse_bbox(text)


def test_geojson_kinds_all_parse() -> None:
    poly = {"type": "Polygon", "coordinates": [SQUARE]}
    feature = {"type": "Feature", "properties": {}, "geometry": poly}
    shifted = [[x + 0.1, y] for x, y in SQUARE]
    multi = {"type": "MultiPolygon", "coordinates": [[SQUARE], [shifted]]}
    fc = {
        "type": "FeatureCollection",
        "features": [
            feature,
            {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [shifted]}},
        ],
    }
    a = parse_geojson(poly).area_km2
    assert parse_geojson(json.dumps(feature)).area_km2 == pytest.approx(a)
    assert parse_geojson(multi).area_km2 == pytest.approx(2 * a, rel=1e-3)
    assert parse_geojson(fc).area_km2 == pytest.approx(2 * a, rel=1e-3)


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "not a GeoJSON object"),
        ({"type": "Point", "coordinates": [-75.6, 37.6]}, "A point is not a region"),
        ({"type": "LineString", "coordinates": [[0, 0], [1, 1]]}, "Unsupported geometry type"),
        ({"type": "Polygon"}, "no 'coordinates'"),
        ({"type": "Polygon", "coordinates": [[[0, 0], [1, 1]]]}, "malformed"),
        (
            {"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]]]},
            "not a valid geometry: Self-intersection",
        ),
        ({"type": "FeatureCollection", "features": []}, "contains no geometry"),
        ({"type": "Feature", "geometry": None}, "contains no geometry"),
        ({"type": "Topology"}, "not a GeoJSON type"),
        (
            {
                "type": "Polygon",
                "crs": {"type": "name", "properties": {"name": "EPSG:32618"}},
                "coordinates": [SQUARE],
            },
            "EPSG:32618",
        ),
        (
            {"type": "Polygon", "coordinates": [[[0, 0], [200, 0], [200, 1], [0, 0]]]},
            "outside lon/lat range",
        ),
    ],
)
def test_bad_geojson(data: object, fragment: str) -> None:
    with pytest.raises(InvalidRegionError, match=fragment):
        parse_geojson(data if isinstance(data, str) else json.dumps(data))


def test_aoi_file_errors(tmp_path: Path) -> None:
    with pytest.raises(InvalidRegionError, match="does not exist"):
        load_aoi(tmp_path / "missing.geojson")
    binary = tmp_path / "binary.geojson"
    binary.write_bytes(b"\xff\xfe\x00\x01garbage")
    with pytest.raises(InvalidRegionError, match="cannot be read as text"):
        load_aoi(binary)
    good = tmp_path / "aoi.geojson"
    good.write_text(json.dumps({"type": "Polygon", "coordinates": [SQUARE]}))
    assert load_aoi(good).area_km2 > 10


def test_area_limit_is_configurable() -> None:
    big = parse_bbox("-76.5,37.0,-75.0,38.0")  # ~13,000 km²
    with pytest.raises(RegionTooLargeError, match="limit of 2,500 km²"):
        check_area(big, 2500)
    check_area(big, 20000)


def test_region_outside_source_names_covering_source(
    virginia: SceneSource, catalog: SourceCatalog
) -> None:
    in_brandenburg = parse_bbox("12.60,52.48,12.63,52.495")
    with pytest.raises(RegionOutsideSourceError, match="Sources that cover it: demo/brandenburg"):
        validate_region(in_brandenburg, virginia, max_km2=2500, catalog=catalog)
    pacific = parse_bbox("-150,10,-149.9,10.1")
    with pytest.raises(
        RegionOutsideSourceError, match="No source covers it: demo/brandenburg covers"
    ):
        validate_region(pacific, virginia, max_km2=2500, catalog=catalog)


def test_region_partly_outside_is_accepted(virginia: SceneSource) -> None:
    w, s, _, _ = virginia.bbox_lonlat
    straddling = parse_bbox(f"{w - 0.02},{s - 0.02},{w + 0.02},{s + 0.02}")
    validate_region(straddling, virginia, max_km2=2500)
