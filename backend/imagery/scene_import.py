"""The user's own imagery as a :class:`~backend.imagery.sources.SceneSource` (``softmap sources
add``).

Three layouts are recognised:

- a Sentinel-2 ``.SAFE`` folder (``MTD_MSIL1C.xml``/``MTD_MSIL2A.xml`` and
  ``GRANULE/*/IMG_DATA/**/*_B02*.jp2``): level, date, processing baseline and the radiometric
  offset come from the metadata; L2A's ``SCL`` layer is used for the cloud fraction;
- a folder of one file per band (GeoTIFF or JPEG 2000, named ``*_B02.jp2``, ``B02.tif``,
  ``T33UUU_20170216T102101_B8A_20m.jp2``, ``*_VV.tif``, ``SCL.tif`` …);
- one multi-band GeoTIFF/COG whose band descriptions name the bands (``B01``…``B12``,
  ``VV``/``VH``), or any multi-band file with an explicit band list;
- a BigEarthNet patch folder (Sentinel-1 ``*_VV.tif``/``*_VH.tif`` or Sentinel-2 bands, with
  ``*_labels_metadata.json``): date, MGRS tile, title and CORINE labels come from the JSON
  (:mod:`backend.imagery.bigearthnet`);
- a plain pair of single-band Sentinel-1 files (VV and VH), named ``*_VV.tif``/``*_VH.tif``, or
  described ``VV``/``VH``, or in the order of an explicit band list.

Sentinel-2 needs all 13 L1C bands, or the 12 L2A bands (B10 is filled with its training mean).
Sentinel-1 GRD needs VV and VH, as calibrated backscatter in linear power (converted to dB when
read) or in dB: which one is stated by the user (``units=``), or read from the band metadata
(``units``), or else from the value range; a stated unit the values contradict is refused.

Processing baseline 04.00 (products from 2022-01-25 on) adds 1000 to every DN; SoftMap subtracts
it again (``dn_offset = -1000``) so every product is on the scale the models were trained on. The
offset is read from ``RADIO_ADD_OFFSET``/``BOA_ADD_OFFSET`` (SAFE metadata or GeoTIFF tags) when
present; otherwise it follows the processing baseline, or for loose files the acquisition date.

The 10 m reference grid covers the finest band's extent; coarser bands are resampled onto it when
read (see :mod:`backend.imagery.reader`).
"""

from __future__ import annotations

import math
import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from backend.errors import BandMismatchError, SceneImportError
from backend.imagery.bands import S1_GRD_BANDS, S2_L1C_BANDS, S2_L2A_BANDS, canonical_band
from backend.imagery.bigearthnet import PatchMetadata, metadata_file, read_patch_metadata
from backend.imagery.raster_info import RasterInfo, inspect_raster, s1_units_checked
from backend.imagery.sources import (
    BUNDLED_PREFIX,
    BandAsset,
    Grid,
    ProductLevel,
    SceneSource,
    Units,
)

#: Products processed with baseline 04.00 or later carry a +1000 DN offset (from this date).
OFFSET_BASELINE = "04.00"
OFFSET_SINCE = "2022-01-25"
BASELINE_DN_OFFSET = -1000.0
REFERENCE_RESOLUTION_M = 10.0

_RASTER_SUFFIXES = (".tif", ".tiff", ".jp2")
_S2_FILE = re.compile(r"(?:^|[_\-.])(B(?:0?[1-9]|1[0-2]|8A))(?:_(?:10|20|60)m)?$", re.IGNORECASE)
_S1_FILE = re.compile(r"(?:^|[_\-.])(VV|VH)(?:[_\-.]|$)", re.IGNORECASE)
_SCL_FILE = re.compile(r"(?:^|[_\-.])SCL(?:_(?:20|60)m)?$", re.IGNORECASE)
_DESCRIPTION = re.compile(r"^\s*(B1[0-2]|B8A|B0?[1-9]|VV|VH|SCL)(?![A-Za-z0-9])", re.IGNORECASE)
_DATE = re.compile(r"(?<!\d)(20\d{2})(\d{2})(\d{2})(?:T\d{6})?(?!\d)")
_TILE = re.compile(r"(?:^|_)T(\d{2}[A-Z]{3})(?:_|$)")
_ID_CHARS = re.compile(r"[^a-z0-9._-]+")
_OFFSET_TAGS = ("BOA_ADD_OFFSET", "RADIO_ADD_OFFSET", "ADD_OFFSET")
_PAIR = "pair of Sentinel-1 files"


