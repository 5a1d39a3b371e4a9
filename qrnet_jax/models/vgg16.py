"""VGG16 as in Keras applications, with the official ImageNet weight layout.

Submodule names are the Keras layer names (block1_conv1 ... block5_conv3, fc1, fc2,
predictions), so qrnet_jax.weights.keras_h5 maps the official .h5 file one to one.
"""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from qrnet_jax.ops.conv import Conv
from qrnet_jax.ops.pool import max_pool_2x2

# Caffe-style ImageNet channel means in BGR order, 0-255 pixel units (Keras "caffe" mode).
CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)

# (block, number of 3x3 convs, channels) of the five VGG16 conv blocks.
VGG16_BLOCKS = ((1, 2, 64), (2, 2, 128), (3, 3, 256), (4, 3, 512), (5, 3, 512))


def caffe_preprocess(images: jnp.ndarray) -> jnp.ndarray:
  """RGB images in [0, 1] -> Keras "caffe" input: BGR, 0-255, ImageNet mean removed.

  Written as jnp ops so that gradients flow back to the images (QRNet's output).
  """
  bgr = images[..., ::-1] * 255.0
  return bgr - jnp.asarray(CAFFE_BGR_MEAN, dtype=bgr.dtype)


class VGG16(nn.Module):
  """Keras' VGG16 with include_top=True; logits out (no softmax).

  Attributes:
    num_classes: 1000 is the ImageNet head; any other value is a new `predictions`
      layer on top of the ImageNet fc1 and fc2.
    dtype: computation dtype (parameters stay float32); logits are returned in float32.
  """

  num_classes: int = 1000
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    """images: (N, 224, 224, 3) RGB in [0, 1]. `train` is unused (no dropout/BN)."""
    del train  # Keras' VGG16 has neither dropout nor batch norm.
    x = caffe_preprocess(images.astype(jnp.float32)).astype(self.dtype)
    for block, num_convs, channels in VGG16_BLOCKS:
      for i in range(1, num_convs + 1):
        x = Conv(channels, (3, 3), padding='SAME', relu=True, dtype=self.dtype,
                 name=f'block{block}_conv{i}')(x)
      x = max_pool_2x2(x)
    # Keras' Flatten is channels-last, so fc1's rows are in (H, W, C) order.
    x = x.reshape((x.shape[0], -1))
    x = nn.relu(nn.Dense(4096, dtype=self.dtype, name='fc1')(x))
    x = nn.relu(nn.Dense(4096, dtype=self.dtype, name='fc2')(x))
    x = nn.Dense(self.num_classes, dtype=self.dtype, name='predictions')(x)
    return x.astype(jnp.float32)
