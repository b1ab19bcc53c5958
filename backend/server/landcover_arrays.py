"""A land-cover map with its arrays, as one ``.npz`` body (``GET /jobs/{id}/landcover.npz``).

A land-cover job's JSON result holds the areas and the head, not the per-tile and per-cell
probabilities the app draws its layers from (a whole scene's cells are megabytes of floats,
too many for JSON). The service keeps the last few maps it made (:class:`LandCoverShelf`) and
sends one as a compressed NumPy archive; :func:`unpack` rebuilds the same
:class:`~backend.landcover.maps.LandCoverResult` the application layer returns in-process.
"""

from __future__ import annotations

import io
import json
import threading
from collections import OrderedDict
from dataclasses import asdict
from typing import Any

import numpy as np

from backend.embedding.pipeline import EmbedResult
from backend.errors import SoftMapError
from backend.imagery.sources import SceneSource
from backend.landcover.areas import ClassArea
from backend.landcover.maps import LandCoverResult

#: Arrays of a result, by field name (each may be None).
_ARRAYS = ("probabilities", "token_probabilities", "ood", "token_ood")


def pack(result: LandCoverResult) -> bytes:
    """The result as a compressed ``.npz``: its arrays, and the rest as JSON in ``meta``."""
    meta: dict[str, Any] = {
        "source": result.source.id,
        "head": result.head,
        "tile_ids": list(result.tile_ids),
        "areas": [a.to_json() for a in result.areas],
        "region_km2": result.region_km2,
        "embed": {**asdict(result.embed), "tile_ids": list(result.embed.tile_ids)},
        "predicted": result.predicted,
        "unlike_km2": result.unlike_km2,
        "arrays": [name for name in _ARRAYS if getattr(result, name) is not None],
    }
    arrays = {name: getattr(result, name) for name in meta["arrays"]}
    out = io.BytesIO()
    np.savez_compressed(out, meta=np.array(json.dumps(meta, default=str)), **arrays)
    return out.getvalue()


def unpack(data: bytes, source: SceneSource) -> LandCoverResult:
    """The :class:`LandCoverResult` of :func:`pack`, on ``source`` (the client's own record).

    Raises:
        SoftMapError: the body is not a packed land-cover map.
    """
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            meta = json.loads(str(npz["meta"]))
            arrays = {name: np.asarray(npz[name], dtype=np.float32) for name in meta["arrays"]}
    except (OSError, ValueError, KeyError) as e:
        raise SoftMapError(
            "The service sent a land-cover map this client cannot read; are both the same "
            "SoftMap version?",
            title="Unexpected answer",
        ) from e
    embed = meta["embed"]
    return LandCoverResult(
        source=source,
        head=meta["head"],
        tile_ids=tuple(meta["tile_ids"]),
        probabilities=arrays["probabilities"],
        token_probabilities=arrays.get("token_probabilities"),
        areas=[ClassArea(**a) for a in meta["areas"]],
        region_km2=float(meta["region_km2"]),
        embed=EmbedResult(**{**embed, "tile_ids": tuple(embed["tile_ids"])}),
        predicted=int(meta["predicted"]),
        ood=arrays.get("ood"),
        token_ood=arrays.get("token_ood"),
        unlike_km2=float(meta["unlike_km2"]),
    )


class LandCoverShelf:
    """The last few land-cover maps the service made, by job id (thread-safe, bounded)."""

    def __init__(self, keep: int = 8) -> None:
        self.keep = keep
        self._items: OrderedDict[str, LandCoverResult] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, job_id: str, result: LandCoverResult) -> None:
        with self._lock:
            self._items[job_id] = result
            self._items.move_to_end(job_id)
            while len(self._items) > self.keep:
                self._items.popitem(last=False)

    def get(self, job_id: str) -> LandCoverResult | None:
        with self._lock:
            return self._items.get(job_id)