@dataclass
class _Found:
    """Bands located so far: name → (raster, 1-based index); the SCL layer; metadata."""

    bands: dict[str, tuple[RasterInfo, int]] = field(default_factory=dict)
    scl: tuple[RasterInfo, int] | None = None
    level: ProductLevel | None = None
    date: str | None = None
    baseline: str | None = None
    dn_offset: float | None = None
    mgrs_tile: str | None = None
    kind: str = ""
    patch: PatchMetadata | None = None


def import_scene(
    path: str | Path | Sequence[str | Path],
    *,
    bands: Sequence[str] | None = None,
    source_id: str | None = None,
    title: str | None = None,
    date: str | None = None,
    dn_offset: float | None = None,
    units: Units | None = None,
) -> SceneSource:
    """Detect what ``path`` holds and describe it as a source (nothing is copied or converted).

    Args:
        path: A ``.SAFE`` folder, a folder of per-band files (a BigEarthNet patch folder
            included), one multi-band GeoTIFF/COG, or two single-band Sentinel-1 files (VV, VH).
        bands: Band names of a multi-band file (or of a file pair), in file order (overrides
            descriptions and file names).
        source_id: The id to register it under (default ``local/<name>``).
        title: A human title (default: sensor, level, tile and date).
        date: Acquisition date ``YYYY-MM-DD`` when no metadata or file name carries it.
        dn_offset: DN offset to add (overrides the metadata and baseline rules).
        units: Sentinel-1 only: ``"db"`` or ``"linear"`` (default: from metadata or values).

    Raises:
        SceneImportError: the path is missing or unreadable, is not Sentinel-2/Sentinel-1, lacks
            bands (named), has no usable (projected) CRS, or contradicts the stated units.
    """
    paths = [path] if isinstance(path, (str, Path)) else list(path)
    if not 1 <= len(paths) <= 2:
        raise SceneImportError(
            f"Give one path (a folder or a file) or two Sentinel-1 files (VV and VH), not "
            f"{len(paths)}."
        )
    roots = [Path(p).expanduser() for p in paths]
    for r in roots:
        if not r.exists():
            raise SceneImportError(f"{r} does not exist.")
    root = roots[0]
    if len(roots) == 2:
        found = _from_pair(roots, bands)
    elif root.is_dir():
        found = _from_safe(root) if _is_safe(root) else _from_folder(root, bands)
    else:
        found = _from_file(root, bands)
    return _build(
        root,
        found,
        source_id=source_id,
        title=title,
        date=date,
        dn_offset=dn_offset,
        units=units,
    )


# --- layouts ---------------------------------------------------------------------------------
def _is_safe(folder: Path) -> bool:
    return folder.suffix.upper() == ".SAFE" or any(folder.glob("MTD_MSIL[12][AC].xml"))


def _from_safe(folder: Path) -> _Found:
    mtd = sorted(folder.glob("MTD_MSIL[12][AC].xml"))
    if not mtd:
        raise SceneImportError(
            f"{folder} looks like a .SAFE folder but has no MTD_MSIL1C.xml or MTD_MSIL2A.xml: "
            "Sentinel-2 products need their product metadata."
        )
    found = _parse_mtd(mtd[0])
    files = sorted(
        p
        for p in folder.glob("GRANULE/*/IMG_DATA/**/*")
        if p.suffix.lower() in _RASTER_SUFFIXES and not p.name.startswith("._")
    )
    if not files:
        raise SceneImportError(f"{folder} has no band files under GRANULE/*/IMG_DATA/.")
    _collect_band_files(files, found)
    found.kind = f"Sentinel-2 {found.level} SAFE"
    return found


