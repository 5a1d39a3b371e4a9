"""InceptionV3 as in Keras applications, with the official ImageNet weight layout.

Every conv is followed by BatchNorm (scale=False, epsilon 1e-3) and ReLU. Keras names
them in creation order, conv2d_1..conv2d_94 and batch_normalization_1..94; the modules
here are created in the same order so the names match the official .h5 file.
"""

import itertools
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from qrnet_jax.ops.conv import Conv

BN_EPSILON = 1e-3  # Keras' BatchNormalization default, used by its InceptionV3.


def inception_preprocess(images: jnp.ndarray) -> jnp.ndarray:
  """RGB images in [0, 1] -> Keras "tf" mode input (255 x) / 127.5 - 1, i.e. 2x - 1."""
  return images * 2.0 - 1.0


def _avg_pool_3x3_same(x):
  # Keras' AveragePooling2D(3, 1, 'same') divides by the number of real pixels only.
  return nn.avg_pool(x, (3, 3), strides=(1, 1), padding='SAME', count_include_pad=False)


def _max_pool_3x3_stride2(x):
  return nn.max_pool(x, (3, 3), strides=(2, 2), padding='VALID')


class InceptionV3(nn.Module):
  """Keras' InceptionV3 with include_top=True; logits out (no softmax).

  Global average pooling makes any input of at least 75x75 work; ImageNet is 299.

  Attributes:
    num_classes: 1000 is the ImageNet head; any other value is a new `predictions` layer.
    dtype: computation dtype (parameters stay float32); logits are returned in float32.
  """

  num_classes: int = 1000
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    """images: (N, H, W, 3) RGB in [0, 1]; train=True uses and updates batch statistics."""
    # Keras' per-class layer counter: conv2d_<i>, batch_normalization_<i>.
    index = itertools.count(1)

    def conv_bn(x, filters, kernel_hw, strides=1, padding='SAME'):
      """Keras' `conv2d_bn`: conv without bias, BN without scale, ReLU."""
      i = next(index)
      x = Conv(filters, kernel_hw, strides=(strides, strides), padding=padding,
               use_bias=False, dtype=self.dtype, name=f'conv2d_{i}')(x)
      x = nn.BatchNorm(use_running_average=not train, momentum=0.99, epsilon=BN_EPSILON,
                       use_scale=False, dtype=self.dtype, name=f'batch_normalization_{i}')(x)
      return nn.relu(x)

    def concat(branches):
      return jnp.concatenate(branches, axis=-1)

    x = inception_preprocess(images.astype(jnp.float32)).astype(self.dtype)
    x = conv_bn(x, 32, (3, 3), strides=2, padding='VALID')
    x = conv_bn(x, 32, (3, 3), padding='VALID')
    x = conv_bn(x, 64, (3, 3))
    x = _max_pool_3x3_stride2(x)
    x = conv_bn(x, 80, (1, 1), padding='VALID')
    x = conv_bn(x, 192, (3, 3), padding='VALID')
    x = _max_pool_3x3_stride2(x)

    # mixed0, mixed1, mixed2: 35 x 35; the pool branch has 32 channels in mixed0, then 64.
    for pool_channels in (32, 64, 64):
      branch1x1 = conv_bn(x, 64, (1, 1))
      branch5x5 = conv_bn(conv_bn(x, 48, (1, 1)), 64, (5, 5))
      branch3x3dbl = conv_bn(conv_bn(conv_bn(x, 64, (1, 1)), 96, (3, 3)), 96, (3, 3))
      branch_pool = conv_bn(_avg_pool_3x3_same(x), pool_channels, (1, 1))
      x = concat([branch1x1, branch5x5, branch3x3dbl, branch_pool])

    # mixed3: reduction to 17 x 17.
    branch3x3 = conv_bn(x, 384, (3, 3), strides=2, padding='VALID')
    branch3x3dbl = conv_bn(conv_bn(x, 64, (1, 1)), 96, (3, 3))
    branch3x3dbl = conv_bn(branch3x3dbl, 96, (3, 3), strides=2, padding='VALID')
    x = concat([branch3x3, branch3x3dbl, _max_pool_3x3_stride2(x)])

    # mixed4 .. mixed7: factorised 7x7 branches with 128, 160, 160, 192 channels.
    for channels in (128, 160, 160, 192):
      branch1x1 = conv_bn(x, 192, (1, 1))
      branch7x7 = conv_bn(x, channels, (1, 1))
      branch7x7 = conv_bn(branch7x7, channels, (1, 7))
      branch7x7 = conv_bn(branch7x7, 192, (7, 1))
      branch7x7dbl = conv_bn(x, channels, (1, 1))
      branch7x7dbl = conv_bn(branch7x7dbl, channels, (7, 1))
      branch7x7dbl = conv_bn(branch7x7dbl, channels, (1, 7))
      branch7x7dbl = conv_bn(branch7x7dbl, channels, (7, 1))
      branch7x7dbl = conv_bn(branch7x7dbl, 192, (1, 7))
      branch_pool = conv_bn(_avg_pool_3x3_same(x), 192, (1, 1))
      x = concat([branch1x1, branch7x7, branch7x7dbl, branch_pool])

    # mixed8: reduction to 8 x 8.
    branch3x3 = conv_bn(conv_bn(x, 192, (1, 1)), 320, (3, 3), strides=2, padding='VALID')
    branch7x7x3 = conv_bn(x, 192, (1, 1))
    branch7x7x3 = conv_bn(branch7x7x3, 192, (1, 7))
    branch7x7x3 = conv_bn(branch7x7x3, 192, (7, 1))
    branch7x7x3 = conv_bn(branch7x7x3, 192, (3, 3), strides=2, padding='VALID')
    x = concat([branch3x3, branch7x7x3, _max_pool_3x3_stride2(x)])

    # mixed9, mixed10: 8 x 8 x 2048 with split 1x3 / 3x1 branches.
    for _ in range(2):
      branch1x1 = conv_bn(x, 320, (1, 1))
      branch3x3 = conv_bn(x, 384, (1, 1))
      branch3x3 = concat([conv_bn(branch3x3, 384, (1, 3)), conv_bn(branch3x3, 384, (3, 1))])
      branch3x3dbl = conv_bn(conv_bn(x, 448, (1, 1)), 384, (3, 3))
      branch3x3dbl = concat([conv_bn(branch3x3dbl, 384, (1, 3)),
                             conv_bn(branch3x3dbl, 384, (3, 1))])
      branch_pool = conv_bn(_avg_pool_3x3_same(x), 192, (1, 1))
      x = concat([branch1x1, branch3x3, branch3x3dbl, branch_pool])

    x = jnp.mean(x, axis=(1, 2))  # Keras' GlobalAveragePooling2D 'avg_pool'.
    x = nn.Dense(self.num_classes, dtype=self.dtype, name='predictions')(x)
    return x.astype(jnp.float32)
