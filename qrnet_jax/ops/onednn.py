"""2-D NHWC convolutions on oneDNN through jax.ffi, with their own VJP and per-shard partitioning.

The handlers live in `_onednn_conv.so`, built from `onednn_conv.cc` by `build.sh` (part of
scripts/setup_env.sh). `available()` says whether it loaded; `conv2d` is the op.
"""
import ctypes
import functools
import logging
import os
import platform
from typing import Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
from jax.experimental.custom_partitioning import custom_partitioning
from jax.sharding import NamedSharding, PartitionSpec as P

LIBRARY = os.path.join(os.path.dirname(__file__), '_onednn_conv.so')
TARGETS = {'forward': 'QrnetOnednnConvForward', 'bias_forward': 'QrnetOnednnConvBiasForward',
           'input_grad': 'QrnetOnednnConvInputGrad', 'kernel_grad': 'QrnetOnednnConvKernelGrad',
           'kernel_bias_grad': 'QrnetOnednnConvKernelBiasGrad'}
DTYPES = (jnp.float32, jnp.bfloat16)

Padding = Tuple[Tuple[int, int], Tuple[int, int]]


def _load() -> Tuple[Optional[str], bool]:
  """Loads the extension and registers its FFI targets: (why not, has native bfloat16)."""
  if platform.system() != 'Linux' or platform.machine() != 'x86_64':
    return f'oneDNN convolutions are built for x86_64 Linux only, not {platform.platform()}', False
  if not os.path.exists(LIBRARY):
    return f'{LIBRARY} is not built (bash scripts/setup_env.sh builds it)', False
  # oneDNN's OpenMP threads must sleep, not spin, between convolutions: XLA's own threads run
  # the rest of the step on the same cores (spinning made the convolutions 3-5x slower on 2 cores).
  # libgomp reads this once, when it loads (with the library, unless something loaded it before).
  os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')
  try:
    library = ctypes.CDLL(LIBRARY)
  except OSError as e:
    return f'cannot load {LIBRARY}: {e}', False
  for target in TARGETS.values():
    jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(library, target)),
                                platform='cpu')
  return None, bool(library.qrnet_onednn_has_bf16())


@functools.cache
def _extension() -> Tuple[Optional[str], bool]:
  unavailable, native_bf16 = _load()
  if unavailable:  # said once per process
    logging.warning('Convolutions run on XLA: %s', unavailable)
  return unavailable, native_bf16


def available() -> bool:
  """Whether the extension is built and loaded on this machine."""
  return _extension()[0] is None


def native_bfloat16() -> bool:
  """Whether this CPU runs oneDNN convolutions in bfloat16 (else they run in float32)."""
  return available() and _extension()[1]


def explicit_padding(padding, in_hw: Sequence[int], kernel_hw: Sequence[int],
                     strides: Sequence[int]) -> Padding:
  """'SAME' / 'VALID' / pairs as ((top, bottom), (left, right)), as lax computes them."""
  if isinstance(padding, str):
    padding = jax.lax.padtype_to_pads(in_hw, kernel_hw, strides, padding)
  return tuple((int(lo), int(hi)) for lo, hi in padding)


def _out_hw(in_hw, kernel_hw, strides, padding: Padding):
  return tuple((i + lo + hi - k) // s + 1
               for i, k, s, (lo, hi) in zip(in_hw, kernel_hw, strides, padding))


def _call(direction: str, arrays, results, strides, padding: Padding, **attributes):
  """The handler `direction` on `arrays`; `results`: one ShapeDtypeStruct or a tuple of them."""
  if not available():
    raise RuntimeError(f'oneDNN convolutions are not available: {_extension()[0]}')
  (top, bottom), (left, right) = padding
  return jax.ffi.ffi_call(TARGETS[direction], results)(
      *arrays, stride_h=strides[0], stride_w=strides[1], pad_top=top, pad_bottom=bottom,
      pad_left=left, pad_right=right, **attributes)


# The convolutions on one device's arrays.
def _y_struct(x, kernel, strides, padding):
  y_hw = _out_hw(x.shape[1:3], kernel.shape[:2], strides, padding)
  return jax.ShapeDtypeStruct((x.shape[0], *y_hw, kernel.shape[3]), x.dtype)


def _forward_local(x, kernel, strides, padding):
  return _call('forward', (x, kernel), _y_struct(x, kernel, strides, padding), strides, padding)


def _bias_forward_local(x, kernel, bias, strides, padding, relu):
  """relu?(conv + bias), the bias and the ReLU in the convolution primitive."""
  return _call('bias_forward', (x, kernel, bias), _y_struct(x, kernel, strides, padding), strides,
               padding, relu=bool(relu))


def _input_grad_local(dy, kernel, x_shape, strides, padding):
  return _call('input_grad', (dy, kernel), jax.ShapeDtypeStruct((dy.shape[0], *x_shape[1:]),
                                                                 dy.dtype), strides, padding)


def _kernel_grad_local(x, dy, kernel_shape, strides, padding):
  return _call('kernel_grad', (x, dy), jax.ShapeDtypeStruct(kernel_shape, jnp.float32), strides,
               padding)


def _kernel_bias_grad_local(x, dy, kernel_shape, strides, padding):
  """(kernel gradient, bias gradient), both summed in the one primitive."""
  return _call('kernel_bias_grad', (x, dy), (jax.ShapeDtypeStruct(kernel_shape, jnp.float32),
                                             jax.ShapeDtypeStruct(kernel_shape[-1:], jnp.float32)),
               strides, padding)


# Under jit on several devices the batch axis may be sharded (data parallelism): each device runs
# the handler on its own shard (custom_partitioning), with the kernel and bias replicated; the
# kernel and bias gradients sum over the batch, so their per-shard sums are psum'med. Nothing is
# all-gathered.
def _batch_axis(arg_shapes):
  spec = arg_shapes[0].sharding.spec
  return spec[0] if spec else None


