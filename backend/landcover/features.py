"""What a spectral head sees besides the embedding, and how unlike its training data a sample is.

* :func:`tile_spectra` reads a few bands of tiles once and gives, per tile and per ``g × g``
  cell, the spectral features of :mod:`backend.landcover.spectral` and the water rule's shares.
* :class:`OutOfDistribution` scores how far a head's input lies from its training inputs: the
  mean Euclidean distance to the ``k`` nearest training samples, in the first principal
  components of the standardised inputs, divided by a limit calibrated on held-out samples
  (the ``quantile`` of their own distances to the training set). A score above 1 means the
  sample is farther from everything the head was trained on than 99 % of held-out samples of
  the classes it knows: the map shows it as "unlike the training data" instead of a class.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from backend.imagery.reader import SceneReader
from backend.imagery.sources import SceneSource
from backend.imagery.tiling import tile_from_id
from backend.landcover.spectral import (
    FEATURE_NAMES,
    RULE_BANDS,
    cell_features,
    rule_fractions,
    stack_reflectance,
)

#: Principal components kept for the distance.
OOD_COMPONENTS = 32
#: Training samples kept as the reference set (a seeded random subset).
OOD_REFERENCE = 4000
#: Neighbours averaged.
OOD_NEIGHBOURS = 5
#: Held-out quantile that sets the limit.
OOD_QUANTILE = 0.995


@dataclass(frozen=True)
class TileSpectra:
    """Spectral features and water-rule shares of ``n`` tiles, per tile and per cell."""

    tile_features: NDArray[np.float32]  # (n, F)
    tile_rules: NDArray[np.float32]  # (n, 3) water, land, ambiguous
    cell_features: NDArray[np.float32] | None  # (n, g, g, F)
    cell_rules: NDArray[np.float32] | None  # (n, g, g, 3)


def tile_spectra(
    source: SceneSource, tile_ids: Sequence[str], grid: int | None = None, *, batch: int = 64
) -> TileSpectra:
    """Read the rule bands of tiles and summarise them per tile (and per cell when ``grid``)."""
    bands = [b for b in (*RULE_BANDS, "B10") if b in source.band_names]
    tf, tr, cf, cr = [], [], [], []
    with SceneReader(source) as reader:
        for i in range(0, len(tile_ids), batch):
            ids = tile_ids[i : i + batch]
            raw = np.stack([reader.read(tile_from_id(t, source)[4], bands) for t in ids])
            scl = None
            if source.scl is not None:
                scl = np.stack(
                    [
                        reader.read_blocks(tile_from_id(t, source)[4], 1, [source.scl], raw=True)[0]
                        for t in ids
                    ]
                )
            refl = stack_reflectance(raw, bands, source.dn_scale)
            tf.append(cell_features(refl, 1, scl=scl)[:, 0, 0])
            tr.append(rule_fractions(refl, 1, scl=scl)[:, 0, 0])
            if grid and grid > 1:
                cf.append(cell_features(refl, grid, scl=scl))
                cr.append(rule_fractions(refl, grid, scl=scl))
    n_feat = len(FEATURE_NAMES)
    return TileSpectra(
        np.concatenate(tf) if tf else np.zeros((0, n_feat), np.float32),
        np.concatenate(tr) if tr else np.zeros((0, 3), np.float32),
        np.concatenate(cf) if cf else None,
        np.concatenate(cr) if cr else None,
    )


@dataclass(frozen=True)
class OutOfDistribution:
    """A calibrated distance-to-training-data score (see the module docstring)."""

    mean: NDArray[np.float32]  # (d,)
    std: NDArray[np.float32]  # (d,)
    components: NDArray[np.float32]  # (k, d)
    reference: NDArray[np.float32]  # (m, k) projected training samples
    limit: float
    neighbours: int = OOD_NEIGHBOURS
    quantile: float = OOD_QUANTILE

    def _project(self, x: NDArray[np.floating]) -> NDArray[np.float32]:
        z = (np.asarray(x, dtype=np.float32) - self.mean) / self.std
        return np.asarray(z @ self.components.T, dtype=np.float32)

    def distance(self, x: NDArray[np.floating], *, chunk: int = 4096) -> NDArray[np.float32]:
        """Mean distance to the nearest training samples, for inputs ``(..., d)``."""
        arr = np.asarray(x, dtype=np.float32)
        lead = arr.shape[:-1]
        flat = arr.reshape(-1, arr.shape[-1])
        ref = self.reference
        ref_sq = (ref * ref).sum(axis=1)
        k = min(self.neighbours, len(ref))
        out = np.empty(len(flat), dtype=np.float32)
        for i in range(0, len(flat), chunk):
            p = self._project(flat[i : i + chunk])
            d2 = (p * p).sum(axis=1)[:, None] + ref_sq[None, :] - 2.0 * (p @ ref.T)
            part = np.partition(np.maximum(d2, 0.0), k - 1, axis=1)[:, :k]
            out[i : i + chunk] = np.sqrt(part).mean(axis=1)
        return out.reshape(lead)

    def score(self, x: NDArray[np.floating]) -> NDArray[np.float32]:
        """Distance divided by the calibrated limit: above 1 is "unlike the training data"."""
        return np.asarray(self.distance(x) / np.float32(self.limit), dtype=np.float32)

    def arrays(self, prefix: str) -> dict[str, NDArray[np.float32]]:
        return {
            f"{prefix}_ood_mean": self.mean,
            f"{prefix}_ood_std": self.std,
            f"{prefix}_ood_components": self.components,
            f"{prefix}_ood_reference": self.reference.astype(np.float16).astype(np.float32),
        }

    def info(self) -> dict[str, float | int]:
        return {
            "limit": round(float(self.limit), 6),
            "neighbours": self.neighbours,
            "quantile": self.quantile,
            "components": int(self.components.shape[0]),
            "reference_samples": int(self.reference.shape[0]),
        }

    @classmethod
    def from_arrays(
        cls, arrays: dict[str, NDArray[np.float32]], prefix: str, info: dict[str, float | int]
    ) -> OutOfDistribution:
        return cls(
            arrays[f"{prefix}_ood_mean"],
            arrays[f"{prefix}_ood_std"],
            arrays[f"{prefix}_ood_components"],
            arrays[f"{prefix}_ood_reference"].astype(np.float32),
            float(info["limit"]),
            int(info.get("neighbours", OOD_NEIGHBOURS)),
            float(info.get("quantile", OOD_QUANTILE)),
        )


def fit_ood(
    train: NDArray[np.floating],
    heldout: NDArray[np.floating],
    *,
    components: int = OOD_COMPONENTS,
    max_reference: int = OOD_REFERENCE,
    neighbours: int = OOD_NEIGHBOURS,
    quantile: float = OOD_QUANTILE,
    seed: int = 0,
) -> OutOfDistribution:
    """Fit the reference set on training inputs and calibrate the limit on held-out ones.

    Args:
        train: ``(n, d)`` training inputs of the head.
        heldout: ``(m, d)`` inputs of held-out samples (e.g. the evaluation polygons' cells);
            with none, the training samples themselves calibrate it (leave-one-out is not
            done, so the limit is then optimistic).
    """
    x = np.asarray(train, dtype=np.float32)
    mean = x.mean(axis=0)
    std = x.std(axis=0) + 1e-6
    z = (x - mean) / std
    k = int(min(components, z.shape[1], max(1, z.shape[0] - 1)))
    _, _, vt = np.linalg.svd(z - z.mean(axis=0), full_matrices=False)
    comps = vt[:k].astype(np.float32)
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(z), size=min(max_reference, len(z)), replace=False)
    ref = (z[np.sort(pick)] @ comps.T).astype(np.float16).astype(np.float32)
    model = OutOfDistribution(mean, std, comps, ref, 1.0, neighbours, quantile)
    calib = np.asarray(heldout, dtype=np.float32) if len(heldout) else x
    limit = float(np.quantile(model.distance(calib), quantile))
    return OutOfDistribution(mean, std, comps, ref, max(limit, 1e-6), neighbours, quantile)
