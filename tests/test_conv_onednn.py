"""oneDNN convolutions (qrnet_jax/ops): values and both gradients against lax.conv_general_dilated,
every convolution configuration the models use, training trajectories with either implementation,
and the data-parallel step on 4 simulated devices (per-shard custom calls, no all-gather)."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from qrnet_jax import config_validation
from qrnet_jax.models import QRNet, classifiers as classifier_lib
from qrnet_jax.models import SmallVGG
from qrnet_jax.ops import conv, onednn
from configs import default

pytestmark = pytest.mark.skipif(not onednn.available(),
                                reason='oneDNN extension not built (bash scripts/setup_env.sh)')

NHWC_HWIO = ('NHWC', 'HWIO', 'NHWC')
TOLERANCE = {jnp.float32: 1e-5, jnp.bfloat16: 1e-2}


def relative_error(value, reference):
  value, reference = (np.asarray(a, np.float32) for a in (value, reference))
  return float(np.max(np.abs(value - reference)) / max(np.max(np.abs(reference)), 1e-30))


def value_and_grads(conv_fn, arrays, dy):
  y, vjp = jax.vjp(conv_fn, *arrays)
  return (y, *vjp(dy))


# (bias, relu): the plain convolution, + bias, relu(+ bias), relu without a bias.
FORMS = [(False, False), (True, False), (True, True), (False, True)]


def check_against_lax(batch, hw, channels, features, kernel_hw, strides, padding, dtype, seed=0,
                      bias=False, relu=False):
  """oneDNN's value and gradients (input, kernel, and bias when `bias`) of relu?(conv + bias?)
  against lax.conv_general_dilated's (in float32 on the same rounded inputs), to TOLERANCE[dtype]
  relative to the largest reference entry."""
  keys = jax.random.split(jax.random.PRNGKey(seed), 4)
  x = jax.random.normal(keys[0], (batch, *hw, channels)).astype(dtype)
  kernel = jax.random.normal(keys[1], (*kernel_hw, channels, features)).astype(dtype)
  arrays = (x, kernel) + ((jax.random.normal(keys[3], (features,)).astype(dtype),) if bias else ())

  def reference(x, k, b=0.):
    y = jax.lax.conv_general_dilated(x.astype(jnp.float32), k.astype(jnp.float32), strides,
                                     padding, dimension_numbers=NHWC_HWIO) + b
    return jax.nn.relu(y) if relu else y

  pads = onednn.explicit_padding(padding, hw, kernel_hw, strides)
  ours = lambda x, k, b=None: onednn.conv2d(x, k, b, strides, pads, relu)
  dy = jax.random.normal(keys[2], jax.eval_shape(reference, x, kernel).shape).astype(dtype)
  expected = value_and_grads(reference, [a.astype(jnp.float32) for a in arrays],
                             dy.astype(jnp.float32))
  got = jax.jit(value_and_grads, static_argnums=0)(ours, arrays, dy)
  assert len(got) == len(expected) == 1 + len(arrays)
  for name, g, e in zip(('value', 'input gradient', 'kernel gradient', 'bias gradient'), got,
                        expected):
    assert g.shape == e.shape, name
    assert g.dtype == dtype, name
    assert relative_error(g, e) < TOLERANCE[dtype], (name, relative_error(g, e))


@pytest.mark.parametrize('bias,relu', FORMS)
@pytest.mark.parametrize('dtype', [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize('batch,hw,channels,features,kernel_hw,strides,padding', [
    (1, (7, 9), 3, 5, (3, 3), (1, 1), 'SAME'),     # odd sizes, batch 1
    (64, (5, 5), 4, 6, (3, 3), (1, 1), 'SAME'),    # batch 64
    (3, (11, 10), 5, 7, (3, 3), (2, 2), 'VALID'),
    (2, (13, 13), 3, 8, (7, 7), (2, 2), 'VALID'),
    (2, (9, 8), 6, 4, (1, 1), (2, 2), 'SAME'),
    (2, (8, 9), 5, 3, (1, 7), (1, 1), 'SAME'),
    (2, (6, 7), 4, 5, (3, 3), (1, 2), ((2, 0), (1, 3))),  # explicit, asymmetric
])
def test_op_equals_lax(batch, hw, channels, features, kernel_hw, strides, padding, dtype, bias,
                       relu):
  check_against_lax(batch, hw, channels, features, kernel_hw, strides, padding, dtype, bias=bias,
                    relu=relu)


def conv_configurations(module, image_size, monkeypatch):
  """{(kernel shape, strides, explicit padding, input hw, bias, relu): covered by the op} over every
  convolution that `module` traces with conv_impl 'onednn'."""
  seen = {}
  geometry_of, conv2d = conv.onednn_geometry, onednn.conv2d

  def recording_geometry(conv_module, x):
    geometry = geometry_of(conv_module, x)
    if geometry is None:
      seen[conv_module.kernel_size, None, None, x.shape[1:3], None, None] = False
    return geometry

  def recording_conv2d(x, kernel, bias, strides, padding, relu):
    seen[tuple(kernel.shape), strides, padding, x.shape[1:3], bias is not None, relu] = True
    return conv2d(x, kernel, bias, strides, padding, relu)

  monkeypatch.setattr(conv, 'onednn_geometry', recording_geometry)
  monkeypatch.setattr(onednn, 'conv2d', recording_conv2d)
  with conv.conv_impl('onednn'):
    jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0),
                                       jnp.zeros((1, image_size, image_size, 3)), train=False))
  monkeypatch.undo()
  return seen


MODELS = [('qrnet', lambda: QRNet(), 32)] + [
    (arch, lambda arch=arch: classifier_lib.build_classifier(arch, 10),
     classifier_lib.input_size(arch) or 32) for arch in classifier_lib.CLASSIFIERS]


@pytest.mark.parametrize('name,build,image_size', MODELS, ids=[m[0] for m in MODELS])
def test_every_model_convolution_runs_on_onednn_and_equals_lax(name, build, image_size,
                                                               monkeypatch):
  """Every convolution of every model goes to the op, and each distinct configuration (kernel,
  strides, padding, bias, ReLU) gives lax's values and gradients in float32 and bfloat16. Channels
  are cut to at most 8 and the input to a few output pixels of the same parity: the geometry is the
  model's."""
  configurations = conv_configurations(build(), image_size, monkeypatch)
  assert configurations and all(configurations.values()), name
  distinct = {(k[:2], strides, pads, tuple(i % 2 for i in hw), bias, relu): k
              for k, strides, pads, hw, bias, relu in configurations}
  for (kernel_hw, strides, pads, parity, bias, relu), kernel_shape in distinct.items():
    hw = tuple(k + s + p for k, s, p in zip(kernel_hw, strides, parity))
    for dtype in (jnp.float32, jnp.bfloat16):
      check_against_lax(2, hw, min(kernel_shape[2], 8), min(kernel_shape[3], 8), kernel_hw,
                        strides, pads, dtype, bias=bias, relu=relu)


