"""STAC items as SoftMap sees them: asset → band mapping, product level, DN offset, and an
item turned into an ordinary :class:`~backend.imagery.sources.SceneSource` whose band files are COG
URLs.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pystac
import rasterio
from rasterio.errors import RasterioError

from backend.errors import (
    BandMismatchError,
    RasterReadError,
    StacItemError,
)
from backend.imagery.bands import S2_RESOLUTION_M, canonical_band
from backend.imagery.sources import BandAsset, Grid, ProductLevel, SceneSource

#: Earth Search v1 asset keys → band names (Planetary Computer uses B02…/SCL directly).
ASSET_BANDS: dict[str, str] = {
    "coastal": "B01", "blue": "B02", "green": "B03", "red": "B04", "rededge1": "B05",
    "rededge2": "B06", "rededge3": "B07", "nir": "B08", "nir08": "B8A", "nir09": "B09",
    "cirrus": "B10", "swir16": "B11", "swir22": "B12", "vv": "VV", "vh": "VH",
}  # fmt: skip

#: SCL classes that make a pixel unusable: no data, saturated, cloud shadow, cloud, cirrus.
SCL_UNUSABLE = (0, 1, 3, 8, 9, 10)

#: GDAL settings for remote COGs: no directory listing, only raster files, merged ranges.
REMOTE_GDAL_ENV = {
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".tif,.tiff,.TIF,.jp2,.vrt",
    "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",
    "GDAL_HTTP_MAX_RETRY": "3",
    "GDAL_HTTP_RETRY_DELAY": "1",
    "VSI_CACHE": "TRUE",
}


def configure_remote_gdal() -> None:
    """Set GDAL's remote-read options (environment defaults; explicit user values win)."""
    for key, value in REMOTE_GDAL_ENV.items():
        os.environ.setdefault(key, value)


# --- items ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class AssetRef:
    """One band file of an item: URL, and its pixel grid when the item says (proj extension)."""

    href: str
    shape: tuple[int, int] | None = None
    transform: tuple[float, float, float, float, float, float] | None = None


@dataclass(frozen=True)
class StacItem:
    """What SoftMap needs from a STAC item (bands by canonical name, SCL, acquisition)."""

    id: str
    collection: str
    datetime: str
    cloud_cover: float | None
    epsg: int | None
    bbox: tuple[float, float, float, float]
    geometry: dict[str, Any]
    bands: dict[str, AssetRef]
    product_level: ProductLevel
    scl: AssetRef | None = None
    mgrs_tile: str | None = None
    dn_offset: float = 0.0

    @property
    def date(self) -> str:
        return self.datetime[:10]

    @property
    def source_id(self) -> str:
        return f"stac/{self.collection}/{self.id}"

    def summary(self) -> dict[str, Any]:
        """JSON-ready description (``softmap stac search --json``)."""
        return {
            "id": self.id,
            "collection": self.collection,
            "datetime": self.datetime,
            "cloud_cover": self.cloud_cover,
            "mgrs_tile": self.mgrs_tile,
            "epsg": self.epsg,
            "product_level": self.product_level,
            "bands": sorted(self.bands),
            "scl": self.scl is not None,
            "bbox": list(self.bbox),
        }


def _band_name(key: str, asset: pystac.Asset) -> str | None:
    base = key.lower().removesuffix("-cog")
    if base in ASSET_BANDS:
        return ASSET_BANDS[base]
    try:
        return canonical_band(key)
    except BandMismatchError:
        pass
    for band in asset.extra_fields.get("eo:bands") or []:
        try:
            return canonical_band(str(band.get("name", "")))
        except BandMismatchError:
            continue
    return None


def _asset_ref(asset: pystac.Asset, sign: Callable[[str], str] | None) -> AssetRef:
    shape_ = asset.extra_fields.get("proj:shape")
    transform = asset.extra_fields.get("proj:transform")
    return AssetRef(
        href=sign(asset.href) if sign else asset.href,
        shape=(int(shape_[0]), int(shape_[1])) if shape_ else None,
        transform=tuple(float(v) for v in transform[:6]) if transform else None,  # type: ignore[arg-type]
    )


def _is_cog(asset: pystac.Asset) -> bool:
    media = (asset.media_type or "").lower()
    return "tiff" in media or asset.href.split("?")[0].lower().endswith((".tif", ".tiff"))


def _epsg(item: pystac.Item) -> int | None:
    props = item.properties
    if props.get("proj:epsg"):
        return int(props["proj:epsg"])
    code = str(props.get("proj:code") or "")
    if code.upper().startswith("EPSG:"):
        return int(code.split(":")[1])
    return None


def _product_level(item: pystac.Item, collection: str) -> ProductLevel:
    kind = f"{item.properties.get('s2:product_type', '')} {collection}".lower()
    if "sentinel-1" in kind or "grd" in kind or "rtc" in kind:
        return "GRD"
    if "2a" in kind:
        return "L2A"
    return "L1C"


