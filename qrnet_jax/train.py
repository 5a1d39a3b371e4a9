"""The training loop: classifiers prepared and frozen, QRNet pretrained on clean images, then
Algorithm 1 with validation every epoch, early stopping, checkpoints, metrics and a summary.
"""
import functools
import json
import logging
import math
import os
import time

import jax
import jax.numpy as jnp
import ml_collections
import optax
import tqdm
from jax.experimental import multihost_utils

from qrnet_jax import checkpointing, classifier_training, config_validation, data, evaluate
from qrnet_jax import metrics as metrics_lib
from qrnet_jax import parallel, steps
from qrnet_jax.models import QRNet
from qrnet_jax.models import classifiers as classifier_lib

VALIDATION_SEED_SALT = 7919  # validation distortions: the same every epoch, independent of training


def distortion_spec(config) -> steps.DistortionSpec:
  levels = {'noise': tuple(config.distortion.noise_levels),
            'blur': tuple(config.distortion.blur_levels)}
  types = tuple(config.distortion.types)
  return steps.DistortionSpec(types=types, levels=tuple((t, levels[t]) for t in types))


WEIGHTS_CACHE = os.path.join(os.environ.get('XDG_CACHE_HOME', os.path.expanduser('~/.cache')),
                             'qrnet_jax', 'weights')


def imagenet_weight_files(config, workdir) -> dict:
  """{classifier name: official Keras .h5 path} for classifiers that start from ImageNet weights.

  `keras_h5` is used when set; otherwise the official file is taken from WEIGHTS_CACHE or
  downloaded there (md5 checked). Offline this fails at once, saying which file to fetch from
  where and which config field takes its path. Runs before any data loading.
  """
  from qrnet_jax import weights  # pylint: disable=g-import-not-at-top
  files = {}
  for group in ('classifiers', 'eval_classifiers'):
    for name, c in sorted(config.get(group, {}).items()):
      if c.get('checkpoint') or not (c.get('keras_h5') or c.get('imagenet', False)):
        continue
      if classifier_training.is_trained(trained_classifier_dir(workdir, name)):
        continue  # trained by an earlier attempt of this run: resuming needs no download
      files[name] = c.get('keras_h5') or weights.fetch_weights(
          c.arch, WEIGHTS_CACHE, field=f'config.{group}.{name}.keras_h5')
  return files


def trained_classifier_dir(workdir, name):
  """Where a run keeps the classifier NAME it trained on clean images."""
  return os.path.join(workdir, 'classifiers', name)


def _initial_classifier_variables(c, keras_h5, module, num_classes, seed):
  if keras_h5:
    from qrnet_jax import weights  # pylint: disable=g-import-not-at-top
    return weights.load_keras_h5(keras_h5, c.arch, num_classes=num_classes, rng=seed)
  return jax.device_get(init_variables(module, seed, _init_size(c.arch)))


def _init_size(arch):
  """Image side to initialise a classifier at: its fixed input size, or any (32) if it has none."""
  return classifier_lib.input_size(arch) or 32


def init_variables(module, seed: int, image_size: int):
  """module.init on one (image_size x image_size) image, jitted: one compiled program instead of
  hundreds of eager ops (which are slow on multi-process runs)."""
  images = jnp.zeros((1, image_size, image_size, 3))
  return jax.jit(functools.partial(module.init, train=False))(jax.random.PRNGKey(seed), images)


def load_classifier_checkpoint(path, arch, module, num_classes, field='checkpoint'):
  """Variables from a converted or trained classifier directory, checked against `module`."""
  from qrnet_jax.weights import convert, keras_h5  # pylint: disable=g-import-not-at-top
  info = convert.converted_info(path)
  if (info.get('arch'), info.get('num_classes')) != (arch, num_classes):
    raise ValueError(f'{field}: classifier checkpoint {path} holds {info.get("arch")} with '
                     f'{info.get("num_classes")} classes; the config asks for {arch} with '
                     f'{num_classes} (the dataset\'s class count)')
  variables = convert.load_converted(path)
  expected = jax.eval_shape(functools.partial(init_variables, module, 0, _init_size(arch)))
  keras_h5.check_structure(variables, expected)
  return variables


