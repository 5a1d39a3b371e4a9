#!/usr/bin/env bash
# The whole test suite (slow reference checks included), with all its own set-up.
# Arguments go to pytest, e.g. -m slow (only the full-size Keras comparisons) or -m "not slow".
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh test
# One worker per core, each taking whole test files (their module fixtures are built once).
# -rs: the reason of every skipped test is printed (e.g. a GCS emulator that could not start).
# --durations: the slowest tests, so a growing suite is seen where it grows.
exec .venv/bin/python -m pytest -q -rs --durations=15 -n auto --dist loadfile "$@"
