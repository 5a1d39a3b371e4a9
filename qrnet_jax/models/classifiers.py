"""The classifiers QRNet is trained against, by config name, and their trainable parts.

A train step splits variables['params'] by top-level name: the names returned by
`trainable_parts(arch, partition)` go to the optimizer, the rest is frozen (stop_gradient).
"""

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from qrnet_jax.models.inception_v3 import InceptionV3
from qrnet_jax.models.resnet50 import ResNet50
from qrnet_jax.models.small import SmallInception, SmallResNet, SmallVGG
from qrnet_jax.models.vgg16 import VGG16

CLASSIFIERS = {
    'vgg16': VGG16,
    'inception_v3': InceptionV3,
    'resnet50': ResNet50,
    'small_vgg': SmallVGG,
    'small_inception': SmallInception,
    'small_resnet': SmallResNet,
}

# Input side each ImageNet classifier was trained at; None: any size (global pooling).
INPUT_SIZES = {
    'vgg16': 224,  # fc1 is 7*7*512 -> 4096, so VGG16 needs exactly 224.
    'inception_v3': 299,
    'resnet50': 224,
    'small_vgg': None,
    'small_inception': None,
    'small_resnet': None,
}

# Partitions of a classifier's parameters that train (top-level param names):
#   'none': frozen classifier (QRNet + frozen VGG16, MQRNet);
#   'head': the final dense layer only (a new K-class head on frozen features);
#   'fc':   the fully connected layers, the paper's VGG16 fine-tuning ("its three FC
#           layers"); for families without FC layers before the head, same as 'head';
#   'all':  every parameter.
PARTITIONS = ('none', 'head', 'fc', 'all')
_FC_LAYERS = {
    'vgg16': ('fc1', 'fc2', 'predictions'),
    'small_vgg': ('fc1', 'predictions'),
}


def _check_arch(arch: str) -> None:
  if arch not in CLASSIFIERS:
    raise ValueError(f'Unknown classifier arch {arch!r}; expected one of {sorted(CLASSIFIERS)}.')


def build_classifier(arch: str, num_classes: int, dtype=jnp.float32) -> nn.Module:
  """The Linen module for `arch` with a head of `num_classes` (1000: the ImageNet head)."""
  _check_arch(arch)
  return CLASSIFIERS[arch](num_classes=num_classes, dtype=dtype)


def input_size(arch: str) -> Optional[int]:
  """Image side the classifier expects (224, 299), or None if any size works."""
  _check_arch(arch)
  return INPUT_SIZES[arch]


def param_names(arch: str, num_classes: int = 1000) -> tuple[str, ...]:
  """All top-level param names of `arch`, sorted, from an abstract init (no FLOPs)."""
  module = build_classifier(arch, num_classes)
  side = input_size(arch) or 32
  images = jax.ShapeDtypeStruct((1, side, side, 3), jnp.float32)
  variables = jax.eval_shape(module.init, jax.random.key(0), images)
  return tuple(sorted(variables['params']))


def trainable_parts(arch: str, partition: str) -> tuple[str, ...]:
  """Top-level names in variables['params'] that train under `partition` (see PARTITIONS)."""
  _check_arch(arch)
  if partition == 'none':
    return ()
  if partition == 'head':
    return ('predictions',)
  if partition == 'fc':
    return _FC_LAYERS.get(arch, ('predictions',))
  if partition == 'all':
    return param_names(arch)
  raise ValueError(f'Unknown trainable partition {partition!r}; expected one of {PARTITIONS}.')


def resize_to_input(images, size: Optional[int]):
  """Bilinear resize of NHWC images to size x size where the classifier needs a fixed input
  (VGG16 224, InceptionV3 299); unchanged when `size` is None or already matches."""
  if size is None or images.shape[1:3] == (size, size):
    return images
  return jax.image.resize(images, (images.shape[0], size, size, images.shape[3]), 'bilinear')
