#!/usr/bin/env bash
# Reproduce the bundled default model: SoftCon pretraining of `softmap-default` from scratch on the
# two bundled scenes, both with soft targets from their reference labels (spectral rules >
# photo-interpreted polygons > snow rule > Brandenburg's OSM raster and the cluster raster,
# training blocks only: backend/landcover/reference.py), no chip touching an evaluation polygon,
# the `softmap eval` blocks of Brandenburg held out too, seed 0, one thread (bit-reproducible).
# Timings are in assets/models/softmap-default.md.
#
#   scripts/train_default_model.sh            # the model: assets/models/softmap-default.pt
#   scripts/train_default_model.sh --no-soft  # the ablation (plain contrastive) for `softmap eval`
#
# Outputs go to runs/softmap-default[-nosoft]/ (checkpoint, config, data list, loss curve); the
# checkpoint is then copied into assets/models/. Extra arguments are passed to `softmap train`.
set -euo pipefail
cd "$(dirname "$0")/.."
SOFTMAP="${SOFTMAP:-.venv/bin/softmap}"
name=softmap-default
half=()
if [[ " $* " == *" --no-soft "* ]]; then
  name=softmap-default-nosoft
  half=(--half)
fi
"$SOFTMAP" train softcon --model softmap-default --init scratch --epochs 12 --batch-size 64 \
  --seed 0 --threads 1 --out "runs/$name" --name "$name" "${half[@]}" "$@"
mkdir -p assets/models
cp "runs/$name/$name.pt" "assets/models/$name.pt"
cp "runs/$name/$name.config.json" "runs/$name/$name.loss.json" assets/models/
echo "copied runs/$name/$name.pt to assets/models/"
echo "refit its land-cover head with scripts/fit_default_head.sh"
