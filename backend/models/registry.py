"""The model registry: every model SoftMap can build, with the metadata that travels with it.

The registry is an immutable value (like titiler's algorithm registry):
:meth:`ModelRegistry.register` returns a new registry and never changes the one it is called on,
so the module-level :data:`default_registry` is safe to share between threads and sessions.
"""

from __future__ import annotations

import builtins
import difflib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from torch import nn

from backend.errors import UnknownModelError
from backend.imagery.bands import S1_GRD_BANDS, S2_L1C_BANDS
from backend.imagery.normalization import (
    S1_GRD_MEAN,
    S1_GRD_STD,
    S2_L1C_MEAN,
    S2_L1C_STD,
    Normalization,
)
from backend.models.meta import ModelMeta, Sensor, VitConfig
from backend.models.resnet import RESNET50_DIM, ResNet50
from backend.models.vit import DinoVisionTransformer

#: Builds a freshly initialised backbone for a model entry (weights are loaded afterwards).
Builder = Callable[[ModelMeta], nn.Module]


def build_backbone(meta: ModelMeta) -> nn.Module:
    """The default builder: a DINOv2 ViT or a ResNet-50, shaped by ``meta``.

    Raises:
        ValueError: if a ViT entry carries no :class:`VitConfig`.
    """
    if meta.architecture == "vit":
        if meta.vit is None:
            raise ValueError(f"model '{meta.id}' is a ViT but has no vit config")
        return DinoVisionTransformer(meta.vit, in_chans=meta.in_chans)
    return ResNet50(in_chans=meta.in_chans)


@dataclass(frozen=True)
class ModelEntry:
    """One registered model: its metadata and how to build its backbone."""

    meta: ModelMeta
    builder: Builder


class ModelRegistry:
    """An immutable mapping from model id to :class:`ModelEntry`."""

    def __init__(self, entries: Mapping[str, ModelEntry] | None = None) -> None:
        self._entries: Mapping[str, ModelEntry] = MappingProxyType(dict(entries or {}))

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def names(self) -> builtins.list[str]:
        """Registered model ids, in registration order."""
        return builtins.list(self._entries)

    def entry(self, name: str) -> ModelEntry:
        """The entry for ``name``.

        Raises:
            UnknownModelError: naming the closest registered id and listing all of them.
        """
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownModelError(self._unknown_message(name)) from None

    def get(self, name: str) -> ModelMeta:
        """Metadata of the model ``name`` (see :meth:`entry` for errors)."""
        return self.entry(name).meta

    def builder(self, name: str) -> Builder:
        """The backbone builder of the model ``name`` (see :meth:`entry` for errors)."""
        return self.entry(name).builder

    def register(
        self, meta: ModelMeta, builder: Builder = build_backbone, *, overwrite: bool = False
    ) -> ModelRegistry:
        """A new registry holding every entry of this one plus ``meta``.

        Raises:
            ValueError: if ``meta.id`` is already registered and ``overwrite`` is False.
        """
        if meta.id in self._entries and not overwrite:
            raise ValueError(f"model '{meta.id}' is already registered")
        return ModelRegistry({**self._entries, meta.id: ModelEntry(meta, builder)})

    def list(self) -> builtins.list[ModelMeta]:
        """Metadata of every registered model, in registration order."""
        return [entry.meta for entry in self._entries.values()]

    def _unknown_message(self, name: str) -> str:
        names = builtins.list(self._entries)
        lowered = {n.lower(): n for n in names}
        close = difflib.get_close_matches(name.strip().lower(), builtins.list(lowered), n=1)
        hint = f" Did you mean '{lowered[close[0]]}'?" if close else ""
        return f"Unknown model '{name}'.{hint} Available: {', '.join(names) or 'none'}."


# --- the SoftCon family -------------------------------------------------------------------------
#: Licence of the SoftCon weights as far as we could establish it: the code repository
#: (zhu-xlab/softcon) has a README but no LICENSE file and no licence section, and we found no
#: licence stated for the Hugging Face repository. The ViT code is DINOv2's (Apache-2.0), which
#: covers code, not these weights, so we do not claim a licence the authors have not given.
SOFTCON_LICENSE = (
    "Not stated by the authors (no licence found in github.com/zhu-xlab/softcon or for "
    "huggingface.co/wangyi111/softcon); verify with them before redistributing the weights"
)
SOFTCON_SOURCE = (
    "SoftCon (Wang et al., 'Multi-label guided soft contrastive learning for efficient Earth "
    "observation pretraining', IEEE TGRS 2024), github.com/zhu-xlab/softcon, "
    "huggingface.co/wangyi111/softcon"
)
SOFTCON_HF_REPO = "wangyi111/softcon"

