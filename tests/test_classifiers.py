"""Classifier shapes, parameter counts, trainable partitions, gradients and tiny training."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from qrnet_jax.models import classifiers
from qrnet_jax.models.classifiers import build_classifier, input_size, trainable_parts
from qrnet_jax.models.inception_v3 import inception_preprocess
from qrnet_jax.models.vgg16 import caffe_preprocess

IMAGENET_ARCHS = ('vgg16', 'inception_v3', 'resnet50')
SMALL_ARCHS = ('small_vgg', 'small_inception', 'small_resnet')

# Keras' model.summary() totals (trainable + non-trainable) for include_top=True.
KERAS_TOTAL_PARAMS = {'vgg16': 138_357_544, 'inception_v3': 23_851_784, 'resnet50': 25_636_712}
# Width of the features the `predictions` layer reads.
HEAD_FEATURES = {'vgg16': 4096, 'inception_v3': 2048, 'resnet50': 2048}


def abstract_variables(arch, num_classes, side=None):
  side = side or input_size(arch) or 32
  module = build_classifier(arch, num_classes)
  images = jax.ShapeDtypeStruct((2, side, side, 3), jnp.float32)
  return module, images, jax.eval_shape(module.init, jax.random.key(0), images)


def count(tree):
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


@pytest.mark.parametrize('arch', IMAGENET_ARCHS)
def test_imagenet_parameter_counts_match_keras(arch):
  _, _, variables = abstract_variables(arch, 1000)
  assert count(variables) == KERAS_TOTAL_PARAMS[arch]
  assert jax.tree.all(jax.tree.map(lambda x: x.dtype == jnp.float32, variables))


@pytest.mark.parametrize('arch', IMAGENET_ARCHS + SMALL_ARCHS)
@pytest.mark.parametrize('num_classes', [1000, 7])
def test_head_shapes(arch, num_classes):
  module, images, variables = abstract_variables(arch, num_classes)
  logits = jax.eval_shape(module.apply, variables, images)
  assert logits.shape == (2, num_classes) and logits.dtype == jnp.float32
  head = variables['params']['predictions']
  assert head['kernel'].shape[1] == num_classes and head['bias'].shape == (num_classes,)
  if arch in HEAD_FEATURES:
    assert head['kernel'].shape[0] == HEAD_FEATURES[arch]


def test_vgg16_new_head_keeps_imagenet_fc_layers():
  _, _, variables = abstract_variables('vgg16', 101)
  params = variables['params']
  assert params['fc1']['kernel'].shape == (7 * 7 * 512, 4096)
  assert params['fc2']['kernel'].shape == (4096, 4096)
  assert params['predictions']['kernel'].shape == (4096, 101)
  assert 'batch_stats' not in variables


@pytest.mark.parametrize('arch', IMAGENET_ARCHS)
def test_global_pooling_archs_take_other_sizes(arch):
  side = {'vgg16': 32, 'inception_v3': 75, 'resnet50': 64}[arch]
  module, images, variables = abstract_variables(arch, 5, side)
  assert jax.eval_shape(module.apply, variables, images).shape == (2, 5)


K = 10


@pytest.mark.parametrize('arch,partition,expected', [
    ('vgg16', 'none', 0),
    ('vgg16', 'head', 4096 * K + K),
    ('vgg16', 'fc', 25088 * 4096 + 4096 + 4096 * 4096 + 4096 + 4096 * K + K),
    ('vgg16', 'all', 138_357_544 - (4096 * 1000 + 1000) + 4096 * K + K),
    ('inception_v3', 'head', 2048 * K + K),
    ('inception_v3', 'fc', 2048 * K + K),
    ('resnet50', 'head', 2048 * K + K),
    ('resnet50', 'fc', 2048 * K + K),
    ('small_vgg', 'fc', 64 * 64 + 64 + 64 * K + K),
])
def test_partition_selects_the_intended_parameters(arch, partition, expected):
  _, _, variables = abstract_variables(arch, K)
  names = trainable_parts(arch, partition)
  assert set(names) <= set(variables['params'])
  assert count({n: variables['params'][n] for n in names}) == expected


@pytest.mark.parametrize('arch', IMAGENET_ARCHS + SMALL_ARCHS)
def test_partition_all_is_every_top_level_param(arch):
  _, _, variables = abstract_variables(arch, K)
  assert set(trainable_parts(arch, 'all')) == set(variables['params'])
  assert trainable_parts(arch, 'none') == ()
  assert trainable_parts(arch, 'head') == ('predictions',)


def test_unknown_arch_or_partition_is_named():
  with pytest.raises(ValueError, match=r"'vgg19'.*vgg16"):
    trainable_parts('vgg19', 'fc')
  with pytest.raises(ValueError, match=r"'convs'.*'fc'"):
    trainable_parts('vgg16', 'convs')
  with pytest.raises(ValueError, match="'alexnet'"):
    build_classifier('alexnet', 10)
  with pytest.raises(ValueError, match="'alexnet'"):
    input_size('alexnet')


def test_registry_and_input_sizes():
  assert set(classifiers.CLASSIFIERS) == set(IMAGENET_ARCHS + SMALL_ARCHS)
  assert [input_size(a) for a in IMAGENET_ARCHS] == [224, 299, 224]
  assert all(input_size(a) is None for a in SMALL_ARCHS)
  module = build_classifier('resnet50', 3, dtype=jnp.bfloat16)
  assert module.num_classes == 3 and module.dtype == jnp.bfloat16


def test_preprocessing_matches_keras():
  keras_imagenet_utils = pytest.importorskip('keras.applications.imagenet_utils')
  images = np.random.default_rng(0).uniform(0, 1, (2, 5, 4, 3)).astype(np.float32)
  caffe = keras_imagenet_utils.preprocess_input(255.0 * images, mode='caffe')
  tf = keras_imagenet_utils.preprocess_input(255.0 * images, mode='tf')
  np.testing.assert_allclose(caffe_preprocess(jnp.asarray(images)), caffe, atol=1e-4)
  np.testing.assert_allclose(inception_preprocess(jnp.asarray(images)), tf, atol=1e-6)


def test_preprocessing_passes_gradients():
  images = jnp.full((1, 2, 2, 3), 0.5)
  caffe_grad = jax.grad(lambda x: (caffe_preprocess(x) * jnp.array([1.0, 2.0, 3.0])).sum())(images)
  np.testing.assert_allclose(caffe_grad[0, 0, 0], 255.0 * np.array([3.0, 2.0, 1.0]))  # BGR flip
  np.testing.assert_allclose(jax.grad(lambda x: inception_preprocess(x).sum())(images), 2.0)


def gradients_to_images_and_frozen_params(arch, side):
  """Gradient of a classifier loss wrt the images, and wrt its stop_gradient'ed params."""
  module = build_classifier(arch, K)
  images = jnp.asarray(np.random.default_rng(1).uniform(0, 1, (2, side, side, 3)), jnp.float32)
  variables = module.init(jax.random.key(0), images)  # eager: jitted inits compile slowly on CPU
  labels = jnp.array([1, 2])

  def loss(params, images):
    frozen = {**variables, 'params': jax.lax.stop_gradient(params)}
    logits = module.apply(frozen, images, train=False)
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

  return jax.jit(jax.grad(loss, argnums=(0, 1)))(variables['params'], images)


