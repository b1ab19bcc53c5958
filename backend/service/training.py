"""Make and judge models: SoftCon pretraining and the spatially blocked linear-probe evaluation."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field

from backend.landcover.labels import get_mapping
from backend.models import create_model
from backend.models.weights import find_local_weights
from backend.service.workspace import Request, Workspace
from backend.training import TrainConfig, TrainResult, train_softcon
from backend.training.chips import REFERENCE_LABELS
from backend.training.config import DEFAULT_HOLDOUT
from backend.training.evaluation import C_GRID, Candidate, EvaluationReport, evaluate
from backend.training.trainer import StepInfo

StepCallback = Callable[[StepInfo], None]

__all__ = [
    "EvalRequest",
    "EvaluationOutcome",
    "StepInfo",
    "TrainConfig",
    "TrainRequest",
    "evaluate_model",
    "pretrain",
]


class TrainRequest(Request):
    """SoftCon pretraining (``softmap train softcon``): the config and where to write."""

    config: TrainConfig
    out: Path
    name: str | None = Field(default=None, description="file stem (default: the model id)")
    half: bool = Field(default=False, description="store the weights as float16")


def pretrain(ws: Workspace, req: TrainRequest, on_step: StepCallback | None = None) -> TrainResult:
    """Check the sources and mappings, then train; writes checkpoint, config, data list, loss.

    Raises:
        UnknownSourceError, UnknownMappingError: before any training starts.
    """
    catalog = ws.catalog()
    for source_id, mapping in (req.config.sources or {}).items():
        catalog.get(source_id)
        if mapping and mapping != REFERENCE_LABELS:
            get_mapping(mapping)
    return train_softcon(
        req.config, req.out, name=req.name, catalog=catalog, save_half=req.half, on_step=on_step
    )


class EvalRequest(Request):
    """Linear-probe a model on held-out labelled tiles against baselines (``softmap eval``)."""

    model: str = "softmap-default"
    checkpoint: Path | None = None
    ablation: Path | None = Field(
        default=None, description="weights trained without the soft part (default: bundled)"
    )
    source: str = "demo/brandenburg"
    mapping: str = "osm-brandenburg"
    c: float | None = Field(default=None, gt=0, description="fixed probe regularisation C")


@dataclass(frozen=True)
class EvaluationOutcome:
    """The evaluation table, the weights evaluated, and what was left out (and why)."""

    report: EvaluationReport
    weights: str
    skipped: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {**self.report.to_json(), "weights": self.weights}


def evaluate_model(ws: Workspace, req: EvalRequest) -> EvaluationOutcome:
    """Compare the model, its no-soft ablation, a random init, band statistics and the prior."""
    source = ws.source(req.source)
    model = create_model(req.model, req.checkpoint)
    candidates = [Candidate(model.meta.id, "the model (SoftCon loss)", model)]
    skipped: list[str] = []
    ablation = req.ablation
    if ablation is None:
        default = ws.settings.assets_dir / "models" / f"{model.meta.id}-nosoft.pt"
        ablation = default if default.is_file() else None
    if ablation is not None:
        no_soft = create_model(model.meta.id, ablation)
        candidates.append(Candidate("no-soft", "same recipe, soft targets off", no_soft))
    else:
        skipped.append("no ablation weights (--ablation); skipping 'no-soft'")
    random = create_model(model.meta.id, pretrained=False)
    candidates.append(
        Candidate("random-init", "same architecture, random weights (seed 0)", random)
    )
    candidates.append(Candidate("band-stats", "per-band mean and std of the chip (no model)"))
    holdout = (
        DEFAULT_HOLDOUT.model_copy(update={"source": source.id})
        if source.id != DEFAULT_HOLDOUT.source
        else DEFAULT_HOLDOUT
    )
    grid = (req.c,) if req.c else C_GRID
    result = evaluate(source, candidates, holdout, mapping=req.mapping, c_grid=grid)
    weights = str(model.load_report.path if model.load_report else find_local_weights(model.meta))
    return EvaluationOutcome(result, weights, tuple(skipped))
