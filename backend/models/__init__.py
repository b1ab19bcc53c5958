"""SoftCon-compatible embedding models: a registry of entries, builders and weight loading.

Example::

    model = create_model("softcon-vits14-s2")  # finds B13_vits14_softcon.pth, loads it strictly
    cls, tokens = model.embed(model.meta.normalization.apply(raw))  # [B, 384], [B, 16, 16, 384]
"""

from backend.models.api import EmbeddingModel, create_model
from backend.models.checkpoints import LoadReport, load_checkpoint
from backend.models.meta import ModelMeta, VitConfig
from backend.models.registry import (
    ModelEntry,
    ModelRegistry,
    default_registry,
    get_model_meta,
    list_models,
)
from backend.models.weights import resolve_weights

__all__ = [
    "EmbeddingModel",
    "LoadReport",
    "ModelEntry",
    "ModelMeta",
    "ModelRegistry",
    "VitConfig",
    "create_model",
    "default_registry",
    "get_model_meta",
    "list_models",
    "load_checkpoint",
    "resolve_weights",
]
