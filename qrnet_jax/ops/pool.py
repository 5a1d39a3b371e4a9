"""2x2 max pooling with stride 2 ('VALID'), with a VJP that costs one elementwise pass.

`nn.max_pool`'s gradient is XLA's select-and-scatter, which XLA:CPU rewrites into a variadic
reduce-window over the input and one int32 iota per dimension (4 arrays the input's size) plus a
scatter: about 250 ms of work in QRNet's 64 px train step on 2 cores, whose operand-free iotas ran
beside the convolutions and took their cores (the step is 12% faster without it at 64 px, 8% at
32 px). With the windows disjoint, the gradient is the output gradient routed to each window's
first maximum (in row-major window order, as select-and-scatter picks it), so the result is the
same, ties included. Any backend; pure jnp.
"""
import jax
import jax.numpy as jnp


def _windows(x):
  """(N, H, W, C) -> (N, H/2, 2, W/2, 2, C), after dropping an odd last row or column (VALID)."""
  n, h, w, c = x.shape
  x = x[:, :h - h % 2, :w - w % 2]
  return x.reshape(n, h // 2, 2, w // 2, 2, c)


@jax.custom_vjp
def max_pool_2x2(x):
  """nn.max_pool(x, (2, 2), strides=(2, 2)) on NHWC, 'VALID' (an odd last row/column is dropped)."""
  return _windows(x).max(axis=(2, 4))


def _max_pool_fwd(x):
  y = max_pool_2x2(x)
  return y, (x, y)


def _max_pool_bwd(residuals, dy):
  x, y = residuals
  windows = _windows(x)
  is_max = windows == y[:, :, None, :, None]
  taken = jnp.zeros_like(is_max[:, :, 0, :, 0])
  first = []
  for a, b in ((0, 0), (0, 1), (1, 0), (1, 1)):  # select-and-scatter's order: the first max wins
    pick = is_max[:, :, a, :, b] & ~taken
    taken = taken | pick
    first.append(jnp.where(pick, dy, jnp.zeros_like(dy)))
  n, h2, w2, c = dy.shape
  dx = jnp.stack(first, axis=3).reshape(n, h2, w2, 2, 2, c).transpose(0, 1, 3, 2, 4, 5)
  dx = dx.reshape(n, 2 * h2, 2 * w2, c)
  pad = ((0, 0), (0, x.shape[1] - 2 * h2), (0, x.shape[2] - 2 * w2), (0, 0))
  return (jnp.pad(dx, pad),)


max_pool_2x2.defvjp(_max_pool_fwd, _max_pool_bwd)
