"""QRNet's structure (Table 1 / Table 3) and its transposed convolution."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qrnet_jax.models import QRNet
from qrnet_jax.models.qrnet import UpConv2x2


def num_params(tree):
  return sum(x.size for x in jax.tree.leaves(tree))


def test_parameter_count_matches_table1():
  variables = jax.eval_shape(QRNet().init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
  assert num_params(variables['params']) == 1_941_139
  # 23 convolutions with weights: 10 encoder, 4 transposed, 8 decoder, 1 output (Table 1).
  assert len(variables['params']) == 23


def test_small_qrnet_has_one_conv_per_stage():
  variables = jax.eval_shape(QRNet(small=True).init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
  assert len(variables['params']) == 5 + 4 + 4 + 1
  assert num_params(variables['params']) < 1_941_139 // 2


@pytest.mark.parametrize('small', [False, True])
def test_output_shape_and_range(small):
  model = QRNet(small=small)
  x = jax.random.uniform(jax.random.key(1), (2, 48, 32, 3))
  variables = model.init(jax.random.key(0), x)
  y = model.apply(variables, x, train=True, rngs={'dropout': jax.random.key(2)})
  assert y.shape == x.shape
  assert float(y.min()) > 0. and float(y.max()) < 1.
  y_eval = model.apply(variables, x)
  assert not np.allclose(y, y_eval)  # dropout is active only when training


@pytest.mark.parametrize('shape', [(1, 30, 32, 3), (1, 32, 40, 3)])
def test_size_not_multiple_of_16_is_named(shape):
  with pytest.raises(ValueError, match=f'{shape[1]}x{shape[2]}'):
    QRNet().init(jax.random.key(0), jnp.zeros(shape))


def test_upconv_equals_flax_conv_transpose():
  x = jax.random.normal(jax.random.key(0), (2, 5, 7, 6))
  ours = UpConv2x2(4)
  variables = ours.init(jax.random.key(1), x)
  reference = nn.ConvTranspose(4, (2, 2), strides=(2, 2), padding='SAME')
  # Same parameters, same layout: a drop-in replacement (checkpoints stay interchangeable).
  np.testing.assert_allclose(ours.apply(variables, x), reference.apply(variables, x),
                             rtol=1e-5, atol=1e-6)