@pytest.mark.parametrize('use_bias,relu,target', [
    (True, False, 'QrnetOnednnConvBiasForward'), (True, True, 'QrnetOnednnConvBiasForward'),
    (False, False, 'QrnetOnednnConvForward')])
def test_conv_module_keeps_nn_conv_parameters_and_switch_selects_the_implementation(use_bias, relu,
                                                                                    target):
  """conv.Conv(relu=...) has nn.Conv's parameters (same initial values) and computes
  nn.relu?(nn.Conv(x)) with either implementation; the switch picks the custom call or not."""
  x = jax.random.normal(jax.random.PRNGKey(1), (2, 8, 8, 3))
  ours = conv.Conv(4, (3, 3), use_bias=use_bias, relu=relu, name='c')
  reference = nn.Conv(4, (3, 3), use_bias=use_bias, name='c')
  expected_variables = reference.init(jax.random.PRNGKey(0), x)
  expected = reference.apply(expected_variables, x)
  expected = nn.relu(expected) if relu else expected
  for impl, custom_calls in (('xla', False), ('onednn', True), ('auto', True)):
    with conv.conv_impl(impl):
      variables = ours.init(jax.random.PRNGKey(0), x)
      assert jax.tree.map(lambda a, b: a.shape == b.shape and bool((a == b).all()), variables,
                          expected_variables) == jax.tree.map(lambda _: True, expected_variables)
      np.testing.assert_allclose(ours.apply(variables, x), expected, rtol=1e-5, atol=1e-6)
      hlo = jax.jit(ours.apply).lower(variables, x).as_text()
    assert (target in hlo) == custom_calls, impl
  with pytest.raises(ValueError, match='conv_impl'):
    conv.set_conv_impl('cudnn')


def test_config_validation_names_conv_impl():
  config = default.get_config()
  config.model.conv_impl = 'mkl'
  with pytest.raises(config_validation.ConfigError, match=r'config\.model\.conv_impl'):
    config_validation.validate(config)


