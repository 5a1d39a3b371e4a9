"""The one train step and the one evaluation step, pure and jitted, for every training mode.

The loss of Eq. (4)-(5) is defined here: L = L_q + sum_i lambda_i L_Ci over the configured
classifiers; with no classifier it is RecNet's L1 alone. With no QRNet (`qrnet=None`) the images
go to the classifiers as they are and L = sum_i lambda_i L_Ci: a classifier trained on clean
images, or on Algorithm 1's clean + distorted batches (Table 4's fine-tuned classifiers).

What trains lives in the train state: QRNet's parameters and, per classifier, the named part that
trains (end-to-end mode, classifier training). What is frozen comes in as an argument under
stop_gradient. A classifier whose every parameter trains also updates its BatchNorm statistics,
which then live in the state too.
"""
import dataclasses
from typing import Any, Optional

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from qrnet_jax import distortions, losses, parallel
from qrnet_jax.distortions import DistortionSpec  # pylint: disable=unused-import (re-exported)
from qrnet_jax.models import classifiers as classifiers_lib


@dataclasses.dataclass(frozen=True)
class Classifier:
  """One classifier C_i of Eq. (5), static inside jit.

  Attributes:
    name: its key in config.classifiers, in the frozen-variables dict and in state.params.
    module: the Linen module (images in [0, 1] NHWC -> logits).
    weight: lambda_i (1 when the classifier itself is trained).
    trainable: top-level param names that train (empty: frozen).
    input_size: side the classifier expects; its input is resized to it (None: as is).
    update_batch_stats: run in training mode and update BatchNorm statistics (every parameter
      trains); otherwise inference mode with running statistics, as a frozen classifier does.
  """
  name: str
  module: nn.Module
  weight: float
  trainable: tuple = ()
  input_size: Optional[int] = None
  update_batch_stats: bool = False


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any  # {'qrnet': ... (absent without QRNet), 'classifiers': {name: trainable subtree}}
  opt_state: Any
  rng: jax.Array  # raw uint32 key; a step's key is fold_in(rng, step)
  batch_stats: Any = dataclasses.field(default_factory=dict)  # {name: ...} updated in training


def split_params(params: dict, trainable: tuple):
  """(trainable subtree, frozen rest) of a classifier's params, by top-level name."""
  return ({k: v for k, v in params.items() if k in trainable},
          {k: v for k, v in params.items() if k not in trainable})


def create_train_state(qrnet_params, classifier_trainable: dict, tx, seed: int,
                       batch_stats: Optional[dict] = None) -> TrainState:
  """The state of a run; `qrnet_params=None` trains classifiers alone."""
  params = {'classifiers': classifier_trainable}
  if qrnet_params is not None:
    params['qrnet'] = qrnet_params
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                    rng=jax.random.PRNGKey(seed), batch_stats=batch_stats or {})


def algorithm1_batch(images, labels, key, spec: DistortionSpec):
  """Algorithm 1: inputs concat(clean, distorted), targets concat(clean, clean), labels (t, t)."""
  distorted, _, _ = distortions.random_distortion(images, key, spec.types, spec.levels_by_type)
  return (jnp.concatenate([images, distorted]), jnp.concatenate([images, images]),
          jnp.concatenate([labels, labels]))


def classifier_logits(classifier: Classifier, frozen_variables, trainable_params, images,
                      batch_stats=None, train=False):
  """(logits, updated batch stats or None). BatchNorm uses running statistics unless `train`
  and the classifier updates its statistics."""
  frozen_variables = jax.lax.stop_gradient(frozen_variables)
  variables = dict(frozen_variables)
  variables['params'] = {**frozen_variables['params'], **trainable_params}
  images = classifiers_lib.resize_to_input(images, classifier.input_size)
  if train and classifier.update_batch_stats:
    variables['batch_stats'] = batch_stats
    logits, updates = classifier.module.apply(variables, images, train=True,
                                              mutable=['batch_stats'])
    return logits, updates['batch_stats']
  return classifier.module.apply(variables, images, train=False), None


def per_image_losses(params, frozen, inputs, targets, labels, *, qrnet, classifiers, train,
                     dropout_key=None, batch_stats=None):
  """Per-image terms of Eq. (4)-(5): 'l1' (with QRNet), '<name>/ce', '<name>/correct' and their
  weighted sum 'loss'; and the classifiers' updated batch statistics ({} when none update)."""
  terms, total, new_stats = {}, 0., {}
  restored = inputs
  if qrnet is not None:
    rngs = {'dropout': dropout_key} if train else {}
    restored = qrnet.apply({'params': params['qrnet']}, inputs, train=train, rngs=rngs)
    terms['l1'] = total = losses.quality_loss(restored, targets)
  for c in classifiers:
    logits, stats = classifier_logits(c, frozen[c.name], params['classifiers'].get(c.name, {}),
                                      restored, (batch_stats or {}).get(c.name), train)
    if stats is not None:
      new_stats[c.name] = stats
    terms[f'{c.name}/ce'] = losses.classification_loss(logits, labels)
    terms[f'{c.name}/correct'] = losses.correct(logits, labels)
    total = total + c.weight * terms[f'{c.name}/ce']
  terms['loss'] = total
  return terms, new_stats


def _inputs(batch, key, distortion: Optional[DistortionSpec]):
  """(inputs, targets, labels): the clean batch, or Algorithm 1's from `key`."""
  images = distortions.unit_range(batch['image'])
  if distortion is None:
    return images, images, batch['label']
  return algorithm1_batch(images, batch['label'], key, distortion)


def train_step(state: TrainState, batch, frozen, *, qrnet, classifiers, tx,
               distortion: Optional[DistortionSpec]):
  """One optimizer step. `distortion=None`: clean images only (QRNet's pretraining, or a
  classifier trained on the original images)."""
  dropout_key, distortion_key = jax.random.split(jax.random.fold_in(state.rng, state.step))
  inputs, targets, labels = _inputs(batch, distortion_key, distortion)

  def loss_fn(params):
    terms, batch_stats = per_image_losses(params, frozen, inputs, targets, labels, qrnet=qrnet,
                                          classifiers=classifiers, train=True,
                                          dropout_key=dropout_key, batch_stats=state.batch_stats)
    means = {name: value.mean() for name, value in terms.items()}
    return means['loss'], (means, batch_stats)

  grads, (metrics, batch_stats) = jax.grad(loss_fn, has_aux=True)(state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  metrics['grad_norm'] = optax.tree.norm(grads)
  return state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                       batch_stats={**state.batch_stats, **batch_stats}), metrics


def eval_step(params, frozen, batch, key, *, qrnet, classifiers,
              distortion: Optional[DistortionSpec]):
  """Masked sums of the per-image terms on an Algorithm 1 batch drawn from `key` (no dropout).

  `frozen` holds every classifier's non-trained variables, batch statistics included.
  """
  inputs, targets, labels = _inputs(batch, key, distortion)
  mask = batch['mask'].astype(jnp.float32)
  if distortion is not None:
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
