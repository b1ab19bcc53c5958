"""Imagery from STAC APIs: search, item → scene source, per-tile least-cloudy selection.

A STAC item becomes an ordinary :class:`~backend.imagery.sources.SceneSource` whose band files are
the
item's COG URLs, so the reader, tiling, pipeline and maps work unchanged and only the windows a
tile needs are fetched (HTTP range requests through GDAL's ``/vsicurl/``). Several items on the
same MGRS grid can be combined per tile: each tile takes the item with the least cloud in its
window (from the item's SCL band when it has one, its ``eo:cloud_cover`` otherwise), written as
one GDAL VRT per band whose blocks point at the chosen item's COG.

Public catalogues: Earth Search (default, unsigned) and Planetary Computer, whose asset URLs are
signed with a SAS token fetched from its token endpoint with plain HTTP.
"""

from __future__ import annotations

import hashlib
import json
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date as date_cls
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import numpy as np
import pystac
import rasterio
from affine import Affine
from rasterio.errors import RasterioError
from rasterio.windows import Window
from shapely.geometry import Point, shape

from backend.errors import (
    CatalogueUnreachableError,
    EmptySearchError,
    RasterReadError,
    SoftMapError,
    StacItemError,
)
from backend.imagery.bands import S2_RESOLUTION_M
from backend.imagery.regions import Region
from backend.imagery.sources import BandAsset, Grid, SceneSource, to_lonlat
from backend.imagery.stac_items import (
    ASSET_BANDS,
    SCL_UNUSABLE,
    AssetRef,
    StacItem,
    configure_remote_gdal,
    item_from_stac,
    item_source,
)
from backend.imagery.tiling import grid_cells, make_tile_id, tile_window, window_polygon
from backend.settings import Settings, get_settings

__all__ = [
    "ASSET_BANDS",
    "SCL_UNUSABLE",
    "AssetRef",
    "StacItem",
    "configure_remote_gdal",
    "item_from_stac",
    "item_source",
]


# --- search --------------------------------------------------------------------------------
@dataclass(frozen=True)
class StacQuery:
    """What was searched (repeated in messages and stored with a source)."""

    api_url: str
    collections: tuple[str, ...]
    bbox: tuple[float, float, float, float]
    datetime: str
    max_cloud: float
    max_items: int

    def describe(self) -> str:
        w, s, e, n = self.bbox
        return (
            f"{', '.join(self.collections)} at {self.api_url} over {w:.4f},{s:.4f},{e:.4f},{n:.4f} "
            f"for {self.datetime} with cloud cover ≤ {self.max_cloud:g} %"
        )


@dataclass(frozen=True)
class SearchResult:
    """Items that passed the cloud filter, least cloudy first, and how many the API returned."""

    query: StacQuery
    items: tuple[StacItem, ...]
    returned: int


def parse_dates(text: str) -> str:
    """Validate ``YYYY-MM-DD`` or ``START/END`` (either side may be ``..``) as a STAC interval.

    Raises:
        SoftMapError: when a date is not ISO ``YYYY-MM-DD`` or the interval runs backwards.
    """
    parts = text.strip().split("/")
    if len(parts) > 2 or not text.strip():
        raise SoftMapError(f"'{text}' is not a date or START/END interval.", title="Invalid dates")
    parsed: list[date_cls | None] = []
    for part in parts:
        if part in ("", ".."):
            parsed.append(None)
            continue
        try:
            parsed.append(date_cls.fromisoformat(part))
        except ValueError:
            raise SoftMapError(
                f"'{part}' is not a date: use YYYY-MM-DD, e.g. 2024-06-01/2024-06-30.",
                title="Invalid dates",
            ) from None
    if len(parsed) == 1:
        return str(parsed[0]) if parsed[0] else ".."
    start, end = parsed
    if start and end and end < start:
        raise SoftMapError(f"The interval {text} ends before it starts.", title="Invalid dates")
    return f"{start or '..'}/{end or '..'}"


