#!/usr/bin/env bash
# Idempotent set-up on a fresh machine: Debian data package (where apt exists), a virtual
# environment in .venv with the pinned requirements. Sourced by the other scripts.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

# Fashion-MNIST, the embedded default dataset, ships in Debian's dataset-fashion-mnist.
if [[ ! -d /usr/share/datasets/fashion-mnist ]] && command -v apt-get >/dev/null; then
  SUDO=$([[ $(id -u) -eq 0 ]] && echo "" || echo "sudo")
  { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq dataset-fashion-mnist; } \
    >/dev/null 2>&1 || echo "note: could not install dataset-fashion-mnist with apt-get" >&2
fi

if [[ ! -x .venv/bin/python ]]; then
  "$PYTHON" -m venv .venv
fi
# Reinstall only when requirements.txt changed since the last install.
stamp=.venv/.requirements.sha256
want=$(sha256sum requirements.txt | cut -d' ' -f1)
if [[ ! -f $stamp || $(cat "$stamp") != "$want" ]]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -r requirements.txt
  echo "$want" > "$stamp"
fi
