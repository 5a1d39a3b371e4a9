#!/usr/bin/env bash
# Builds qrnet_jax/ops/_onednn_conv.so (oneDNN convolutions as XLA FFI handlers) with the venv's
# jaxlib headers and oneDNN 3.2 from PyPI (onednn-cpu-gomp and onednn-devel-cpu-gomp, dependencies
# of the package on x86_64 Linux: they install libdnnl.so.3 and its headers under the venv's
# prefix). Rebuilds only when the source is newer than the library. Exits non-zero when it cannot
# build; the package then runs on XLA's convolutions.
set -euo pipefail
here=$(dirname "$0")
PYTHON=$(realpath -s "${PYTHON:-$here/../../.venv/bin/python}")
cd "$here"
out=_onednn_conv.so
if [[ -f $out && $out -nt onednn_conv.cc && $out -nt build.sh ]]; then
  exit 0
fi
include=$("$PYTHON" -c 'import jax; print(jax.ffi.include_dir())')
prefix=$("$PYTHON" -c 'import sys; print(sys.prefix)')
if [[ ! -f $prefix/include/oneapi/dnnl/dnnl.hpp || ! -f $prefix/lib/libdnnl.so.3 ]]; then
  echo "oneDNN is not installed in $prefix (pip install onednn-cpu-gomp onednn-devel-cpu-gomp)" >&2
  exit 1
fi
# The library is found through the run path: the venv's lib, where pip put libdnnl.so.3.
${CXX:-g++} -O2 -std=c++17 -shared -fPIC -Wno-return-type -I"$include" -I"$prefix/include" \
  onednn_conv.cc -L"$prefix/lib" -ldnnl -Wl,-rpath,"$prefix/lib" -o "$out.tmp"
mv "$out.tmp" "$out"
