"""Train-step throughput: images/s of Algorithm 1's step (QRNet + frozen classifiers) on this host.

  python -m qrnet_jax.benchmark --image_size 224 --batch_size 32 --classifiers vgg16 \
      --dtypes float32,bfloat16 --conv_impls xla,onednn

Prints one row per convolution implementation (config.model.conv_impl) and dtype: compile time,
median step time and images/s, counting the 2 x batch images (clean + distorted) that pass through
QRNet and the classifiers in each step. The classifiers have random weights: speed does not depend
on their values. When PyTorch is installed (optional, not a dependency: `pip install torch`) and
no classifier is in the step, the same QRNet step in PyTorch is the peer (qrnet_jax/torch_peer.py),
with the ratios.

Every contender is built first; then they take turns, `--rounds` times `--steps` steps each, so
that a machine whose speed drifts (shared cores) slows them alike. The medians are over all their
timed steps; the spread (quartiles) says how noisy the machine was.
"""
import dataclasses
import time
from typing import Callable, List

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags

from qrnet_jax import config_validation, distortions, parallel, steps
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
_STEPS = flags.DEFINE_integer('steps', 4, 'Timed steps per contender in each round.')
_ROUNDS = flags.DEFINE_integer('rounds', 5, 'Rounds in which the contenders take turns.')
_NUM_CLASSES = flags.DEFINE_integer('num_classes', 101, 'Classifier head size (Caltech101).')
_SMALL = flags.DEFINE_bool('small', False, "Table 3's small QRNet.")
_TORCH = flags.DEFINE_bool('torch', True, 'Time the PyTorch peer where it is installed.')

# Runs n timed steps, returns their durations in seconds.
StepTimer = Callable[[int], List[float]]


def timer(step: Callable[[], None]) -> StepTimer:
  """The StepTimer of `step` (one whole step, finished when it returns), after one warm-up step."""
  def run(num_steps):
    times = []
    for _ in range(num_steps):
      start = time.perf_counter()
      step()
      times.append(time.perf_counter() - start)
    return times

  step()
  return run


def train_step_timer(image_size, batch_size, archs, dtype, num_classes=101,
                     small=False) -> StepTimer:
  """The jitted, data-parallel train step, compiled (traced under the current conv_impl)."""
  mesh = parallel.make_mesh()
  config_validation.check_batch_divisible('batch_size', batch_size, mesh.devices.size,
                                          'devices')
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

  def step():
    nonlocal state
    state, metrics = step_fn(state, batch, frozen)
    jax.block_until_ready(metrics)

  return timer(step)  # the warm-up step compiles


@dataclasses.dataclass
class Contender:
  impl: str  # a conv_impl, or 'torch'
  dtype: str
  timer: StepTimer
  prepare_seconds: float
  times: List[float] = dataclasses.field(default_factory=list)


def _prepared(impl, dtype, make_timer) -> Contender:
  start = time.perf_counter()
  timer = make_timer()
  return Contender(impl, dtype, timer, time.perf_counter() - start)


def _torch_peer():
  """qrnet_jax.torch_peer, or None with the reason printed."""
  if not _TORCH.value:
    return None
  try:
    from qrnet_jax import torch_peer  # pylint: disable=g-import-not-at-top
  except ImportError:
    print('PyTorch peer: not installed (optional: pip install torch)')
    return None
  if _CLASSIFIERS.value:
    print('PyTorch peer: QRNet alone only (run with --classifiers=)')
    return None
  return torch_peer


def contenders() -> List[Contender]:
  """Every implementation and dtype asked for, built and warmed up."""
  found = []
  for impl in _CONV_IMPLS.value:
    if impl == 'onednn' and not onednn.available():
      print(f'{impl:>9} (not built: bash scripts/setup_env.sh)')
      continue
    for dtype in _DTYPES.value:
      with conv.conv_impl(impl):
        found.append(_prepared(impl, dtype, lambda: train_step_timer(
            _IMAGE_SIZE.value, _BATCH_SIZE.value, _CLASSIFIERS.value, jnp.dtype(dtype),
            _NUM_CLASSES.value, _SMALL.value)))
  peer = _torch_peer()
  if peer is not None:
    for dtype in _DTYPES.value:
      found.append(_prepared('torch', dtype, lambda: timer(peer.train_step(
          _IMAGE_SIZE.value, _BATCH_SIZE.value, dtype, _SMALL.value))))
  return found


def take_turns(found: List[Contender], rounds: int, steps_per_round: int):
  for index in range(rounds):
    for contender in found:
      contender.times += contender.timer(steps_per_round)
    print(f'round {index + 1}/{rounds} done', flush=True)


def images_per_second(contender: Contender, batch_size: int) -> float:
  return 2 * batch_size / float(np.median(contender.times))


def report(found: List[Contender], batch_size: int) -> str:
  """The table: one row per contender, with JAX / PyTorch ratios for the same dtype."""
  peer = {c.dtype: images_per_second(c, batch_size) for c in found if c.impl == 'torch'}
  lines = [f'{"conv_impl":>9} {"dtype":>9} {"compile s":>10} {"step ms":>9} {"q1-q3 ms":>13} '
           f'{"images/s":>9} {"/ torch":>8}']
  for c in found:
    q1, q3 = (1e3 * np.percentile(c.times, q) for q in (25, 75))
    ips = images_per_second(c, batch_size)
    ratio = f'{ips / peer[c.dtype]:.2f}x' if c.impl != 'torch' and c.dtype in peer else ''
    lines.append(f'{c.impl:>9} {c.dtype:>9} {c.prepare_seconds:>10.1f} '
                 f'{1e3 * np.median(c.times):>9.1f} {f"{q1:.0f}-{q3:.0f}":>13} {ips:>9.1f} '
                 f'{ratio:>8}')
  return '\n'.join(lines)


def main(argv):
  del argv
  device = jax.devices()[0]
  print(f'devices: {jax.device_count()} x {device.device_kind} ({device.platform}); '
        f'{_IMAGE_SIZE.value} px, batch {_BATCH_SIZE.value} clean + {_BATCH_SIZE.value} distorted, '
        f'QRNet{" (small)" if _SMALL.value else ""} + '
        f'{", ".join(_CLASSIFIERS.value) or "no classifier"}; {_ROUNDS.value} rounds of '
        f'{_STEPS.value} steps each', flush=True)
  found = contenders()
  take_turns(found, _ROUNDS.value, _STEPS.value)
  print(report(found, _BATCH_SIZE.value))


if __name__ == '__main__':
  app.run(main)
