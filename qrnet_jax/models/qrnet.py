"""QRNet, the quality recovery network of Table 1 (and the small variant of Table 3)."""
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from qrnet_jax.ops.conv import Conv
from qrnet_jax.ops.pool import max_pool_2x2

# Channels per encoder stage; the bottleneck has twice the last (256). Table 1.
ENCODER_CHANNELS = (16, 32, 64, 128)
BOTTLENECK_CHANNELS = 256
# Dropout sits between the two convolutions of the first two decoder stages only. Table 1.
DECODER_STAGES_WITH_DROPOUT = 2
# Four 2x2 poolings: the input side must divide by 2**4.
SIZE_MULTIPLE = 16

he_normal = nn.initializers.he_normal()


class UpConv2x2(nn.Module):
  """2x2 transposed convolution with stride 2 (Table 1's "Transposed Conv.").

  With the stride equal to the kernel size the output blocks do not overlap, so the operation is
  one matrix product, (pixels, in) x (in, 2 * 2 * out), whose rows are then laid out as 2x2 blocks
  (depth to space). It equals `nn.ConvTranspose(features, (2, 2), strides=(2, 2), padding='SAME')`
  on the same parameters (kernel flipped in both spatial axes) and avoids XLA's slow weight
  gradient for ConvTranspose (jax-ml/jax#23783). The kernel layout is ConvTranspose's
  (2, 2, in, out). (An einsum straight into the (n, h, 2, w, 2, out) layout was 30-40% slower
  on CPU, forward and backward: XLA transposed the activations around its dot.)
  """
  features: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    kernel = self.param('kernel', he_normal, (2, 2, x.shape[-1], self.features), jnp.float32)
    bias = self.param('bias', nn.initializers.zeros, (self.features,), jnp.float32)
    x, kernel, bias = (a.astype(self.dtype) for a in (x, kernel, bias))
    n, h, w, c = x.shape
    blocks = kernel[::-1, ::-1].transpose(2, 0, 1, 3).reshape(c, 4 * self.features)
    y = jnp.dot(x.reshape(n * h * w, c), blocks).reshape(n, h, w, 2, 2, self.features)
    return y.transpose(0, 1, 3, 2, 4, 5).reshape(n, 2 * h, 2 * w, self.features) + bias


class QRNet(nn.Module):
  """U-Net-like encoder-decoder that restores a distorted image (Table 1).

  Attributes:
    small: Table 3's small QRNet, one 3x3 convolution per stage instead of two.
    dropout_rate: dropout between the convolutions of the first two decoder stages (paper: 0.2).
    dtype: computation dtype (e.g. bfloat16 on accelerators); parameters stay float32.

  Input: float images, NHWC, in [0, 1], height and width multiples of 16. Output: the restored image
  of the same shape, through a sigmoid (in (0, 1)), in float32.
  """
  small: bool = False
  dropout_rate: float = 0.2
  dtype: Any = jnp.float32

  def _conv(self, features, name, kernel_size=3, relu=False):
    return Conv(features, (kernel_size, kernel_size), padding='SAME', kernel_init=he_normal,
                relu=relu, dtype=self.dtype, name=name)

  def _stage(self, x, features, name, train, dropout=False):
    """Two 3x3 conv + ReLU with dropout between them where Table 1 has it.

    The small QRNet (Table 3) keeps one conv per stage and its dropout right after that conv.
    """
    x = self._conv(features, f'{name}_conv1', relu=True)(x)
    if dropout:
      x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    if self.small:
      return x
    return self._conv(features, f'{name}_conv2', relu=True)(x)

  @nn.compact
  def __call__(self, x, train: bool = False):
    check_input_size(x.shape)
    x = x.astype(self.dtype)
    skips = []
    for i, features in enumerate(ENCODER_CHANNELS):
      x = self._stage(x, features, f'encoder{i + 1}', train)
      skips.append(x)
      x = max_pool_2x2(x)
    x = self._stage(x, BOTTLENECK_CHANNELS, 'bottleneck', train)
    for i, (features, skip) in enumerate(zip(ENCODER_CHANNELS[::-1], skips[::-1])):
      x = UpConv2x2(features, dtype=self.dtype, name=f'decoder{i + 1}_upconv')(x)
      x = jnp.concatenate([x, skip], axis=-1)
      x = self._stage(x, features, f'decoder{i + 1}', train,
                      dropout=i < DECODER_STAGES_WITH_DROPOUT)
    x = self._conv(3, 'output_conv', kernel_size=1)(x)
    return nn.sigmoid(x.astype(jnp.float32))


def check_input_size(shape):
  """Raises ValueError unless `shape` is NHWC with 3 channels and H, W multiples of 16."""
  if len(shape) != 4 or shape[-1] != 3:
    raise ValueError(f'QRNet expects NHWC RGB images of shape (N, H, W, 3), got {tuple(shape)}')
  height, width = shape[1], shape[2]
  if height % SIZE_MULTIPLE or width % SIZE_MULTIPLE:
    raise ValueError(
        f'QRNet input size {height}x{width} is not a multiple of {SIZE_MULTIPLE} in both sides '
        f'(four 2x2 poolings); resize or pad the images, e.g. to '
        f'{-(-height // SIZE_MULTIPLE) * SIZE_MULTIPLE}x{-(-width // SIZE_MULTIPLE) * SIZE_MULTIPLE}')
