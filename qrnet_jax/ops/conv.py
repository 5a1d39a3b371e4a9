"""Which implementation runs the models' convolutions: config.model.conv_impl.

'xla': `lax.conv_general_dilated`. 'onednn': the oneDNN op (qrnet_jax/ops/onednn.py) for every
convolution it covers, XLA's for the rest. 'auto': oneDNN on CPU when the extension is built, XLA
elsewhere (GPU, TPU, or no extension).

The models pass `conv_general_dilated` to nn.Conv, so their parameters (names, shapes, HWIO layout)
are nn.Conv's: checkpoints and the Keras ports do not depend on the implementation. The choice is
read when a model is traced; `set_conv_impl` (a run does this from its config) or the `conv_impl`
context manager change it.
"""
import contextlib
from typing import Callable

import flax.linen as nn
import jax

from qrnet_jax.ops import onednn

CONV_IMPLS = ('auto', 'xla', 'onednn')
_impl = 'auto'


def set_conv_impl(impl: str):
  if impl not in CONV_IMPLS:
    raise ValueError(f'unknown conv_impl {impl!r}; allowed: {", ".join(CONV_IMPLS)}')
  global _impl
  _impl = impl


@contextlib.contextmanager
def conv_impl(impl: str):
  """Runs the block (its tracing) with `impl`."""
  previous = _impl
  set_conv_impl(impl)
  try:
    yield
  finally:
    set_conv_impl(previous)


def uses_onednn() -> bool:
  """Whether convolutions traced now go to oneDNN."""
  if _impl == 'xla':
    return False
  if _impl == 'onednn':
    if not onednn.available():
      raise RuntimeError('config.model.conv_impl=onednn, but the oneDNN extension is not '
                         'available (see the warning above); use auto or xla')
    return True
  return jax.default_backend() == 'cpu' and onednn.available()


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                         dimension_numbers=None, feature_group_count=1, batch_group_count=1,
                         precision=None, preferred_element_type=None):
  """`lax.conv_general_dilated`, on oneDNN where the switch says so and the op covers the call."""
  if (uses_onednn() and preferred_element_type is None
      and onednn.covers(lhs, rhs, window_strides, lhs_dilation, rhs_dilation, dimension_numbers,
                        feature_group_count, batch_group_count)):
    strides = tuple(int(s) for s in window_strides)
    pads = onednn.explicit_padding(padding, lhs.shape[1:3], rhs.shape[:2], strides)
    return onednn.conv2d(lhs, rhs, strides, pads)
  return jax.lax.conv_general_dilated(
      lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation, rhs_dilation=rhs_dilation,
      dimension_numbers=dimension_numbers, feature_group_count=feature_group_count,
      batch_group_count=batch_group_count, precision=precision,
      preferred_element_type=preferred_element_type)


class Conv(nn.Conv):
  """nn.Conv (same parameters, same layout) whose convolution follows the switch above."""
  conv_general_dilated: Callable = conv_general_dilated
