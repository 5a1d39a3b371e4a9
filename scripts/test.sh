#!/usr/bin/env bash
# The whole test suite (slow reference checks included), with all its own set-up.
# Arguments go to pytest, e.g. -m slow (only the full-size Keras comparisons) or -m "not slow".
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
# One worker per core, each taking whole test files (their module fixtures are built once).
exec .venv/bin/python -m pytest -q -n auto --dist loadfile "$@"
