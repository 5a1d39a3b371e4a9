"""Train-step throughput: images/s of Algorithm 1's step (QRNet + frozen classifiers) on this host.

  python -m qrnet_jax.benchmark --image_size 224 --batch_size 32 --classifiers vgg16 \
      --dtypes float32,bfloat16 --conv_impls xla,onednn

Prints one row per convolution implementation (config.model.conv_impl) and dtype: compile time,
median step time and images/s, counting the 2 x batch images (clean + distorted) that pass through
QRNet and the classifiers in each step. The classifiers have random weights: speed does not depend
on their values. When PyTorch is installed (optional, not a dependency: `pip install torch`), the
same QRNet step in PyTorch follows as the peer (qrnet_jax/torch_peer.py), with the ratios.
"""
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags

from qrnet_jax import distortions, parallel, steps
from qrnet_jax.models import QRNet
from qrnet_jax.models import classifiers as classifier_lib
from qrnet_jax.models import init_variables
from qrnet_jax.ops import conv, onednn

_IMAGE_SIZE = flags.DEFINE_integer('image_size', 224, 'Image side (multiple of 16).')
_BATCH_SIZE = flags.DEFINE_integer('batch_size', 32, 'Clean images per step (global).')
_CLASSIFIERS = flags.DEFINE_list('classifiers', ['vgg16'], 'Classifier archs (may be empty).')
_DTYPES = flags.DEFINE_list('dtypes', ['float32', 'bfloat16'], 'Computation dtypes to time.')
_CONV_IMPLS = flags.DEFINE_list('conv_impls', ['xla', 'onednn'],
                                'config.model.conv_impl values to time (onednn where built).')
_STEPS = flags.DEFINE_integer('steps', 20, 'Timed steps per dtype (after one warm-up step).')
_NUM_CLASSES = flags.DEFINE_integer('num_classes', 101, 'Classifier head size (Caltech101).')
_SMALL = flags.DEFINE_bool('small', False, "Table 3's small QRNet.")


def time_train_step(image_size, batch_size, archs, dtype, num_steps, num_classes=101, small=False):
  """(compile seconds, median step seconds) of the jitted, data-parallel train step."""
  mesh = parallel.make_mesh()
  parallel.check_batch_divisible(batch_size, mesh, 'batch_size')
  qrnet = QRNet(small=small, dtype=dtype)
  specs, frozen = [], {}
  for index, arch in enumerate(archs):
    module = classifier_lib.build_classifier(arch, num_classes, dtype=dtype)
    frozen[arch] = init_variables(module, index + 1,
                                  classifier_lib.input_size(arch) or image_size)
    specs.append(steps.Classifier(arch, module, 0.01, input_size=classifier_lib.input_size(arch)))
  tx = optax.adam(1e-3)
  qrnet_params = init_variables(qrnet, 0, image_size)['params']
  state = parallel.replicate(steps.create_train_state(qrnet_params, {}, tx, 0), mesh)
  frozen = parallel.replicate(frozen, mesh)
  spec = steps.DistortionSpec(('noise', 'blur'), tuple(distortions.PAPER_LEVELS.items()))
  step_fn = steps.jit_train_step(mesh, qrnet=qrnet, classifiers=tuple(specs), tx=tx,
                                 distortion=spec)
  rng = np.random.default_rng(0)
  batch = parallel.global_batch({
      'image': rng.integers(0, 256, (batch_size, image_size, image_size, 3), np.uint8),
      'label': rng.integers(0, num_classes, (batch_size,), np.int32)}, mesh)
  start = time.perf_counter()
  state, metrics = step_fn(state, batch, frozen)
  jax.block_until_ready(metrics)
  compile_seconds = time.perf_counter() - start
  times = []
  for _ in range(num_steps):
    start = time.perf_counter()
    state, metrics = step_fn(state, batch, frozen)
    jax.block_until_ready(metrics)
    times.append(time.perf_counter() - start)
  return compile_seconds, float(np.median(times))


def main(argv):
  del argv
  device = jax.devices()[0]
  print(f'devices: {jax.device_count()} x {device.device_kind} ({device.platform}); '
        f'{_IMAGE_SIZE.value} px, batch {_BATCH_SIZE.value} clean + {_BATCH_SIZE.value} distorted, '
        f'QRNet{" (small)" if _SMALL.value else ""} + {", ".join(_CLASSIFIERS.value) or "no classifier"}')
  print(f'{"conv_impl":>9} {"dtype":>9} {"compile s":>10} {"step ms":>9} {"images/s":>9}')
  images_per_s = {}
  for impl in _CONV_IMPLS.value:
    if impl == 'onednn' and not onednn.available():
      print(f'{impl:>9} (not built: bash scripts/setup_env.sh)')
      continue
    for dtype in _DTYPES.value:
      with conv.conv_impl(impl):
        compile_s, step_s = time_train_step(_IMAGE_SIZE.value, _BATCH_SIZE.value,
                                            _CLASSIFIERS.value, jnp.dtype(dtype), _STEPS.value,
                                            _NUM_CLASSES.value, _SMALL.value)
      images_per_s[impl, dtype] = 2 * _BATCH_SIZE.value / step_s
      print(f'{impl:>9} {dtype:>9} {compile_s:>10.1f} {1e3 * step_s:>9.1f} '
            f'{images_per_s[impl, dtype]:>9.1f}', flush=True)
  _print_torch_peer(images_per_s)


def _print_torch_peer(images_per_s):
  """The same QRNet step in PyTorch, when it is installed and no classifier is in the step."""
  try:
    from qrnet_jax import torch_peer  # pylint: disable=g-import-not-at-top
  except ImportError:
    print('PyTorch peer: not installed (optional: pip install torch)')
    return
  if _CLASSIFIERS.value:
    print('PyTorch peer: QRNet alone only (run with --classifiers=)')
    return
  for dtype in _DTYPES.value:
    peer = torch_peer.images_per_second(_IMAGE_SIZE.value, _BATCH_SIZE.value, dtype, _STEPS.value,
                                        _SMALL.value)
    ratios = ', '.join(f'{impl} {ips / peer:.2f}x' for (impl, d), ips in images_per_s.items()
                       if d == dtype)
    print(f'{"torch":>9} {dtype:>9} {"":>10} {1e3 * 2 * _BATCH_SIZE.value / peer:>9.1f} '
          f'{peer:>9.1f}   JAX / PyTorch: {ratios}', flush=True)


if __name__ == '__main__':
  app.run(main)