@pytest.mark.parametrize('arch', SMALL_ARCHS)
def test_gradient_reaches_images_not_frozen_params(arch):
  # The ImageNet classifiers get the same check in test_keras_port.py (slow).
  param_grads, image_grads = gradients_to_images_and_frozen_params(arch, 32)
  assert bool(jnp.all(jnp.isfinite(image_grads)))
  assert float(jnp.abs(image_grads).max()) > 0
  assert all(float(jnp.abs(g).max()) == 0 for g in jax.tree.leaves(param_grads))


@pytest.mark.parametrize('arch', SMALL_ARCHS)
def test_bfloat16_computation_keeps_float32_params(arch):
  images = jnp.asarray(np.random.default_rng(2).uniform(0, 1, (2, 16, 16, 3)), jnp.float32)
  variables = build_classifier(arch, K).init(jax.random.key(0), images)
  full = jax.jit(build_classifier(arch, K).apply)(variables, images)
  half_module = build_classifier(arch, K, dtype=jnp.bfloat16)
  half = jax.jit(half_module.apply)(variables, images)
  assert half.dtype == jnp.float32
  half_variables = jax.eval_shape(half_module.init, jax.random.key(0), images)
  assert jax.tree.all(jax.tree.map(lambda x: x.dtype == jnp.float32, half_variables))
  np.testing.assert_allclose(half, full, atol=0.05 * float(jnp.abs(full).max()) + 0.02)


