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


def _init_fn(module):
  return jax.jit(functools.partial(module.init, train=False))


def _init_args(seed: int, image_size: int):
  return jax.random.PRNGKey(seed), jnp.zeros((1, image_size, image_size, 3))


def init_variables(module, seed: int, image_size: int):
  """module.init on one (image_size x image_size) image as one compiled program (hundreds of eager
  ops are slow on multi-process runs), compiled without XLA's optimisations: it runs once, and
  optimising it is most of its cost (QRNet's init: 24 s to compile optimised, 4 s unoptimised)."""
  args = _init_args(seed, image_size)
  compiled = _init_fn(module).lower(*args).compile({'xla_backend_optimization_level': 0})
  return compiled(*args)


def variable_shapes(module, image_size: int):
  """The shapes and dtypes of `init_variables`' result, without computing it."""
  return jax.eval_shape(_init_fn(module), *_init_args(0, image_size))