def _from_folder(folder: Path, bands: Sequence[str] | None) -> _Found:
    files = sorted(
        p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in _RASTER_SUFFIXES
    )
    if not files:
        raise SceneImportError(
            f"{folder} holds no GeoTIFF or JPEG 2000 file (.tif, .tiff, .jp2): nothing to import."
        )
    found = _Found(kind="folder of per-band files")
    meta_path = metadata_file(folder)
    if meta_path is not None:
        found.patch = read_patch_metadata(meta_path)
        found.kind = f"BigEarthNet-{found.patch.sensor} patch folder"
        found.date = found.patch.date
        found.mgrs_tile = found.patch.mgrs_tile
    _collect_band_files(files, found)
    found.date = found.date or _date_in(folder.name)
    if not found.bands:
        if len(files) == 1:
            return _from_file(files[0], bands)
        names = ", ".join(p.name for p in files[:6]) + (" …" if len(files) > 6 else "")
        raise SceneImportError(
            f"No file in {folder} is named for a band ({names}). Name per-band files after "
            "their band (B02.tif, T33UUU_20170216T102101_B02.jp2, …) or pass one multi-band file."
        )
    return found


def _collect_band_files(files: Sequence[Path], found: _Found) -> None:
    """Assign files to bands by name; the finest file wins when a band comes in several."""
    for p in files:
        stem = p.stem
        if _SCL_FILE.search(stem):
            raster = inspect_raster(p)
            if found.scl is None or raster.resolution < found.scl[0].resolution:
                found.scl = (raster, 1)
            continue
        m = _S2_FILE.search(stem) or _S1_FILE.search(stem)
        if m is None:
            continue
        name = canonical_band(m.group(1))
        raster = inspect_raster(p)
        current = found.bands.get(name)
        if current is None or raster.resolution < current[0].resolution:
            found.bands[name] = (raster, 1)
        if found.date is None:
            found.date = _date_in(p.name)
        if found.mgrs_tile is None:
            t = _TILE.search(stem)
            found.mgrs_tile = t.group(1) if t else None


def _from_pair(paths: Sequence[Path], bands: Sequence[str] | None) -> _Found:
    """Two single-band Sentinel-1 files: polarisation from ``bands``, names or descriptions."""
    rasters = []
    for p in paths:
        if p.is_dir():
            raise SceneImportError(
                f"{p} is a folder: give two files (VV and VH) or one folder, not both."
            )
        raster = inspect_raster(p)
        if raster.count != 1:
            raise SceneImportError(
                f"{p.name} has {raster.count} bands: a file pair must be two single-band files "
                "(VV and VH). Pass a multi-band file on its own."
            )
        rasters.append(raster)
    if bands:
        names = [b.strip().upper() for b in bands if b.strip()]
        if len(names) != 2:
            raise SceneImportError(
                f"Two files need two band names in file order (--bands VV,VH), not "
                f"{len(names)} ({', '.join(names)})."
            )
    else:
        names = []
        for r in rasters:
            m = _S1_FILE.search(r.path.stem)
            desc = _description_band(r.descriptions[0])
            names.append((m.group(1) if m else desc or "").upper())
    if sorted(names) != sorted(S1_GRD_BANDS):
        which = ", ".join(
            f"{r.path.name} → {n or '?'}" for r, n in zip(rasters, names, strict=True)
        )
        raise SceneImportError(
            f"A file pair must be one VV and one VH file ({which}). Name them *_VV.tif and "
            "*_VH.tif, or pass --bands VV,VH in the order of the files."
        )
    found = _Found(kind=_PAIR)
    for r, name in zip(rasters, names, strict=True):
        found.bands[name] = (r, 1)
        found.date = found.date or _date_in(r.path.name)
    return found


