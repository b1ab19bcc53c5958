"""SoftCon pretraining: augmentations, the soft contrastive loss, chips with labels, the trainer.

Example::

    from backend.training import TrainConfig, train_softcon

    result = train_softcon(TrainConfig(epochs=1, max_steps=20), Path("runs/try"))
"""

from backend.training.augment import AugmentConfig, augment, random_token_masks, two_views
from backend.training.config import DEFAULT_HOLDOUT, DEFAULT_SOURCES, HoldOut, TrainConfig
from backend.training.softcon_loss import (
    SoftConModel,
    label_similarity,
    soft_cross_entropy,
    soft_targets,
)
from backend.training.trainer import StepInfo, TrainResult, train_softcon

__all__ = [
    "DEFAULT_HOLDOUT",
    "DEFAULT_SOURCES",
    "AugmentConfig",
    "HoldOut",
    "SoftConModel",
    "StepInfo",
    "TrainConfig",
    "TrainResult",
    "augment",
    "label_similarity",
    "random_token_masks",
    "soft_cross_entropy",
    "soft_targets",
    "train_softcon",
    "two_views",
]
