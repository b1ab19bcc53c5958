"""The scene catalogue: every imagery source SoftMap can tile, with its grid and bands.

A source is described by a ``scene.json`` manifest next to its rasters (the bundled demo scenes
live in ``assets/scenes/<name>/``). The manifest names the 10 m reference grid that tiles are
aligned to, and for every band the file, band index and native resolution.
"""

from __future__ import annotations

import builtins
import json
import logging
from collections.abc import Iterable, Iterator
from functools import cached_property
from pathlib import Path
from typing import Literal

import shapely
from affine import Affine
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pyproj import CRS, Transformer
from shapely.geometry import Polygon, box, mapping
from shapely.geometry.base import BaseGeometry

from backend.errors import RasterReadError, UnknownSourceError
from backend.imagery.bands import canonical_band
from backend.settings import get_settings

_log = logging.getLogger(__name__)

ProductLevel = Literal["L1C", "L2A", "GRD"]
#: How pixel values are stored: Sentinel-2 digital numbers, or Sentinel-1 backscatter as linear
#: power (converted to dB when read) or already in dB.
Units = Literal["dn", "linear", "db"]
#: Prefix of bundled sources; registered sources may not use it.
BUNDLED_PREFIX = "demo/"


class BandAsset(BaseModel):
    """Where one band lives: a file (relative to the manifest) and a 1-based band index."""

    model_config = ConfigDict(frozen=True)

    name: str
    resolution_m: float
    file: str
    index: int = Field(default=1, ge=1)


class Grid(BaseModel):
    """The 10 m reference grid tiles are aligned to (rasterio affine order a, b, c, d, e, f)."""

    model_config = ConfigDict(frozen=True)

    transform: tuple[float, float, float, float, float, float]
    width: int = Field(gt=0)
    height: int = Field(gt=0)

    @property
    def affine(self) -> Affine:
        return Affine(*self.transform)

    @property
    def resolution(self) -> float:
        return float(abs(self.transform[0]))

    def bounds(self) -> tuple[float, float, float, float]:
        """Native-CRS bounds (left, bottom, right, top)."""
        a = self.affine
        left, top = a @ (0, 0)
        right, bottom = a @ (self.width, self.height)
        return (min(left, right), min(bottom, top), max(left, right), max(bottom, top))


class LabelLayer(BaseModel):
    """A categorical land-cover raster that comes with a scene (for evaluation and training)."""

    model_config = ConfigDict(frozen=True)

    name: str
    file: str
    nodata: int | None = 0
    legend: dict[str, str]
    mapping: str | None = Field(
        default=None,
        description="Class mapping to Dynamic World (backend.landcover.labels.MAPPINGS)",
    )
    license: str = ""
    attribution: str = ""
    note: str = ""