def _from_file(path: Path, bands: Sequence[str] | None) -> _Found:
    raster = inspect_raster(path)
    found = _Found(kind="multi-band file", date=_date_in(path.name))
    t = _TILE.search(path.stem)
    found.mgrs_tile = t.group(1) if t else None
    if bands:
        names = [b.strip() for b in bands if b.strip()]
        if len(names) != raster.count:
            raise SceneImportError(
                f"{path.name} has {raster.count} band(s) but {len(names)} band name(s) were "
                f"given ({', '.join(names)}): give one name per band, in file order."
            )
    else:
        names = [_description_band(d) or "" for d in raster.descriptions]
        if not any(names):
            raise SceneImportError(
                f"{path.name} is not recognisably Sentinel-2 or Sentinel-1: {_what(raster)}. "
                "If it is, pass its bands in file order (--bands B01,B02,… or --bands VV,VH)."
            )
    for i, name in enumerate(names, start=1):
        if not name:
            continue
        if name.upper() == "SCL":
            found.scl = (raster, i)
            continue
        try:
            found.bands[canonical_band(name)] = (raster, i)
        except BandMismatchError as e:
            raise SceneImportError(f"{path.name}, band {i}: {e.message}") from e
    offset = _offset_tag(raster)
    if offset is not None:
        found.dn_offset = offset
    return found


# --- assembling a source ---------------------------------------------------------------------
def _build(
    root: Path,
    found: _Found,
    *,
    source_id: str | None,
    title: str | None,
    date: str | None,
    dn_offset: float | None,
    units: Units | None = None,
) -> SceneSource:
    s1 = [b for b in found.bands if b in S1_GRD_BANDS]
    s2 = [b for b in found.bands if b not in S1_GRD_BANDS]
    if s1 and s2:
        raise SceneImportError(
            f"{root} mixes Sentinel-1 ({', '.join(s1)}) and Sentinel-2 ({', '.join(s2)}) "
            "bands: import them as two sources."
        )
    level: ProductLevel
    if s1:
        level = "GRD"
        missing = [b for b in S1_GRD_BANDS if b not in found.bands]
        if missing:
            raise SceneImportError(
                f"{root} lacks Sentinel-1 polarisation(s) {', '.join(missing)} (found "
                f"{', '.join(s1)}); the SoftCon Sentinel-1 models need VV and VH."
            )
        order: tuple[str, ...] = S1_GRD_BANDS
    else:
        if units is not None and units != "dn":
            raise SceneImportError(
                f"Units '{units}' apply to Sentinel-1 backscatter; {root} is Sentinel-2."
            )
        level = found.level or ("L1C" if "B10" in found.bands else "L2A")
        order = S2_L1C_BANDS if level == "L1C" else S2_L2A_BANDS
        missing = [b for b in order if b not in found.bands]
        if missing:
            have = ", ".join(b for b in S2_L1C_BANDS if b in found.bands) or "none"
            raise SceneImportError(
                f"{root} lacks band(s) {', '.join(missing)} of a Sentinel-2 {level} product "
                f"(found {have}). SoftCon's Sentinel-2 models need all 13 L1C bands, or the "
                "12 L2A bands (without B10)."
            )
    rasters = [r for r, _ in found.bands.values()]
    crs = _common_crs(root, rasters)
    ref = min(rasters, key=lambda r: r.resolution)
    grid = _reference_grid(ref)
    common = Path(os.path.commonpath([str(r.path.parent) for r in rasters]))

    def asset(name: str, slot: tuple[RasterInfo, int]) -> BandAsset:
        raster, index = slot
        rel = os.path.relpath(raster.path, common)
        return BandAsset(name=name, resolution_m=raster.resolution, file=rel, index=index)

    band_assets = tuple(asset(b, found.bands[b]) for b in order)
    scl = None
    if found.scl is not None and level == "L2A":
        scl_raster = found.scl[0]
        if scl_raster.crs != crs:
            raise SceneImportError(f"{scl_raster.path.name} is not in {crs} like the bands.")
        scl = asset("SCL", found.scl)
    acquired = date or found.date
    if acquired is not None and not re.fullmatch(r"\d{4}-\d{2}-\d{2}", acquired):
        raise SceneImportError(f"Date '{acquired}' is not YYYY-MM-DD.")
    nodata: float | None = ref.nodata if ref.nodata is not None else 0.0
    offset = 0.0
    caveats: list[str] = []
    if found.patch is not None:
        caveats.append(found.patch.describe())
    if level == "GRD":
        units, why = s1_units_checked(found.bands["VV"], units)
        caveats.append(why)
        nodata = ref.nodata if ref.nodata is not None and not math.isnan(ref.nodata) else None
    else:
        units = "dn"
    if level != "GRD":
        offset, why = _dn_offset(found, acquired, dn_offset)
        caveats.append(why)
        if acquired is None:
            caveats.append("Acquisition date unknown (not in metadata or file names).")
    name = root.stem if root.is_dir() or found.patch is not None else _pair_name(found, root)
    if "SAFE" in found.kind and found.mgrs_tile and acquired:
        name = f"T{found.mgrs_tile}_{acquired.replace('-', '')}_{level}"
    sid = source_id or "local/" + (_ID_CHARS.sub("-", name.lower()).strip("-") or "scene")
    _check_id(sid)
    sensor = "Sentinel-1 SAR" if level == "GRD" else "Sentinel-2 MSI"
    label = " ".join(x for x in (sensor.split()[0], level, found.mgrs_tile, acquired) if x)
    shown = name if found.kind == _PAIR else root.name
    default_title = found.patch.title() if found.patch is not None else f"{label} ({shown})"
    return SceneSource(
        id=sid,
        title=title or default_title,
        description=f"{found.kind} imported from {root.resolve()}",
        sensor=sensor,
        product_level=level,
        date=acquired or "unknown",
        mgrs_tile=found.mgrs_tile,
        crs=crs,
        nodata=nodata,
        dn_offset=offset,
        grid=grid,
        bands=band_assets,
        units=units,
        scl=scl,
        processing_baseline=found.baseline,
        origin=str(root.resolve()),
        caveats=tuple(caveats),
        root=common.resolve(),
    )