def prepare_classifiers(config, classifier_configs, dataset, workdir, mesh, weight_files=None,
                        field_prefix='config.classifiers'):
  """Classifiers by name: (static specs, frozen variables, trainable params).

  Each is loaded from `checkpoint`, or else initialised (from `keras_h5` when given) and trained on
  the clean training images for `train_epochs` (saved under WORKDIR/classifiers/NAME and reused).
  """
  specs, frozen, trainable = [], {}, {}
  for name, c in sorted(classifier_configs.items()):
    seed = config.seed + sum(map(ord, name))  # one stream per classifier, stable across configs
    module = classifier_lib.build_classifier(c.arch, dataset.num_classes,
                                             dtype=jnp.dtype(config.model.dtype))
    if c.checkpoint:
      variables = load_classifier_checkpoint(c.checkpoint, c.arch, module, dataset.num_classes,
                                             field=f'{field_prefix}.{name}.checkpoint')
    else:
      distorted = c.get('train_distorted', False)
      initial = _initial_classifier_variables(c, (weight_files or {}).get(name), module,
                                              dataset.num_classes, seed)
      train_names = classifier_lib.trainable_parts(c.arch, c.get('clean_trainable', 'all'))
      variables = classifier_training.trained_classifier_variables(
          trained_classifier_dir(workdir, name),
          lambda: classifier_training.train_classifier(
              module, initial, train_names, dataset, epochs=c.train_epochs,
              batch_size=config.train.batch_size, learning_rate=c.learning_rate,
              seed=seed, mesh=mesh, name=name, input_size=classifier_lib.input_size(c.arch),
              distortion=distortion_spec(config) if distorted else None),
          info={'arch': c.arch, 'num_classes': dataset.num_classes,
                'source': f'trained on {config.data.name} images in {workdir}',
                'distortions': list(config.distortion.types) if distorted else []})
    names = classifier_lib.trainable_parts(c.arch, c.get('trainable', 'none'))
    trainable[name], frozen_params = steps.split_params(variables['params'], names)
    frozen[name] = {**variables, 'params': frozen_params}
    specs.append(steps.Classifier(name=name, module=module, weight=float(c.get('weight', 0.)),
                                  trainable=tuple(names),
                                  input_size=classifier_lib.input_size(c.arch)))
  return tuple(specs), frozen, trainable


def load_dataset_once(config):
  """The dataset; on several processes, process 0 prepares it first (extracts archives, writes the
  split file and a disk cache) while the others wait, then they read what it prepared."""
  if jax.process_count() == 1:
    return data.load_dataset(config.data, config.seed)
  if jax.process_index() == 0:
    dataset = data.load_dataset(config.data, config.seed)
    if config.data.get('cache') == 'disk' and hasattr(dataset.train, 'prepare'):
      dataset.train.prepare()  # fills the shared cache file the splits read from
    multihost_utils.sync_global_devices('qrnet_jax: dataset prepared')
    return dataset
  multihost_utils.sync_global_devices('qrnet_jax: dataset prepared')
  return data.load_dataset(config.data, config.seed)


def _mean_terms(sums):
  sums = jax.device_get(sums)
  count = sums.pop('count')
  return {name: float(value / count) for name, value in sums.items()}


def validation_terms(eval_fn, params, frozen, source, mesh, batch_size, seed):
  """Mean per-image terms over the whole split; distortions drawn from fixed keys."""
  totals = None
  base = jax.random.fold_in(jax.random.PRNGKey(seed), VALIDATION_SEED_SALT)
  batches = data.eval_batches(source, batch_size, jax.process_index(), jax.process_count())
  for index, batch in enumerate(batches):
    sums = eval_fn(params, frozen, parallel.global_batch(batch, mesh),
                   jax.random.fold_in(base, index))
    totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
  return _mean_terms(totals)


def _new_record():
  return {'epoch': 0, 'best_val_loss': None, 'best_epoch': None,
          'epochs_without_improvement': 0, 'stopped_early': False, 'history': []}


# Fields a resumed run may change: they do not alter the training trajectory.
RESUMABLE_CHANGES = ('train.max_epochs', 'train.early_stopping_patience', 'train.log_every_steps',
                     'train.checkpoint_every_steps', 'train.checkpoints_to_keep',
                     'train.evaluate_test', 'data.data_dir', 'data.num_workers', 'data.cache',
                     'data.cache_dir', 'data.download')


def _flat(tree, prefix=''):
  if isinstance(tree, dict):
    return {k: v for key, sub in tree.items() for k, v in _flat(sub, f'{prefix}{key}.').items()}
  return {prefix[:-1]: tree}


