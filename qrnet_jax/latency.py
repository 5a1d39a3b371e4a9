"""Inference time per image of the classifier alone and of QRNet + classifier (Section IV-B1).

The paper reports 5.51 ms per image for VGG16 and 8.29 ms for QRNet + VGG16 on a GTX TITAN X.
Here each function is jitted, compiled and run once before it is timed; the time of a batch is the
median over `repeats` runs, waited for with block_until_ready, and divided by the batch size.
Latency does not depend on the weights' values, so `latency_for` times randomly initialised models.
"""
import time

import jax
import jax.numpy as jnp
import numpy as np

from qrnet_jax.models import QRNet
from qrnet_jax.models import classifiers as classifier_lib
from qrnet_jax.models import init_variables


def _median_seconds(fn, args, repeats):
  """Median wall time of fn(*args) over `repeats` runs, after one untimed run that compiles it."""
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return float(np.median(times))


def measure_latency(qrnet_module, qrnet_params, classifier_module, classifier_variables, *,
                    image_size, input_size=None, batch_sizes=(1, 32), repeats=20) -> dict:
  """Milliseconds per image of inference (train=False) on random images, on the default device.

  Returns {'classifier': {'1': ms, '32': ms}, 'qrnet+classifier': {...}, 'device': 'gpu NVIDIA
  H200', 'repeats': n}, one entry per batch size. Both functions take image_size x image_size
  images; the classifier's are resized to `input_size` where that differs, as in training
  (steps.classifier_logits), so the resize is part of both times.
  """
  def classifier(variables, images):
    images = classifier_lib.resize_to_input(images, input_size)
    return classifier_module.apply(variables, images, train=False)

  def qrnet_and_classifier(params, variables, images):
    restored = qrnet_module.apply({'params': params}, images, train=False)
    return classifier(variables, restored)

  # Weights as arguments, not closed over: placed on the device once, never folded into the program.
  qrnet_params, classifier_variables = jax.device_put((qrnet_params, classifier_variables))
  timed = {'classifier': (jax.jit(classifier), (classifier_variables,)),
           'qrnet+classifier': (jax.jit(qrnet_and_classifier), (qrnet_params, classifier_variables))}
  results = {name: {} for name in timed}
  key = jax.random.key(0)
  for batch_size in batch_sizes:
    images = jax.random.uniform(jax.random.fold_in(key, batch_size),
                                (batch_size, image_size, image_size, 3), jnp.float32)
    for name, (fn, weights) in timed.items():
      seconds = _median_seconds(fn, (*weights, images), repeats)
      results[name][str(batch_size)] = 1e3 * seconds / batch_size
  device = next(iter(images.devices()))
  return {**results, 'device': f'{device.platform} {device.device_kind}', 'repeats': repeats}


def random_models(arch, num_classes, image_size, small=False, dtype='float32'):
  """(qrnet, qrnet_params, classifier, classifier_variables, input_size), randomly initialised."""
  dtype = jnp.dtype(dtype)
  qrnet = QRNet(small=small, dtype=dtype)
  classifier = classifier_lib.build_classifier(arch, num_classes, dtype=dtype)
  input_size = classifier_lib.input_size(arch)
  qrnet_params = init_variables(qrnet, 0, image_size)['params']
  classifier_variables = init_variables(classifier, 1, input_size or image_size)
  return qrnet, qrnet_params, classifier, classifier_variables, input_size


def latency_for(arch, num_classes, image_size, small=False, dtype='float32',
                batch_sizes=(1, 32), repeats=20) -> dict:
  """measure_latency for QRNet (small: Table 3's) + classifier `arch`, without checkpoints.

  The result also names what was timed: arch, image_size, input_size, small and dtype.
  """
  qrnet, qrnet_params, classifier, classifier_variables, input_size = random_models(
      arch, num_classes, image_size, small, dtype)
  result = measure_latency(qrnet, qrnet_params, classifier, classifier_variables,
                           image_size=image_size, input_size=input_size,
                           batch_sizes=batch_sizes, repeats=repeats)
  return {**result, 'arch': arch, 'image_size': image_size, 'input_size': input_size,
          'small': small, 'dtype': str(jnp.dtype(dtype))}
