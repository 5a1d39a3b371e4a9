"""The one training loop, and the run that uses it.

`fit` trains a TrainState through its phases (QRNet's pretraining on clean images, then Algorithm 1;
or a classifier's training), validating every epoch, with early stopping, Orbax checkpoints (also
mid-epoch, so a killed run resumes where it stopped), TensorBoard metrics and a progress bar.

`train_and_evaluate` is a run: its classifiers loaded or trained (each by `fit`), QRNet trained
against them (by `fit`), the test split evaluated per distortion level, and a summary written.
"""
import dataclasses
import io
import logging
import os
import time
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import tqdm

from qrnet_jax import checkpointing, config_validation, data, distortions, evaluate
from qrnet_jax import files
from qrnet_jax import metrics as metrics_lib
from qrnet_jax import outcomes as outcomes_lib
from qrnet_jax import parallel, preemption, run_classifiers, steps, timing
from qrnet_jax.ops import conv
from qrnet_jax.report import figures
from qrnet_jax.models import QRNet, init_variables  # pylint: disable=unused-import (re-exported)

VALIDATION_SEED_SALT = 7919  # validation distortions: the same every epoch, independent of training
TRAINING_RECORD = 'training.json'  # a trained classifier's epochs, beside its variables
SAMPLES_FILE = 'samples.npz'  # test images per level: clean, distorted, restored (Figure 8)
SHOW_PROGRESS_BARS = True  # off in a suite's concurrent runs, whose bars would interleave


def distortion_spec(config, types=None) -> distortions.DistortionSpec:
  """The distortions a run trains on (config.distortion.types), or those of `types`, each with its
  levels: the noise and blur sigmas, or the corruptions' severities."""
  types = tuple(config.distortion.types if types is None else types)
  levels = {'noise': tuple(config.distortion.noise_levels),
            'blur': tuple(config.distortion.blur_levels)}
  severities = tuple(config.distortion.severities)
  return distortions.DistortionSpec(
      types=types, levels=tuple((t, levels.get(t, severities)) for t in types))


def trained_distortions(config) -> tuple:
  """The distortion types a run's training sees: Algorithm 1's (config.distortion.types) where
  QRNet trains or a classifier is fine-tuned on distorted batches (Table 4); none where every
  model trains on clean images only, or is read trained."""
  classifiers = [c for group in ('classifiers', 'eval_classifiers') for c in config[group].values()]
  distorted = config.train.max_epochs > 0 or any(
      c.get('train_distorted', False) and not c.checkpoint for c in classifiers)
  return tuple(config.distortion.types) if distorted else ()


def evaluation_spec(config) -> distortions.DistortionSpec:
  """The distortions the test split is evaluated on: config.distortion.eval_types, or where it is
  empty the training types; e.g. every corruption family, those trained on and those not."""
  return distortion_spec(config, config.distortion.eval_types or None)


# The loop.

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

  @classmethod
  def from_config(cls, config, seed=None):
    t = config.train
    return cls(t.batch_size, config.seed if seed is None else seed, t.early_stopping_patience,
               t.log_every_steps, t.checkpoint_every_steps, t.checkpoints_to_keep)


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
                  disable=jax.process_index() != 0 or not SHOW_PROGRESS_BARS)
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


def phases_for(mesh, *, qrnet, classifiers, tx, spec, batch_size, pretrain_epochs, epochs):
  """QRNet's pretraining on clean images, then Algorithm 1 with `spec` (spec=None: clean images,
  a classifier trained on the original images)."""
  static = dict(qrnet=qrnet, classifiers=classifiers)
  clean = Phase('pretrain', pretrain_epochs, steps.jit_train_step(mesh, tx=tx, distortion=None,
                                                                  **static),
                steps.jit_eval_step(mesh, distortion=None, **static), batch_size)
  main = Phase('train', epochs, steps.jit_train_step(mesh, tx=tx, distortion=spec, **static),
               steps.jit_eval_step(mesh, distortion=spec, **static),
               batch_size * (1 if spec is None else 2))
  return [p for p in (clean, main) if p.epochs]


# A run.

def _save_config(config, workdir):
  if jax.process_index() == 0:
    files.write_text(os.path.join(workdir, config_validation.CONFIG_FILE),
                     config_validation.config_json(config))


def _classifier_trainer(config, dataset, mesh, workdir):
  """run_classifiers' train_fn: one classifier trained by `fit` in WORKDIR/classifiers/NAME, on
  clean images or (`distorted`) on Algorithm 1 batches; returns its best variables."""
  def train_classifier(name, c, spec, frozen, trainable, distorted):
    batch_stats = {name: frozen['batch_stats']} if spec.update_batch_stats else {}
    tx = optax.adam(c.learning_rate)
    seed = run_classifiers.classifier_seed(config, name)
    state = parallel.replicate(steps.create_train_state(None, {name: trainable}, tx, seed,
                                                        batch_stats), mesh)
    phases = phases_for(mesh, qrnet=None, classifiers=(spec,), tx=tx,
                        spec=distortion_spec(config) if distorted else None,
                        batch_size=config.train.batch_size, pretrain_epochs=0,
                        epochs=c.train_epochs)
    frozen_on_mesh = parallel.replicate({name: frozen}, mesh)
    _, best, record = fit(state, phases, frozen_on_mesh, dataset, mesh,
                          run_classifiers.trained_classifier_dir(workdir, name),
                          LoopSettings.from_config(config, seed), desc=f'{name} ')
    logging.info('classifier %s: best validation loss %.4f at epoch %s of %d', name,
                 record.best_val_loss, record.best_epoch, record.epoch)
    metrics_lib.write_json(os.path.join(run_classifiers.trained_classifier_dir(workdir, name),
                                        TRAINING_RECORD), dataclasses.asdict(record))
    best = jax.device_get(best)
    variables = {**frozen, 'params': {**frozen['params'], **best.params['classifiers'][name]}}
    if name in best.batch_stats:
      variables['batch_stats'] = best.batch_stats[name]
    return variables
  return train_classifier


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, devices=None) -> dict:
  """Runs (or resumes) the whole experiment in `workdir`; returns the summary it writes there.
  Its models' convolutions run on config.model.conv_impl."""
  mesh = parallel.make_mesh(devices)
  config_validation.validate(config, num_devices=mesh.devices.size)
  with conv.conv_impl(config.model.get('conv_impl', 'auto')):
    return _train_and_evaluate(config, workdir, mesh)


