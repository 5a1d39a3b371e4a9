#!/usr/bin/env bash
# One experiment on every worker (host) of a Cloud TPU pod slice, e.g. a v4-16 (2 workers) or a
# v4-32 (4): gcloud runs the same command on all its workers at once (--worker=all), and
# jax.distributed.initialize() (--distributed) finds the other workers by itself.
#
#   launch/tpu_pod.sh [--dry-run] TPU_NAME ZONE WORKDIR CONFIG [qrnet_jax.main flags...]
#   launch/tpu_pod.sh my-v4-16 us-central2-b gs://my-bucket/runs/q101 \
#       configs/paper.py:dataset=caltech101,method=qrnet \
#       --config.data.data_dir=gs://my-bucket/data/caltech101 --config.train.batch_size=32
#
# --dry-run prints the two gcloud commands (set-up, then the run) instead of running them.
# WORKDIR: a gs:// URL (Orbax commits every checkpoint there) or a folder all workers share (NFS,
# Filestore); a worker's own disk will not do. Rerunning the same line resumes from the newest
# checkpoint. Each worker needs this repository checked out at ~/$REPO; the set-up makes .venv there
# where it is missing: requirements.txt (the versions seen working), the package's extras (gcs:
# gs:// paths) and the TPU jax wheel. Each worker also appends its output to $LOG.
set -euo pipefail

REPO=${REPO:-qrnet_jax}                    # the checkout on each worker, under its home folder
EXTRAS=${EXTRAS:-gcs}                      # pyproject extras for the set-up: gcs, tfds, test, bench
JAX_WHEEL=${JAX_WHEEL:-"jax[tpu]==0.10.2"}  # the TPU jax, as requirements.txt's version
LOG=${LOG:-/tmp/qrnet_jax.log}             # on each worker
SETUP=${SETUP:-1}                          # 0: skip the set-up command

USAGE=("usage: launch/tpu_pod.sh [--dry-run] TPU_NAME ZONE WORKDIR CONFIG [main flags...]")
# shellcheck source=launch/common.sh
source "$(dirname "$0")/common.sh"
read_options TPU_NAME "$@"
set -- "${ARGS[@]}"
names=(TPU_NAME ZONE WORKDIR CONFIG)
(($# >= 4)) || usage "missing ${names[$#]}"
TPU_NAME=$1 ZONE=$2 WORKDIR=$3 CONFIG=$4
for name in "${names[@]}"; do [[ -n ${!name} ]] || usage "$name is empty"; done
shift 4

# What every worker's shell runs: strings, so each word in them is quoted by show.
pip=(.venv/bin/pip install -q -c requirements.txt -e ".[$EXTRAS]" "$JAX_WHEEL")
main=(.venv/bin/python -m qrnet_jax.main --distributed --config "$CONFIG" --workdir "$WORKDIR"
      "$@")
setup="cd $(show "$REPO") && { [ -x .venv/bin/python ] || \
{ python3 -m venv .venv && $(show "${pip[@]}"); }; }"
train="set -o pipefail; cd $(show "$REPO") && $(show "${main[@]}") 2>&1 | tee -a $(show "$LOG")"

on_all_workers() {
  run gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" --worker=all --command="$1"
}
if ((DRY_RUN)); then
  echo "# On every worker of $TPU_NAME at once (--worker=all: 2 on a v4-16, 4 on a v4-32):"
  if ((SETUP)); then echo "#   set-up: $setup"; fi
  echo "#   run:    $train"
fi
if ((SETUP)); then on_all_workers "$setup"; fi
on_all_workers "$train"
