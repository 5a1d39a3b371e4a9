"""ResNet50 (v1) as in Keras applications, with the official ImageNet weight layout.

Keras' ResNet50 is the original v1: the stride 2 of a stage sits on the first 1x1 conv
and on the `_0_conv` projection shortcut (torchvision's v1.5 puts it on the 3x3).
Submodule names are the Keras layer names (conv1_conv, conv1_bn, conv2_block1_0_conv, ...).
"""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from qrnet_jax.models.vgg16 import caffe_preprocess
from qrnet_jax.ops.conv import Conv

BN_EPSILON = 1.001e-5  # Keras' ResNet value, not the Keras default 1e-3.

# (stage name, bottleneck filters, blocks, stride of the first block).
RESNET50_STAGES = (('conv2', 64, 3, 1), ('conv3', 128, 4, 2),
                   ('conv4', 256, 6, 2), ('conv5', 512, 3, 2))


def _conv_bn(x, filters, kernel, strides, name, train, dtype, padding='SAME'):
  """Conv (with bias, as in Keras' ResNet50) followed by BatchNorm `<name>_bn`."""
  x = Conv(filters, (kernel, kernel), strides=(strides, strides), padding=padding,
           dtype=dtype, name=f'{name}_conv')(x)
  return nn.BatchNorm(use_running_average=not train, momentum=0.99, epsilon=BN_EPSILON,
                      dtype=dtype, name=f'{name}_bn')(x)


def _bottleneck(x, filters, strides, projection, name, train, dtype):
  """Keras `residual_block_v1`: 1x1 (strided) -> 3x3 -> 1x1 (4x filters), plus shortcut."""
  if projection:
    shortcut = _conv_bn(x, 4 * filters, 1, strides, f'{name}_0', train, dtype)
  else:
    shortcut = x
  y = nn.relu(_conv_bn(x, filters, 1, strides, f'{name}_1', train, dtype))
  y = nn.relu(_conv_bn(y, filters, 3, 1, f'{name}_2', train, dtype))
  y = _conv_bn(y, 4 * filters, 1, 1, f'{name}_3', train, dtype)
  return nn.relu(shortcut + y)


class ResNet50(nn.Module):
  """Keras' ResNet50 with include_top=True; logits out (no softmax).

  Global average pooling makes any input of at least 32x32 work; ImageNet is 224.

  Attributes:
    num_classes: 1000 is the ImageNet head; any other value is a new `predictions` layer.
    dtype: computation dtype (parameters stay float32); logits are returned in float32.
  """

  num_classes: int = 1000
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    """images: (N, H, W, 3) RGB in [0, 1]; train=True uses and updates batch statistics."""
    x = caffe_preprocess(images.astype(jnp.float32)).astype(self.dtype)
    # Keras pads explicitly (ZeroPadding2D) and then uses 'valid' ops.
    x = jnp.pad(x, ((0, 0), (3, 3), (3, 3), (0, 0)))
    x = nn.relu(_conv_bn(x, 64, 7, 2, 'conv1', train, self.dtype, padding='VALID'))
    x = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    x = nn.max_pool(x, (3, 3), strides=(2, 2), padding='VALID')
    for stage, filters, blocks, stride in RESNET50_STAGES:
      for block in range(1, blocks + 1):
        first = block == 1
        x = _bottleneck(x, filters, stride if first else 1, first,
                        f'{stage}_block{block}', train, self.dtype)
    x = jnp.mean(x, axis=(1, 2))  # Keras' GlobalAveragePooling2D 'avg_pool'.
    x = nn.Dense(self.num_classes, dtype=self.dtype, name='predictions')(x)
    return x.astype(jnp.float32)
