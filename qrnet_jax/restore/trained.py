"""A finished run's models, read back from its workdir: QRNet from a checkpoint (the best by
default) and, when asked, one of its classifiers with the variables the run evaluated it with.

Nothing here writes into the workdir: checkpoints are opened read-only, so a run still training
there is not disturbed.
"""
import dataclasses
import os
from typing import Optional

import jax
import jax.numpy as jnp
import ml_collections
import orbax.checkpoint as ocp

from qrnet_jax import config_schema, config_validation, files, run_classifiers, run_summary, steps
from qrnet_jax.errors import ConfigError
from qrnet_jax.models import QRNet, variable_shapes
from qrnet_jax.models import classifiers as classifier_lib
from qrnet_jax.weights import convert


@dataclasses.dataclass(frozen=True)
class TrainedClassifier:
  spec: steps.Classifier  # its module and name, as the run's steps use it
  frozen: dict  # its variables but the part trained with QRNet
  trainable: dict  # the part trained with QRNet (end-to-end mode; {} when frozen)
  # The side the run's data pipeline resizes images to (data.image_size): its input is resized
  # to that first, then, inside steps.classifier_logits, to its own input side where it has one
  # (VGG16 224, InceptionV3 299), as the run's evaluation feeds it.
  image_size: int
  class_names: Optional[tuple]  # from the run's dataset, where it has names


@dataclasses.dataclass(frozen=True)
class TrainedRun:
  config: ml_collections.ConfigDict
  qrnet: QRNet
  qrnet_params: dict
  classifier: Optional[TrainedClassifier]


def read_config(workdir: str) -> ml_collections.ConfigDict:
  """The run's resolved config (WORKDIR/config.json)."""
  saved = files.read_json(os.path.join(workdir, config_validation.CONFIG_FILE))
  if saved is None:
    raise ConfigError(f'--workdir={workdir}: no readable {config_validation.CONFIG_FILE}; give '
                      'the folder of a run (python -m qrnet_jax.main --workdir)')
  return config_schema.completed(ml_collections.ConfigDict(saved))  # fields added since


def classifier_names(config) -> list:
  return sorted(list(config.classifiers) + list(config.eval_classifiers))


def _classifier_entry(config, name):
  """(group, entry) of classifier NAME in config.classifiers or config.eval_classifiers."""
  for group in config_schema.CLASSIFIER_GROUPS:
    if name in config[group]:
      return group, config[group][name]
  raise ConfigError(f'--classifier={name}: not a classifier of this run; its classifiers: '
                    f'{", ".join(classifier_names(config)) or "none"}')


def _classifier_dir(config, workdir, name):
  """Where classifier NAME's variables are: its config checkpoint or the run's trained one. A
  relative checkpoint path is taken from where the run was started (a suite's runs name their
  classifier runs so): here, or else the nearest folder above the workdir that holds it."""
  _, c = _classifier_entry(config, name)
  if not c.checkpoint:
    return run_classifiers.trained_classifier_dir(workdir, name)
  if os.path.isabs(c.checkpoint) or os.path.exists(c.checkpoint):
    return c.checkpoint
  folder = os.path.abspath(workdir)
  while os.path.dirname(folder) != folder:
    folder = os.path.dirname(folder)
    if os.path.exists(os.path.join(folder, c.checkpoint)):
      return os.path.join(folder, c.checkpoint)
  return c.checkpoint


def _module(config, workdir, name):
  """(entry, module, num_classes) of classifier NAME; its class count from its saved record."""
  _, c = _classifier_entry(config, name)
  path = _classifier_dir(config, workdir, name)
  num_classes = convert.converted_info(path).get('num_classes')
  if num_classes is None:
    raise ConfigError(f'--classifier={name}: no trained classifier at {path} (the run has not '
                      'trained it yet)')
  return c, classifier_lib.build_classifier(c.arch, num_classes,
                                            dtype=jnp.dtype(config.model.dtype)), num_classes


