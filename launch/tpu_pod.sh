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
# gs:// paths) and the TPU jax wheel.
#
# The run is detached on each worker (setsid nohup): a dropped connection does not end it. Each
# worker writes its output to ~/$REPO/$LOG_DIR/TPU_NAME.HOST.log and the job's process group to
# .pid beside it; the script prints the commands that follow worker 0's log and stop the job.
# Exit status 75 (SIGTERM or SIGINT: the run saved a checkpoint and stopped; see
# qrnet_jax/preemption.py) reruns the command on that worker, which resumes there, unless the job
# itself was told to stop (the stop command signals its whole process group); any other status
# ends it, written last in the log ("qrnet_jax: exit status N").
set -euo pipefail

REPO=${REPO:-qrnet_jax}                    # the checkout on each worker, under its home folder
EXTRAS=${EXTRAS:-gcs}                      # pyproject extras for the set-up: gcs, tfds, test, bench
JAX_WHEEL=${JAX_WHEEL:-"jax[tpu]==0.10.2"}  # the TPU jax, as requirements.txt's version
LOG_DIR=${LOG_DIR:-logs}                   # on each worker: under ~/$REPO, or an absolute path
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
# On each worker, detached: rerun while the run stops with 75 (preempted at a checkpoint), unless
# the job's own process group was signalled (the stop command below).
# shellcheck disable=SC2016  # expanded by the worker's bash, not here
rerun_while_preempted='stop=0; trap "stop=1" TERM INT; while :; do "$@"; status=$?; '\
'((status == 75 && !stop)) || break; '\
'echo "qrnet_jax: exit status 75 (stopped at a checkpoint): resuming"; done; '\
'echo "qrnet_jax: exit status $status"; exit "$status"'
# The worker's log and pid file: the same words on every worker, expanded there (one per host).
worker_file="$(show "$LOG_DIR/$TPU_NAME").\$(hostname)"
train="cd $(show "$REPO") && mkdir -p $(show "$LOG_DIR") && \
{ setsid nohup bash -c $(show "$rerun_while_preempted") qrnet_jax $(show "${main[@]}") \
>> $worker_file.log 2>&1 < /dev/null & echo \$! > $worker_file.pid; } && \
echo \"started on \$(hostname); its log: \$(readlink -f $worker_file.log)\""
ssh=(gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE")

on_all_workers() { run "${ssh[@]}" --worker=all --command="$1"; }
if ((DRY_RUN)); then
  echo "# On every worker of $TPU_NAME at once (--worker=all: 2 on a v4-16, 4 on a v4-32):"
  if ((SETUP)); then echo "#   set-up: $setup"; fi
  echo "#   run:    $train"
fi
if ((SETUP)); then on_all_workers "$setup"; fi
on_all_workers "$train"
echo "# Follow worker 0's log:"
echo "#   $(show "${ssh[@]}" --worker=0 --command="cd $(show "$REPO") && tail -f $worker_file.log")"
echo "# Stop the job on every worker (each saves a checkpoint; rerun this line to resume):"
echo "#   $(show "${ssh[@]}" --worker=all \
  --command="cd $(show "$REPO") && kill -TERM -- -\$(cat $worker_file.pid)")"
