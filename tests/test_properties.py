"""Property-based tests of every parser of user input: a valid result or a SoftMapError, never else.

Budgets are small enough for CI (profile ``ci``, the default: derandomised, no example database
written into the tree); ``SOFTMAP_HYPOTHESIS_PROFILE=dev`` explores ten times more.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backend.errors import SoftMapError
from backend.imagery.bands import canonical_band, canonical_bands
from backend.imagery.regions import (
    Region,
    load_aoi,
    parse_bbox,
    parse_geojson,
    parse_point,
    point_region,
)
from backend.imagery.stac import parse_dates
from backend.imagery.tiling import parse_tile_id

settings.register_profile(
    "ci",
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", max_examples=600, deadline=None, database=None)
settings.load_profile(os.environ.get("SOFTMAP_HYPOTHESIS_PROFILE", "ci"))


def valid_or_softmap_error(fn: Callable[[], Any]) -> Any:
    """Call ``fn``; a SoftMapError (with a message) is an accepted answer, anything else raised
    fails the test. Returns the result, or None for a refusal."""
    refusal: SoftMapError | None = None
    try:
        return fn()
    except SoftMapError as e:
        refusal = e
    assert refusal.message.strip() and "\n" not in refusal.one_line()
    return None


# --- numbers and coordinates ----------------------------------------------------------------
numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(-200, 200),
    st.integers(-1000, 1000),
)
lon = st.floats(-180, 180, allow_nan=False)
lat = st.floats(-90, 90, allow_nan=False)
number_text = st.one_of(
    numbers.map(str),
    st.sampled_from(["", " ", "nan", "-inf", "1e400", "0x10", "1,5", "١٢", "--1", "1e-400"]),
    st.text(max_size=8),
)


@given(st.lists(number_text, min_size=0, max_size=6), st.sampled_from([",", " ", ", ", ";"]))
def test_bbox_text_is_a_region_or_refused(parts: list[str], sep: str) -> None:
    region = valid_or_softmap_error(lambda: parse_bbox(sep.join(parts)))
    if region is not None:
        w, s, e, n = region.bounds
        assert -180 <= w < e <= 180 and -90 <= s < n <= 90
        assert region.area_km2 > 0 and math.isfinite(region.area_km2)


@given(st.tuples(lon, lon).map(sorted), st.tuples(lat, lat).map(sorted))
def test_bbox_area_is_positive_and_at_most_the_earth(xs: list[float], ys: list[float]) -> None:
    (w, e), (s, n) = xs, ys
    region = valid_or_softmap_error(lambda: parse_bbox(f"{w!r},{s!r},{e!r},{n!r}"))
    if region is not None:
        assert 0 < region.area_km2 <= 510_065_622 * (1 + 1e-9)


def test_whole_world_bbox_has_the_earths_area() -> None:
    assert parse_bbox("-180,-90,180,90").area_km2 == pytest.approx(510_065_622, rel=1e-6)
    # Any band round the globe (geodesic polygon areas wrap or vanish here).
    assert parse_bbox("-180,-80,180,80").area_km2 == pytest.approx(502_248_476, rel=1e-6)


@given(st.one_of(st.tuples(numbers, numbers).map(lambda t: f"{t[0]},{t[1]}"), number_text))
def test_point_text_is_a_position_or_refused(text: str) -> None:
    point = valid_or_softmap_error(lambda: parse_point(text))
    if point is not None:
        x, y = point
        assert -180 <= x <= 180 and -90 <= y <= 90


@given(numbers, numbers, st.one_of(numbers, st.floats(1, 50_000)))
def test_point_region_is_a_square_or_refused(x: float, y: float, half: float) -> None:
    region = valid_or_softmap_error(lambda: point_region(float(x), float(y), float(half)))
    if region is not None:
        assert isinstance(region, Region) and region.geometry.is_valid


# --- GeoJSON of every type ------------------------------------------------------------------
position = st.one_of(
    st.tuples(lon, lat).map(list),
    st.lists(numbers, min_size=0, max_size=4),
    st.tuples(st.floats(-1e7, 1e7), st.floats(-1e7, 1e7)).map(list),  # projected metres
)


def ring(closed: bool) -> st.SearchStrategy[list[Any]]:
    def close(pts: list[Any]) -> list[Any]:
        return [*pts, pts[0]] if closed and pts else pts

    return st.lists(position, min_size=0, max_size=6).map(close)


def box_ring(t: tuple[float, float, float, float]) -> list[list[float]]:
    w, s, dx, dy = t
    e, n = min(w + dx, 180.0), min(s + dy, 90.0)
    return [[w, s], [e, s], [e, n], [w, n], [w, s]]


small_box = st.tuples(
    st.floats(-179, 170), st.floats(-89, 80), st.floats(1e-4, 5), st.floats(1e-4, 5)
).map(box_ring)
polygon_coords = st.one_of(
    st.lists(st.one_of(small_box, ring(True), ring(False)), min_size=0, max_size=3),
    st.just([]),
    numbers,
    st.text(max_size=5),
)
geometry_types = st.sampled_from(
    ["Point", "MultiPoint", "LineString", "MultiLineString", "Polygon", "MultiPolygon",
     "GeometryCollection", "Circle", "polygon", ""]
)  # fmt: skip


@st.composite
def geometries(draw: st.DrawFn, depth: int = 0) -> dict[str, Any]:
    kind = draw(geometry_types)
    if kind == "Point":
        coords: Any = draw(position)
    elif kind in ("MultiPoint", "LineString"):
        coords = draw(st.lists(position, max_size=4))
    elif kind == "MultiLineString":
        coords = draw(st.lists(st.lists(position, max_size=3), max_size=3))
    elif kind in ("Polygon", "polygon", "Circle", ""):
        coords = draw(polygon_coords)
    elif kind == "MultiPolygon":
        coords = draw(st.lists(polygon_coords, max_size=3))
    else:  # GeometryCollection
        inner = st.lists(geometries(depth + 1), max_size=3) if depth < 2 else st.just([])
        return {"type": kind, "geometries": draw(inner)}
    obj: dict[str, Any] = {"type": kind, "coordinates": coords}
    if draw(st.booleans()) and draw(st.booleans()):
        del obj["coordinates"]
    return obj


crs_members = st.one_of(
    st.none(),
    st.just({"type": "name", "properties": {"name": "urn:ogc:def:crs:OGC:1.3:CRS84"}}),
    st.just({"type": "name", "properties": {"name": "EPSG:32618"}}),
    st.just("EPSG:4326"),
    st.integers(),
)


@st.composite
def geojson_objects(draw: st.DrawFn) -> Any:
    geom = geometries()
    feature = st.builds(
        lambda g, p: {"type": "Feature", "geometry": g, "properties": p},
        st.one_of(geom, st.none(), st.integers(), st.text(max_size=3)),
        st.one_of(st.none(), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2)),
    )
    collection = st.builds(
        lambda fs: {"type": "FeatureCollection", "features": fs},
        st.one_of(st.lists(st.one_of(feature, geom, st.integers()), max_size=3), st.none()),
    )
    obj = draw(st.one_of(geom, feature, collection))
    crs = draw(crs_members)
    if crs is not None:
        obj["crs"] = crs
    return draw(st.one_of(st.just(obj), st.just([obj]), st.just({"no": "type"}), st.none()))


@given(geojson_objects(), st.booleans())
@settings(max_examples=150)
def test_geojson_is_a_region_or_refused(obj: Any, as_text: bool) -> None:
    data: Any = json.dumps(obj) if as_text else obj
    region = valid_or_softmap_error(lambda: parse_geojson(data))
    if region is not None:
        assert region.geometry.is_valid and not region.geometry.is_empty
        assert region.geometry.geom_type in ("Polygon", "MultiPolygon")
        w, s, e, n = region.bounds
        assert -180 <= w <= e <= 180 and -90 <= s <= n <= 90
        assert region.area_km2 > 0


@given(st.one_of(st.text(max_size=60), st.binary(max_size=60)))
def test_geojson_text_that_is_not_json_is_refused(data: str | bytes) -> None:
    valid_or_softmap_error(lambda: parse_geojson(data))


@pytest.mark.parametrize(
    "obj",
    [
        {"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]]]},  # bowtie
        {"type": "Polygon", "coordinates": [[[0, 0], [0, 0], [0, 0], [0, 0]]]},  # zero area
        {"type": "Polygon", "coordinates": [[[500000, 4100000], [500100, 4100000],
                                             [500100, 4100100], [500000, 4100000]]]},  # UTM
        {"type": "Polygon", "coordinates": [[["a", "b"], ["c", "d"], ["e", "f"], ["a", "b"]]]},
        {"type": "Polygon", "coordinates": [[[math.nan, 0], [1, 0], [1, 1], [math.nan, 0]]]},
        {"type": "Point", "coordinates": [0, 0]},
        {"type": "GeometryCollection", "geometries": []},
        {"type": "GeometryCollection", "geometries": None},
        {"type": "Feature", "geometry": None},
        {"type": "FeatureCollection", "features": []},
        {"type": "Topology"},
        {"type": None},
        {"type": ["Polygon"]},
    ],
)  # fmt: skip
def test_edge_case_geojson_is_refused_with_a_message(obj: dict[str, Any]) -> None:
    with pytest.raises(SoftMapError):
        parse_geojson(obj)


@pytest.mark.parametrize(
    "coords",
    [
        [[[0, 0], [1, 0], [1, 1]]],  # an unclosed ring is closed
        [[[0, 0, 5], [1, 0, 5], [1, 1, 5], [0, 0, 5]]],  # heights are ignored
    ],
)
def test_lenient_geojson_is_accepted(coords: list[Any]) -> None:
    assert parse_geojson({"type": "Polygon", "coordinates": coords}).area_km2 > 0


@given(st.binary(max_size=200))
def test_aoi_file_of_any_bytes_is_a_region_or_refused(tmp_path_factory: Any, data: bytes) -> None:
    path = Path(tmp_path_factory.mktemp("aoi")) / "aoi.geojson"
    path.write_bytes(data)
    valid_or_softmap_error(lambda: load_aoi(path))


def test_aoi_that_is_a_folder_or_missing_is_refused(tmp_path: Path) -> None:
    for path in (tmp_path, tmp_path / "missing.geojson"):
        with pytest.raises(SoftMapError):
            load_aoi(path)


# --- bands, dates, ids, names ---------------------------------------------------------------
band_text = st.one_of(
    st.sampled_from(["B1", "b01", "B8A", "b8a", "B10", "B13", "B00", "VV", "vh", "HH", " B02 "]),
    st.text(max_size=5),
)


@given(st.lists(band_text, max_size=8))
def test_band_lists_are_canonical_or_refused(names: list[str]) -> None:
    bands = valid_or_softmap_error(lambda: canonical_bands(",".join(names).split(",")))
    if bands is not None:
        assert all(canonical_band(b) == b for b in bands)


date_part = st.one_of(
    st.dates().map(str),
    st.sampled_from(["..", "", "2024-02-30", "2024-13-01", "24-01-01", "2024/01/01", "today"]),
    st.text(max_size=11),
)


@given(st.lists(date_part, min_size=1, max_size=3))
def test_dates_are_an_interval_or_refused(parts: list[str]) -> None:
    text = "/".join(parts)
    interval = valid_or_softmap_error(lambda: parse_dates(text))
    if interval is not None:
        ends = interval.split("/")
        assert 1 <= len(ends) <= 2
        known = [e for e in ends if e != ".."]
        assert known == sorted(known)


tile_id_text = st.one_of(
    st.builds(
        lambda src, chip, stride, r, c: f"{src}/{chip}/{stride}/{r}_{c}",
        st.sampled_from(["demo/virginia", "local/x", "", "a//b"]),
        st.integers(-5, 300),
        st.integers(-5, 300),
        st.integers(-3, 50),
        st.integers(-3, 50),
    ),
    st.text(max_size=30),
)


@given(tile_id_text)
def test_tile_ids_parse_or_are_refused(text: str) -> None:
    parsed = valid_or_softmap_error(lambda: parse_tile_id(text))
    if parsed is not None:
        source, chip, stride, row, col = parsed
        assert f"{source}/{chip}/{stride}/{row}_{col}" == text
        assert min(chip, stride, row, col) >= 0


@given(st.text(max_size=120))
@settings(max_examples=40)
def test_class_names_are_kept_or_refused(embedded_db: Path, name: str) -> None:
    from backend.classes.user_classes import _check_name

    clean = valid_or_softmap_error(lambda: _check_name(name))
    if clean is not None:
        assert clean == name.strip() and 1 <= len(clean) <= 100


@given(st.text(max_size=40))
def test_source_and_model_ids_resolve_or_are_refused(text: str) -> None:
    from backend.imagery.sources import demo_catalog
    from backend.models.registry import default_registry
    from backend.settings import ASSETS_DIR

    valid_or_softmap_error(lambda: demo_catalog(ASSETS_DIR).get(text))
    valid_or_softmap_error(lambda: default_registry.get(text))


@given(st.one_of(st.sampled_from(["auto", "cpu", "cuda", "cuda:7", "mps", "CPU", "gpu", ""]),
                 st.text(max_size=10)))  # fmt: skip
def test_device_names_resolve_or_are_refused(text: str) -> None:
    from backend.models.inference import select_device

    valid_or_softmap_error(lambda: select_device(text))


@given(st.text(max_size=30))
def test_registered_source_ids_are_checked(text: str) -> None:
    from backend.imagery.scene_import import _check_id

    valid_or_softmap_error(lambda: _check_id(text))


# --- the CLI's argparse types: a value or argparse's one-line refusal ------------------------
@given(number_text)
def test_numeric_option_types_never_reinterpret(text: str) -> None:
    import argparse

    from backend.cli.validation import fraction, non_negative_int, positive_float, positive_int

    for parse, ok in (
        (positive_int, lambda v: isinstance(v, int) and v >= 1),
        (non_negative_int, lambda v: isinstance(v, int) and v >= 0),
        (fraction, lambda v: 0.0 <= v <= 1.0),
        (positive_float, lambda v: v > 0 and math.isfinite(v)),
    ):
        try:
            value = parse(text)
        except argparse.ArgumentTypeError as e:
            message = str(e)
        else:
            assert ok(value), (parse, text, value)
            continue
        assert message and "\n" not in message
