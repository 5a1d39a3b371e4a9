#!/usr/bin/env bash
# The corruption suite (issue 21): the classifier alone, the fine-tuned classifier and QRNet
# trained on the paper's distortions or on a seen set of ImageNet-C's families, each evaluated on
# all 19 families; on the embedded Fashion-MNIST, with all its own set-up. Writes
# $WORKDIR/report.md (default runs/corruptions); a rerun resumes where it stopped. Extra arguments
# go to qrnet_jax.main.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
exec .venv/bin/python -m qrnet_jax.main --config configs/suites/corruptions.py \
  --workdir "${WORKDIR:-runs/corruptions}" "$@"
