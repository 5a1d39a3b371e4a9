#!/usr/bin/env bash
# The main job: the embedded reproduction of the paper's suite on Fashion-MNIST (no download), with
# all its own set-up. Writes $WORKDIR/report.md (default runs/default); a rerun resumes where it
# stopped. Extra arguments go to qrnet_jax.main, e.g. --only table2.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
exec .venv/bin/python -m qrnet_jax.main --config configs/suites/default.py \
  --workdir "${WORKDIR:-runs/default}" "$@"