def _train_and_evaluate(config, workdir, mesh):
  with timing.part('setup'):  # (a classifier trained here is charged to train, validation, ...)
    config_validation.check_config_unchanged(config, workdir)
    files.make_dirs(workdir)
    _save_config(config, workdir)
    weight_files = run_classifiers.imagenet_weight_files(config, workdir)
    dataset = data.load_dataset_once(config)
    config_validation.check_batch_fits(config, len(dataset.train))
    train_classifier = _classifier_trainer(config, dataset, mesh, workdir)
    classifiers, frozen, classifier_trainable = run_classifiers.prepare_classifiers(
        config, 'classifiers', dataset, workdir, weight_files, train_classifier)
    # Classifiers used only to evaluate (e.g. MQRNet's unseen ResNet, Figure 6): always frozen.
    eval_only, eval_frozen, _ = run_classifiers.prepare_classifiers(
        config, 'eval_classifiers', dataset, workdir, weight_files, train_classifier)
    frozen = parallel.replicate({**frozen, **eval_frozen}, mesh)
    evaluated = classifiers + eval_only
    spec = distortion_spec(config)
    total_epochs = config.train.pretrain_epochs + config.train.max_epochs
    qrnet = QRNet(small=config.model.small, dropout_rate=config.model.dropout_rate,
                  dtype=jnp.dtype(config.model.dtype))
  record, params = LoopRecord(), {'classifiers': {}}
  if total_epochs:  # else the classifiers alone face the distortions (Table 4's baselines)
    with timing.part('setup'):
      tx = optax.adam(config.train.learning_rate)
      state = parallel.replicate(steps.create_train_state(
          init_variables(qrnet, config.seed, config.data.image_size)['params'],
          classifier_trainable, tx, config.seed), mesh)
      phases = phases_for(mesh, qrnet=qrnet, classifiers=classifiers, tx=tx, spec=spec,
                          batch_size=config.train.batch_size,
                          pretrain_epochs=config.train.pretrain_epochs,
                          epochs=config.train.max_epochs)
    state, best, record = fit(state, phases, frozen, dataset, mesh, workdir,
                              LoopSettings.from_config(config))
    params = best.params
  results = {}
  if config.train.evaluate_test:
    with timing.part('test'):
      test_spec = evaluation_spec(config)
      results, outcomes = evaluate.evaluate_by_level(
          params, frozen, dataset.test, spec=test_spec, qrnet=qrnet, classifiers=evaluated,
          mesh=mesh, batch_size=config.train.eval_batch_size, with_qrnet=total_epochs > 0)
      timing.count('test_images', len(dataset.test) * len(results))
      samples = (evaluate.restored_samples(params, dataset.test, spec=test_spec, qrnet=qrnet)
                 if jax.process_index() == 0 and total_epochs > 0 else None)  # Figures 1 and 8
    logging.info('test results (best checkpoint, epoch %s):\n%s', record.best_epoch,
                 evaluate.format_table(results, evaluated))
    with timing.part('write'):
      if jax.process_index() == 0:  # each test image's outcome, for paired comparisons
        outcomes_lib.write(os.path.join(workdir, outcomes_lib.OUTCOMES_FILE), outcomes)
      if jax.process_index() == 0 and evaluated:
        figures.plot_run(os.path.join(workdir, 'accuracy_by_level.png'), results,
                         [c.name for c in evaluated], os.path.basename(os.path.normpath(workdir)))
      if samples is not None:
        _write_npz(os.path.join(workdir, SAMPLES_FILE), samples)
  summary = {'workdir': files.absolute(workdir),
             'final_step': int(state.step) if total_epochs else 0, 'epochs': record.epoch,
             'best_epoch': record.best_epoch, 'best_val_loss': record.best_val_loss,
             'stopped_early': record.stopped_early, 'history': record.history,
             'test': metrics_lib.json_safe(results), 'data': dataset.info,
             'trained_on': list(trained_distortions(config)),
             'devices': int(mesh.devices.size),
             'device_kind': f'{jax.devices()[0].platform} {jax.devices()[0].device_kind}'}
  with timing.part('write'):
    metrics_lib.write_json(os.path.join(workdir, 'summary.json'), summary)
  return summary


def _write_npz(path, arrays):
  buffer = io.BytesIO()
  np.savez_compressed(buffer, **arrays)
  files.write_bytes(path, buffer.getvalue())

