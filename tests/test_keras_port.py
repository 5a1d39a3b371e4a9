"""The Linen classifiers, fed a Keras-format ImageNet file, against Keras 3 itself.

For each of VGG16, InceptionV3 and ResNet50: randomise a Keras reference model (biases and
BatchNorm statistics included), write its weights in the official file layout with h5py
(official layer and weight names), check that Keras loads that file back to the same
logits, then that the Flax port of the file gives the same logits on the same images.
"""
import os

os.environ.setdefault('KERAS_BACKEND', 'jax')  # Must precede the keras import.

import re

import h5py
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from qrnet_jax.models.classifiers import build_classifier, input_size
from qrnet_jax.weights.keras_h5 import load_keras_h5

keras = pytest.importorskip('keras')

pytestmark = [
    pytest.mark.slow,
    # Keras 3 variables' __array__ under numpy 2; harmless here.
    pytest.mark.filterwarnings('ignore:__array__ implementation:DeprecationWarning'),
]

KERAS_MODELS = {
    'vgg16': (keras.applications.VGG16, keras.applications.vgg16.preprocess_input),
    'inception_v3': (keras.applications.InceptionV3,
                     keras.applications.inception_v3.preprocess_input),
    'resnet50': (keras.applications.ResNet50, keras.applications.resnet50.preprocess_input),
}


def randomised_weights(variables, rng):
  """New values for one Keras layer's weights: random biases and BatchNorm statistics
  (variance positive); kernels keep Keras' own random init, which keeps activations sane."""
  values = []
  for variable in variables:
    shape = tuple(variable.shape)
    if variable.name == 'kernel':
      values.append(np.asarray(variable.numpy()))
    elif variable.name in ('gamma', 'moving_variance'):
      values.append(rng.uniform(0.5, 1.5, shape).astype(np.float32))
    else:  # bias, beta, moving_mean
      values.append(rng.normal(0.0, 0.1, shape).astype(np.float32))
  return values


def _creation_index(name):
  # Keras numbers unnamed layers per class in creation order: conv2d, conv2d_1, conv2d_2, ...
  match = re.fullmatch(r'[a-z0-9_]*?(?:_(\d+))?', name)
  return int(match.group(1) or 0)


def official_layer_names(model):
  """Keras-3 layer name -> the official file's name: unnamed Conv2D / BatchNormalization
  layers become conv2d_<i> / batch_normalization_<i>, i = 1, 2, ... in creation order."""
  renamed = {}
  for cls, prefix in ((keras.layers.Conv2D, 'conv2d'),
                      (keras.layers.BatchNormalization, 'batch_normalization')):
    auto = [l.name for l in model.layers if isinstance(l, cls) and l.name.startswith(prefix)]
    for i, name in enumerate(sorted(auto, key=_creation_index), start=1):
      renamed[name] = f'{prefix}_{i}'
  return {l.name: renamed.get(l.name, l.name) for l in model.layers}


def write_official_h5(model, path, flat_names):
  """The Keras applications file layout: root attr layer_names (model.layers order, which
  is the order Keras loads by), per-layer attr weight_names, datasets in weight order."""
  names = official_layer_names(model)
  with h5py.File(path, 'w') as f:
    f.attrs['layer_names'] = np.array([names[l.name].encode() for l in model.layers])
    f.attrs['backend'] = b'tensorflow'
    f.attrs['keras_version'] = b'2.1.6'
    for layer in model.layers:
      name = names[layer.name]
      group = f.create_group(name)
      weight_names = []
      for variable in layer.weights:
        if flat_names:  # Keras 1, as in the VGG16 file: block1_conv1_W_1:0.
          weight_name = f'{name}_{ {"kernel": "W", "bias": "b"}[variable.name] }_1:0'
        else:
          weight_name = f'{name}/{variable.name}:0'
        group.create_dataset(weight_name, data=np.asarray(variable.numpy()))
        weight_names.append(weight_name.encode())
      group.attrs['weight_names'] = np.array(weight_names, dtype='S')


@pytest.mark.parametrize('arch', ['vgg16', 'inception_v3', 'resnet50'])
def test_flax_port_matches_keras(arch, tmp_path):
  keras_model_fn, preprocess_input = KERAS_MODELS[arch]
  rng = np.random.default_rng(0)
  reference = keras_model_fn(weights=None, classifier_activation=None)
  for layer in reference.layers:
    if layer.weights:
      layer.set_weights(randomised_weights(layer.weights, rng))
  path = str(tmp_path / f'{arch}.h5')
  write_official_h5(reference, path, flat_names=(arch == 'vgg16'))
  if arch == 'inception_v3':
    with h5py.File(path, 'r') as f:
      names = {n.decode() for n in f.attrs['layer_names']}
    assert {'conv2d_1', 'conv2d_94', 'batch_normalization_94'} <= names
    assert 'conv2d_95' not in names and 'conv2d' not in names
  side = input_size(arch)
  images = rng.uniform(0.0, 1.0, (2, side, side, 3)).astype(np.float32)
  keras_inputs = preprocess_input(255.0 * images)
  expected = np.asarray(reference(keras_inputs, training=False))
  del reference

  # The file is a faithful official-layout file: Keras itself loads it to the same logits.
  reloaded = keras_model_fn(weights=path, classifier_activation=None)
  np.testing.assert_allclose(np.asarray(reloaded(keras_inputs, training=False)), expected,
                             rtol=1e-6, atol=1e-6 * np.abs(expected).max())
  del reloaded

  variables = load_keras_h5(path, arch)
  module = build_classifier(arch, 1000)
  logits = np.asarray(jax.jit(module.apply)(variables, images))
  assert logits.shape == (2, 1000)
  error = np.abs(logits - expected).max()
  print(f'{arch}: max|logit| {np.abs(expected).max():.3g}, max|diff| {error:.3g}')
  assert error <= 1e-4 * np.abs(expected).max() + 1e-6, (error, np.abs(expected).max())


def he_normal_variables(module, images, rng):
  """Random variables of the module's structure, made in numpy: a real init of the full
  networks compiles for tens of seconds on CPU. BatchNorm statistics are the identity."""
  abstract = jax.eval_shape(module.init, jax.random.key(0), images)

  def value(path, leaf):
    name = path[-1].key
    if name == 'kernel':
      fan_in = int(np.prod(leaf.shape[:-1]))
      return (rng.standard_normal(leaf.shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)
    return np.full(leaf.shape, 1.0 if name in ('scale', 'var') else 0.0, np.float32)

  return jax.tree_util.tree_map_with_path(value, abstract)


@pytest.mark.parametrize('arch,side', [('vgg16', 32), ('inception_v3', 75), ('resnet50', 32)])
def test_gradient_reaches_images_not_frozen_params(arch, side):
  """Through the in-model preprocessing to the images; none to stop_gradient'ed params."""
  module = build_classifier(arch, 10)
  images = jnp.asarray(np.random.default_rng(1).uniform(0, 1, (2, side, side, 3)), jnp.float32)
  variables = he_normal_variables(module, images, np.random.default_rng(2))
  labels = jnp.array([1, 2])

  def loss(params, images):
    frozen = {**variables, 'params': jax.lax.stop_gradient(params)}
    logits = module.apply(frozen, images, train=False)
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

  param_grads, image_grads = jax.jit(jax.grad(loss, argnums=(0, 1)))(variables['params'], images)
  assert bool(jnp.all(jnp.isfinite(image_grads)))
  assert float(jnp.abs(image_grads).max()) > 0
  assert all(float(jnp.abs(g).max()) == 0 for g in jax.tree.leaves(param_grads))
