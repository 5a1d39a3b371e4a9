"""A run: its classifiers prepared, QRNet trained against them, the test split evaluated.

`train_and_evaluate(config, workdir)` runs (or resumes) one experiment in `workdir`: it checks the
config, loads the data, prepares the classifiers (loaded from a checkpoint, or trained first by the
loop, `loop.fit`, in WORKDIR/classifiers/NAME), trains QRNet with Algorithm 1 (the same loop),
evaluates the test split per distortion level with the best checkpoint, and writes the run's
summary (run_summary.py), per-image outcomes, Figure 4's plot and Figure 8's samples.
"""
import dataclasses
import io
import logging
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from qrnet_jax import config_schema, config_validation, data, distortions, evaluate, files, loop
from qrnet_jax import metrics as metrics_lib
from qrnet_jax import outcomes as outcomes_lib
from qrnet_jax import parallel, run_classifiers, run_summary, steps, timing
from qrnet_jax.models import QRNet, init_variables
from qrnet_jax.models import classifiers as classifier_lib
from qrnet_jax.ops import conv
from qrnet_jax.report import figures

TRAINING_RECORD = 'training.json'  # a trained classifier's epochs, beside its variables
SAMPLES_FILE = 'samples.npz'  # test images per level: clean, distorted, restored (Figure 8)


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
  classifiers = [c for group in config_schema.CLASSIFIER_GROUPS for c in config[group].values()]
  distorted = config.train.max_epochs > 0 or any(
      c.train_distorted and not c.checkpoint for c in classifiers)
  return tuple(config.distortion.types) if distorted else ()


def evaluation_spec(config) -> distortions.DistortionSpec:
  """The distortions the test split is evaluated on: config.distortion.eval_types, or where it is
  empty the training types; e.g. every corruption family, those trained on and those not."""
  return distortion_spec(config, config.distortion.eval_types or None)


def phases_for(mesh, *, qrnet, classifiers, tx, spec, batch_size, pretrain_epochs, epochs):
  """QRNet's pretraining on clean images, then Algorithm 1 with `spec` (spec=None: clean images,
  a classifier trained on the original images)."""
  static = dict(qrnet=qrnet, classifiers=classifiers)
  clean = loop.Phase('pretrain', pretrain_epochs,
                     steps.jit_train_step(mesh, tx=tx, distortion=None, **static),
                     steps.jit_eval_step(mesh, distortion=None, **static), batch_size)
  main = loop.Phase('train', epochs, steps.jit_train_step(mesh, tx=tx, distortion=spec, **static),
                    steps.jit_eval_step(mesh, distortion=spec, **static),
                    batch_size * (1 if spec is None else 2))
  return [p for p in (clean, main) if p.epochs]


# The classifiers.

@dataclasses.dataclass(frozen=True)
class PreparedClassifier:
  """A classifier ready for the run: its static spec, its frozen variables and the params of the
  part that trains with QRNet (`trainable`; none for a frozen classifier)."""
  spec: steps.Classifier
  frozen: dict
  trainable: dict

  @property
  def name(self) -> str:
    return self.spec.name


def prepare_classifiers(config, group, dataset, workdir, weight_files, mesh, show_progress=True):
  """The classifiers of config.GROUP, as PreparedClassifiers sorted by name.

  Each is loaded from `checkpoint`, or else initialised (from `init_checkpoint`, or its ImageNet
  weights when given), trained by `train_classifier` (at most `train_epochs`) and saved under
  WORKDIR/classifiers/NAME, where a rerun finds it.
  """
  prepared = []
  for name, c in sorted(config[group].items()):
    module = classifier_lib.build_classifier(c.arch, dataset.num_classes,
                                             dtype=jnp.dtype(config.model.dtype))
    if c.checkpoint:
      variables = run_classifiers.load_classifier_checkpoint(
          c.checkpoint, c.arch, module, dataset.num_classes,
          field=f'config.{group}.{name}.checkpoint')
    else:
      if c.init_checkpoint:
        initial = run_classifiers.load_classifier_checkpoint(
            c.init_checkpoint, c.arch, module, dataset.num_classes,
            field=f'config.{group}.{name}.init_checkpoint')
      else:
        initial = run_classifiers.initial_variables(
            c.arch, module, dataset.num_classes, run_classifiers.classifier_seed(config, name),
            weight_files.get(name))
      names = classifier_lib.trainable_parts(c.arch, c.clean_trainable)
      every_param = set(names) == set(initial['params'])
      spec = run_classifiers.classifier_spec(
          name, c, module, names, weight=1.,
          update_batch_stats=every_param and 'batch_stats' in initial)
      variables = run_classifiers.trained_or_saved(
          run_classifiers.trained_classifier_dir(workdir, name),
          lambda: train_classifier(config, dataset, mesh, workdir, spec, c, initial, names,
                                   show_progress),
          info={'arch': c.arch, 'num_classes': dataset.num_classes,
                'source': f'trained on {config.data.name} images in {workdir}',
                'distortions': list(config.distortion.types) if c.train_distorted else []})
    names = classifier_lib.trainable_parts(c.arch, c.trainable)
    frozen, trainable = run_classifiers.split_variables(variables, names)
    prepared.append(PreparedClassifier(
        run_classifiers.classifier_spec(name, c, module, names, c.weight), frozen, trainable))
  return tuple(prepared)


