#!/usr/bin/env bash
# Reproduce the bundled default model: SoftCon pretraining of `softmap-default` from scratch on the
# two bundled scenes (Brandenburg with its OSM labels, Virginia unlabelled), the evaluation blocks
# of Brandenburg held out, seed 0, one thread (bit-reproducible). 288 steps: 15 min measured on a
# busy shared 2-core CPU, 3-9 min when it is quiet (see assets/models/softmap-default.md).
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