VIT_S14 = VitConfig(embed_dim=384, depth=12, num_heads=6, patch_size=14, img_size=224)
VIT_B14 = VitConfig(embed_dim=768, depth=12, num_heads=12, patch_size=14, img_size=224)

_S2_NORM = Normalization(scheme="ssl4eo", mean=S2_L1C_MEAN, std=S2_L1C_STD)
_S1_NORM = Normalization(scheme="ssl4eo", mean=S1_GRD_MEAN, std=S1_GRD_STD)

_SENSORS: dict[str, tuple[Sensor, tuple[str, ...], Normalization, str, str]] = {
    # suffix: (sensor, bands, normalisation, file prefix, human name)
    "s2": ("S2-L1C", S2_L1C_BANDS, _S2_NORM, "B13", "Sentinel-2 L1C, 13 bands"),
    "s1": ("S1-GRD", S1_GRD_BANDS, _S1_NORM, "B2", "Sentinel-1 GRD, VV+VH"),
}


def _softcon_vit(size: str, cfg: VitConfig, sensor_key: str) -> ModelMeta:
    sensor, bands, norm, prefix, human = _SENSORS[sensor_key]
    arch = f"vit{size}14"
    grid = cfg.img_size // cfg.patch_size
    return ModelMeta(
        id=f"softcon-{arch}-{sensor_key}",
        title=f"SoftCon ViT-{size.upper()}/14 · {human}",
        architecture="vit",
        sensor=sensor,
        bands=bands,
        normalization=norm,
        chip_size=cfg.img_size,
        patch_size=cfg.patch_size,
        embed_dim=cfg.embed_dim,
        vit=cfg,
        license=SOFTCON_LICENSE,
        source=SOFTCON_SOURCE,
        weight_files=(f"{prefix}_{arch}_softcon.pth", f"{prefix}_{arch}_softcon_enc.pth"),
        hf_repo=SOFTCON_HF_REPO,
        description=(
            f"DINOv2 ViT-{size.upper()}/14 continually pretrained with soft contrastive learning "
            f"on SSL4EO-S12 ({human}); {cfg.embed_dim}-d chip embedding plus a "
            f"{grid}×{grid} grid of patch tokens per {cfg.img_size} px chip."
        ),
    )


def _softcon_rn50(sensor_key: str) -> ModelMeta:
    sensor, bands, norm, prefix, human = _SENSORS[sensor_key]
    return ModelMeta(
        id=f"softcon-rn50-{sensor_key}",
        title=f"SoftCon ResNet-50 · {human}",
        architecture="resnet50",
        sensor=sensor,
        bands=bands,
        normalization=norm,
        chip_size=224,
        patch_size=None,
        embed_dim=RESNET50_DIM,
        license=SOFTCON_LICENSE,
        source=SOFTCON_SOURCE,
        weight_files=(f"{prefix}_rn50_softcon.pth", f"{prefix}_rn50_softcon_enc.pth"),
        hf_repo=SOFTCON_HF_REPO,
        description=(
            f"ResNet-50 pretrained with soft contrastive learning on SSL4EO-S12 ({human}); "
            "one global-average-pooled 2048-d embedding per chip, no patch tokens."
        ),
    )


TEST_VIT = ModelMeta(
    id="test-vit",
    title="Test ViT (random weights)",
    architecture="vit",
    sensor="S2-L1C",
    bands=S2_L1C_BANDS,
    normalization=_S2_NORM,
    chip_size=112,
    patch_size=14,
    embed_dim=48,
    # LayerScale 1.0 so that every block shapes the output of these random weights.
    vit=VitConfig(
        embed_dim=48, depth=2, num_heads=3, patch_size=14, img_size=112, layerscale_init=1.0
    ),
    license="MIT",
    source="SoftMap test model: seeded random initialisation, no pretrained weights",
    random_init_seed=0,
    description="A tiny 2-block ViT for fast tests and demos; its embeddings carry no meaning.",
)

#: The Sentinel-1 twin of test-vit (VV, VH in dB, SSL4EO-S12 S1 statistics), for S1 and S2 + S1
#: fusion tests: 112 px chips fit the 120 px BigEarthNet-S1 patches.
TEST_VIT_S1 = TEST_VIT.model_copy(
    update={
        "id": "test-vit-s1",
        "title": "Test ViT · Sentinel-1 GRD, VV+VH (random weights)",
        "sensor": "S1-GRD",
        "bands": S1_GRD_BANDS,
        "normalization": _S1_NORM,
        "description": "test-vit for Sentinel-1 (2 bands); its embeddings carry no meaning.",
    }
)


