#!/usr/bin/env bash
# The main job on the embedded default data, with all its own set-up. Extra arguments go to
# qrnet_jax.main, e.g. --config.train.max_epochs=2. A rerun resumes from the newest checkpoint.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
exec .venv/bin/python -m qrnet_jax.main --config configs/default.py \
  --workdir "${WORKDIR:-runs/default}" "$@"