def planetary_computer_signer(settings: Settings) -> Callable[[str], str]:
    """Sign Planetary Computer asset URLs with a SAS token per storage container.

    Tokens come from ``{stac_pc_token_url}/{account}/{container}`` and are cached per container.
    """
    tokens: dict[str, str] = {}

    def sign(href: str) -> str:
        if "blob.core.windows.net" not in href or "?" in href:
            return href
        host, _, path = href.split("://", 1)[1].partition("/")
        account = host.split(".")[0]
        container = path.split("/")[0]
        key = f"{account}/{container}"
        if key not in tokens:
            url = f"{settings.stac_pc_token_url.rstrip('/')}/{key}"
            try:
                with urllib.request.urlopen(url, timeout=settings.stac_timeout_s) as resp:
                    tokens[key] = str(json.load(resp)["token"])
            except (urllib.error.URLError, OSError, KeyError, ValueError) as e:
                raise CatalogueUnreachableError(
                    f"Cannot get a Planetary Computer SAS token from {url} ({e}); "
                    "check the network."
                ) from e
        return f"{href}?{tokens[key]}"

    return sign


def _check_online(url: str, settings: Settings) -> None:
    if settings.offline:
        raise CatalogueUnreachableError(
            f"SoftMap is offline (SOFTMAP_OFFLINE is set), so the STAC catalogue {url} is not "
            "contacted. Unset SOFTMAP_OFFLINE to search it, or use a local source."
        )


def search(
    region: Region,
    dates: str,
    *,
    api_url: str | None = None,
    collections: Sequence[str] | None = None,
    max_cloud: float | None = None,
    max_items: int | None = None,
    settings: Settings | None = None,
) -> SearchResult:
    """Search a STAC API for items over ``region`` in a date interval, least cloudy first.

    Raises:
        CatalogueUnreachableError: offline, or the API cannot be reached or is not a STAC API.
        EmptySearchError: nothing matched (the message repeats what was searched).
    """
    from pystac_client import Client
    from pystac_client.conformance import ConformanceClasses
    from pystac_client.exceptions import APIError
    from requests import RequestException

    settings = settings or get_settings()
    url = api_url or settings.stac_api_url
    query = StacQuery(
        api_url=url,
        collections=tuple(collections or settings.stac_collections),
        bbox=region.bounds,
        datetime=parse_dates(dates),
        max_cloud=settings.stac_max_cloud if max_cloud is None else max_cloud,
        max_items=max_items or settings.stac_max_items,
    )
    _check_online(url, settings)
    sign = planetary_computer_signer(settings) if "planetarycomputer" in url else None
    try:
        client = Client.open(url, timeout=settings.stac_timeout_s)
        kwargs: dict[str, Any] = {}
        if client.conforms_to(ConformanceClasses.QUERY):
            kwargs["query"] = {"eo:cloud_cover": {"lte": query.max_cloud}}
        found = list(
            client.search(
                collections=list(query.collections),
                bbox=list(query.bbox),
                datetime=query.datetime,
                max_items=query.max_items,
                **kwargs,
            ).items()
        )
    except (APIError, RequestException, pystac.STACError, OSError, ValueError) as e:
        reason = " ".join(str(e).split())[:200] or type(e).__name__
        raise CatalogueUnreachableError(
            f"The STAC catalogue {url} is unreachable or not a STAC API ({reason}). "
            "Check the network and the URL (--api or SOFTMAP_STAC_API_URL)."
        ) from e
    items = [item_from_stac(i, sign) for i in found]
    kept = [i for i in items if i.cloud_cover is None or i.cloud_cover <= query.max_cloud]
    if not kept:
        raise EmptySearchError(
            f"No items found: searched {query.describe()} ({len(found)} returned before the "
            "cloud filter). Widen the dates or the region, or raise --max-cloud."
        )
    kept.sort(key=lambda i: (i.cloud_cover if i.cloud_cover is not None else 0.0, i.datetime))
    return SearchResult(query, tuple(kept), len(found))


