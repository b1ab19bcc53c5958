"""A comparison of two dates as JSON (the ``compare`` job's result) and back.

The ``change`` job answers what ``softmap change`` prints (the ranked top k). The app's Change
page needs the whole :class:`~backend.service.ChangeMap`: every matched pair with its
footprint and distance, and the per-tile distance raster its COG download is written from.
The ``compare`` job runs :func:`backend.service.compare_dates` (both dates embedded first) and
stores :func:`pack`'s JSON; :func:`unpack` rebuilds the same ``ChangeMap`` on the client (NaN
cells of the raster travel as ``null``).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import numpy as np
from affine import Affine
from shapely.geometry import shape

from backend.analysis.change import ChangedTile as RankedTile
from backend.analysis.change import ChangeResult, TilePair
from backend.imagery.rasters import GridRaster
from backend.imagery.regions import Region
from backend.imagery.sources import SceneSource
from backend.service import ChangedTile, ChangeMap


def pack(change: ChangeMap) -> dict[str, Any]:
    """Everything a ``ChangeMap`` holds, as JSON (the sources by id)."""
    r = change.result
    raster = None
    if r.raster is not None:
        data = r.raster.data.astype(np.float64)
        raster = {
            "data": [v if np.isfinite(v) else None for v in data.ravel().tolist()],
            "shape": list(data.shape),
            "transform": list(r.raster.transform)[:6],
            "crs": r.raster.crs,
        }
    return {
        "before": change.before.id,
        "after": change.after.id,
        "region": change.region.to_geojson(),
        "computed": change.computed,
        "cached": change.cached,
        "tiles": [asdict(t) for t in change.tiles],  # unpack: ChangedTile(**t)
        "result": {
            "model": r.model,
            "before": r.before,
            "after": r.after,
            "matching": r.matching,
            "pairs": [[p.before, p.after] for p in r.pairs],
            "distances": [float(d) for d in r.distances],
            "top": [asdict(t) for t in r.top],
            "unmatched_before": r.unmatched_before,
            "unmatched_after": r.unmatched_after,
            "computed": r.computed,
            "cached": r.cached,
            "raster": raster,
            "out": r.out,
        },
    }


def unpack(out: dict[str, Any], before: SceneSource, after: SceneSource) -> ChangeMap:
    """The ``ChangeMap`` :func:`pack` wrote, on the client's own copies of the two sources."""
    r = out["result"]
    raster = None
    if r["raster"] is not None:
        values = [np.nan if v is None else v for v in r["raster"]["data"]]
        raster = GridRaster(
            data=np.asarray(values, dtype=np.float32).reshape(r["raster"]["shape"]),
            transform=Affine(*r["raster"]["transform"]),
            crs=str(r["raster"]["crs"]),
        )
    result = ChangeResult(
        model=str(r["model"]),
        before=str(r["before"]),
        after=str(r["after"]),
        matching=r["matching"],
        pairs=tuple(TilePair(str(b), str(a)) for b, a in r["pairs"]),
        distances=np.asarray(r["distances"], dtype=np.float32),
        top=tuple(RankedTile(**t) for t in r["top"]),
        unmatched_before=int(r["unmatched_before"]),
        unmatched_after=int(r["unmatched_after"]),
        computed=int(r["computed"]),
        cached=int(r["cached"]),
        raster=raster,
        out=r["out"],
    )
    return ChangeMap(
        before=before,
        after=after,
        region=Region(shape(out["region"])),
        result=result,
        tiles=tuple(ChangedTile(**t) for t in out["tiles"]),
        computed=int(out["computed"]),
        cached=int(out["cached"]),
    )