def check_config_unchanged(config, workdir):
  """Stops a rerun in `workdir` whose config would change the run it resumes."""
  path = os.path.join(workdir, 'config.json')
  if not os.path.isfile(path):
    return
  with open(path) as f:
    saved = _flat(json.load(f))
  now = _flat(json.loads(config.to_json_best_effort()))
  changed = sorted(k for k in set(saved) | set(now)
                   if saved.get(k) != now.get(k) and k not in RESUMABLE_CHANGES)
  if changed:
    details = '; '.join(f'config.{k}: {saved.get(k)!r} -> {now.get(k)!r}' for k in changed)
    raise config_validation.ConfigError(
        f'{workdir} holds a run made with another config ({details}); resuming would mix the two. '
        f'Use a new --workdir, or set those fields back.')


def _save_config(config, workdir):
  if jax.process_index() == 0:
    with open(os.path.join(workdir, 'config.json'), 'w') as f:
      f.write(config.to_json_best_effort(indent=2, sort_keys=True))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, devices=None) -> dict:
  """Runs (or resumes) the whole experiment in `workdir`; returns the summary it writes there."""
  mesh = parallel.make_mesh(devices)
  config_validation.validate(config, num_devices=mesh.devices.size)
  check_config_unchanged(config, workdir)
  os.makedirs(workdir, exist_ok=True)
  _save_config(config, workdir)
  batch_size = config.train.batch_size
  weight_files = imagenet_weight_files(config, workdir)
  dataset = load_dataset_once(config)
  classifiers, frozen, classifier_trainable = prepare_classifiers(
      config, config.classifiers, dataset, workdir, mesh, weight_files)
  # Classifiers used only to evaluate (e.g. MQRNet's unseen ResNet, Figure 6): always frozen.
  eval_only, eval_frozen, _ = prepare_classifiers(
      config, config.get('eval_classifiers', {}), dataset, workdir, mesh, weight_files,
      field_prefix='config.eval_classifiers')
  frozen = parallel.replicate({**frozen, **eval_frozen}, mesh)
  evaluated = classifiers + eval_only

  qrnet = QRNet(small=config.model.small, dropout_rate=config.model.dropout_rate,
                dtype=jnp.dtype(config.model.dtype))
  side = config.data.image_size
  qrnet_params = init_variables(qrnet, config.seed, side)['params']
  tx = optax.adam(config.train.learning_rate)
  state = parallel.replicate(
      steps.create_train_state(qrnet_params, classifier_trainable, tx, config.seed), mesh)

  checkpoints = checkpointing.Checkpoints(workdir, keep=config.train.checkpoints_to_keep)
  restored = checkpoints.restore_latest(checkpointing.abstract_like(state))
  record = _new_record()
  if restored is not None:
    state, record = restored
    logging.info('resumed from %s at step %d, epoch %d', workdir, int(state.step), record['epoch'])

  spec = distortion_spec(config)
  static = dict(qrnet=qrnet, classifiers=classifiers)
  pretrain_step = steps.jit_train_step(mesh, tx=tx, distortion=None, **static)
  train_step = steps.jit_train_step(mesh, tx=tx, distortion=spec, **static)
  pretrain_eval = steps.jit_eval_step(mesh, distortion=None, **static)
  train_eval = steps.jit_eval_step(mesh, distortion=spec, **static)

  writer = metrics_lib.MetricWriter(workdir)
  per_epoch = data.steps_per_epoch(len(dataset.train), batch_size)
  batches = data.train_batches(dataset.train, batch_size, config.seed, int(state.step),
                               jax.process_index(), jax.process_count())
  pretrain_epochs = config.train.pretrain_epochs
  total_epochs = pretrain_epochs + config.train.max_epochs
  try:
    while record['epoch'] < total_epochs and not record['stopped_early']:
      epoch = record['epoch']
      pretraining = epoch < pretrain_epochs
      phase = 'pretrain' if pretraining else 'train'
      step_fn = pretrain_step if pretraining else train_step
      images_per_step = batch_size * (1 if pretraining else 2)

      def save_mid_epoch(state, partial):  # a killed run resumes here, mid-epoch
        checkpoints.save(int(state.step), state, {**record, 'epoch_partial': partial})

      state, train_metrics = _run_epoch(
          state, step_fn, batches, frozen, mesh, range(int(state.step) - epoch * per_epoch,
                                                       per_epoch),
          record.pop('epoch_partial', None), images_per_step, writer, config.train,
          save_mid_epoch, desc=f'{phase} epoch {epoch + 1}/{total_epochs}')
      val = validation_terms(pretrain_eval if pretraining else train_eval, state.params, frozen,
                             dataset.val, mesh, batch_size, config.seed)
      metrics_lib.check_finite(val, f'validation after epoch {epoch + 1}')
      step = int(state.step)
      writer.write_scalars(step, {f'val/{k}': v for k, v in val.items()})
      record['history'].append({'epoch': epoch + 1, 'phase': phase, 'step': step,
                                'train': train_metrics, 'val': val})
      record['epoch'] = epoch + 1
      improved = not pretraining and (record['best_val_loss'] is None
                                      or val['loss'] < record['best_val_loss'])
      if improved:
        record.update(best_val_loss=val['loss'], best_epoch=epoch + 1,
                      epochs_without_improvement=0)
      elif not pretraining:
        record['epochs_without_improvement'] += 1
        # Early stopping after `patience` epochs without a better validation loss (Sec. IV-A).
        if record['epochs_without_improvement'] >= config.train.early_stopping_patience:
          record['stopped_early'] = True
          logging.info('early stopping after epoch %d', epoch + 1)
      checkpoints.save(step, state, record, val_loss=val['loss'] if improved else None)
    checkpoints.latest.wait_until_finished()
    checkpoints.best.wait_until_finished()
    results = {}
    if config.train.evaluate_test:
      best = checkpoints.restore_best(checkpointing.abstract_like(state))
      final_params = best[0].params if best is not None else state.params
      results = evaluate.evaluate_by_level(
          final_params, frozen, dataset.test, spec=spec, qrnet=qrnet,
          classifiers=evaluated, mesh=mesh, batch_size=batch_size, with_qrnet=total_epochs > 0)
      logging.info('test results (best checkpoint, epoch %s):\n%s', record['best_epoch'],
                   evaluate.format_table(results, evaluated))
      if jax.process_index() == 0 and evaluated:
        evaluate.plot_results(results, evaluated, os.path.join(workdir, 'accuracy_by_level.png'))
  finally:
    checkpoints.close()
    writer.close()
  summary = {'workdir': os.path.abspath(workdir), 'final_step': int(state.step),
             'epochs': record['epoch'], 'best_epoch': record['best_epoch'],
             'best_val_loss': record['best_val_loss'], 'stopped_early': record['stopped_early'],
             'history': record['history'], 'test': _json_safe(results),
             'data': dataset.info, 'devices': int(mesh.devices.size)}
  metrics_lib.write_json(os.path.join(workdir, 'summary.json'), summary)
  return summary


