"""The one training loop: a TrainState through its phases, validated every epoch.

`fit` trains a state through consecutive `Phase`s (e.g. QRNet's pretraining on clean images, then
Algorithm 1; or a classifier's training), validating every epoch, with early stopping, Orbax
checkpoints (also mid-epoch, so a killed run resumes where it stopped), TensorBoard metrics and a
progress bar. It knows nothing of what it trains: the steps come in the phases (steps.py builds
them), and a run (run.py) decides what to train.
"""
import dataclasses
import logging
import time
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import tqdm

from qrnet_jax import checkpointing, data, evaluate
from qrnet_jax import metrics as metrics_lib
from qrnet_jax import parallel, preemption, timing

VALIDATION_SEED_SALT = 7919  # validation distortions: the same every epoch, independent of training


@dataclasses.dataclass
class LoopRecord:
  """Where the loop stands; saved as JSON beside every checkpoint."""
  epoch: int = 0
  best_val_loss: Optional[float] = None
  best_epoch: Optional[int] = None
  epochs_without_improvement: int = 0
  stopped_early: bool = False
  history: list = dataclasses.field(default_factory=list)
  epoch_partial: Optional[dict] = None  # a mid-epoch checkpoint's sums of the epoch's metrics

  def best_step(self) -> Optional[int]:
    """The step at the end of the best epoch so far (None before one)."""
    if self.best_epoch is None:
      return None
    return next(h['step'] for h in self.history if h['epoch'] == self.best_epoch)


@dataclasses.dataclass(frozen=True)
class Phase:
  """Consecutive epochs trained with one step. Early stopping watches 'train' epochs only."""
  name: str  # 'pretrain' or 'train'
  epochs: int
  train_step: Callable  # (state, global batch, frozen) -> (state, metrics)
  eval_step: Callable  # (params, frozen, global batch, key) -> masked sums
  images_per_step: int


@dataclasses.dataclass(frozen=True)
class LoopSettings:
  batch_size: int
  seed: int  # the data order and the validation distortions
  early_stopping_patience: int
  log_every_steps: int
  checkpoint_every_steps: int
  checkpoints_to_keep: int
  show_progress: bool = True  # a progress bar per epoch (process 0); off where bars interleave

  @classmethod
  def from_config(cls, config, seed=None, show_progress=True):
    t = config.train
    return cls(t.batch_size, config.seed if seed is None else seed, t.early_stopping_patience,
               t.log_every_steps, t.checkpoint_every_steps, t.checkpoints_to_keep, show_progress)


def validation_terms(eval_fn, params, frozen, source, mesh, batch_size, seed):
  """Mean per-image terms over the whole split; distortions drawn from fixed keys."""
  base = jax.random.fold_in(jax.random.PRNGKey(seed), VALIDATION_SEED_SALT)
  return evaluate.masked_means(
      lambda number, batch: eval_fn(params, frozen, batch, jax.random.fold_in(base, number)),
      source, mesh, batch_size)


def with_batch_stats(frozen, batch_stats):
  """Frozen variables with the batch statistics that train in the state put in."""
  return {name: {**v, 'batch_stats': batch_stats[name]} if name in batch_stats else v
          for name, v in frozen.items()}


def fit(state, phases, frozen, dataset, mesh, workdir, settings: LoopSettings, desc=''):
  """Trains `state` through `phases` (resuming from WORKDIR/checkpoints if there are any).

  Returns (final state, best state by validation loss, LoopRecord).
  """
  checkpoints = checkpointing.Checkpoints(workdir, keep=settings.checkpoints_to_keep)
  abstract = checkpointing.abstract_like(state)
  restored = checkpoints.restore_latest(abstract)
  record = LoopRecord()
  if restored is not None:
    state, record = restored[0], LoopRecord(**restored[1])
    logging.info('resumed %s at step %d, epoch %d', workdir, int(state.step), record.epoch)
    if record.best_step() == int(state.step):  # killed before 'best' committed it, maybe
      checkpoints.ensure_best(int(state.step), state, restored[1], record.best_val_loss)
  writer = metrics_lib.MetricWriter(workdir)
  per_epoch = data.steps_per_epoch(len(dataset.train), settings.batch_size)
  batches = data.train_batches(dataset.train, settings.batch_size, settings.seed, int(state.step),
                               jax.process_index(), jax.process_count())
  phase_of_epoch = [p for p in phases for _ in range(p.epochs)]
  try:
    while record.epoch < len(phase_of_epoch) and not record.stopped_early:
      epoch, phase = record.epoch, phase_of_epoch[record.epoch]

      def save_mid_epoch(state, partial, record=record):  # a killed run resumes here, mid-epoch
        checkpoints.save(int(state.step), state,
                         dataclasses.asdict(dataclasses.replace(record, epoch_partial=partial)))

      with timing.part('train'):
        state, train_metrics = _run_epoch(
            state, phase, batches, frozen, mesh, range(int(state.step) - epoch * per_epoch,
                                                       per_epoch),
            record.epoch_partial, writer, settings, save_mid_epoch,
            desc=f'{desc}{phase.name} epoch {epoch + 1}/{len(phase_of_epoch)}')
      with timing.part('validation'):
        val = validation_terms(phase.eval_step, state.params,
                               with_batch_stats(frozen, state.batch_stats), dataset.val, mesh,
                               settings.batch_size, settings.seed)
      metrics_lib.check_finite(val, f'validation after epoch {epoch + 1}')
      step = int(state.step)
      writer.write_scalars(step, {f'val/{k}': v for k, v in val.items()})
      improved = _end_epoch(record, phase, val, train_metrics, step, settings)
      checkpoints.save(step, state, dataclasses.asdict(record),
                       val_loss=val['loss'] if improved else None)
      if preemption.reached(step):
        raise preemption.Preempted(f'step {step}')
    checkpoints.wait_until_finished()
    best = checkpoints.restore_best(abstract, record.best_step())
  finally:
    checkpoints.close()
    writer.close()
  return state, (best[0] if best is not None else state), record


