#!/usr/bin/env bash
# Idempotent set-up on a fresh machine: Debian packages (where apt exists), a virtual environment
# in .venv with this package installed (editable) and what it needs, at the versions locked in
# requirements.txt, the oneDNN convolution extension (x86_64 Linux, against the oneDNN wheels the
# package depends on there; without it everything runs on XLA's convolutions). Run by the other
# scripts.
#
#   bash scripts/setup_env.sh         # what the main job needs: pip install -e .
#   bash scripts/setup_env.sh test    # and the test suite's extra: pip install -e '.[test]'
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
EXTRAS=${1:-}  # extras of pyproject.toml, comma-separated (tfds, gcs, test, bench)

# Fashion-MNIST, the embedded default dataset, ships in Debian's dataset-fashion-mnist.
debian_packages=()
[[ -d /usr/share/datasets/fashion-mnist ]] || debian_packages+=(dataset-fashion-mnist)
if (( ${#debian_packages[@]} )) && command -v apt-get >/dev/null; then
  SUDO=$([[ $(id -u) -eq 0 ]] && echo "" || echo "sudo")
  { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq "${debian_packages[@]}"; } \
    >/dev/null 2>&1 || echo "note: could not install ${debian_packages[*]} with apt-get" >&2
fi

if [[ ! -x .venv/bin/python ]]; then
  "$PYTHON" -m venv .venv
fi
# Reinstall only when pyproject.toml or the lock changed since this set of extras was installed.
stamp=.venv/.installed${EXTRAS:+-${EXTRAS//,/-}}.sha256
want=$(cat pyproject.toml requirements.txt | sha256sum | cut -d' ' -f1)
if [[ ! -f $stamp || $(cat "$stamp") != "$want" ]]; then
  .venv/bin/python -m pip install -q --upgrade pip
  if ! .venv/bin/python -m pip install -q -c requirements.txt -e ".${EXTRAS:+[$EXTRAS]}" \
      >.venv/pip_install.log 2>&1; then
    cat .venv/pip_install.log >&2
    exit 1
  fi
  # Frost's six photographs (2 MB) come with ImageNet-C's reference package; its code needs
  # OpenCV, scikit-image and numba (400 MB), which only the tests' comparison uses (the test extra
  # installs them). qrnet_jax/corruptions.py reads the photographs without importing it.
  if ! .venv/bin/python -m pip install -q --no-deps -c requirements.txt imagecorruptions-imaug \
      >>.venv/pip_install.log 2>&1; then
    cat .venv/pip_install.log >&2
    exit 1
  fi
  echo "$want" > "$stamp"
fi

# oneDNN convolutions (config.model.conv_impl); rebuilt only when their source changed.
if [[ $(uname -sm) == "Linux x86_64" ]]; then
  PYTHON=.venv/bin/python bash qrnet_jax/ops/build.sh >.venv/onednn_build.log 2>&1 \
    || echo "note: oneDNN convolutions not built (see .venv/onednn_build.log); using XLA's" >&2
fi