def _abstract_params(config, workdir, qrnet):
  """Shapes of the run's trained parameters (the train state's 'params', as run.py creates it:
  QRNet's and, per classifier, the part trained with QRNet), on this process's first device."""
  size = config.data.image_size
  trainable = {}
  for name, c in config.classifiers.items():
    names = classifier_lib.trainable_parts(c.arch, c.trainable)
    trainable[name] = {}
    if names:  # end-to-end: the part trained with QRNet is in QRNet's checkpoints
      _, module, _ = _module(config, workdir, name)
      shapes = variable_shapes(module, classifier_lib.input_size(c.arch) or size)
      trainable[name] = run_classifiers.split_variables(shapes, names)[1]
  params = {'qrnet': variable_shapes(qrnet, size)['params'], 'classifiers': trainable}
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), params)


def checkpoint_step_dir(workdir: str, checkpoint: str = '') -> str:
  """The Orbax step folder to read: '' or 'best' (the run's best), 'latest', or a step folder
  (RUN/checkpoints/latest/1200)."""
  if checkpoint and checkpoint not in ('best', 'latest'):
    if not files.is_dir(os.path.join(checkpoint, 'state')):
      raise ConfigError(f'--checkpoint={checkpoint}: not a checkpoint step folder (one with a '
                        'state/ folder, e.g. RUN/checkpoints/latest/1200), best or latest')
    return files.absolute(checkpoint)
  root = os.path.join(files.absolute(workdir), 'checkpoints', checkpoint or 'best')
  names = [p.name for p in files.as_path(root).iterdir()] if files.is_dir(root) else []
  steps_saved = sorted(int(n) for n in names if n.isdigit())
  if not steps_saved:
    raise ConfigError(f'--workdir={workdir}: no {checkpoint or "best"} checkpoint in {root} (a run '
                      'that trained no QRNet, or one that has not finished an epoch)')
  return os.path.join(root, str(steps_saved[-1]))


def restore_params(step_dir: str, abstract_params):
  """The trained parameters (the train state's 'params') of one checkpoint step folder, opened
  read-only. Only that subtree is read: the optimizer state beside it, whatever its optimizer, is
  neither needed nor read."""
  target = {'params': abstract_params}
  manager = ocp.CheckpointManager(os.path.dirname(step_dir),
                                  options=ocp.CheckpointManagerOptions(read_only=True))
  try:
    restored = manager.restore(int(os.path.basename(step_dir)), args=ocp.args.Composite(
        state=ocp.args.PyTreeRestore(
            item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target),
            partial_restore=True)))
  finally:
    manager.close()
  return restored.state['params']


def load_run(workdir: str, checkpoint: str = '', classifier: str = '') -> TrainedRun:
  """QRNet with its parameters from `checkpoint` (see checkpoint_step_dir), and classifier NAME
  (none when empty) with the variables the run evaluates it with."""
  if not files.is_dir(workdir):
    raise ConfigError(f'--workdir={workdir}: not a folder')
  config = read_config(workdir)
  qrnet = QRNet(small=config.model.small, dropout_rate=config.model.dropout_rate,
                dtype=jnp.dtype(config.model.dtype))
  params = restore_params(checkpoint_step_dir(workdir, checkpoint),
                         _abstract_params(config, workdir, qrnet))
  trained = None
  if classifier:
    trained = _trained_classifier(config, workdir, classifier, params['classifiers'])
  return TrainedRun(config, qrnet, params['qrnet'], trained)


def _trained_classifier(config, workdir, name, trained_params):
  c, module, num_classes = _module(config, workdir, name)
  group, _ = _classifier_entry(config, name)
  variables = run_classifiers.load_classifier_checkpoint(
      _classifier_dir(config, workdir, name), c.arch, module, num_classes,
      field=f'config.{group}.{name}.checkpoint')
  names = classifier_lib.trainable_parts(c.arch, c.trainable)
  frozen, trainable = run_classifiers.split_variables(variables, names)
  trainable = trained_params.get(name, trainable)  # end-to-end: the part trained with QRNet
  summary = run_summary.read(workdir)
  class_names = summary.class_names if summary else None
  return TrainedClassifier(
      spec=run_classifiers.classifier_spec(name, c, module, names, c.weight), frozen=frozen,
      trainable=trainable,
      image_size=config.data.image_size,
      class_names=tuple(class_names) if class_names and len(class_names) == num_classes else None)