def _end_epoch(record: LoopRecord, phase: Phase, val, train_metrics, step, settings) -> bool:
  """Records the epoch; returns whether its validation loss is the best so far."""
  record.history.append({'epoch': record.epoch + 1, 'phase': phase.name, 'step': step,
                         'train': train_metrics, 'val': val})
  record.epoch += 1
  record.epoch_partial = None
  if phase.name == 'pretrain':
    return False
  if record.best_val_loss is None or val['loss'] < record.best_val_loss:
    record.best_val_loss, record.best_epoch = val['loss'], record.epoch
    record.epochs_without_improvement = 0
    return True
  record.epochs_without_improvement += 1
  # Early stopping after `patience` epochs without a better validation loss (Sec. IV-A).
  if record.epochs_without_improvement >= settings.early_stopping_patience:
    record.stopped_early = True
    logging.info('early stopping after epoch %d', record.epoch)
  return False


def _run_epoch(state, phase, batches, frozen, mesh, step_indices, partial, writer, settings,
               save_mid_epoch, desc):
  """The epoch's train steps `step_indices` (all, or the rest after a mid-epoch resume).

  Returns the state and the epoch's mean train metrics; `partial` holds the sums of the steps run
  before a resume, so the means are those of an uninterrupted epoch.
  """
  num_steps = step_indices.stop
  totals = (partial or {}).get('totals')
  window_start, window_steps = time.perf_counter(), 0
  start, start_index = window_start, step_indices.start
  bar = tqdm.tqdm(total=num_steps, initial=start_index, desc=desc, leave=False,
                  disable=jax.process_index() != 0 or not settings.show_progress)
  step = int(state.step)  # counted on the host: reading state.step would sync every step
  for i in step_indices:
    state, metrics = phase.train_step(state, parallel.global_batch(next(batches), mesh), frozen)
    totals = metrics if totals is None else jax.tree.map(jnp.add, totals, metrics)
    window_steps += 1
    step += 1
    if (i + 1) % settings.log_every_steps == 0 or i + 1 == num_steps:
      scalars = jax.device_get(metrics)
      metrics_lib.check_finite(scalars, f'step {step}')
      now = time.perf_counter()
      scalars['images_per_second'] = window_steps * phase.images_per_step / (now - window_start)
      window_start, window_steps = now, 0
      writer.write_scalars(step, {f'train/{k}': v for k, v in scalars.items()}, log=False)
      bar.set_postfix(loss=f"{scalars['loss']:.4f}", img_s=f"{scalars['images_per_second']:.0f}")
    every = settings.checkpoint_every_steps
    preempted = i + 1 < num_steps and preemption.reached(step)  # last: fit asks after its save
    if (preempted or every and step % every == 0) and i + 1 < num_steps:
      host_totals = {k: float(v) for k, v in jax.device_get(totals).items()}
      metrics_lib.check_finite(host_totals, f'step {step}')
      save_mid_epoch(state, {'totals': host_totals})
    if preempted:
      raise preemption.Preempted(f'step {step}')
    bar.update(1)
  bar.close()
  means = {k: float(v) / num_steps for k, v in jax.device_get(totals).items()}
  metrics_lib.check_finite(means, desc)
  timing.count('train_images', (num_steps - start_index) * phase.images_per_step)
  means['images_per_second'] = ((num_steps - start_index) * phase.images_per_step
                                / (time.perf_counter() - start))
  logging.info('%s: %s', desc, ', '.join(f'{k}={v:.4g}' for k, v in sorted(means.items())))
  return state, means