def _check_id(source_id: str) -> None:
    if source_id.startswith(BUNDLED_PREFIX):
        raise SceneImportError(
            f"Source ids starting with '{BUNDLED_PREFIX}' are reserved for the bundled scenes; "
            "choose another --id."
        )
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._/-]*", source_id) or "//" in source_id:
        raise SceneImportError(
            f"'{source_id}' is not a usable source id: use letters, digits, '.', '_', '-' and "
            "'/' (e.g. local/brandenburg-2023)."
        )


def _common_crs(root: Path, rasters: Sequence[RasterInfo]) -> str:
    for r in rasters:
        if r.crs is None:
            raise SceneImportError(
                f"{r.path.name} has no coordinate reference system (unknown CRS): SoftMap needs "
                "georeferenced imagery. Use the original product, or assign the CRS with "
                "gdal_edit.py -a_srs EPSG:326xx."
            )
        if r.geographic:
            raise SceneImportError(
                f"{r.path.name} is in {r.crs}, a geographic CRS (degrees): tiles need a "
                "projected grid in metres. Use the product's native UTM grid, or reproject with "
                "gdalwarp -t_srs EPSG:326xx -tr 10 10."
            )
    crss = sorted({r.crs for r in rasters if r.crs})
    if len(crss) > 1:
        raise SceneImportError(
            f"The bands of {root} are in different CRSs ({', '.join(crss)}); "
            "all bands of a scene must share one."
        )
    return crss[0]


def _reference_grid(ref: RasterInfo) -> Grid:
    a, b, _, d, e, _ = ref.transform
    if b or d or a <= 0 or e >= 0:
        raise SceneImportError(
            f"{ref.path.name} has a rotated or flipped pixel grid; use a north-up raster."
        )
    if math.isclose(ref.resolution, REFERENCE_RESOLUTION_M, rel_tol=1e-6):
        return Grid(transform=ref.transform, width=ref.width, height=ref.height)
    left, bottom, right, top = ref.bounds()
    res = REFERENCE_RESOLUTION_M
    return Grid(
        transform=(res, 0.0, left, 0.0, -res, top),
        width=max(1, round((right - left) / res)),
        height=max(1, round((top - bottom) / res)),
    )