def _batch_sharded(mesh, arg_shapes):
  return NamedSharding(mesh, P(_batch_axis(arg_shapes)))


def _partitioned_batch_to_batch(local, num_arrays, sharding_rule, need_replication_factors):
  """custom_partitioning of `local(a, *others, *static)` (`num_arrays` arrays): a and the result
  sharded on the batch axis, the others replicated."""
  op = custom_partitioning(local, static_argnums=tuple(range(num_arrays,
                                                             local.__code__.co_argcount)))

  def infer(*args):
    mesh, arg_shapes, _ = args[-3:]
    return _batch_sharded(mesh, arg_shapes)

  def partition(*args):
    static, (mesh, arg_shapes, _) = args[:-3], args[-3:]
    batch = _batch_sharded(mesh, arg_shapes)
    replicated = (NamedSharding(mesh, P()),) * (num_arrays - 1)
    return mesh, lambda *arrays: local(*arrays, *static), batch, (batch, *replicated)

  op.def_partition(partition, infer_sharding_from_operands=infer, sharding_rule=sharding_rule,
                   need_replication_factors=need_replication_factors)
  return op


def _partitioned_batch_sum(local, sharding_rule):
  """custom_partitioning of `local(x, dy, *static)`, a sum over the batch (the kernel gradient, or
  the kernel and bias gradients): both arrays sharded on the batch axis, the result replicated,
  each shard's sum psum'med."""
  op = custom_partitioning(local, static_argnums=(2, 3, 4))

  def replicated_like(mesh, result_shape):
    return jax.tree.map(lambda _: NamedSharding(mesh, P()), result_shape)

  def infer(kernel_shape, strides, padding, mesh, arg_shapes, result_shape):
    return replicated_like(mesh, result_shape)

  def partition(kernel_shape, strides, padding, mesh, arg_shapes, result_shape):
    axis = _batch_axis(arg_shapes)

    def lower(x, dy):
      sums = local(x, dy, kernel_shape, strides, padding)
      return sums if axis is None else jax.lax.psum(sums, axis)

    batch = _batch_sharded(mesh, arg_shapes)
    return mesh, lower, replicated_like(mesh, result_shape), (batch, batch)

  op.def_partition(partition, infer_sharding_from_operands=infer, sharding_rule=sharding_rule,
                   reduction_factors=('n',))
  return op


_forward = _partitioned_batch_to_batch(_forward_local, 2, 'n h w c, a b c o -> n i j o',
                                       ('h', 'w', 'c', 'a', 'b', 'o', 'i', 'j'))
_bias_forward = _partitioned_batch_to_batch(_bias_forward_local, 3,
                                            'n h w c, a b c o, o -> n i j o',
                                            ('h', 'w', 'c', 'a', 'b', 'o', 'i', 'j'))
_input_grad = _partitioned_batch_to_batch(_input_grad_local, 2, 'n i j o, a b c o -> n h w c',
                                          ('i', 'j', 'o', 'a', 'b', 'c', 'h', 'w'))
_kernel_grad = _partitioned_batch_sum(_kernel_grad_local, 'n h w c, n i j o -> a b c o')
_kernel_bias_grad = _partitioned_batch_sum(_kernel_bias_grad_local,
                                           'n h w c, n i j o -> a b c o, o')


def _compute_dtype(dtype):
  """bfloat16 runs in bfloat16 where the CPU has it, else in float32 (cast around the call)."""
  return dtype if dtype == jnp.float32 or native_bfloat16() else jnp.float32


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5))
def conv2d(x, kernel, bias, strides: Tuple[int, int], padding: Padding, relu: bool = False):
  """NHWC x HWIO -> NHWC cross-correlation (lax.conv_general_dilated's), plus `bias` (shape (O,), or
  None for none), then a ReLU if `relu`: all in one oneDNN primitive.

  `padding` is explicit ((top, bottom), (left, right)); see `explicit_padding`.
  """
  t = _compute_dtype(x.dtype)
  x_t, kernel_t = x.astype(t), kernel.astype(t)
  if bias is None and not relu:
    y = _forward(x_t, kernel_t, strides, padding)
  else:
    bias_t = jnp.zeros(kernel.shape[-1:], t) if bias is None else bias.astype(t)
    y = _bias_forward(x_t, kernel_t, bias_t, strides, padding, relu)
  return y.astype(x.dtype)


def _conv2d_fwd(x, kernel, bias, strides, padding, relu):
  y = conv2d(x, kernel, bias, strides, padding, relu)
  return y, (x, kernel, bias, y if relu else None)


def _conv2d_bwd(strides, padding, relu, residuals, dy):
  x, kernel, bias, y = residuals
  if relu:  # jax.nn.relu's gradient: zero where the output is (the input was not positive)
    dy = jnp.where(y > 0, dy, jnp.zeros_like(dy))
  t = _compute_dtype(x.dtype)
  x_t, kernel_t, dy_t = x.astype(t), kernel.astype(t), dy.astype(t)
  dx = _input_grad(dy_t, kernel_t, x.shape, strides, padding)
  # The kernel and bias gradients come in float32 (accumulated in float32 for bfloat16 too).
  if bias is None:
    dkernel, dbias = _kernel_grad(x_t, dy_t, kernel.shape, strides, padding), None
  else:
    dkernel, dbias = _kernel_bias_grad(x_t, dy_t, kernel.shape, strides, padding)
    dbias = dbias.astype(bias.dtype)
  return dx.astype(x.dtype), dkernel.astype(kernel.dtype), dbias


conv2d.defvjp(_conv2d_fwd, _conv2d_bwd)
