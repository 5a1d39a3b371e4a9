#!/usr/bin/env bash
# Builds qrnet_jax/ops/_onednn_conv.so (oneDNN convolutions as XLA FFI handlers) with the venv's
# jaxlib headers and Debian's libdnnl-dev. Rebuilds only when the source is newer than the library.
# Exits non-zero when it cannot build; the package then runs on XLA's convolutions.
set -euo pipefail
here=$(dirname "$0")
PYTHON=$(realpath -s "${PYTHON:-$here/../../.venv/bin/python}")
cd "$here"
out=_onednn_conv.so
if [[ -f $out && $out -nt onednn_conv.cc && $out -nt build.sh ]]; then
  exit 0
fi
include=$("$PYTHON" -c 'import jax; print(jax.ffi.include_dir())')
${CXX:-g++} -O2 -std=c++17 -shared -fPIC -Wno-return-type -I"$include" onednn_conv.cc \
  -ldnnl -o "$out.tmp"
mv "$out.tmp" "$out"
