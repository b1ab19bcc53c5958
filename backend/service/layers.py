"""Other layers the cache already holds for a set of tiles: the user's class probabilities.

The Explore map offers them next to the land cover ("Also show"), so a class trained on
My classes can be seen over the analysed region without leaving the page. Nothing is computed
here: only predictions stored by ``classify`` are read.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from backend.classes.classifier import stored_predictions
from backend.classes.user_classes import classes
from backend.service.workspace import Workspace


@dataclass(frozen=True)
class TileValues:
    """One value per tile (``tile_ids[i]`` → ``values[i]``) with what it is."""

    name: str
    title: str
    tile_ids: tuple[str, ...]
    values: NDArray[np.float64]

    def as_dict(self) -> dict[str, float]:
        return dict(zip(self.tile_ids, (float(v) for v in self.values), strict=True))


def class_probability_layers(
    ws: Workspace, model_id: str, preprocessing_hash: str, tile_ids: Sequence[str]
) -> list[TileValues]:
    """P(class) of each user class that has stored predictions for any of these tiles.

    Args:
        ws: the workspace.
        model_id, preprocessing_hash: the embedding set the tiles were analysed with (the
            predictions of another model or preprocessing are not these tiles' predictions).
        tile_ids: the analysed tiles.

    Returns:
        One layer per class, by class name; classes without predictions here are left out.
    """
    with ws.cache(read_only=True) as cache:
        eset = cache.embedding_set(model_id, preprocessing_hash)
        if eset is None:
            return []
        layers = []
        for cls in sorted(classes(cache), key=lambda c: c.name):
            ids, probs = stored_predictions(cache, cls.name, eset, list(tile_ids))
            if ids:
                layers.append(
                    TileValues(
                        name=cls.name,
                        title=f"P({cls.name})",
                        tile_ids=tuple(ids),
                        values=probs,
                    )
                )
        return layers
