"""Training a classifier on clean images (the "trained with the original images" classifiers).

The paper's VGG16 keeps its ImageNet convolutions and fine-tunes its three FC layers on the clean
training split; the small CPU classifiers train all their parameters. The result is frozen and
handed to QRNet's training as a fixed argument.
"""
import functools
import logging
import os
import time

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.experimental import multihost_utils
from typing import Any

from qrnet_jax import data, losses, parallel
from qrnet_jax.models.classifiers import resize_to_input
from qrnet_jax.steps import algorithm1_batch, split_params
from qrnet_jax.weights import convert


@flax.struct.dataclass
class ClassifierState:
  step: jax.Array
  trainable: Any
  frozen: Any
  batch_stats: Any
  opt_state: Any


def _merged_variables(state: ClassifierState):
  variables = {'params': {**jax.lax.stop_gradient(state.frozen), **state.trainable}}
  if state.batch_stats is not None:
    variables['batch_stats'] = state.batch_stats
  return variables


def _classifier_images(batch, input_size):
  """uint8 batch images as [0, 1] floats at the classifier's input size (as in the QRNet step)."""
  return resize_to_input(batch['image'].astype(jnp.float32) / 255., input_size)


def classifier_train_step(state: ClassifierState, batch, *, module, tx, update_batch_stats,
                          input_size=None, distortion=None, rng=None):
  """One Adam step on clean images, or with `distortion` (a steps.DistortionSpec) on Algorithm 1's
  concat(clean, distorted) batch, as the fine-tuned classifiers of Table 4 are trained."""
  images = batch['image'].astype(jnp.float32) / 255.
  labels = batch['label']
  if distortion is not None:
    images, _, labels, _ = algorithm1_batch(images, labels, jax.random.fold_in(rng, state.step),
                                            distortion)
  images = resize_to_input(images, input_size)

  def loss_fn(trainable):
    variables = _merged_variables(state.replace(trainable=trainable))
    if update_batch_stats:
      logits, updates = module.apply(variables, images, train=True, mutable=['batch_stats'])
    else:
      logits, updates = module.apply(variables, images, train=False), {}
    loss = losses.classification_loss(logits, labels).mean()
    return loss, (updates.get('batch_stats', state.batch_stats),
                  losses.correct(logits, labels).mean())

  (loss, (batch_stats, acc)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.trainable)
  updates, opt_state = tx.update(grads, state.opt_state, state.trainable)
  state = state.replace(step=state.step + 1, trainable=optax.apply_updates(state.trainable, updates),
                        opt_state=opt_state, batch_stats=batch_stats)
  return state, {'loss': loss, 'accuracy': acc}


@functools.partial(jax.jit, static_argnames=('module', 'input_size'))
def _correct_sum(variables, batch, module, input_size):
  logits = module.apply(variables, _classifier_images(batch, input_size), train=False)
  return (losses.correct(logits, batch['label']) * batch['mask']).sum()


def classifier_accuracy(module, variables, source, mesh, batch_size, input_size=None):
  """Top-1 accuracy on every image of `source` (clean)."""
  total = 0.
  for batch in data.eval_batches(source, batch_size, jax.process_index(), jax.process_count()):
    total += float(_correct_sum(variables, parallel.global_batch(batch, mesh), module=module,
                                input_size=input_size))
  return total / len(source)


def train_classifier(module, variables, trainable_names, dataset, *, epochs, batch_size,
                     learning_rate, seed, mesh, name='classifier', input_size=None,
                     distortion=None):
  """Trains `trainable_names` of `module`; returns the new variables.

  On clean training images, or with `distortion` on Algorithm 1 batches of clean and distorted
  images (Table 4's fine-tuned classifiers, "single" or "multiple" by the spec's types).
  BatchNorm statistics are updated only when every parameter trains (partition 'all');
  otherwise the classifier runs in inference mode, as a frozen feature extractor does.
  """
  trainable, frozen = split_params(variables['params'], tuple(trainable_names))
  update_batch_stats = not frozen and 'batch_stats' in variables
  tx = optax.adam(learning_rate)
  state = ClassifierState(step=jnp.zeros((), jnp.int32), trainable=trainable, frozen=frozen,
                          batch_stats=variables.get('batch_stats'), opt_state=tx.init(trainable))
  state = parallel.replicate(state, mesh)
  step_fn = jax.jit(
      lambda s, b: classifier_train_step(s, b, module=module, tx=tx,
                                         update_batch_stats=update_batch_stats,
                                         input_size=input_size, distortion=distortion,
                                         rng=jax.random.PRNGKey(seed)),
      in_shardings=(parallel.replicated(mesh), parallel.batch_sharded(mesh)),
      out_shardings=parallel.replicated(mesh), donate_argnums=0)
  per_epoch = data.steps_per_epoch(len(dataset.train), batch_size)
  batches = data.train_batches(dataset.train, batch_size, seed, 0, jax.process_index(),
                               jax.process_count())
  for epoch in range(epochs):
    start = time.perf_counter()
    for _ in range(per_epoch):
      state, metrics = step_fn(state, parallel.global_batch(next(batches), mesh))
    metrics = jax.device_get(metrics)
    val_accuracy = classifier_accuracy(module, _merged_variables(state), dataset.val, mesh,
                                       batch_size, input_size)
    logging.info('classifier %s epoch %d/%d: loss %.4f, train accuracy %.3f, val accuracy %.3f '
                 '(%.1f images/s)', name, epoch + 1, epochs, metrics['loss'], metrics['accuracy'],
                 val_accuracy, per_epoch * batch_size / (time.perf_counter() - start))
  return jax.device_get(_merged_variables(state))


def is_trained(path) -> bool:
  """Whether `path` holds a classifier saved by `trained_classifier_variables` (or converted)."""
  return os.path.isfile(os.path.join(path, convert.INFO_FILE))


def trained_classifier_variables(path, train_fn, info: dict):
  """Variables saved at `path`, or `train_fn()`'s result saved there first (so reruns reuse it).

  The format is the weight converter's (`variables/` + `classifier.json` holding `info`), so a
  classifier trained by one run is `classifiers.NAME.checkpoint` of another.
  """
  exists = is_trained(path)
  if jax.process_count() > 1:  # every process must take the same branch: process 0 decides
    exists = bool(multihost_utils.broadcast_one_to_all(np.asarray(exists)))
  if exists:
    logging.info('reusing the trained classifier at %s', path)
    return convert.load_converted(path)
  variables = train_fn()
  convert.save_converted(path, variables, info)  # Orbax writes once, from the primary process
  return variables