#: SoftMap's own bundled model: small enough to embed the demo fast on 2 CPU cores, trained by
#: ``scripts/train_default_model.sh`` (``softmap train softcon``).
#: Model card: assets/models/softmap-default.md.
SOFTMAP_DEFAULT_VIT = VitConfig(
    embed_dim=192, depth=4, num_heads=3, patch_size=8, img_size=64, layerscale_init=0.1
)
SOFTMAP_DEFAULT = ModelMeta(
    id="softmap-default",
    title="SoftMap default ViT (192-d, 4 blocks, patch 8) · Sentinel-2 L1C, 13 bands",
    architecture="vit",
    sensor="S2-L1C",
    bands=S2_L1C_BANDS,
    normalization=_S2_NORM,
    chip_size=SOFTMAP_DEFAULT_VIT.img_size,
    patch_size=SOFTMAP_DEFAULT_VIT.patch_size,
    embed_dim=SOFTMAP_DEFAULT_VIT.embed_dim,
    vit=SOFTMAP_DEFAULT_VIT,
    license="MIT (weights); trained on Copernicus Sentinel data and OSM-derived labels (ODbL 1.0)",
    source=(
        "SoftMap: trained from scratch with SoftMap's SoftCon implementation (backend.training) "
        "on the bundled demo scenes; model card assets/models/softmap-default.md"
    ),
    weight_files=("softmap-default.pt",),
    description=(
        "A 4-block, 192-d DINOv2-style ViT with 8 px patches on 64 px chips (640 m tiles, an "
        "8×8 grid of 80 m patch tokens), pretrained with soft contrastive learning on the two "
        "bundled scenes only. A demo model: fast on a CPU, far weaker than the SoftCon weights."
    ),
)


def _default_registry() -> ModelRegistry:
    registry = ModelRegistry()
    for sensor_key in ("s2", "s1"):
        registry = registry.register(_softcon_vit("s", VIT_S14, sensor_key))
        registry = registry.register(_softcon_vit("b", VIT_B14, sensor_key))
        registry = registry.register(_softcon_rn50(sensor_key))
    registry = registry.register(SOFTMAP_DEFAULT)
    return registry.register(TEST_VIT).register(TEST_VIT_S1)


#: Every built-in model. Extend it with ``default_registry.register(...)`` (which returns a copy).
default_registry: ModelRegistry = _default_registry()


#: Joins the S2 and S1 model ids of a fused S2 + S1 embedding set (``backend.embedding.fusion``).
FUSED_SEPARATOR = "+"


def fused_model_meta(name: str) -> ModelMeta:
    """Metadata of a fused S2 + S1 embedding set ``"<s2 model>+<s1 model>"``.

    Not a model that runs: its embeddings are made by ``softmap fuse`` from the two models'
    (``embed_dim`` is the sum, ``bands`` and ``normalization`` are both models' in turn).

    Raises:
        UnknownModelError: a part is unknown, or they are not one S2 and one S1 model.
    """
    parts = name.split(FUSED_SEPARATOR)
    if len(parts) != 2:
        raise UnknownModelError(
            f"'{name}' is not a fused model id: use <s2 model>{FUSED_SEPARATOR}<s1 model>."
        )
    s2, s1 = default_registry.get(parts[0]), default_registry.get(parts[1])
    if s2.sensor == "S1-GRD" or s1.sensor != "S1-GRD":
        raise UnknownModelError(
            f"'{name}' does not join a Sentinel-2 model and a Sentinel-1 model, in that order."
        )
    seed = s2.random_init_seed if s2.random_init_seed is not None else s1.random_init_seed
    return ModelMeta(
        id=name,
        title=f"S2 + S1 · {s2.id} + {s1.id}",
        architecture=s2.architecture,
        sensor=s2.sensor,
        bands=s2.bands + s1.bands,
        normalization=Normalization(
            scheme=s2.normalization.scheme,
            mean=s2.normalization.mean + s1.normalization.mean,
            std=s2.normalization.std + s1.normalization.std,
        ),
        chip_size=s2.chip_size,
        stride=s2.stride,
        patch_size=None,
        embed_dim=s2.embed_dim + s1.embed_dim,
        license=f"S2 part: {s2.license}; S1 part: {s1.license}",
        source=f"Fused embedding set of {s2.id} (Sentinel-2) and {s1.id} (Sentinel-1)",
        random_init_seed=seed,
        description=(
            f"{s2.embed_dim}-d {s2.id} and {s1.embed_dim}-d {s1.id} embeddings of the same "
            "places, each L2-normalised and concatenated with weights (softmap fuse); tiles one "
            "sensor lacks keep the other's half."
        ),
    )


def get_model_meta(name: str) -> ModelMeta:
    """Metadata of the built-in model ``name`` (or of a fused ``"<s2>+<s1>"`` set).

    Raises:
        UnknownModelError: suggesting the closest id.
    """
    if FUSED_SEPARATOR in name and name not in default_registry:
        return fused_model_meta(name)
    return default_registry.get(name)


def list_models() -> list[ModelMeta]:
    """Metadata of every built-in model."""
    return default_registry.list()