class SceneSource(BaseModel):
    """One scene: identity, acquisition, grid, bands and provenance."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    id: str
    title: str
    description: str = ""
    sensor: str
    product_level: ProductLevel
    date: str
    mgrs_tile: str | None = None
    crs: str
    nodata: float | None = 0
    dn_scale: float = 1e-4
    dn_offset: float = Field(
        default=0.0, description="Added to raw DN to harmonise to the pre-2022 L1C/L2A scale"
    )
    grid: Grid
    bands: tuple[BandAsset, ...]
    units: Units = Field(default="dn", description="dn (S2), linear or db (S1 backscatter)")
    scl: BandAsset | None = Field(
        default=None, description="L2A scene classification layer, used for the cloud fraction"
    )
    processing_baseline: str | None = None
    labels: tuple[LabelLayer, ...] = ()
    license: str = ""
    attribution: str = ""
    origin: str = ""
    caveats: tuple[str, ...] = ()
    root: Path = Field(description="Folder the band files are relative to")

    @property
    def band_names(self) -> tuple[str, ...]:
        return tuple(b.name for b in self.bands)

    @property
    def resolutions(self) -> dict[str, float]:
        return {b.name: b.resolution_m for b in self.bands}

    def band_path(self, band: BandAsset) -> Path:
        return self.root / band.file

    @cached_property
    def crs_obj(self) -> CRS:
        return CRS.from_user_input(self.crs)

    @cached_property
    def footprint_native(self) -> Polygon:
        return box(*self.grid.bounds())

    @cached_property
    def footprint_lonlat(self) -> Polygon:
        """The scene footprint in lon/lat (edges densified so the UTM square stays exact)."""
        return to_lonlat(self.footprint_native.segmentize(self.grid.resolution * 100), self.crs)

    @property
    def bbox_lonlat(self) -> tuple[float, float, float, float]:
        w, s, e, n = self.footprint_lonlat.bounds
        return (w, s, e, n)

    @property
    def size_km(self) -> tuple[float, float]:
        """Width and height of the scene in km."""
        left, bottom, right, top = self.grid.bounds()
        return (round((right - left) / 1000, 2), round((top - bottom) / 1000, 2))

    def summary(self) -> dict[str, object]:
        """A JSON-ready description (CLI ``softmap sources --json``, the app's sidebar)."""
        w, s, e, n = self.bbox_lonlat
        return {
            "id": self.id,
            "title": self.title,
            "sensor": self.sensor,
            "product_level": self.product_level,
            "date": self.date,
            "crs": self.crs,
            "bbox_lonlat": [round(w, 5), round(s, 5), round(e, 5), round(n, 5)],
            "size_km": list(self.size_km),
            "bands": {b.name: b.resolution_m for b in self.bands},
            "units": self.units,
            "dn_offset": self.dn_offset,
            "processing_baseline": self.processing_baseline,
            "scl": self.scl is not None,
            "root": str(self.root),
            "footprint": mapping(self.footprint_lonlat),
            "attribution": self.attribution,
            "license": self.license,
        }


def to_lonlat(geom: BaseGeometry, crs: str | CRS) -> Polygon:
    """Reproject a geometry from ``crs`` to EPSG:4326 (lon, lat order)."""
    tr = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    return shapely.transform(geom, lambda x, y: tr.transform(x, y), interleaved=False)


def from_lonlat(geom: BaseGeometry, crs: str | CRS) -> BaseGeometry:
    """Reproject a lon/lat geometry to ``crs``."""
    tr = Transformer.from_crs("EPSG:4326", crs, always_xy=True)
    return shapely.transform(geom, lambda x, y: tr.transform(x, y), interleaved=False)


def load_manifest(path: Path) -> SceneSource:
    """Read a ``scene.json`` manifest into a :class:`SceneSource`.

    Raises:
        RasterReadError: if the manifest is missing, not JSON, or does not describe a scene.
    """
    try:
        raw = json.loads(path.read_text())
        raw["root"] = path.parent
        raw["bands"] = [{**b, "name": canonical_band(b["name"])} for b in raw.get("bands", [])]
        return SceneSource.model_validate(raw)
    except FileNotFoundError as e:
        raise RasterReadError(f"Scene manifest {path} does not exist.") from e
    except (json.JSONDecodeError, ValidationError, KeyError, TypeError) as e:
        raise RasterReadError(f"Scene manifest {path} is not a valid scene description: {e}") from e


class SourceCatalog:
    """An immutable set of sources, looked up by id."""

    def __init__(self, sources: Iterable[SceneSource]) -> None:
        self._sources = {s.id: s for s in sources}

    def get(self, source_id: str) -> SceneSource:
        """The source with this id.

        Raises:
            UnknownSourceError: listing the ids that exist.
        """
        try:
            return self._sources[source_id]
        except KeyError:
            known = ", ".join(sorted(self._sources)) or "none"
            raise UnknownSourceError(
                f"There is no source '{source_id}'. Available sources: {known}."
            ) from None

    def list(self) -> builtins.list[SceneSource]:
        return [self._sources[k] for k in sorted(self._sources)]

    def __iter__(self) -> Iterator[SceneSource]:
        return iter(self.list())

    def __len__(self) -> int:
        return len(self._sources)

    def covering(self, geom_lonlat: BaseGeometry) -> builtins.list[SceneSource]:
        """Sources whose footprint intersects a lon/lat geometry."""
        return [s for s in self.list() if s.footprint_lonlat.intersects(geom_lonlat)]


def demo_catalog(assets_dir: Path | None = None) -> SourceCatalog:
    """The bundled demo scenes (``assets/scenes/*/scene.json``)."""
    root = (assets_dir or get_settings().assets_dir) / "scenes"
    return SourceCatalog(load_manifest(p) for p in sorted(root.glob("*/scene.json")))


def source_manifest(source: SceneSource) -> dict[str, object]:
    """The JSON form of a source, as stored for registered sources (``root`` absolute)."""
    out = source.model_dump(mode="json", include=set(SceneSource.model_fields))
    out["root"] = str(Path(source.root).resolve())
    return out


def source_from_manifest(raw: dict[str, object]) -> SceneSource:
    """Rebuild a source from :func:`source_manifest`'s output.

    Raises:
        RasterReadError: if the stored description no longer validates.
    """
    try:
        return SceneSource.model_validate(raw)
    except ValidationError as e:
        raise RasterReadError(f"A stored source description is not valid: {e}") from e