def train_classifier(config, dataset, mesh, workdir, spec, c, initial, trainable_names,
                     show_progress=True):
  """The classifier `spec.name` (config entry `c`) trained by the loop from `initial` in
  WORKDIR/classifiers/NAME, its `trainable_names` parts only: on clean images, or on Algorithm 1
  batches where `c.train_distorted`. Returns its best variables."""
  name = spec.name
  frozen, trainable = run_classifiers.split_variables(initial, trainable_names)
  batch_stats = {name: frozen['batch_stats']} if spec.update_batch_stats else {}
  tx = optax.adam(c.learning_rate)
  seed = run_classifiers.classifier_seed(config, name)
  state = parallel.replicate(steps.create_train_state(None, {name: trainable}, tx, seed,
                                                      batch_stats), mesh)
  phases = phases_for(mesh, qrnet=None, classifiers=(spec,), tx=tx,
                      spec=distortion_spec(config) if c.train_distorted else None,
                      batch_size=config.train.batch_size, pretrain_epochs=0,
                      epochs=c.train_epochs)
  directory = run_classifiers.trained_classifier_dir(workdir, name)
  _, best, record = loop.fit(state, phases, parallel.replicate({name: frozen}, mesh), dataset,
                             mesh, directory,
                             loop.LoopSettings.from_config(config, seed, show_progress),
                             desc=f'{name} ')
  logging.info('classifier %s: best validation loss %.4f at epoch %s of %d', name,
               record.best_val_loss, record.best_epoch, record.epoch)
  metrics_lib.write_json(os.path.join(directory, TRAINING_RECORD), dataclasses.asdict(record))
  best = jax.device_get(best)
  variables = {**frozen, 'params': {**frozen['params'], **best.params['classifiers'][name]}}
  if name in best.batch_stats:
    variables['batch_stats'] = best.batch_stats[name]
  return variables


# The run.

def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, devices=None,
                       show_progress: bool = True) -> run_summary.RunSummary:
  """Runs (or resumes) the whole experiment in `workdir`; returns the summary it writes there.
  Its models' convolutions run on config.model.conv_impl. show_progress=False: no progress bars
  (a suite's concurrent runs, whose bars would interleave)."""
  mesh = parallel.make_mesh(devices)
  config = config_schema.completed(config)
  config_validation.validate(config, num_devices=mesh.devices.size)
  with conv.conv_impl(config.model.conv_impl):
    return _train_and_evaluate(config, workdir, mesh, show_progress)


def _save_config(config, workdir):
  if jax.process_index() == 0:
    files.write_text(os.path.join(workdir, config_validation.CONFIG_FILE),
                     config_validation.config_json(config))