def _dn_offset(item: pystac.Item, level: ProductLevel) -> float:
    """−1000 DN for processing baseline ≥ 04.00 (from 2022-01-25), unless already removed."""
    if level == "GRD":
        return 0.0
    props = item.properties
    if props.get("earthsearch:boa_offset_applied"):
        return 0.0
    baseline = str(props.get("s2:processing_baseline") or "")
    try:
        return -1000.0 if baseline and float(baseline) >= 4.0 else 0.0
    except ValueError:
        return 0.0


def item_from_stac(item: pystac.Item, sign: Callable[[str], str] | None = None) -> StacItem:
    """Read the bands, SCL, CRS and acquisition of a pystac item.

    Raises:
        StacItemError: if the item has no usable band assets.
    """
    collection = item.collection_id or "unknown"
    bands: dict[str, AssetRef] = {}
    scl: AssetRef | None = None
    for key, asset in item.assets.items():
        if key.lower() in ("scl", "scl-cog"):
            scl = _asset_ref(asset, sign)
            continue
        name = _band_name(key, asset)
        if name is None:
            continue
        # Earth Search lists every band twice (COG and JP2): prefer the COG.
        if name in bands and not _is_cog(asset):
            continue
        bands[name] = _asset_ref(asset, sign)
    if not bands:
        raise StacItemError(
            f"STAC item {item.id} ({collection}) has no Sentinel band assets "
            f"(assets: {', '.join(sorted(item.assets)) or 'none'})."
        )
    when = item.datetime or item.common_metadata.start_datetime
    level = _product_level(item, collection)
    cloud = item.properties.get("eo:cloud_cover")
    return StacItem(
        id=item.id,
        collection=collection,
        datetime=(when or datetime(1970, 1, 1, tzinfo=timezone.utc)).isoformat(),
        cloud_cover=float(cloud) if cloud is not None else None,
        epsg=_epsg(item),
        bbox=tuple(item.bbox or (0.0, 0.0, 0.0, 0.0)),  # type: ignore[arg-type]
        geometry=item.geometry or {},
        bands=bands,
        product_level=level,
        scl=scl,
        mgrs_tile=item.properties.get("s2:mgrs_tile") or item.properties.get("grid:code"),
        dn_offset=_dn_offset(item, level),
    )


# --- item → source -------------------------------------------------------------------------
def _reference_band(item: StacItem) -> tuple[str, AssetRef]:
    for name in ("B02", "B03", "B04", "B08", "VV", "VH"):
        if name in item.bands:
            return name, item.bands[name]
    name = min(item.bands, key=lambda b: S2_RESOLUTION_M.get(b, 10))
    return name, item.bands[name]


def _asset_grid(ref: AssetRef, epsg: int | None) -> tuple[str, Grid]:
    if ref.shape and ref.transform and epsg:
        h, w = ref.shape
        return f"EPSG:{epsg}", Grid(transform=ref.transform, width=w, height=h)
    configure_remote_gdal()
    try:
        with rasterio.open(ref.href) as ds:
            if ds.crs is None:
                raise StacItemError(f"{ref.href} has no CRS; SoftMap needs map-projected COGs.")
            t = ds.transform
            crs = ds.crs.to_string() if epsg is None else f"EPSG:{epsg}"
            return crs, Grid(transform=(t.a, t.b, t.c, t.d, t.e, t.f), width=ds.width,
                             height=ds.height)  # fmt: skip
    except (RasterioError, OSError) as e:
        raise RasterReadError(f"Cannot open {ref.href}: {e}") from e


def item_source(item: StacItem) -> SceneSource:
    """A scene source reading the item's COGs in place (windowed range reads).

    Raises:
        StacItemError: a Sentinel-1 item without a map projection (GRD in radar geometry).
    """
    _, ref = _reference_band(item)
    crs, grid = _asset_grid(ref, item.epsg)
    configure_remote_gdal()
    s1 = item.product_level == "GRD"
    return SceneSource(
        id=item.source_id,
        title=f"{item.collection} {item.id}",
        sensor="Sentinel-1" if s1 else "Sentinel-2",
        product_level=item.product_level,
        date=item.date,
        mgrs_tile=item.mgrs_tile,
        crs=crs,
        nodata=0,
        # Sentinel-1 STAC assets (e.g. Planetary Computer RTC) hold linear backscatter.
        units="linear" if s1 else "dn",
        dn_offset=item.dn_offset,
        grid=grid,
        bands=tuple(
            BandAsset(name=name, resolution_m=S2_RESOLUTION_M.get(name, 10), file=a.href)
            for name, a in sorted(item.bands.items())
        ),
        origin=f"STAC item {item.id} ({item.collection}, {item.datetime})",
        root=Path("."),
    )
