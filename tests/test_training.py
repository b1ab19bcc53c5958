"""SoftCon training on the bundled scenes: chips, hold-out, a few steps, checkpoints, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from backend.cli import main
from backend.imagery.sources import SceneSource
from backend.models import create_model
from backend.models.registry import default_registry, get_model_meta
from backend.training import DEFAULT_HOLDOUT, AugmentConfig, SoftConModel, TrainConfig
from backend.training.augment import random_token_masks, two_views
from backend.training.chips import (
    REFERENCE_LABELS,
    ChipSet,
    chip_origins,
    eval_zone_boxes,
    load_chips,
)
from backend.training.trainer import build_encoder, train_softcon


@pytest.fixture(scope="module")
def brandenburg_chips(brandenburg: SceneSource) -> ChipSet:
    meta = get_model_meta("softmap-default")
    return load_chips(
        [(brandenburg, "osm-brandenburg")],
        meta,
        holdout=DEFAULT_HOLDOUT,
        strides={brandenburg.id: 64},
    )


def test_chips_keep_clear_of_the_holdout(brandenburg: SceneSource) -> None:
    boxes = DEFAULT_HOLDOUT.pixel_boxes(with_buffer=True)
    origins = chip_origins(brandenburg, 64, 32, DEFAULT_HOLDOUT)
    everything = chip_origins(brandenburg, 64, 32)
    assert 0 < len(origins) < len(everything)
    for r, c in origins:
        y, x = r * 32, c * 32
        assert all(y + 64 <= r0 or y >= r1 or x + 64 <= c0 or x >= c1 for r0, c0, r1, c1 in boxes)
    # Every chip that overlaps no held-out block is kept.
    missing = set(everything) - set(origins)
    assert all(
        any(
            r * 32 < r1 and r0 < r * 32 + 64 and c * 32 < c1 and c0 < c * 32 + 64
            for r0, c0, r1, c1 in boxes
        )
        for r, c in missing
    )


def test_reference_chips_take_the_reference_fractions_and_avoid_evaluation_polygons(
    virginia: SceneSource,
) -> None:
    # The default recipe labels both scenes with the combined reference labels: the chips' soft
    # targets are the fractions the land-cover heads are fitted on, and no chip (image included)
    # touches an evaluation polygon or its buffer, so the held-out reference set stays unseen.
    from backend.imagery.tiling import parse_tile_id, tile_window, window_polygon
    from backend.landcover.labels import DW_CLASSES
    from backend.landcover.reference import BUFFER_M, reference_polygons, reference_soft_labels

    meta = get_model_meta("softmap-default")
    chips = load_chips([(virginia, REFERENCE_LABELS)], meta, strides={virginia.id: 64})
    summary = chips.sources[virginia.id]
    assert summary["mapping"] == REFERENCE_LABELS
    assert 0 < int(summary["eval_zone_skipped"] or 0) < len(chips)
    assert 0.5 < float(chips.has_label.float().mean()) < 1.0
    evals = reference_polygons(virginia, "eval")
    assert evals and eval_zone_boxes(virginia)
    ids = list(chips.ids)
    for tile_id in ids:
        _, chip, stride, r, c = parse_tile_id(tile_id)
        frame = window_polygon(virginia, tile_window(r, c, chip, stride))
        assert not any(p.geometry.buffer(BUFFER_M).intersects(frame) for p in evals)
    # Same fractions as the reference labels of those windows (train split).
    ref = reference_soft_labels(virginia, ids[::7], split="train", min_labelled=0.25)
    assert (chips.has_label[::7].numpy() == ref.has_label).all()
    assert abs(chips.fractions[::7].numpy() - ref.fractions).max() < 1e-5
    # The open Atlantic makes water the commonest dominant class; the land has its own classes.
    dominant = chips.fractions[chips.has_label].argmax(1)
    counts = torch.bincount(dominant, minlength=len(DW_CLASSES))
    assert int(counts.argmax()) == DW_CLASSES.index("water")
    assert counts[DW_CLASSES.index("trees")] > 0 and counts[DW_CLASSES.index("crops")] > 0


def test_chips_carry_soft_labels(brandenburg_chips: ChipSet) -> None:
    chips = brandenburg_chips
    assert chips.images.shape[1:] == (13, 64, 64)
    assert 0 < int(chips.has_label.sum()) < len(chips)
    labelled = chips.fractions[chips.has_label]
    torch.testing.assert_close(labelled.sum(1), torch.ones(len(labelled)))
    assert (chips.fractions[~chips.has_label] == 0).all()
    # SSL4EO normalisation: values in [0, 1], and real imagery, not a constant.
    assert float(chips.images.min()) >= 0 and float(chips.images.max()) <= 1
    assert float(chips.images.float().std()) > 0.02
    assert all(i.startswith("demo/brandenburg/64/64/") for i in chips.ids)
    manifest = chips.manifest()
    assert manifest["labelled"] == int(chips.has_label.sum())


def test_a_few_steps_on_bundled_chips_reduce_the_loss(brandenburg_chips: ChipSet) -> None:
    # Continual pretraining from the bundled model (SoftCon's recipe): a randomly initialised
    # ViT maps all chips to nearly the same vector, so its loss sits at log(B) for many steps.
    torch.manual_seed(0)
    encoder = build_encoder(TrainConfig(init="model:softmap-default"), default_registry)
    model = SoftConModel(encoder)
    idx = torch.nonzero(brandenburg_chips.has_label).ravel()[:32]
    x = brandenburg_chips.images[idx].float()
    g = torch.Generator().manual_seed(0)
    v1, v2 = two_views(x, AugmentConfig(), g)
    masks = random_token_masks(len(idx), 64, 0.3, g, x.device)
    fr, has = brandenburg_chips.fractions[idx], brandenburg_chips.has_label[idx]
    opt = torch.optim.AdamW(model.online_parameters(), lr=1e-4)
    losses = []
    for _ in range(8):
        out = model(v1, v2, fr, has, masks)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        model.update_momentum(0.99)
        losses.append(float(out.loss.detach()))
    assert losses[-1] < losses[0] - 0.05, losses
    assert losses[-1] < min(losses[:3]), losses


def test_train_softcon_writes_a_loadable_reproducible_checkpoint(
    brandenburg_chips: ChipSet, tmp_path: Path
) -> None:
    small = ChipSet(
        brandenburg_chips.ids[:32],
        brandenburg_chips.images[:32],
        brandenburg_chips.fractions[:32],
        brandenburg_chips.has_label[:32],
        brandenburg_chips.sources,
    )
    cfg = TrainConfig(max_steps=2, batch_size=16, threads=None)
    a = train_softcon(cfg, tmp_path / "a", chips=small)
    b = train_softcon(cfg, tmp_path / "b", chips=small)
    assert a.steps == 2 and a.device == "cpu"
    sa = torch.load(a.checkpoint, weights_only=True)
    sb = torch.load(b.checkpoint, weights_only=True)
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    model = create_model("softmap-default", a.checkpoint)
    assert model.load_report is not None and model.load_report.layout == "softcon-release"
    # Trained weights differ from the seeded init.
    init = build_encoder(cfg, default_registry)
    assert not torch.equal(init.blocks[0].attn.qkv.weight, sa["blocks.0.attn.qkv.weight"])
    config = json.loads(Path(a.config).read_text())
    assert config["config"]["seed"] == 0 and config["result"]["steps"] == 2
    assert len(json.loads(Path(a.loss_curve).read_text())["step_loss"]) == 2
    assert json.loads(Path(a.data).read_text())["chips"] == 32


def test_cli_train_softcon(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(
        [
            "train",
            "softcon",
            "--out",
            str(tmp_path),
            "--source",
            "demo/brandenburg=reference",
            "--stride",
            "64",
            "--max-steps",
            "1",
            "--batch-size",
            "8",
            "--no-soft",
            "--half",
            "--jitter-p",
            "0",
            "--quiet",
            "--json",
        ]
    )
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["steps"] == 1 and out["soft"] is False and out["labelled_chips"] > 0
    recipe = json.loads(Path(out["config"]).read_text())
    assert recipe["config"]["sources"] == {"demo/brandenburg": "reference"}
    assert recipe["config"]["augment"]["jitter_p"] == 0 == recipe["augment"]["jitter_p"]
    state = torch.load(out["checkpoint"], weights_only=True)
    assert state["cls_token"].dtype == torch.float16
    assert (
        create_model("softmap-default", out["checkpoint"]).module.cls_token.dtype == torch.float32
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--source", "demo/nowhere"], "no source 'demo/nowhere'"),
        (["--source", "demo/brandenburg=nope"], "no class mapping 'nope'"),
        (["--model", "softcon-rn50-s2", "--init", "scratch"], "needs a ViT"),
        (["--batch-size", "1"], "--batch-size"),
    ],
)
def test_cli_train_mistakes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    argv = ["train", "softcon", "--out", str(tmp_path), "--max-steps", "1", *args]
    try:
        code = main(argv)
    except SystemExit as e:  # options out of range are refused by the parser (one line)
        code = int(e.code or 0)
    assert code == 2
    assert message in capsys.readouterr().err