# --- per-tile selection --------------------------------------------------------------------
@dataclass(frozen=True)
class CellChoice:
    """The item chosen for one selection cell and the cloud fraction that decided it."""

    item_id: str
    cloud_fraction: float
    basis: str  # "scl" or "item"


@dataclass(frozen=True)
class TileSelection:
    """Per cell (``chip`` px squares of the reference grid), the least-cloudy item."""

    chip: int
    cells: dict[tuple[int, int], CellChoice]
    items: tuple[StacItem, ...]
    reference: SceneSource

    def counts(self) -> dict[str, int]:
        """How many cells each item supplies."""
        out: dict[str, int] = {}
        for c in self.cells.values():
            out[c.item_id] = out.get(c.item_id, 0) + 1
        return out


def _grid_key(s: SceneSource) -> tuple[object, ...]:
    return (s.crs_obj.to_epsg(), tuple(round(v, 6) for v in s.grid.transform), s.grid.width,
            s.grid.height)  # fmt: skip


def _scl_fractions(
    item: StacItem, ref: SceneSource, cells: list[tuple[int, int]], chip: int
) -> list[float]:
    assert item.scl is not None
    polys = [window_polygon(ref, tile_window(r, c, chip, chip)) for r, c in cells]
    try:
        with rasterio.open(item.scl.href) as ds:
            inv = ~ds.transform
            out: list[float] = []
            for poly in polys:
                x0, y0, x1, y1 = poly.bounds
                c0, r0 = inv @ (x0, y1)
                c1, r1 = inv @ (x1, y0)
                win = Window(round(c0), round(r0), max(round(c1 - c0), 1), max(round(r1 - r0), 1))
                data = ds.read(1, window=win, boundless=True, fill_value=0)
                out.append(float(np.isin(data, SCL_UNUSABLE).mean()))
            return out
    except (RasterioError, OSError) as e:
        raise RasterReadError(f"Cannot read the SCL band of {item.id}: {e}") from e


def _item_fractions(
    item: StacItem, ref: SceneSource, cells: list[tuple[int, int]], chip: int
) -> tuple[list[float], str]:
    if item.scl is not None:
        return _scl_fractions(item, ref, cells, chip), "scl"
    cloud = (item.cloud_cover or 0.0) / 100.0
    footprint = shape(item.geometry) if item.geometry else None
    out = []
    for r, c in cells:
        centre = to_lonlat(window_polygon(ref, tile_window(r, c, chip, chip)).centroid, ref.crs)
        inside = footprint is None or footprint.contains(Point(centre.x, centre.y))
        out.append(cloud if inside else 1.0)
    return out, "item"


def select_per_tile(items: Sequence[StacItem], region: Region, chip: int) -> TileSelection:
    """For each ``chip``×``chip`` cell over ``region``, the item with the least cloud there.

    Only items on the same grid as the first (best) item take part (same MGRS tile, CRS and
    10 m grid); ties go to the earlier item in ``items``.

    Raises:
        EmptySearchError: no item covers the region.
    """
    if not items:
        raise EmptySearchError("No STAC items to choose from.")
    sources = [item_source(i) for i in items]
    ref = sources[0]
    same = [(i, s) for i, s in zip(items, sources, strict=True) if _grid_key(s) == _grid_key(ref)]
    cells = grid_cells(region, ref, chip, chip)
    if not cells:
        raise EmptySearchError(f"Item {items[0].id} does not cover {region.describe()}.")
    scores = [_item_fractions(i, ref, cells, chip) for i, _ in same]
    choice: dict[tuple[int, int], CellChoice] = {}
    for k, cell in enumerate(cells):
        best = min(range(len(same)), key=lambda j: scores[j][0][k])
        choice[cell] = CellChoice(same[best][0].id, round(scores[best][0][k], 4), scores[best][1])
    return TileSelection(chip, choice, tuple(i for i, _ in same), ref)