def _train_and_evaluate(config, workdir, mesh, show_progress):
  with timing.part('setup'):  # (a classifier trained here is charged to train, validation, ...)
    config_validation.check_config_unchanged(config, workdir)
    files.make_dirs(workdir)
    _save_config(config, workdir)
    weight_files = run_classifiers.imagenet_weight_files(config, workdir)
    dataset = data.load_dataset_once(config)
    config_validation.check_batch_fits(config, len(dataset.train))
    trained_with = prepare_classifiers(config, 'classifiers', dataset, workdir, weight_files, mesh,
                                       show_progress)
    # Classifiers used only to evaluate (e.g. MQRNet's unseen ResNet, Figure 6): always frozen.
    eval_only = prepare_classifiers(config, 'eval_classifiers', dataset, workdir, weight_files,
                                    mesh, show_progress)
    frozen = parallel.replicate({p.name: p.frozen for p in trained_with + eval_only}, mesh)
    classifiers = tuple(p.spec for p in trained_with)
    evaluated = tuple(p.spec for p in trained_with + eval_only)
    spec = distortion_spec(config)
    total_epochs = config.train.pretrain_epochs + config.train.max_epochs
    qrnet = QRNet(small=config.model.small, dropout_rate=config.model.dropout_rate,
                  dtype=jnp.dtype(config.model.dtype))
  record, params, final_step = loop.LoopRecord(), {'classifiers': {}}, 0
  if total_epochs:  # else the classifiers alone face the distortions (Table 4's baselines)
    with timing.part('setup'):
      tx = optax.adam(config.train.learning_rate)
      state = parallel.replicate(steps.create_train_state(
          init_variables(qrnet, config.seed, config.data.image_size)['params'],
          {p.name: p.trainable for p in trained_with}, tx, config.seed), mesh)
      phases = phases_for(mesh, qrnet=qrnet, classifiers=classifiers, tx=tx, spec=spec,
                          batch_size=config.train.batch_size,
                          pretrain_epochs=config.train.pretrain_epochs,
                          epochs=config.train.max_epochs)
    state, best, record = loop.fit(state, phases, frozen, dataset, mesh, workdir,
                                   loop.LoopSettings.from_config(config,
                                                                 show_progress=show_progress))
    params, final_step = best.params, int(state.step)
  results = {}
  if config.train.evaluate_test:
    results = _evaluate_test(config, workdir, params, frozen, dataset, evaluation_spec(config),
                             qrnet, evaluated, mesh, with_qrnet=total_epochs > 0,
                             best_epoch=record.best_epoch)
  summary = run_summary.RunSummary(
      workdir=files.absolute(workdir), final_step=final_step, epochs=record.epoch,
      best_epoch=record.best_epoch, best_val_loss=record.best_val_loss,
      stopped_early=record.stopped_early, history=record.history,
      test=metrics_lib.json_safe(results), data=dataset.info, devices=int(mesh.devices.size),
      device_kind=f'{jax.devices()[0].platform} {jax.devices()[0].device_kind}',
      trained_on=list(trained_distortions(config)))
  with timing.part('write'):
    run_summary.write(workdir, summary)
  return summary


def _evaluate_test(config, workdir, params, frozen, dataset, spec, qrnet, evaluated, mesh, *,
                   with_qrnet, best_epoch):
  """The test split per level with the best parameters; writes each image's outcomes, Figure 4's
  plot and Figure 8's samples. Returns the means per level."""
  with timing.part('test'):
    results, outcomes = evaluate.evaluate_by_level(
        params, frozen, dataset.test, spec=spec, qrnet=qrnet, classifiers=evaluated, mesh=mesh,
        batch_size=config.train.eval_batch_size, with_qrnet=with_qrnet)
    timing.count('test_images', len(dataset.test) * len(results))
    samples = (evaluate.restored_samples(params, dataset.test, spec=spec, qrnet=qrnet)
               if jax.process_index() == 0 and with_qrnet else None)  # Figures 1 and 8
  logging.info('test results (best checkpoint, epoch %s):\n%s', best_epoch,
               evaluate.format_table(results, evaluated))
  with timing.part('write'):
    if jax.process_index() == 0:  # each test image's outcome, for paired comparisons
      outcomes_lib.write(os.path.join(workdir, outcomes_lib.OUTCOMES_FILE), outcomes)
    if jax.process_index() == 0 and evaluated:
      figures.plot_run(os.path.join(workdir, 'accuracy_by_level.png'), results,
                       [c.name for c in evaluated], os.path.basename(os.path.normpath(workdir)))
    if samples is not None:
      _write_npz(os.path.join(workdir, SAMPLES_FILE), samples)
  return results


def _write_npz(path, arrays):
  buffer = io.BytesIO()
  np.savez_compressed(buffer, **arrays)
  files.write_bytes(path, buffer.getvalue())
