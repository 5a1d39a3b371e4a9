#!/usr/bin/env bash
# The paper's whole suite (Tables 2-6, Figures 4-8 on Caltech101 and Caltech256) on ONE GPU or TPU
# host, resumable: rerun the same line after a crash or preemption and it continues where it
# stopped (finished runs are skipped). The report lands in WORKDIR/report.md.
#
#   launch/paper_suite.sh WORKDIR DATA_ROOT [flags...]
#   launch/paper_suite.sh runs/paper /data                  # /data/caltech101, /data/caltech256
#   launch/paper_suite.sh runs/paper /data --only table2    # one table's runs
#   ACCEL=tpu launch/paper_suite.sh runs/paper /data
#
# DATA_ROOT/caltech101 holds caltech-101.zip, 101_ObjectCategories.tar.gz or the extracted
# 101_ObjectCategories/; DATA_ROOT/caltech256 holds 256_ObjectCategories.tar or the folder. The
# ImageNet weights are downloaded (md5-checked) into ~/.cache/qrnet_jax/weights on first use.
# One dataset only: CONFIG=configs/suites/paper.py:dataset=caltech101.
set -euo pipefail
WORKDIR=$1 DATA_ROOT=$2
shift 2
ACCEL=${ACCEL:-gpu}  # gpu or tpu: which jax wheel the set-up installs
CONFIG=${CONFIG:-configs/suites/paper.py}
cd "$(dirname "$0")/.."
if [[ ! -x .venv/bin/python ]]; then
  python3 -m venv .venv
  .venv/bin/pip install -q -r requirements.txt
  if [[ $ACCEL == tpu ]]; then .venv/bin/pip install -q "jax[tpu]==0.10.2";
  else .venv/bin/pip install -q "jax[cuda12]==0.10.2"; fi
fi
if [[ $ACCEL == gpu ]]; then
  # Deterministic kernels: a resumed run ends with the same parameters as an uninterrupted one.
  export XLA_FLAGS="${XLA_FLAGS:-} --xla_gpu_deterministic_ops=true"
fi
data_flags=()
for dataset in caltech101 caltech256; do
  if [[ $CONFIG != *dataset=* || $CONFIG == *dataset=$dataset* ]]; then
    data_flags+=("--config.experiments.$dataset.data_dir=$DATA_ROOT/$dataset")
  fi
done
exec .venv/bin/python -m qrnet_jax.main --config "$CONFIG" --workdir "$WORKDIR" \
  "${data_flags[@]}" "$@"
