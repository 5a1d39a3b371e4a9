"""ops.pool.max_pool_2x2 against nn.max_pool (XLA's reduce-window and select-and-scatter): the same
values and the same gradient, ties included (ReLU zeros, rounded values), odd sizes, bfloat16."""
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qrnet_jax.ops.pool import max_pool_2x2


def reference(x):
  return nn.max_pool(x, (2, 2), strides=(2, 2), padding='VALID')


@pytest.mark.parametrize('shape', [(2, 8, 8, 3), (3, 7, 9, 5), (1, 2, 2, 1), (4, 32, 16, 16)])
@pytest.mark.parametrize('values', ['normal', 'relu', 'rounded'])
@pytest.mark.parametrize('dtype', [jnp.float32, jnp.bfloat16])
def test_values_and_gradient_equal_nn_max_pool(shape, values, dtype):
  keys = jax.random.split(jax.random.PRNGKey(sum(shape)), 2)
  x = jax.random.normal(keys[0], shape)
  x = {'normal': x, 'relu': jax.nn.relu(x), 'rounded': jnp.round(x)}[values].astype(dtype)
  y, vjp = jax.vjp(max_pool_2x2, x)
  y_ref, vjp_ref = jax.vjp(reference, x)
  dy = jax.random.normal(keys[1], y.shape).astype(dtype)
  assert y.dtype == y_ref.dtype and y.shape == y_ref.shape
  np.testing.assert_array_equal(np.asarray(y, np.float32), np.asarray(y_ref, np.float32))
  dx, dx_ref = vjp(dy)[0], vjp_ref(dy)[0]
  assert dx.dtype == dx_ref.dtype
  np.testing.assert_array_equal(np.asarray(dx, np.float32), np.asarray(dx_ref, np.float32))
  if values != 'normal':  # ties: each window passes its gradient on once, not to every maximum
    np.testing.assert_allclose(float(jnp.sum(dx.astype(jnp.float32))),
                               float(jnp.sum(dy.astype(jnp.float32))), rtol=1e-2)


def test_compiled_gradient_has_no_select_and_scatter_or_iota():
  x = jnp.ones((2, 8, 8, 4))
  hlo = jax.jit(jax.grad(lambda x: max_pool_2x2(x).sum())).lower(x).compile().as_text()
  ops = set(re.findall(r'= \S+ ([a-z-]+)\(', hlo))  # the instructions' opcodes
  assert 'multiply' in ops or 'fusion' in ops, ops
  assert not ops & {'select-and-scatter', 'scatter', 'iota', 'reduce-window'}, ops
