"""Models: official key layouts, DINOv2 numerics, checkpoint layouts, weights lookup, registry."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from backend.errors import (
    BandMismatchError,
    CheckpointMismatchError,
    DeviceError,
    UnknownModelError,
    WeightsNotFoundError,
)
from backend.models import (
    ModelRegistry,
    create_model,
    default_registry,
    get_model_meta,
    list_models,
    load_checkpoint,
    resolve_weights,
)
from backend.models.meta import VitConfig
from backend.models.registry import VIT_B14, VIT_S14, build_backbone
from backend.models.resnet import ResNet50
from backend.models.vit import DinoVisionTransformer
from backend.settings import Settings, get_settings

BLOCK_PARTS = (
    "norm1.weight", "norm1.bias", "attn.qkv.weight", "attn.qkv.bias", "attn.proj.weight",
    "attn.proj.bias", "ls1.gamma", "norm2.weight", "norm2.bias", "mlp.fc1.weight", "mlp.fc1.bias",
    "mlp.fc2.weight", "mlp.fc2.bias", "ls2.gamma",
)  # fmt: skip


# --- reference layouts, written out from the official architectures -----------------------
def official_vit_shapes(dim: int, depth: int, in_chans: int, tokens: int = 257) -> dict:
    """Key → shape of facebookresearch/dinov2 DinoVisionTransformer(block_chunks=0)."""
    shapes = {
        "cls_token": (1, 1, dim),
        "pos_embed": (1, tokens, dim),
        "mask_token": (1, dim),
        "patch_embed.proj.weight": (dim, in_chans, 14, 14),
        "patch_embed.proj.bias": (dim,),
        "norm.weight": (dim,),
        "norm.bias": (dim,),
    }
    per_block = {
        "attn.qkv.weight": (3 * dim, dim),
        "attn.qkv.bias": (3 * dim,),
        "attn.proj.weight": (dim, dim),
        "mlp.fc1.weight": (4 * dim, dim),
        "mlp.fc1.bias": (4 * dim,),
        "mlp.fc2.weight": (dim, 4 * dim),
    }
    for i in range(depth):
        for part in BLOCK_PARTS:
            shapes[f"blocks.{i}.{part}"] = per_block.get(part, (dim,))
    return shapes


def torchvision_resnet50_shapes(in_chans: int) -> dict:
    """Key → shape of torchvision resnet50 without ``fc``."""

    def bn(prefix: str, c: int) -> dict:
        return {
            **{f"{prefix}.{n}": (c,) for n in ("weight", "bias", "running_mean", "running_var")},
            f"{prefix}.num_batches_tracked": (),
        }

    shapes = {"conv1.weight": (64, in_chans, 7, 7), **bn("bn1", 64)}
    inplanes = 64
    stages = zip((64, 128, 256, 512), (3, 4, 6, 3), strict=True)
    for li, (planes, blocks) in enumerate(stages, start=1):
        for b in range(blocks):
            p, cin = f"layer{li}.{b}", inplanes if b == 0 else planes * 4
            shapes |= {f"{p}.conv1.weight": (planes, cin, 1, 1), **bn(f"{p}.bn1", planes)}
            shapes |= {f"{p}.conv2.weight": (planes, planes, 3, 3), **bn(f"{p}.bn2", planes)}
            shapes |= {
                f"{p}.conv3.weight": (planes * 4, planes, 1, 1),
                **bn(f"{p}.bn3", planes * 4),
            }
            if b == 0:
                shapes[f"{p}.downsample.0.weight"] = (planes * 4, inplanes, 1, 1)
                shapes |= bn(f"{p}.downsample.1", planes * 4)
        inplanes = planes * 4
    return shapes


def shapes_of(module: nn.Module) -> dict:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def dinov2_interpolate_pos_encoding(pos_embed: Tensor, x_shape: tuple, patch: int) -> Tensor:
    """dinov2's interpolate_pos_encoding, transcribed (its ``w`` is the height dimension)."""
    _, _, w, h = x_shape
    npatch = (w // patch) * (h // patch)
    n = pos_embed.shape[1] - 1
    if npatch == n and w == h:
        return pos_embed
    pos_embed = pos_embed.float()
    class_pos_embed, patch_pos_embed = pos_embed[:, 0], pos_embed[:, 1:]
    dim = pos_embed.shape[-1]
    w0, h0 = w // patch, h // patch
    m = int(math.sqrt(n))
    patch_pos_embed = F.interpolate(
        patch_pos_embed.reshape(1, m, m, dim).permute(0, 3, 1, 2),
        mode="bicubic",
        antialias=False,
        scale_factor=(float(w0 + 0.1) / m, float(h0 + 0.1) / m),
    )
    assert (w0, h0) == patch_pos_embed.shape[-2:]
    patch_pos_embed = patch_pos_embed.permute(0, 2, 3, 1).view(1, -1, dim)
    return torch.cat((class_pos_embed.unsqueeze(0), patch_pos_embed), dim=1)


def dinov2_reference_forward(m: DinoVisionTransformer, x: Tensor) -> tuple[Tensor, Tensor]:
    """DINOv2's forward_features with explicit softmax attention and functional ops."""
    b, _, height, width = x.shape
    p, dim, heads = m.patch_size, m.embed_dim, m.cfg.num_heads
    t = F.conv2d(x, m.patch_embed.proj.weight, m.patch_embed.proj.bias, stride=p)
    t = torch.cat((m.cls_token.expand(b, -1, -1), t.flatten(2).transpose(1, 2)), dim=1)
    t = t + dinov2_interpolate_pos_encoding(m.pos_embed, tuple(x.shape), p)
    n = t.shape[1]
    for blk in m.blocks:
        y = F.layer_norm(t, (dim,), blk.norm1.weight, blk.norm1.bias, eps=1e-6)
        qkv = F.linear(y, blk.attn.qkv.weight, blk.attn.qkv.bias)
        qkv = qkv.reshape(b, n, 3, heads, dim // heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0] * (dim // heads) ** -0.5, qkv[1], qkv[2]
        y = ((q @ k.transpose(-2, -1)).softmax(dim=-1) @ v).transpose(1, 2).reshape(b, n, dim)
        t = t + F.linear(y, blk.attn.proj.weight, blk.attn.proj.bias) * blk.ls1.gamma
        y = F.layer_norm(t, (dim,), blk.norm2.weight, blk.norm2.bias, eps=1e-6)
        y = F.linear(F.gelu(F.linear(y, blk.mlp.fc1.weight, blk.mlp.fc1.bias)), blk.mlp.fc2.weight)
        t = t + (y + blk.mlp.fc2.bias) * blk.ls2.gamma
    t = F.layer_norm(t, (dim,), m.norm.weight, m.norm.bias, eps=1e-6)
    return t[:, 0], t[:, 1:].reshape(b, height // p, width // p, dim)


# --- fixtures and helpers -------------------------------------------------------------------
def perturbed(module: nn.Module, seed: int = 1) -> nn.Module:
    """Move every parameter and BN statistic off its init so that any mis-loading shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
        for name, buf in module.named_buffers():
            if name.endswith("running_mean"):
                buf.copy_(torch.randn(buf.shape, generator=g) * 0.1)
            elif name.endswith("running_var"):
                buf.copy_(1 + torch.rand(buf.shape, generator=g))
            elif name.endswith("num_batches_tracked"):
                buf.fill_(7)
    return module.eval()


def shell_state_dict(module_on_meta: nn.Module) -> dict[str, Tensor]:
    """Right-shaped zero tensors that take a few bytes on disk (expanded from one element)."""
    return {
        k: torch.zeros((), dtype=v.dtype).expand(v.shape)
        for k, v in module_on_meta.state_dict().items()
    }


def meta_vit(cfg: VitConfig, in_chans: int) -> DinoVisionTransformer:
    with torch.device("meta"):
        return DinoVisionTransformer(cfg, in_chans)


def meta_resnet(in_chans: int) -> ResNet50:
    with torch.device("meta"):
        return ResNet50(in_chans)


@pytest.fixture(scope="module")
def vits_source() -> DinoVisionTransformer:
    torch.manual_seed(123)
    return perturbed(DinoVisionTransformer(VIT_S14, 13))


@pytest.fixture
def offline(tmp_path: Path) -> Settings:
    return Settings(offline=True, models_dir=tmp_path / "models", assets_dir=tmp_path / "assets")


@pytest.fixture
def clean_settings_cache():
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def mismatch(path: Path, name: str) -> str:
    with pytest.raises(CheckpointMismatchError) as info:
        create_model(name, checkpoint=path)
    return str(info.value)


# --- architecture: exact official key sets and shapes ---------------------------------------
@pytest.mark.parametrize(("cfg", "dim"), [(VIT_S14, 384), (VIT_B14, 768)])
@pytest.mark.parametrize("in_chans", [13, 2])
def test_vit_state_dict_is_dinov2s(cfg: VitConfig, dim: int, in_chans: int) -> None:
    model = meta_vit(cfg, in_chans)
    expected = official_vit_shapes(dim, 12, in_chans)
    assert set(model.state_dict()) == set(expected)
    assert shapes_of(model) == expected
    assert shapes_of(model)["pos_embed"] == (1, 257, dim)


def test_resnet50_state_dict_is_torchvisions_without_fc() -> None:
    for in_chans in (13, 2):
        model = meta_resnet(in_chans)
        assert shapes_of(model) == torchvision_resnet50_shapes(in_chans)
        assert not any(k.startswith("fc.") for k in model.state_dict())
    out = ResNet50(13).eval()(torch.randn(2, 13, 64, 64))
    assert out.shape == (2, 2048)


def test_init_follows_dinov2_and_torchvision() -> None:
    vit = DinoVisionTransformer(VIT_S14, 13)
    assert torch.count_nonzero(vit.mask_token) == 0
    assert vit.cls_token.abs().max() < 1e-4
    assert 0.015 < float(vit.pos_embed.detach().std()) < 0.025
    assert torch.all(vit.blocks[0].ls1.gamma == 1e-5)
    # DINOv2's trunc_normal_(std=.02) truncates at ±2 absolute, i.e. practically not at all.
    assert float(vit.blocks[0].attn.qkv.weight.detach().std()) == pytest.approx(0.02, rel=0.02)
    assert torch.count_nonzero(vit.blocks[0].mlp.fc1.bias) == 0
    rn = ResNet50(2)
    assert torch.all(rn.bn1.weight == 1)
    assert torch.count_nonzero(rn.bn1.bias) == 0
    fan_out = 64 * 7 * 7
    assert float(rn.conv1.weight.detach().std()) == pytest.approx(math.sqrt(2 / fan_out), rel=0.1)


def test_registry_builders_match_metadata() -> None:
    for meta in list_models():
        with torch.device("meta"):
            module = build_backbone(meta)
        sd = module.state_dict()
        stem = sd["patch_embed.proj.weight" if meta.architecture == "vit" else "conv1.weight"]
        assert stem.shape[1] == meta.in_chans == meta.normalization.num_bands
        if meta.architecture == "vit":
            assert meta.vit is not None
            assert sd["norm.weight"].shape == (meta.embed_dim,)
            assert meta.token_grid == meta.vit.img_size // meta.vit.patch_size
        else:
            assert meta.embed_dim == 2048
            assert meta.patch_size is None


# --- DINOv2 numerics and position embeddings ------------------------------------------------
def test_forward_matches_dinov2_reference_including_nonsquare_inputs() -> None:
    model = create_model("test-vit")
    perturbed(model.module)
    for shape in [(2, 13, 112, 112), (1, 13, 98, 126)]:
        x = torch.randn(*shape)
        cls, tokens = model.embed(x)
        with torch.no_grad():
            ref_cls, ref_tokens = dinov2_reference_forward(model.module, x)
        torch.testing.assert_close(cls, ref_cls, atol=2e-5, rtol=1e-4)
        torch.testing.assert_close(tokens, ref_tokens, atol=2e-5, rtol=1e-4)


def test_pos_embed_interpolation_is_dinov2s(vits_source: DinoVisionTransformer) -> None:
    vit = vits_source
    assert vit.interpolate_pos_encoding(16, 16) is vit.pos_embed  # trained 224 grid: untouched
    with torch.no_grad():
        for grid_h, grid_w in [(8, 8), (12, 16), (5, 3), (20, 20)]:
            ours = vit.interpolate_pos_encoding(grid_h, grid_w)
            ref = dinov2_interpolate_pos_encoding(
                vit.pos_embed, (1, 13, grid_h * 14, grid_w * 14), 14
            )
            assert ours.shape == (1, 1 + grid_h * grid_w, 384)
            torch.testing.assert_close(ours, ref, atol=0, rtol=0)
    small = create_model("test-vit").module
    assert isinstance(small, DinoVisionTransformer)
    assert small.interpolate_pos_encoding(8, 8) is small.pos_embed


@pytest.mark.parametrize(("size", "grid"), [((112, 112), (8, 8)), ((168, 224), (12, 16))])
def test_token_grid_follows_input_size(
    vits_source: DinoVisionTransformer, size: tuple[int, int], grid: tuple[int, int]
) -> None:
    cls, tokens = create_model("test-vit").embed(torch.randn(2, 13, *size))
    assert cls.shape == (2, 48)
    assert tokens is not None
    assert tokens.shape == (2, *grid, 48)
    with torch.no_grad():
        _, vits_tokens = vits_source.forward_features(torch.randn(1, 13, *size))
    assert vits_tokens.shape == (1, *grid, 384)


def test_input_not_multiple_of_patch_is_refused() -> None:
    with pytest.raises(ValueError, match=r"multiples of the patch size 14.*100x112"):
        create_model("test-vit").embed(torch.randn(1, 13, 100, 112))


# --- checkpoints: both published layouts round-trip exactly ---------------------------------
def test_softcon_release_layout_loads_exactly(vits_source, tmp_path: Path) -> None:
    path = tmp_path / "B13_vits14_softcon.pth"
    torch.save(vits_source.state_dict(), path)
    model = create_model("softcon-vits14-s2", checkpoint=path)
    assert model.load_report is not None
    assert model.load_report.layout == "softcon-release"
    assert model.load_report.dropped == ()
    assert model.load_report.filled == ()
    x = torch.randn(2, 13, 56, 56)
    cls, tokens = model.embed(x)
    with torch.no_grad():
        ref_cls, ref_tokens = vits_source.forward_features(x)
    assert torch.equal(cls, ref_cls)
    assert torch.equal(tokens, ref_tokens)
    assert model.module.training is False
    assert model.device == torch.device("cpu")


def test_torchgeo_enc_layout_fills_mask_token_and_drops_head(vits_source, tmp_path: Path) -> None:
    state = {k: v for k, v in vits_source.state_dict().items() if k != "mask_token"}
    state |= {"head.weight": torch.randn(10, 384), "head.bias": torch.randn(10)}
    path = tmp_path / "B13_vits14_softcon_enc.pth"
    torch.save(state, path)
    model = create_model("softcon-vits14-s2", checkpoint=path)
    report = model.load_report
    assert report is not None
    assert report.layout == "torchgeo-enc"
    assert report.dropped == ("head.bias", "head.weight")
    assert report.filled == ("mask_token",)
    assert torch.count_nonzero(model.module.mask_token) == 0
    x = torch.randn(2, 13, 56, 56)
    with torch.no_grad():
        ref_cls, ref_tokens = vits_source.forward_features(x)
    cls, tokens = model.embed(x)
    assert torch.equal(cls, ref_cls)
    assert torch.equal(tokens, ref_tokens)


def test_wrapped_training_checkpoint_is_unwrapped(tmp_path: Path) -> None:
    source = perturbed(create_model("test-vit").module)
    teacher = {f"module.backbone.{k}": v for k, v in source.state_dict().items()}
    teacher["module.head.last_layer.weight"] = torch.randn(4, 48)
    path = tmp_path / "checkpoint.pth"
    torch.save({"teacher": teacher, "epoch": 3}, path)
    model = create_model("test-vit", checkpoint=path)
    report = model.load_report
    assert report is not None
    assert report.dropped == ("head.last_layer.weight",)
    assert (
        report.layout == "wrapped (unwrapped 'teacher', stripped 'module.', stripped 'backbone.')"
    )
    x = torch.randn(1, 13, 112, 112)
    with torch.no_grad():
        assert torch.equal(model.embed(x)[0], source.forward_features(x)[0])


@pytest.mark.parametrize("enc", [False, True])
def test_resnet50_checkpoint_round_trip(enc: bool, tmp_path: Path) -> None:
    source = perturbed(ResNet50(2))
    state = source.state_dict()
    if enc:  # a timm/torchgeo export: classifier kept, BN counters not
        state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
        state |= {"fc.weight": torch.randn(5, 2048), "fc.bias": torch.randn(5)}
    path = tmp_path / ("B2_rn50_softcon_enc.pth" if enc else "B2_rn50_softcon.pth")
    torch.save(state, path)
    model = create_model("softcon-rn50-s1", checkpoint=path)
    x = torch.randn(2, 2, 64, 64)
    pooled, tokens = model.embed(x)
    assert tokens is None
    assert pooled.shape == (2, 2048)
    with torch.no_grad():
        assert torch.equal(pooled, source(x))
    report = model.load_report
    assert report is not None
    assert report.layout == ("torchgeo-enc" if enc else "softcon-release")
    assert report.dropped == (("fc.bias", "fc.weight") if enc else ())
    assert len(report.filled) == (53 if enc else 0)


def test_fp16_checkpoint_is_loaded_as_float32(tmp_path: Path) -> None:
    source = perturbed(create_model("test-vit").module)
    path = tmp_path / "half.pth"
    torch.save({k: v.half() for k, v in source.state_dict().items()}, path)
    model = create_model("test-vit", checkpoint=path)
    assert all(p.dtype == torch.float32 for p in model.module.parameters())


# --- checkpoints: mismatches explain themselves ---------------------------------------------
def test_sentinel1_checkpoint_into_sentinel2_model(tmp_path: Path) -> None:
    path = tmp_path / "B2_vits14_softcon.pth"
    torch.save(shell_state_dict(meta_vit(VIT_S14, 2)), path)
    message = mismatch(path, "softcon-vits14-s2")
    assert str(path) in message
    assert "patch_embed.proj.weight: checkpoint [384, 2, 14, 14] vs model [384, 13, 14, 14]" in (
        message
    )
    assert "Sentinel-1 (2-band) checkpoint; use a *-s1 model (softcon-vits14-s1)" in message


def test_resnet_band_mismatch(tmp_path: Path) -> None:
    path = tmp_path / "B13_rn50_softcon.pth"
    torch.save(shell_state_dict(meta_resnet(13)), path)
    message = mismatch(path, "softcon-rn50-s1")
    assert "conv1.weight: checkpoint [64, 13, 7, 7] vs model [64, 2, 7, 7]" in message
    assert "Sentinel-2 (13-band)" in message
    assert "softcon-rn50-s2" in message


def test_vitb_checkpoint_into_vits_model(tmp_path: Path) -> None:
    path = tmp_path / "B13_vitb14_softcon.pth"
    torch.save(shell_state_dict(meta_vit(VIT_B14, 13)), path)
    message = mismatch(path, "softcon-vits14-s2")
    assert "embedding dim 768 vs 384" in message
    assert "use softcon-vitb14-s2" in message
    assert "cls_token: checkpoint [1, 1, 768] vs model [1, 1, 384]" in message
    assert "Wrongly shaped (175)" in message
    assert "… and 167 more" in message


def test_resnet_checkpoint_into_vit_model(tmp_path: Path) -> None:
    path = tmp_path / "B13_rn50_softcon.pth"
    torch.save(shell_state_dict(meta_resnet(13)), path)
    message = mismatch(path, "softcon-vits14-s2")
    assert "ResNet-50 checkpoint" in message
    assert "softcon-rn50-s2" in message
    assert "Missing (174)" in message
    assert "Unexpected (318)" in message


def test_deeper_checkpoint_lists_unexpected_blocks(tmp_path: Path) -> None:
    cfg = get_model_meta("test-vit").vit
    assert cfg is not None
    path = tmp_path / "deep.pth"
    torch.save(shell_state_dict(meta_vit(cfg.model_copy(update={"depth": 3}), 13)), path)
    message = mismatch(path, "test-vit")
    assert "3 transformer blocks, the model 2" in message
    assert "Unexpected (14): blocks.2.norm1.weight" in message


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", "missing, truncated or corrupt"),
        (b"definitely not a checkpoint", "missing, truncated or corrupt"),
    ],
)
def test_garbage_file(tmp_path: Path, content: bytes, expected: str) -> None:
    path = tmp_path / "bad.pth"
    path.write_bytes(content)
    with pytest.raises(CheckpointMismatchError, match=expected) as info:
        load_checkpoint(DinoVisionTransformer(VIT_S14, 13), path, get_model_meta("test-vit"))
    assert str(path) in str(info.value)
    assert info.value.__cause__ is not None
    assert info.value.title == "Cannot read checkpoint"


def test_truncated_file(vits_source, tmp_path: Path) -> None:
    path = tmp_path / "B13_vits14_softcon.pth"
    torch.save(vits_source.state_dict(), path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    message = mismatch(path, "softcon-vits14-s2")
    assert str(path) in message
    assert "truncated or corrupt" in message
    assert "Download it" in message


class NotAStateDict:
    """A custom class: unpickling it needs code execution, which weights_only refuses."""


def test_unsafe_pickle_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "B13_vits14_softcon.pth"
    torch.save({"model": NotAStateDict()}, path)
    with pytest.raises(CheckpointMismatchError) as info:
        create_model("softcon-vits14-s2", checkpoint=path)
    message = str(info.value)
    assert "weights_only=True" in message
    assert "NotAStateDict" in message
    assert str(path) in message
    assert info.value.__cause__ is not None
    assert info.value.title == "Unsafe checkpoint refused"


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        ([1, 2, 3], "it holds a list"),
        ({"epoch": 3}, "entries epoch are not tensors"),
        ({}, "empty"),
    ],
)
def test_not_a_state_dict(tmp_path: Path, obj: object, expected: str) -> None:
    path = tmp_path / "x.pth"
    torch.save(obj, path)
    assert expected in mismatch(path, "test-vit")


# --- weights lookup --------------------------------------------------------------------------
def test_offline_without_weights_says_what_to_put_where(offline: Settings) -> None:
    meta = get_model_meta("softcon-vits14-s2")
    with pytest.raises(WeightsNotFoundError) as info:
        resolve_weights(meta, settings=offline)
    message = str(info.value)
    folder = offline.models_dir.resolve()
    assert "softcon-vits14-s2 needs B13_vits14_softcon.pth. Download it from " in message
    assert f"https://huggingface.co/wangyi111/softcon and put it in {folder}/" in message
    assert "--checkpoint PATH" in message
    assert "offline" in message
    with pytest.raises(WeightsNotFoundError):  # create_model fails before building anything
        create_model("softcon-vitb14-s1", settings=offline)


def test_offline_via_environment(tmp_path: Path, monkeypatch, clean_settings_cache) -> None:
    monkeypatch.setenv("SOFTMAP_OFFLINE", "1")
    monkeypatch.setenv("SOFTMAP_MODELS_DIR", str(tmp_path))
    monkeypatch.setenv("SOFTMAP_ASSETS_DIR", str(tmp_path / "assets"))
    with pytest.raises(WeightsNotFoundError, match=r"B2_rn50_softcon\.pth") as info:
        resolve_weights(get_model_meta("softcon-rn50-s1"))
    assert str(tmp_path.resolve()) in str(info.value)


@pytest.mark.parametrize(
    "where",
    ["models/B13_vits14_softcon.pth", "models/softcon-vits14-s2/B13_vits14_softcon.pth",
     "assets/models/B13_vits14_softcon.pth", "models/B13_vits14_softcon_enc.pth"],
)  # fmt: skip
def test_local_weights_are_found(offline: Settings, tmp_path: Path, where: str) -> None:
    path = tmp_path / where
    path.parent.mkdir(parents=True)
    path.touch()
    assert resolve_weights(get_model_meta("softcon-vits14-s2"), settings=offline) == path


def test_create_model_loads_weights_from_models_dir(vits_source, offline: Settings) -> None:
    offline.models_dir.mkdir()
    torch.save(vits_source.state_dict(), offline.models_dir / "B13_vits14_softcon.pth")
    model = create_model("softcon-vits14-s2", settings=offline)
    assert model.load_report is not None
    assert model.load_report.path == offline.models_dir / "B13_vits14_softcon.pth"
    torch.testing.assert_close(model.module.pos_embed, vits_source.pos_embed, atol=0, rtol=0)


def test_hugging_face_failure_is_explained(tmp_path: Path, monkeypatch) -> None:
    hub = pytest.importorskip("huggingface_hub")
    asked: list[str] = []

    def unreachable(repo_id: str, filename: str, **kwargs: object) -> str:
        asked.append(f"{repo_id}/{filename}")
        raise hub.errors.LocalEntryNotFoundError("cannot reach the Hub and no cached copy")

    monkeypatch.setattr(hub, "hf_hub_download", unreachable)
    online = Settings(offline=False, models_dir=tmp_path, assets_dir=tmp_path / "assets")
    with pytest.raises(WeightsNotFoundError) as info:
        resolve_weights(get_model_meta("softcon-vitb14-s2"), settings=online)
    assert asked == [
        "wangyi111/softcon/B13_vitb14_softcon.pth",
        "wangyi111/softcon/B13_vitb14_softcon_enc.pth",
    ]
    message = str(info.value)
    assert "LocalEntryNotFoundError: cannot reach the Hub" in message
    assert f"put it in {tmp_path.resolve()}/" in message


def test_hugging_face_download_is_used(tmp_path: Path, monkeypatch) -> None:
    hub = pytest.importorskip("huggingface_hub")
    target = tmp_path / "B13_rn50_softcon.pth"

    def download(repo_id: str, filename: str, *, local_dir: Path) -> str:
        assert (repo_id, filename, local_dir) == ("mirror/softcon", target.name, tmp_path)
        target.touch()
        return str(target)

    monkeypatch.setattr(hub, "hf_hub_download", download)
    online = Settings(
        offline=False, models_dir=tmp_path, assets_dir=tmp_path / "a", hf_repo="mirror/softcon"
    )
    assert resolve_weights(get_model_meta("softcon-rn50-s2"), settings=online) == target


def test_explicit_checkpoint_must_exist(tmp_path: Path) -> None:
    with pytest.raises(WeightsNotFoundError, match=r"nope\.pth does not exist"):
        create_model("softcon-vits14-s2", checkpoint=tmp_path / "nope.pth")
    assert resolve_weights(get_model_meta("test-vit")) is None


# --- registry and factory -------------------------------------------------------------------
def test_registry_lists_every_model() -> None:
    ids = [m.id for m in list_models()]
    assert ids == [
        "softcon-vits14-s2", "softcon-vitb14-s2", "softcon-rn50-s2",
        "softcon-vits14-s1", "softcon-vitb14-s1", "softcon-rn50-s1", "softmap-default", "test-vit",
        "test-vit-s1",
    ]  # fmt: skip
    s1 = get_model_meta("softcon-vitb14-s1")
    assert (s1.bands, s1.embed_dim, s1.normalization.mean) == (("VV", "VH"), 768, (-12.59, -20.26))
    assert s1.weight_files == ("B2_vitb14_softcon.pth", "B2_vitb14_softcon_enc.pth")
    assert get_model_meta("test-vit").license == "MIT"


def test_unknown_model_suggests_the_closest() -> None:
    with pytest.raises(UnknownModelError) as info:
        create_model("softcon-vits14-s3")
    message = str(info.value)
    assert "Unknown model 'softcon-vits14-s3'. Did you mean 'softcon-vits14-s2'?" in message
    assert "Available: softcon-vits14-s2, softcon-vitb14-s2" in message


def test_register_returns_a_new_registry() -> None:
    meta = get_model_meta("test-vit").model_copy(update={"id": "my-vit"})
    extended = default_registry.register(meta)
    assert isinstance(extended, ModelRegistry)
    assert "my-vit" in extended
    assert "my-vit" not in default_registry
    assert len(extended) == len(default_registry) + 1
    with pytest.raises(ValueError, match="already registered"):
        extended.register(meta)
    model = create_model("my-vit", registry=extended)
    assert model.meta.id == "my-vit"


def test_test_vit_is_deterministic_and_leaves_global_rng_alone() -> None:
    torch.manual_seed(42)
    before = torch.get_rng_state()
    first, second = create_model("test-vit"), create_model("test-vit")
    assert torch.equal(torch.get_rng_state(), before)
    second_state = second.module.state_dict()
    for key, value in first.module.state_dict().items():
        assert torch.equal(value, second_state[key]), key
    x = torch.randn(1, 13, 112, 112)
    assert torch.equal(first.embed(x)[0], second.embed(x)[0])


def test_random_init_is_seeded() -> None:
    a = create_model("softcon-rn50-s2", pretrained=False)
    b = create_model("softcon-rn50-s2", pretrained=False)
    assert a.load_report is None
    assert torch.equal(a.module.conv1.weight, b.module.conv1.weight)


def test_wrong_band_count_is_a_band_mismatch() -> None:
    with pytest.raises(BandMismatchError, match=r"test-vit expects 13 bands .* has 2 channels"):
        create_model("test-vit").embed(torch.randn(1, 2, 112, 112))


def test_device_errors_are_domain_errors() -> None:
    model = create_model("test-vit")
    assert model.to("cpu") is model
    assert model.device.type == "cpu"
    with pytest.raises(DeviceError, match="Cannot move test-vit to 'tpu:0'"):
        model.to("tpu:0")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError):
            model.to("cuda")
