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
TARGETS = {'forward': 'QrnetOnednnConvForward', 'input_grad': 'QrnetOnednnConvInputGrad',
           'kernel_grad': 'QrnetOnednnConvKernelGrad'}
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


# lax's normal form of ('NHWC', 'HWIO', 'NHWC'), the only layout the handlers take.
_NHWC_HWIO = jax.lax.ConvDimensionNumbers((0, 3, 1, 2), (3, 2, 0, 1), (0, 3, 1, 2))


def covers(x, kernel, window_strides, lhs_dilation, rhs_dilation, dimension_numbers,
           feature_group_count, batch_group_count) -> bool:
  """Whether `lax.conv_general_dilated` with these arguments is one of this op's convolutions."""
  if x.ndim != 4 or kernel.ndim != 4 or dimension_numbers is None:
    return False
  dilations = tuple(lhs_dilation or (1, 1)) + tuple(rhs_dilation or (1, 1))
  return (jax.lax.conv_dimension_numbers(x.shape, kernel.shape, dimension_numbers) == _NHWC_HWIO
          and len(window_strides) == 2 and all(d == 1 for d in dilations)
          and feature_group_count == 1 and batch_group_count == 1
          and x.dtype == kernel.dtype and any(x.dtype == t for t in DTYPES))


def explicit_padding(padding, in_hw: Sequence[int], kernel_hw: Sequence[int],
                     strides: Sequence[int]) -> Padding:
  """'SAME' / 'VALID' / pairs as ((top, bottom), (left, right)), as lax computes them."""
  if isinstance(padding, str):
    padding = jax.lax.padtype_to_pads(in_hw, kernel_hw, strides, padding)
  return tuple((int(lo), int(hi)) for lo, hi in padding)


def _out_hw(in_hw, kernel_hw, strides, padding: Padding):
  return tuple((i + lo + hi - k) // s + 1
               for i, k, s, (lo, hi) in zip(in_hw, kernel_hw, strides, padding))


def _call(direction: str, a, b, out_shape, out_dtype, strides, padding: Padding):
  if not available():
    raise RuntimeError(f'oneDNN convolutions are not available: {_extension()[0]}')
  (top, bottom), (left, right) = padding
  return jax.ffi.ffi_call(TARGETS[direction], jax.ShapeDtypeStruct(out_shape, out_dtype))(
      a, b, stride_h=strides[0], stride_w=strides[1], pad_top=top, pad_bottom=bottom,
      pad_left=left, pad_right=right)


# The three convolutions on one device's arrays.
def _forward_local(x, kernel, strides, padding):
  y_hw = _out_hw(x.shape[1:3], kernel.shape[:2], strides, padding)
  return _call('forward', x, kernel, (x.shape[0], *y_hw, kernel.shape[3]), x.dtype, strides,
               padding)


def _input_grad_local(dy, kernel, x_shape, strides, padding):
  return _call('input_grad', dy, kernel, (dy.shape[0], *x_shape[1:]), dy.dtype, strides, padding)


def _kernel_grad_local(x, dy, kernel_shape, strides, padding):
  return _call('kernel_grad', x, dy, kernel_shape, jnp.float32, strides, padding)


# Under jit on several devices the batch axis may be sharded (data parallelism): each device runs
# the handler on its own shard (custom_partitioning), with the kernel replicated; the kernel
# gradient sums over the batch, so its per-shard sums are psum'med. Nothing is all-gathered.
def _batch_axis(arg_shapes):
  spec = arg_shapes[0].sharding.spec
  return spec[0] if spec else None


def _batch_sharded(mesh, arg_shapes):
  return NamedSharding(mesh, P(_batch_axis(arg_shapes)))


def _partitioned_batch_to_batch(local, sharding_rule, need_replication_factors):
  """custom_partitioning of `local(a, b, *static)`: a and the result sharded on the batch axis."""
  op = custom_partitioning(local, static_argnums=tuple(range(2, local.__code__.co_argcount)))

  def infer(*args):
    mesh, arg_shapes, _ = args[-3:]
    return _batch_sharded(mesh, arg_shapes)

  def partition(*args):
    static, (mesh, arg_shapes, _) = args[:-3], args[-3:]
    batch = _batch_sharded(mesh, arg_shapes)
    return mesh, lambda a, b: local(a, b, *static), batch, (batch, NamedSharding(mesh, P()))

  op.def_partition(partition, infer_sharding_from_operands=infer, sharding_rule=sharding_rule,
                   need_replication_factors=need_replication_factors)
  return op


_forward = _partitioned_batch_to_batch(_forward_local, 'n h w c, a b c o -> n i j o',
                                       ('h', 'w', 'c', 'a', 'b', 'o', 'i', 'j'))
_input_grad = _partitioned_batch_to_batch(_input_grad_local, 'n i j o, a b c o -> n h w c',
                                          ('i', 'j', 'o', 'a', 'b', 'c', 'h', 'w'))
_kernel_grad = custom_partitioning(_kernel_grad_local, static_argnums=(2, 3, 4))


def _kernel_grad_infer(kernel_shape, strides, padding, mesh, arg_shapes, result_shape):
  return NamedSharding(mesh, P())


def _kernel_grad_partition(kernel_shape, strides, padding, mesh, arg_shapes, result_shape):
  axis = _batch_axis(arg_shapes)

  def lower(x, dy):
    dkernel = _kernel_grad_local(x, dy, kernel_shape, strides, padding)
    return dkernel if axis is None else jax.lax.psum(dkernel, axis)

  batch = _batch_sharded(mesh, arg_shapes)
  return mesh, lower, NamedSharding(mesh, P()), (batch, batch)


_kernel_grad.def_partition(_kernel_grad_partition, infer_sharding_from_operands=_kernel_grad_infer,
                           sharding_rule='n h w c, n i j o -> a b c o', reduction_factors=('n',))


def _compute_dtype(dtype):
  """bfloat16 runs in bfloat16 where the CPU has it, else in float32 (cast around the call)."""
  return dtype if dtype == jnp.float32 or native_bfloat16() else jnp.float32


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def conv2d(x, kernel, strides: Tuple[int, int], padding: Padding):
  """NHWC x HWIO -> NHWC cross-correlation (lax.conv_general_dilated's), no bias, on oneDNN.

  `padding` is explicit ((top, bottom), (left, right)); see `explicit_padding`.
  """
  t = _compute_dtype(x.dtype)
  return _forward(x.astype(t), kernel.astype(t), strides, padding).astype(x.dtype)


def _conv2d_fwd(x, kernel, strides, padding):
  return conv2d(x, kernel, strides, padding), (x, kernel)


def _conv2d_bwd(strides, padding, residuals, dy):
  x, kernel = residuals
  t = _compute_dtype(x.dtype)
  x_t, kernel_t, dy_t = x.astype(t), kernel.astype(t), dy.astype(t)
  dx = _input_grad(dy_t, kernel_t, x.shape, strides, padding)
  dkernel = _kernel_grad(x_t, dy_t, kernel.shape, strides, padding)  # float32 accumulation
  return dx.astype(x.dtype), dkernel.astype(kernel.dtype)


conv2d.defvjp(_conv2d_fwd, _conv2d_bwd)