def _json_safe(tree):
  return jax.tree.map(lambda v: v if not isinstance(v, float) or math.isfinite(v) else None, tree)


def _run_epoch(state, step_fn, batches, frozen, mesh, step_indices, partial, images_per_step,
               writer, train_config, save_mid_epoch, desc):
  """The epoch's train steps `step_indices` (all, or the rest after a mid-epoch resume).

  Returns the state and the epoch's mean train metrics; `partial` holds the sums of the steps run
  before a resume, so the means are those of an uninterrupted epoch.
  """
  num_steps = step_indices.stop
  totals = (partial or {}).get('totals')
  window_start, window_steps = time.perf_counter(), 0
  start, start_index = window_start, step_indices.start
  bar = tqdm.tqdm(total=num_steps, initial=start_index, desc=desc, leave=False,
                  disable=jax.process_index() != 0)
  step = int(state.step)  # counted on the host: reading state.step would sync every step
  for i in step_indices:
    state, metrics = step_fn(state, parallel.global_batch(next(batches), mesh), frozen)
    totals = metrics if totals is None else jax.tree.map(jnp.add, totals, metrics)
    window_steps += 1
    step += 1
    if (i + 1) % train_config.log_every_steps == 0 or i + 1 == num_steps:
      scalars = jax.device_get(metrics)
      metrics_lib.check_finite(scalars, f'step {step}')
      now = time.perf_counter()
      scalars['images_per_second'] = window_steps * images_per_step / (now - window_start)
      window_start, window_steps = now, 0
      writer.write_scalars(step, {f'train/{k}': v for k, v in scalars.items()}, log=False)
      bar.set_postfix(loss=f"{scalars['loss']:.4f}", img_s=f"{scalars['images_per_second']:.0f}")
    every = train_config.checkpoint_every_steps
    if every and step % every == 0 and i + 1 < num_steps:
      host_totals = {k: float(v) for k, v in jax.device_get(totals).items()}
      metrics_lib.check_finite(host_totals, f'step {step}')
      save_mid_epoch(state, {'totals': host_totals})
    bar.update(1)
  bar.close()
  means = {k: float(v) / num_steps for k, v in jax.device_get(totals).items()}
  metrics_lib.check_finite(means, desc)
  means['images_per_second'] = ((num_steps - start_index) * images_per_step
                                / (time.perf_counter() - start))
  logging.info('%s: %s', desc, ', '.join(f'{k}={v:.4g}' for k, v in sorted(means.items())))
  return state, means
