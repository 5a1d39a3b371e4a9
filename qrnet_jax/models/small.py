"""Small classifiers for fast CPU experiments and tests, one per family of the paper's.

Same interface as the ImageNet classifiers (num_classes, dtype, apply(variables, images,
train=False) with RGB images in [0, 1]), but any input size (global average pooling) and
about 0.1M parameters. Inputs are centred (2x - 1) inside, so gradients reach the images.
"""

import itertools
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from qrnet_jax.ops.conv import Conv
from qrnet_jax.ops.pool import max_pool_2x2


def _centre(images: jnp.ndarray, dtype) -> jnp.ndarray:
  return (images.astype(jnp.float32) * 2.0 - 1.0).astype(dtype)


def _batch_norm(train: bool, dtype, name: str) -> nn.BatchNorm:
  return nn.BatchNorm(use_running_average=not train, momentum=0.9, dtype=dtype, name=name)


class SmallVGG(nn.Module):
  """VGG-style: blocks of stacked 3x3 convs + 2x2 max-pool, then fc1 and predictions.

  Global average pooling (instead of VGG's Flatten) keeps fc1 independent of image size.
  """

  num_classes: int = 10
  dtype: Any = jnp.float32
  block_channels: Sequence[int] = (16, 32, 64)
  fc_features: int = 64

  @nn.compact
  def __call__(self, images: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    del train  # No dropout or batch norm, like VGG16.
    x = _centre(images, self.dtype)
    for block, channels in enumerate(self.block_channels, start=1):
      for i in (1, 2):
        x = Conv(channels, (3, 3), relu=True, dtype=self.dtype, name=f'block{block}_conv{i}')(x)
      x = max_pool_2x2(x)
    x = jnp.mean(x, axis=(1, 2))
    x = nn.relu(nn.Dense(self.fc_features, dtype=self.dtype, name='fc1')(x))
    x = nn.Dense(self.num_classes, dtype=self.dtype, name='predictions')(x)
    return x.astype(jnp.float32)


class SmallInception(nn.Module):
  """Inception-style: a conv stem, then blocks of parallel 1x1 / 3x3 / double-3x3 / pool
  branches concatenated on channels, each conv followed by BatchNorm and ReLU."""

  num_classes: int = 10
  dtype: Any = jnp.float32
  stem_channels: int = 24
  branch_channels: Sequence[int] = (16, 24)

  @nn.compact
  def __call__(self, images: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    index = itertools.count(1)  # conv2d_<i>, batch_normalization_<i> as in Keras.

    def conv_bn(x, channels, kernel):
      i = next(index)
      x = Conv(channels, kernel, use_bias=False, dtype=self.dtype, name=f'conv2d_{i}')(x)
      return nn.relu(_batch_norm(train, self.dtype, f'batch_normalization_{i}')(x))

    x = conv_bn(_centre(images, self.dtype), self.stem_channels, (3, 3))
    x = max_pool_2x2(x)
    for channels in self.branch_channels:
      branch1x1 = conv_bn(x, channels, (1, 1))
      branch3x3 = conv_bn(conv_bn(x, channels, (1, 1)), channels, (3, 3))
      branch3x3dbl = conv_bn(conv_bn(conv_bn(x, channels, (1, 1)), channels, (3, 3)),
                             channels, (3, 3))
      branch_pool = nn.avg_pool(x, (3, 3), padding='SAME', count_include_pad=False)
      branch_pool = conv_bn(branch_pool, channels, (1, 1))
      x = jnp.concatenate([branch1x1, branch3x3, branch3x3dbl, branch_pool], axis=-1)
      x = max_pool_2x2(x)
    x = jnp.mean(x, axis=(1, 2))
    x = nn.Dense(self.num_classes, dtype=self.dtype, name='predictions')(x)
    return x.astype(jnp.float32)


class SmallResNet(nn.Module):
  """ResNet-style: a conv stem, then stages of basic residual blocks (two 3x3 conv + BN),
  a strided 1x1 projection shortcut where the shape changes."""

  num_classes: int = 10
  dtype: Any = jnp.float32
  stage_channels: Sequence[int] = (16, 32, 64)

  @nn.compact
  def __call__(self, images: jnp.ndarray, train: bool = False) -> jnp.ndarray:

    def conv_bn(x, channels, kernel, strides, name):
      x = Conv(channels, (kernel, kernel), strides=(strides, strides), use_bias=False,
               dtype=self.dtype, name=f'{name}_conv')(x)
      return _batch_norm(train, self.dtype, f'{name}_bn')(x)

    x = nn.relu(conv_bn(_centre(images, self.dtype), self.stage_channels[0], 3, 1, 'conv1'))
    for stage, channels in enumerate(self.stage_channels, start=2):
      strides = 1 if stage == 2 else 2
      name = f'conv{stage}_block1'
      if strides != 1 or x.shape[-1] != channels:
        shortcut = conv_bn(x, channels, 1, strides, f'{name}_0')
      else:
        shortcut = x
      y = nn.relu(conv_bn(x, channels, 3, strides, f'{name}_1'))
      y = conv_bn(y, channels, 3, 1, f'{name}_2')
      x = nn.relu(shortcut + y)
    x = jnp.mean(x, axis=(1, 2))
    x = nn.Dense(self.num_classes, dtype=self.dtype, name='predictions')(x)
    return x.astype(jnp.float32)
