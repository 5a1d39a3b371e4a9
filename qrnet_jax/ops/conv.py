"""Which implementation runs the models' convolutions: config.model.conv_impl.

'xla': `lax.conv_general_dilated`. 'onednn': the oneDNN op (qrnet_jax/ops/onednn.py) for every
convolution it covers, XLA's for the rest. 'auto': oneDNN on CPU when the extension is built, XLA
elsewhere (GPU, TPU, or no extension).

The models build their convolutions with `Conv` below, an nn.Conv whose parameters (names, shapes,
HWIO layout, initialisation) are nn.Conv's: checkpoints and the Keras ports do not depend on the
implementation. The choice is read when a model is traced; `set_conv_impl` (a run does this from its
config) or the `conv_impl` context manager change it.
"""
import contextlib
from typing import Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

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


def _pairs(value, name) -> Tuple[int, int]:
  value = 1 if value is None else value
  value = (value, value) if isinstance(value, int) else tuple(value)
  if len(value) != 2:
    raise ValueError(f'{name} must be an int or a pair for a 2-D convolution, got {value}')
  return value


def onednn_geometry(module: nn.Conv, inputs) -> Optional[Tuple[Tuple[int, int], onednn.Padding]]:
  """(strides, explicit padding) when `module` on `inputs` is one of the oneDNN op's convolutions
  (2-D, NHWC, no dilation, groups or mask, float32 or bfloat16) and the switch says oneDNN; else
  None (lax.conv_general_dilated then runs it)."""
  kernel_size = module.kernel_size
  if (not uses_onednn() or inputs.ndim != 4 or isinstance(kernel_size, int)
      or len(kernel_size) != 2):
    return None
  if (module.mask is not None or not module.shared_weights or module.feature_group_count != 1
      or _pairs(module.input_dilation, 'input_dilation') != (1, 1)
      or _pairs(module.kernel_dilation, 'kernel_dilation') != (1, 1)):
    return None
  dtype = module.dtype or jnp.result_type(inputs.dtype, module.param_dtype)
  if not any(jnp.dtype(dtype) == t for t in onednn.DTYPES):
    return None
  padding = module.padding
  if isinstance(padding, str) and padding not in ('SAME', 'VALID'):
    return None  # CIRCULAR, REFLECT, CAUSAL
  strides = _pairs(module.strides, 'strides')
  try:
    pads = onednn.explicit_padding(padding, inputs.shape[1:3], kernel_size, strides)
  except (TypeError, ValueError):
    return None  # another of nn.Conv's padding forms
  return strides, pads


class Conv(nn.Conv):
  """nn.Conv (same parameters, same layout and initialisation) whose convolution follows the switch
  above, with an optional ReLU: `relu=True` is nn.relu(nn.Conv(...)(x)).

  On oneDNN the convolution, the bias and the ReLU are one primitive (and the kernel and bias
  gradients another); on XLA this is nn.Conv then nn.relu.
  """
  relu: bool = False

  @nn.compact
  def __call__(self, inputs):
    geometry = onednn_geometry(self, inputs)
    if geometry is None:
      y = super().__call__(inputs)
      return nn.relu(y) if self.relu else y
    kernel_shape = (*self.kernel_size, inputs.shape[-1], self.features)
    kernel = self.param('kernel', self.kernel_init, kernel_shape, self.param_dtype)
    bias = (self.param('bias', self.bias_init, (self.features,), self.param_dtype)
            if self.use_bias else None)
    inputs, kernel, bias = self.promote_dtype(inputs, kernel, bias, dtype=self.dtype)
    return onednn.conv2d(inputs, kernel, bias, *geometry, self.relu)
