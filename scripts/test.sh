#!/usr/bin/env bash
# The whole test suite (slow reference checks included), with all its own set-up.
# Arguments go to pytest, e.g. -m slow (only the full-size Keras comparisons) or -m "not slow".
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
exec .venv/bin/python -m pytest -q "$@"
