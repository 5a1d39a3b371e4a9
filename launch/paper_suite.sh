#!/usr/bin/env bash
# The paper's whole suite (Tables 2-6, Figures 4-8 on Caltech101 and Caltech256) on ONE GPU or TPU
# host (all its devices), resumable: rerun the same line after a crash or preemption and it
# continues where it stopped (finished runs are skipped). The report lands in WORKDIR/report.md.
# It runs in the foreground and passes the suite's exit status through: 75 means it was stopped by
# SIGTERM or SIGINT at a checkpoint (qrnet_jax/preemption.py), and the same line resumes it; to
# survive a dropped connection, start it in tmux or screen, or under nohup.
#
#   launch/paper_suite.sh [--dry-run] WORKDIR DATA_ROOT [qrnet_jax.main flags...]
#   launch/paper_suite.sh runs/paper /data                  # /data/caltech101, /data/caltech256
#   launch/paper_suite.sh runs/paper /data --only table2    # one table's runs
#   ACCEL=tpu launch/paper_suite.sh gs://my-bucket/paper gs://my-bucket/data
#
# --dry-run prints the commands (set-up where .venv is missing, then the suite) instead of running
# them. DATA_ROOT/caltech101 holds caltech-101.zip, 101_ObjectCategories.tar.gz or the extracted
# 101_ObjectCategories/; DATA_ROOT/caltech256 holds 256_ObjectCategories.tar or the folder. The
# ImageNet weights are downloaded (md5-checked) into ~/.cache/qrnet_jax/weights on first use. The
# set-up installs requirements.txt (the versions seen working), the package's extras (gcs: gs://
# paths) and the accelerator's jax wheel.
set -euo pipefail

ACCEL=${ACCEL:-gpu}                        # gpu or tpu: which jax wheel; GPU determinism
CONFIG=${CONFIG:-configs/suites/paper.py}  # one dataset: configs/suites/paper.py:dataset=caltech101
PYTHON=${PYTHON:-python3}                  # the interpreter that makes .venv
EXTRAS=${EXTRAS:-gcs}                      # pyproject extras for the set-up: gcs, tfds, test, bench
JAX_WHEEL=${JAX_WHEEL:-"jax[${ACCEL/gpu/cuda12}]==0.10.2"}  # jax[cuda12] or jax[tpu]

USAGE=("usage: launch/paper_suite.sh [--dry-run] WORKDIR DATA_ROOT [main flags...]")
# shellcheck source=launch/common.sh
source "$(dirname "$0")/common.sh"
read_options WORKDIR "$@"
set -- "${ARGS[@]}"
names=(WORKDIR DATA_ROOT)
(($# >= 2)) || usage "missing ${names[$#]}"
WORKDIR=$1 DATA_ROOT=$2
for name in "${names[@]}"; do [[ -n ${!name} ]] || usage "$name is empty"; done
shift 2
[[ $ACCEL == gpu || $ACCEL == tpu ]] || usage "ACCEL=$ACCEL: gpu or tpu"

repo=$(cd "$(dirname "$0")/.." && pwd)
run cd "$repo"
if [[ ! -x $repo/.venv/bin/python ]]; then
  run "$PYTHON" -m venv .venv
  run .venv/bin/pip install -q -c requirements.txt -e ".[$EXTRAS]" "$JAX_WHEEL"
fi
if [[ $ACCEL == gpu ]]; then
  # Deterministic kernels: a resumed run ends with the same parameters as an uninterrupted one.
  run export XLA_FLAGS="${XLA_FLAGS:-} --xla_gpu_deterministic_ops=true"
fi
data_flags=()
for dataset in caltech101 caltech256; do
  if [[ $CONFIG != *dataset=* || $CONFIG == *dataset=$dataset* ]]; then
    data_flags+=("--config.experiments.$dataset.data_dir=$DATA_ROOT/$dataset")
  fi
done
run exec .venv/bin/python -m qrnet_jax.main --config "$CONFIG" --workdir "$WORKDIR" \
  "${data_flags[@]}" "$@"
