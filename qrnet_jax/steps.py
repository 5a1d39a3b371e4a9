"""Pure, jitted step functions: Algorithm 1's train step and the evaluation step.

The loss of Eq. (4)-(5) is defined here: L = L_q + sum_i lambda_i L_Ci over the configured
classifiers; with no classifier it is RecNet's L1 alone. Classifier parameters come in as an
argument under stop_gradient, except the named part that trains (end-to-end mode), which lives in
the train state and gets its own gradient.
"""
import dataclasses
from typing import Any, Optional

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from qrnet_jax import distortions, losses, parallel
from qrnet_jax.models import classifiers as classifiers_lib


@dataclasses.dataclass(frozen=True)
class Classifier:
  """One classifier C_i of Eq. (5), static inside jit.

  Attributes:
    name: its key in config.classifiers, in the frozen-variables dict and in state.params.
    module: the Linen module (images in [0, 1] NHWC -> logits).
    weight: lambda_i.
    trainable: top-level param names that train with QRNet (empty: frozen).
    input_size: side the classifier expects; QRNet's output is resized to it (None: as is).
  """
  name: str
  module: nn.Module
  weight: float
  trainable: tuple = ()
  input_size: Optional[int] = None


@dataclasses.dataclass(frozen=True)
class DistortionSpec:
  """Algorithm 1's sets D (types) and P_d (levels per type), static inside jit."""
  types: tuple
  levels: tuple  # ((type, (level, ...)), ...)

  @property
  def levels_by_type(self):
    return dict(self.levels)


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any  # {'qrnet': ..., 'classifiers': {name: trainable subtree}}
  opt_state: Any
  rng: jax.Array  # raw uint32 key; a step's key is fold_in(rng, step)


def split_params(params: dict, trainable: tuple):
  """(trainable subtree, frozen rest) of a classifier's params, by top-level name."""
  return ({k: v for k, v in params.items() if k in trainable},
          {k: v for k, v in params.items() if k not in trainable})


def create_train_state(qrnet_params, classifier_trainable: dict, tx, seed: int) -> TrainState:
  params = {'qrnet': qrnet_params, 'classifiers': classifier_trainable}
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                    rng=jax.random.PRNGKey(seed))


def algorithm1_batch(images, labels, key, spec: DistortionSpec):
  """Algorithm 1: inputs concat(clean, distorted), targets concat(clean, clean), labels (t, t)."""
  distorted, type_index, level_index = distortions.random_distortion(
      images, key, spec.types, spec.levels_by_type)
  inputs = jnp.concatenate([images, distorted])
  return inputs, jnp.concatenate([images, images]), jnp.concatenate([labels, labels]), (
      type_index, level_index)


def classifier_logits(classifier: Classifier, frozen_variables, trainable_params, images):
  """The classifier on `images`, BatchNorm with running statistics (train=False) always."""
  frozen_variables = jax.lax.stop_gradient(frozen_variables)
  variables = dict(frozen_variables)
  variables['params'] = {**frozen_variables['params'], **trainable_params}
  images = classifiers_lib.resize_to_input(images, classifier.input_size)
  return classifier.module.apply(variables, images, train=False)


def per_image_losses(params, frozen, inputs, targets, labels, *, qrnet, classifiers, train,
                     dropout_key=None):
  """Per-image terms of Eq. (4)-(5): 'l1', '<name>/ce', '<name>/correct' and their sum 'loss'."""
  rngs = {'dropout': dropout_key} if train else {}
  restored = qrnet.apply({'params': params['qrnet']}, inputs, train=train, rngs=rngs)
  terms = {'l1': losses.quality_loss(restored, targets)}
  total = terms['l1']
  for c in classifiers:
    logits = classifier_logits(c, frozen[c.name], params['classifiers'].get(c.name, {}), restored)
    terms[f'{c.name}/ce'] = losses.classification_loss(logits, labels)
    terms[f'{c.name}/correct'] = losses.correct(logits, labels)
    total = total + c.weight * terms[f'{c.name}/ce']
  terms['loss'] = total
  return terms, restored


def train_step(state: TrainState, batch, frozen, *, qrnet, classifiers, tx,
               distortion: Optional[DistortionSpec]):
  """One optimizer step. `distortion=None` is QRNet's pretraining on clean images only."""
  images = batch['image'].astype(jnp.float32) / 255.
  labels = batch['label']
  dropout_key, distortion_key = jax.random.split(jax.random.fold_in(state.rng, state.step))
  if distortion is None:
    inputs, targets = images, images
  else:
    inputs, targets, labels, _ = algorithm1_batch(images, labels, distortion_key, distortion)

  def loss_fn(params):
    terms, _ = per_image_losses(params, frozen, inputs, targets, labels, qrnet=qrnet,
                                classifiers=classifiers, train=True, dropout_key=dropout_key)
    means = {name: value.mean() for name, value in terms.items()}
    return means['loss'], means

  grads, metrics = jax.grad(loss_fn, has_aux=True)(state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  metrics['grad_norm'] = optax.tree.norm(grads)
  return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics


def eval_step(params, frozen, batch, key, *, qrnet, classifiers,
              distortion: Optional[DistortionSpec]):
  """Masked sums of the per-image terms on an Algorithm 1 batch drawn from `key` (no dropout)."""
  images = batch['image'].astype(jnp.float32) / 255.
  labels, mask = batch['label'], batch['mask'].astype(jnp.float32)
  if distortion is None:
    inputs, targets = images, images
  else:
    inputs, targets, labels, _ = algorithm1_batch(images, labels, key, distortion)
    mask = jnp.concatenate([mask, mask])
  terms, _ = per_image_losses(params, frozen, inputs, targets, labels, qrnet=qrnet,
                              classifiers=classifiers, train=False)
  sums = {name: (value * mask).sum() for name, value in terms.items()}
  sums['count'] = mask.sum()
  return sums


def jit_train_step(mesh, **static):
  """train_step jitted with its static parts bound, the state donated, data-parallel on `mesh`."""
  replicated, sharded = parallel.replicated(mesh), parallel.batch_sharded(mesh)
  step = lambda state, batch, frozen: train_step(state, batch, frozen, **static)
  return jax.jit(step, in_shardings=(replicated, sharded, replicated),
                 out_shardings=(replicated, replicated), donate_argnums=0)


def jit_eval_step(mesh, **static):
  replicated, sharded = parallel.replicated(mesh), parallel.batch_sharded(mesh)
  step = lambda params, frozen, batch, key: eval_step(params, frozen, batch, key, **static)
  return jax.jit(step, in_shardings=(replicated, replicated, sharded, replicated),
                 out_shardings=replicated)
