"""Training chips: normalised image windows cut from scenes, each with its soft label.

Chips lie on each source's 10 m grid at a fixed stride (ids as tile ids,
``{source}/{chip}/{stride}/{row}_{col}``), skip windows with nodata, and keep clear of a spatial
:class:`~backend.training.config.HoldOut`, so evaluation can use tiles the encoder never saw.

A source's label mapping is the name of its land-use raster's class mapping (e.g.
``osm-brandenburg``), or :data:`REFERENCE_LABELS` (``"reference"``): then its fractions come from
the reference labels of :mod:`backend.landcover.reference` (cloud and nodata > the water rule >
the photo-interpreted polygons > the snow rule > the land-use raster and the cluster raster,
``train`` blocks only), the same labels the land-cover heads are fitted on, and its chips keep
clear of every evaluation polygon and its buffer, so the held-out reference set stays unseen by
the encoder as well as by the heads.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor

from backend.imagery.normalization import neutral_value
from backend.imagery.reader import PixelWindow, SceneReader
from backend.imagery.sources import SceneSource
from backend.imagery.tiling import make_tile_id
from backend.landcover.labels import N_CLASSES, read_label_window, soft_labels
from backend.models.meta import ModelMeta
from backend.training.config import HoldOut

#: The label "mapping" that takes a source's fractions from its combined reference labels.
REFERENCE_LABELS = "reference"


@dataclass(frozen=True)
class ChipSet:
    """Chips ready for training.

    Attributes:
        ids: One id per chip (a tile id on the chip grid of its source).
        images: ``[N, C, H, W]`` normalised chips (float16 to halve memory).
        fractions: ``[N, 9]`` Dynamic World class fractions (zero rows when unlabelled).
        has_label: ``[N]`` whether the chip has a usable label.
        sources: Per source: chips, labelled chips, and windows dropped (hold-out, nodata).
    """

    ids: tuple[str, ...]
    images: Tensor
    fractions: Tensor
    has_label: Tensor
    sources: dict[str, dict[str, int | str | None]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ids)

    def manifest(self) -> dict[str, object]:
        """The data list saved next to a checkpoint: sources, counts and every chip id."""
        return {
            "chips": len(self),
            "labelled": int(self.has_label.sum()),
            "sources": self.sources,
            "ids": list(self.ids),
            "labelled_ids": [
                i for i, h in zip(self.ids, self.has_label.tolist(), strict=True) if h
            ],
        }


def _overlaps(r0: int, c0: int, size: int, boxes: Sequence[tuple[int, int, int, int]]) -> bool:
    return any(
        r0 < br1 and br0 < r0 + size and c0 < bc1 and bc0 < c0 + size
        for br0, bc0, br1, bc1 in boxes
    )


def eval_zone_boxes(source: SceneSource) -> list[tuple[int, int, int, int]]:
    """Pixel boxes ``(row0, col0, row1, col1)`` of a scene's evaluation polygons and buffer.

    Empty when the scene has no reference polygons.
    """
    from backend.landcover.reference import BUFFER_M, reference_polygons

    boxes = []
    inverse = ~source.grid.affine
    for poly in reference_polygons(source, "eval"):
        x0, y0, x1, y1 = poly.geometry.buffer(BUFFER_M).bounds
        ca, ra = inverse @ (x0, y1)
        cb, rb = inverse @ (x1, y0)
        r0, r1 = sorted((ra, rb))
        c0, c1 = sorted((ca, cb))
        boxes.append((int(np.floor(r0)), int(np.floor(c0)), int(np.ceil(r1)), int(np.ceil(c1))))
    return boxes


def chip_origins(
    source: SceneSource, chip: int, stride: int, holdout: HoldOut | None = None
) -> list[tuple[int, int]]:
    """(grid row, grid col) of every chip fully inside ``source`` and clear of the hold-out."""
    rows = (source.grid.height - chip) // stride + 1
    cols = (source.grid.width - chip) // stride + 1
    boxes = (
        holdout.pixel_boxes(with_buffer=True)
        if holdout is not None and holdout.source == source.id
        else []
    )
    return [
        (r, c)
        for r in range(max(rows, 0))
        for c in range(max(cols, 0))
        if not _overlaps(r * stride, c * stride, chip, boxes)
    ]


def _cut(
    arr: NDArray[np.generic], origins: Sequence[tuple[int, int]], chip: int, stride: int
) -> NDArray[np.generic]:
    return np.stack(
        [
            arr[..., r * stride : r * stride + chip, c * stride : c * stride + chip]
            for r, c in origins
        ]
    )


def _label_values(source: SceneSource, window: PixelWindow, mapping: str) -> NDArray[np.integer]:
    """A source's label values over ``window``: reference classes or its label raster's codes."""
    if mapping != REFERENCE_LABELS:
        return read_label_window(source, window)
    from backend.landcover.reference import ReferenceLabeler

    with ReferenceLabeler(source) as labeler:
        return labeler.labels(window, "train")


def load_chips(
    sources: Sequence[tuple[SceneSource, str | None]],
    meta: ModelMeta,
    *,
    strides: Mapping[str, int] | None = None,
    holdout: HoldOut | None = None,
    max_nodata_fraction: float = 0.05,
    min_labelled: float = 0.25,
) -> ChipSet:
    """Cut every training chip of ``sources`` with the model's bands and normalisation.

    Args:
        sources: Each scene with the class mapping of its label layer, :data:`REFERENCE_LABELS`
            (its combined reference labels), or None (no labels).
        meta: The model being trained (bands, normalisation, chip size).
        strides: Step between chips per source id (default: half a chip).
        holdout: Blocks of one source kept out, with their buffer.
        max_nodata_fraction: Chips with more nodata pixels are skipped.
        min_labelled: Minimum labelled fraction for a chip to have a label.

    Raises:
        SoftMapError: a scene or label raster cannot be read, or bands are missing.
    """
    chip = meta.chip_size
    fill = {b: neutral_value(meta.normalization, i) for i, b in enumerate(meta.bands) if b == "B10"}
    ids: list[str] = []
    images: list[Tensor] = []
    fractions: list[NDArray[np.float32]] = []
    has_label: list[NDArray[np.bool_]] = []
    summary: dict[str, dict[str, int | str | None]] = {}
    for source, mapping in sources:
        stride = (strides or {}).get(source.id, chip // 2)
        reference = mapping == REFERENCE_LABELS
        everything = chip_origins(source, chip, stride)
        held = chip_origins(source, chip, stride, holdout)
        avoid = eval_zone_boxes(source) if reference else []
        origins = [o for o in held if not _overlaps(o[0] * stride, o[1] * stride, chip, avoid)]
        full = PixelWindow(0, 0, source.grid.width, source.grid.height)
        with SceneReader(source) as reader:
            raw = reader.read(full, meta.bands, fill=fill)
        valid = (raw != 0).any(axis=0)
        nodata = 1.0 - _cut(valid, origins, chip, stride).mean(axis=(1, 2))
        keep = [o for o, f in zip(origins, nodata, strict=True) if f <= max_nodata_fraction]
        if not keep:
            summary[source.id] = {"chips": 0, "labelled": 0, "mapping": mapping}
            continue
        norm = meta.normalization.apply(torch.from_numpy(raw)).to(torch.float16)
        del raw
        images.append(torch.from_numpy(_cut(norm.numpy(), keep, chip, stride)))
        if mapping is not None:
            values = _label_values(source, full, mapping)
            windows = _cut(values, keep, chip, stride).astype(np.int32)
            labels = soft_labels(
                windows, "dynamic-world" if reference else mapping, min_labelled=min_labelled
            )
            fractions.append(labels.fractions)
            has_label.append(labels.has_label)
        else:
            fractions.append(np.zeros((len(keep), N_CLASSES), dtype=np.float32))
            has_label.append(np.zeros(len(keep), dtype=bool))
        ids.extend(make_tile_id(source.id, chip, stride, r, c) for r, c in keep)
        summary[source.id] = {
            "mapping": mapping,
            "stride": stride,
            "chips": len(keep),
            "labelled": int(has_label[-1].sum()),
            "held_out": len(everything) - len(held),
            "eval_zone_skipped": len(held) - len(origins),
            "nodata_skipped": len(origins) - len(keep),
        }
    if not ids:
        from backend.errors import SoftMapError

        raise SoftMapError(
            "No training chips: every window was held out or had nodata. Check the sources, "
            "the hold-out and --max-nodata.",
            title="No training data",
        )
    return ChipSet(
        ids=tuple(ids),
        images=torch.cat(images),
        fractions=torch.from_numpy(np.concatenate(fractions)),
        has_label=torch.from_numpy(np.concatenate(has_label)),
        sources=summary,
    )