def losses_over_steps(module, images, targets, loss_fn, impl, num_steps, mesh=None, tx=None):
  """Steps of `tx` (default Adam, lr 1e-3) on `loss_fn(module.apply(params, images), targets)` with
  `impl`: the losses and the final parameters. With a mesh, the batch is sharded on its 'data' axis
  and params replicated."""
  variables = module.init(jax.random.PRNGKey(0), images[:1], train=False)
  params, batch_stats = variables['params'], variables.get('batch_stats', {})
  tx = tx or optax.adam(1e-3)
  opt_state = tx.init(params)

  def step(params, batch_stats, opt_state, images, targets, rng):
    def loss(params):
      out, updates = module.apply({'params': params, 'batch_stats': batch_stats}, images,
                                  train=True, rngs={'dropout': rng}, mutable=['batch_stats'])
      return loss_fn(out, targets), updates.get('batch_stats', {})
    (value, batch_stats), grads = jax.value_and_grad(loss, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), batch_stats, opt_state, value

  if mesh is not None:
    images, targets = (jax.device_put(a, NamedSharding(mesh, P('data'))) for a in (images, targets))
    params, batch_stats, opt_state = jax.device_put((params, batch_stats, opt_state),
                                                    NamedSharding(mesh, P()))
  with conv.conv_impl(impl):
    jitted = jax.jit(step)
    losses = []
    for i in range(num_steps):
      params, batch_stats, opt_state, value = jitted(params, batch_stats, opt_state, images,
                                                     targets, jax.random.PRNGKey(i))
      losses.append(float(value))
    hlo = jitted.lower(params, batch_stats, opt_state, images, targets,
                       jax.random.PRNGKey(0)).compile().as_text()
  return np.array(losses), params, hlo


def l1(restored, targets):
  return jnp.mean(jnp.abs(restored - targets))


def cross_entropy(logits, labels):
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def qrnet_data():
  images = jax.random.uniform(jax.random.PRNGKey(1), (4, 16, 16, 3))
  return images, jnp.clip(images + 0.1, 0, 1)


def small_vgg_data():
  images = jax.random.uniform(jax.random.PRNGKey(2), (8, 16, 16, 3))
  return images, jnp.arange(8) % 10


# Both implementations train over 50 Adam steps and their losses agree to 1e-4 throughout (3e-7
# measured). Adam's eps is 1e-6 here, not its default 1e-8: with 1e-8 a gradient component that is
# zero up to rounding gets a full +-lr update whose sign the rounding decides, so any two summation
# orders part after 15-30 steps (measured: XLA alone on 1 vs 4 devices, and either implementation,
# by up to 8% at step 50 with lr 1e-3) however exact the convolutions are.
TRAJECTORY_OPTIMIZER = dict(learning_rate=3e-4, eps=1e-6)


@pytest.mark.parametrize('name', ['qrnet', 'small_vgg'])
def test_training_trajectory_is_the_same_with_either_implementation(name):
  module, data, loss_fn = {'qrnet': (QRNet(), qrnet_data(), l1),
                           'small_vgg': (SmallVGG(num_classes=10), small_vgg_data(),
                                         cross_entropy)}[name]
  tx = optax.adam(**TRAJECTORY_OPTIMIZER)
  xla_losses, _, _ = losses_over_steps(module, *data, loss_fn, 'xla', 50, tx=tx)
  onednn_losses, _, _ = losses_over_steps(module, *data, loss_fn, 'onednn', 50, tx=tx)
  assert xla_losses[-1] < 0.8 * xla_losses[0]  # it trains
  np.testing.assert_allclose(onednn_losses, xla_losses, rtol=1e-4)


def test_four_devices_shard_the_custom_calls_and_match_one_device():
  """The data-parallel step on 4 simulated devices: the same losses and parameters as on 1, each
  device convolving its own shard (no all-gather of activations in the compiled HLO)."""
  assert jax.device_count() >= 4
  images, targets = qrnet_data()
  module = QRNet(small=True)
  one = losses_over_steps(module, images, targets, l1, 'onednn', 3,
                          Mesh(np.array(jax.devices()[:1]), ('data',)))
  four = losses_over_steps(module, images, targets, l1, 'onednn', 3,
                           Mesh(np.array(jax.devices()[:4]), ('data',)))
  np.testing.assert_allclose(four[0], one[0], rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5),
               four[1], one[1])
  hlo = four[2]
  assert 'QrnetOnednnConvBiasForward' in hlo and 'QrnetOnednnConvKernelBiasGrad' in hlo
  assert 'all-gather' not in hlo
  # Per-shard shapes: the first convolution sees 1 of the 4 images on each device.
  assert 'f32[1,16,16,3]' in hlo
