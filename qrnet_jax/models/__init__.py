"""Flax Linen models: QRNet and the classifiers it is trained against."""
import functools

import jax
import jax.numpy as jnp

from qrnet_jax.models.qrnet import QRNet
from qrnet_jax.models.vgg16 import VGG16
from qrnet_jax.models.inception_v3 import InceptionV3
from qrnet_jax.models.resnet50 import ResNet50
from qrnet_jax.models.small import SmallVGG, SmallInception, SmallResNet
from qrnet_jax.models import classifiers


def init_variables(module, seed: int, image_size: int):
  """module.init on one (image_size x image_size) image, jitted: one compiled program instead of
  hundreds of eager ops (which are slow on multi-process runs)."""
  images = jnp.zeros((1, image_size, image_size, 3))
  return jax.jit(functools.partial(module.init, train=False))(jax.random.PRNGKey(seed), images)