def _dn_offset(found: _Found, date: str | None, explicit: float | None) -> tuple[float, str]:
    """The DN offset and why (a caveat shown with the source)."""
    if explicit is not None:
        return explicit, f"DN offset {explicit:g} given by the user."
    if found.dn_offset is not None:
        return found.dn_offset, f"DN offset {found.dn_offset:g} from the product metadata."
    if found.baseline is not None:
        if found.baseline >= OFFSET_BASELINE:
            return BASELINE_DN_OFFSET, (
                f"Processing baseline {found.baseline} (≥ {OFFSET_BASELINE}): DN offset "
                f"{BASELINE_DN_OFFSET:g}."
            )
        return 0.0, f"Processing baseline {found.baseline}: no DN offset."
    if date is not None and date >= OFFSET_SINCE:
        return BASELINE_DN_OFFSET, (
            f"Acquired on or after {OFFSET_SINCE} (processing baseline ≥ {OFFSET_BASELINE} "
            f"assumed): DN offset {BASELINE_DN_OFFSET:g}; pass --dn-offset 0 if the files are "
            "already harmonised."
        )
    return 0.0, "No DN offset (acquired before processing baseline 04.00)."


def _pair_name(found: _Found, root: Path) -> str:
    """A file's stem, or for a VV/VH pair the VV file's stem without its polarisation."""
    if found.kind != _PAIR:
        return root.stem
    stem = found.bands["VV"][0].path.stem
    return _S1_FILE.sub("", stem).strip("_-.") or stem


# --- metadata ------------------------------------------------------------------------------
def _what(raster: RasterInfo) -> str:
    names = [d for d in raster.descriptions if d]
    kind = f"{raster.count} band(s) of {raster.dtype}"
    if names:
        return f"{kind} named {', '.join(names)}"
    interp = [c for c in raster.colorinterp if c not in ("undefined", "gray")]
    if interp:
        return f"{kind} with colour interpretation {', '.join(interp)} (an ordinary image?)"
    return f"{kind} without band descriptions"


def _description_band(text: str | None) -> str | None:
    if not text:
        return None
    m = _DESCRIPTION.match(text)
    return m.group(1) if m else None


def _date_in(name: str) -> str | None:
    m = _DATE.search(name)
    if not m:
        return None
    y, mo, d = m.groups()
    if not (1 <= int(mo) <= 12 and 1 <= int(d) <= 31):
        return None
    return f"{y}-{mo}-{d}"


def _offset_tag(raster: RasterInfo) -> float | None:
    for tags in (raster.tags, *raster.band_tags):
        for key in _OFFSET_TAGS:
            if key in tags:
                try:
                    return float(tags[key])
                except ValueError:
                    continue
    return None


def _parse_mtd(path: Path) -> _Found:
    """Level, date, baseline, offset and tile from a ``MTD_MSIL1C.xml``/``MTD_MSIL2A.xml``."""
    try:
        tree = ET.parse(path)
    except (ET.ParseError, OSError) as e:
        raise SceneImportError(f"Cannot parse {path}: {e}") from e

    def text(tag: str) -> str | None:
        for el in tree.iter():
            if el.tag.split("}")[-1] == tag and el.text:
                return el.text.strip()
        return None

    level: ProductLevel = "L2A" if "2A" in path.name.upper() else "L1C"
    product_type = text("PRODUCT_TYPE") or ""
    if "2A" in product_type:
        level = "L2A"
    elif "1C" in product_type:
        level = "L1C"
    offsets = {
        float(el.text)
        for el in tree.iter()
        if el.tag.split("}")[-1] in ("BOA_ADD_OFFSET", "RADIO_ADD_OFFSET") and el.text
    }
    if len(offsets) > 1:
        raise SceneImportError(
            f"{path.name} gives different DN offsets per band ({sorted(offsets)}); SoftMap "
            "handles one offset for all bands."
        )
    start = text("PRODUCT_START_TIME") or text("DATATAKE_SENSING_START") or ""
    product_uri = text("PRODUCT_URI") or path.parent.name
    tile = _TILE.search(product_uri.replace(".SAFE", ""))
    return _Found(
        level=level,
        date=start[:10] if re.match(r"\d{4}-\d{2}-\d{2}", start) else _date_in(product_uri),
        baseline=text("PROCESSING_BASELINE"),
        dn_offset=offsets.pop() if offsets else None,
        mgrs_tile=tile.group(1) if tile else None,
    )
