#!/usr/bin/env bash
# Reproduce the bundled land-cover head of `softmap-default` (assets/models/heads/softmap-default.*):
# rebuild the reference polygons and the cluster raster of both bundled scenes, fit the tile and
# cell heads on their reference labels (spectral rules > polygons > snow rule > land-use raster,
# training blocks only), calibrate the out-of-distribution limit on the held-out polygons, store
# the pixel evaluation with the head, then print it. About 1 min on a shared 2-core CPU (the
# model embeds both scenes once; later runs reuse the cache).
#
#   scripts/fit_default_head.sh [--db PATH]
set -euo pipefail
cd "$(dirname "$0")/.."
SOFTMAP="${SOFTMAP:-.venv/bin/softmap}"
PYTHON="${PYTHON:-.venv/bin/python}"
"$PYTHON" scripts/build_reference_polygons.py
"$SOFTMAP" landcover fit --labels reference --model softmap-default --bundle "$@"
"$SOFTMAP" eval landcover --model softmap-default --head softmap-default@reference "$@"