def _band_vrt(
    band: str, selection: TileSelection, ref_asset: AssetRef, crs: str, grid: Grid, dtype: str
) -> str:
    """A VRT on the band's own grid whose blocks read the chosen item's COG."""
    ref_t = Affine(*ref_asset.transform) if ref_asset.transform else grid.affine
    if ref_asset.shape:
        height, width = ref_asset.shape
    else:
        f = abs(ref_t.a) / grid.resolution
        height, width = round(grid.height / f), round(grid.width / f)
    inv = ~ref_t
    by_id = {i.id: i for i in selection.items}
    gt = (ref_t.c, ref_t.a, ref_t.b, ref_t.f, ref_t.d, ref_t.e)
    wkt = rasterio.crs.CRS.from_user_input(crs).to_wkt()
    sources: list[str] = []
    for (r, c), pick in sorted(selection.cells.items()):
        x0, y0 = grid.affine @ (c * selection.chip, r * selection.chip)
        x1, y1 = grid.affine @ ((c + 1) * selection.chip, (r + 1) * selection.chip)
        px0, py0 = (round(v) for v in inv @ (x0, y0))
        px1, py1 = (round(v) for v in inv @ (x1, y1))
        px0, px1 = max(min(px0, px1), 0), min(max(px0, px1), width)
        py0, py1 = max(min(py0, py1), 0), min(max(py0, py1), height)
        if px1 <= px0 or py1 <= py0:
            continue
        href = by_id[pick.item_id].bands[band].href
        path = href if href.startswith("/vsi") or "://" not in href else f"/vsicurl/{href}"
        rect = f'xOff="{px0}" yOff="{py0}" xSize="{px1 - px0}" ySize="{py1 - py0}"'
        sources.append(
            "    <SimpleSource>\n"
            f'      <SourceFilename relativeToVRT="0">{escape(path)}</SourceFilename>\n'
            "      <SourceBand>1</SourceBand>\n"
            f"      <SrcRect {rect}/>\n      <DstRect {rect}/>\n"
            "    </SimpleSource>"
        )
    return (
        f'<VRTDataset rasterXSize="{width}" rasterYSize="{height}">\n'
        f"  <SRS>{escape(wkt)}</SRS>\n"
        f"  <GeoTransform>{', '.join(repr(float(v)) for v in gt)}</GeoTransform>\n"
        f'  <VRTRasterBand dataType="{dtype}" band="1">\n'
        "    <NoDataValue>0</NoDataValue>\n" + "\n".join(sources) + "\n"
        "  </VRTRasterBand>\n</VRTDataset>\n"
    )


def mosaic_id(selection: TileSelection, query_datetime: str) -> str:
    """A stable source id for a per-tile selection (grid, dates and the cells' items)."""
    first = selection.items[0]
    blob = json.dumps(sorted((f"{r}_{c}", p.item_id) for (r, c), p in selection.cells.items()))
    digest = hashlib.sha256(blob.encode()).hexdigest()[:8]
    dates = query_datetime.replace("/", "_").replace("..", "open")
    return f"stac/{first.collection}/{first.mgrs_tile or 'grid'}/{dates}/{digest}"


def build_mosaic(
    selection: TileSelection, folder: Path, source_id: str, *, dtype: str = "UInt16"
) -> SceneSource:
    """Write one VRT per band for a per-tile selection and return the source reading them.

    Raises:
        StacItemError: the chosen items do not share their bands or processing level.
    """
    used = {p.item_id for p in selection.cells.values()}
    chosen = [i for i in selection.items if i.id in used]
    bands = sorted(set.intersection(*(set(i.bands) for i in chosen)))
    offsets = {i.dn_offset for i in chosen}
    if len(offsets) > 1:
        # Baselines before and after 2022-01-25 differ by 1000 DN; one mosaic needs one offset.
        raise StacItemError(
            "The least-cloudy items straddle processing baseline 04.00 (2022-01-25) and need "
            "different DN offsets; choose a date window on one side of it."
        )
    folder.mkdir(parents=True, exist_ok=True)
    ref = selection.reference
    ref_item = selection.items[0]
    for band in bands:
        text = _band_vrt(band, selection, ref_item.bands[band], ref.crs, ref.grid, dtype)
        (folder / f"{band}.vrt").write_text(text)
    dates = sorted(i.date for i in chosen)
    configure_remote_gdal()
    return ref.model_copy(
        update={
            "id": source_id,
            "title": f"Least-cloudy per tile of {len(chosen)} {ref_item.collection} items",
            "date": dates[0] if dates[0] == dates[-1] else f"{dates[0]}/{dates[-1]}",
            "dn_offset": offsets.pop(),
            "bands": tuple(
                BandAsset(name=b, resolution_m=S2_RESOLUTION_M.get(b, 10), file=f"{b}.vrt")
                for b in bands
            ),
            "origin": "STAC items " + ", ".join(i.id for i in chosen),
            "root": folder,
        }
    )