@pytest.mark.parametrize('arch', IMAGENET_ARCHS)
def test_bfloat16_imagenet_classifiers_trace_with_float32_params_and_logits(arch):
  module = build_classifier(arch, K, dtype=jnp.bfloat16)
  side = input_size(arch)
  images = jax.ShapeDtypeStruct((2, side, side, 3), jnp.float32)
  variables = jax.eval_shape(module.init, jax.random.key(0), images)
  assert jax.tree.all(jax.tree.map(lambda x: x.dtype == jnp.float32, variables))
  logits = jax.eval_shape(module.apply, variables, images)
  assert logits.shape == (2, K) and logits.dtype == jnp.float32


@pytest.mark.parametrize('arch', ['small_inception', 'small_resnet'])
def test_batch_norm_uses_running_stats_unless_training(arch):
  module = build_classifier(arch, K)
  images = jnp.asarray(np.random.default_rng(3).uniform(0, 1, (4, 32, 32, 3)), jnp.float32)
  variables = module.init(jax.random.key(0), images)
  eval_logits = module.apply(variables, images, train=False)
  train_logits, updates = module.apply(variables, images, train=True, mutable=['batch_stats'])
  assert not np.allclose(eval_logits, train_logits)  # batch statistics differ from 0 / 1
  changed = jax.tree.map(lambda a, b: not np.allclose(a, b),
                         variables['batch_stats'], updates['batch_stats'])
  assert all(jax.tree.leaves(changed))


# --- The small families learn a generated 10-class task -------------------------------

def oriented_stripes(n, rng, side=32):
  """10 classes: 5 stripe orientations x 2 colours, random phase, frequency, brightness
  and pixel noise; images in [0, 1]."""
  labels = rng.integers(0, 10, n)
  angle = (labels % 5) * np.pi / 5 + rng.normal(0, 0.05, n)
  frequency = rng.uniform(0.5, 0.9, n)
  phase = rng.uniform(0, 2 * np.pi, n)
  yy, xx = np.mgrid[0:side, 0:side].astype(np.float32)
  along = np.cos(angle)[:, None, None] * xx + np.sin(angle)[:, None, None] * yy
  stripes = 0.5 + 0.5 * np.sin(frequency[:, None, None] * along + phase[:, None, None])
  colours = np.array([[0.9, 0.4, 0.2], [0.2, 0.4, 0.9]], np.float32)[labels // 5]
  brightness = rng.uniform(0.6, 1.0, (n, 1, 1, 1))
  images = stripes[..., None] * colours[:, None, None, :] * brightness
  images += rng.normal(0, 0.05, images.shape)
  return np.clip(images, 0, 1).astype(np.float32), labels.astype(np.int32)


def train_small(arch, train_set, steps, batch_size=32, seed=0):
  module = build_classifier(arch, 10)
  images, labels = train_set
  variables = module.init(jax.random.key(seed), images[:1])
  params, batch_stats = variables['params'], variables.get('batch_stats', {})
  optimizer = optax.adam(3e-3)
  opt_state = optimizer.init(params)

  @jax.jit
  def step(params, batch_stats, opt_state, batch_images, batch_labels):
    def loss_fn(params):
      logits, updates = module.apply({'params': params, 'batch_stats': batch_stats},
                                     batch_images, train=True, mutable=['batch_stats'])
      loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch_labels).mean()
      return loss, updates.get('batch_stats', {})
    (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = optimizer.update(grads, opt_state)
    return optax.apply_updates(params, updates), batch_stats, opt_state, loss

  rng = np.random.default_rng(seed)
  for _ in range(steps):
    idx = rng.integers(0, len(labels), batch_size)
    params, batch_stats, opt_state, _ = step(params, batch_stats, opt_state,
                                             images[idx], labels[idx])
  return module, {'params': params, 'batch_stats': batch_stats}


@pytest.fixture(scope='module')
def stripes_data():
  rng = np.random.default_rng(0)
  return oriented_stripes(2048, rng), oriented_stripes(500, rng)


@pytest.mark.parametrize('arch', SMALL_ARCHS)
def test_small_classifier_learns_generated_task(arch, stripes_data):
  train_set, (test_images, test_labels) = stripes_data
  module, variables = train_small(arch, train_set, steps=100)
  if not variables['batch_stats']:
    variables = {'params': variables['params']}
  logits = jax.jit(module.apply)(variables, test_images)
  accuracy = float(np.mean(np.argmax(logits, -1) == test_labels))
  assert accuracy > 0.5, accuracy  # chance is 0.1
