#!/usr/bin/env bash
# Runs one experiment on every host of a Cloud TPU pod slice (e.g. v4-32): each host runs the same
# command; jax.distributed.initialize() (--distributed) finds the other hosts by itself.
#
#   launch/tpu_pod.sh TPU_NAME ZONE WORKDIR CONFIG [overrides...]
#   launch/tpu_pod.sh my-v4-32 us-central2-b /mnt/gcs/runs/q101 \
#       configs/paper.py:dataset=caltech101,method=qrnet --config.data.data_dir=/mnt/data/caltech101
#
# The repo must be checked out at ~/qrnet_jax on every host, with `pip install -r requirements.txt`
# and `pip install "jax[tpu]==0.10.2"` done there (setup below with SETUP=1). The workdir must be
# one folder shared by all hosts (a GCS bucket mounted with gcsfuse at the same path on every host,
# or NFS/Filestore): Orbax writes one checkpoint from all of them. gs:// URLs are refused.
set -euo pipefail
TPU_NAME=$1 ZONE=$2 WORKDIR=$3 CONFIG=$4
shift 4
REPO=${REPO:-~/qrnet_jax}
ssh_all() { gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone "$ZONE" --worker=all --command "$1"; }
if [[ ${SETUP:-0} == 1 ]]; then
  ssh_all "cd $REPO && python3 -m venv .venv && .venv/bin/pip install -q -r requirements.txt \
    && .venv/bin/pip install -q 'jax[tpu]==0.10.2'"
fi
ssh_all "cd $REPO && .venv/bin/python -m qrnet_jax.main --distributed --config $CONFIG \
  --workdir $WORKDIR $* 2>&1 | tee -a /tmp/qrnet_jax.log"