# --- STAC sources in the cache -------------------------------------------------------------
@dataclass(frozen=True)
class StacSource:
    """A scene source made from STAC items, with what was searched and which item each cell uses.

    ``selection`` is None for a single item (every tile comes from ``items[0]``).
    """

    source: SceneSource
    query: StacQuery
    items: tuple[StacItem, ...]
    selection: TileSelection | None = None
    manifest: Path | None = field(default=None, compare=False)

    def item_for(self, row_off: int, col_off: int, size: int) -> tuple[StacItem, CellChoice]:
        """The item a tile window (top-left offset and size in 10 m px) is read from."""
        by_id = {i.id: i for i in self.items}
        if self.selection is None:
            item = self.items[0]
            cloud = (item.cloud_cover or 0.0) / 100.0
            return item, CellChoice(item.id, cloud, "item")
        chip = self.selection.chip
        cell = ((row_off + size // 2) // chip, (col_off + size // 2) // chip)
        pick = self.selection.cells.get(cell)
        if pick is None:
            item = self.items[0]
            return item, CellChoice(item.id, (item.cloud_cover or 0.0) / 100.0, "item")
        return by_id[pick.item_id], pick


def build_source(
    result: SearchResult,
    region: Region,
    *,
    per_tile: bool = False,
    chip: int = 224,
    item_id: str | None = None,
    folder: Path | None = None,
) -> StacSource:
    """The best item (least cloud; or ``item_id``) or a per-tile least-cloudy mosaic.

    Raises:
        EmptySearchError: ``item_id`` is not among the results.
    """
    items = result.items
    if item_id is not None:
        items = tuple(i for i in items if i.id == item_id)
        if not items:
            ids = ", ".join(i.id for i in result.items)
            raise EmptySearchError(f"Item {item_id} is not among the results ({ids}).")
    if not per_tile:
        best = items[0]
        return StacSource(item_source(best), result.query, (best,))
    selection = select_per_tile(items, region, chip)
    sid = mosaic_id(selection, result.query.datetime)
    where = folder or get_settings().db_path.parent / "stac"
    source = build_mosaic(selection, where / sid.replace("/", "_"), sid)
    return StacSource(source, result.query, selection.items, selection)


def save_manifest(source: SceneSource, folder: Path) -> Path:
    """Write ``scene.json`` for a source so :func:`backend.imagery.sources.load_manifest` reopens
    it."""
    folder.mkdir(parents=True, exist_ok=True)
    raw = source.model_dump(mode="json", exclude={"root"})
    if source.root != folder:
        # Remote files are URLs already; local ones (VRTs) are made absolute.
        for band in raw["bands"]:
            if "://" not in band["file"]:
                band["file"] = str((source.root / band["file"]).resolve())
    path = folder / "scene.json"
    path.write_text(json.dumps(raw, indent=2))
    return path


def selection_tiles(stac: StacSource, region: Region, chip: int) -> list[tuple[str, int, int, int]]:
    """``(tile_id, row_off, col_off, chip)`` of the edge-to-edge tiles of a region."""
    cells = grid_cells(region, stac.source, chip, chip)
    return [
        (make_tile_id(stac.source.id, chip, chip, r, c), r * chip, c * chip, chip) for r, c in cells
    ]
