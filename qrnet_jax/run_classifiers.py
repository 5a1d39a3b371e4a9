"""A run's classifier variables: the official ImageNet weights' files, initial variables,
checkpoints checked against their module, a trained classifier saved once and reused, and the
split into frozen variables and the part that trains.

run.prepare_classifiers puts these together (training a classifier with the loop where needed); a
trained classifier is saved under WORKDIR/classifiers/NAME in the weight converter's format, so it
is reused by a rerun and is `classifiers.NAME.checkpoint` of other runs.
"""
import logging
import os
import zlib

import jax
import numpy as np
from jax.experimental import multihost_utils

from qrnet_jax import config_schema, files, steps
from qrnet_jax.models import init_variables, variable_shapes
from qrnet_jax.models import classifiers as classifier_lib
from qrnet_jax.weights import convert

WEIGHTS_CACHE = os.path.join(os.environ.get('XDG_CACHE_HOME', os.path.expanduser('~/.cache')),
                             'qrnet_jax', 'weights')


def trained_classifier_dir(workdir, name):
  """Where a run keeps the classifier NAME it trained (its checkpoints, then its variables)."""
  return os.path.join(workdir, 'classifiers', name)


def is_trained(path) -> bool:
  """Whether `path` holds a classifier saved by `trained_or_saved` (or converted): its
  classifier.json, written last, is readable."""
  return bool(convert.converted_info(path).get('arch'))


def imagenet_weight_files(config, workdir) -> dict:
  """{classifier name: official Keras .h5 path} for classifiers that start from ImageNet weights.

  `keras_h5` is used when set; otherwise the official file is taken from WEIGHTS_CACHE or
  downloaded there (md5 checked). Offline this fails at once, saying which file to fetch from
  where and which config field takes its path. Runs before any data loading.
  """
  from qrnet_jax import weights  # pylint: disable=g-import-not-at-top
  found = {}
  for group in config_schema.CLASSIFIER_GROUPS:
    for name, c in sorted(config[group].items()):
      if c.checkpoint or c.init_checkpoint or not (c.keras_h5 or c.imagenet):
        continue
      if is_trained(trained_classifier_dir(workdir, name)):
        continue  # trained by an earlier attempt of this run: resuming needs no download
      keras_h5 = c.keras_h5
      if keras_h5 and files.is_remote(keras_h5):  # h5py reads local files only
        keras_h5 = files.local_copy(keras_h5, os.path.join(WEIGHTS_CACHE, 'gcs'))
      found[name] = keras_h5 or weights.fetch_weights(
          c.arch, WEIGHTS_CACHE, field=f'config.{group}.{name}.keras_h5')
  return found


def _init_size(arch):
  """Image side to initialise a classifier at: its fixed input size, or any (32) if it has none."""
  return classifier_lib.input_size(arch) or 32


def initial_variables(arch, module, num_classes, seed, keras_h5=None):
  """A classifier's variables before training: the ported ImageNet weights (a new head for
  `num_classes`), or a random initialisation."""
  if keras_h5:
    from qrnet_jax import weights  # pylint: disable=g-import-not-at-top
    return weights.load_keras_h5(keras_h5, arch, num_classes=num_classes, rng=seed)
  return jax.device_get(init_variables(module, seed, _init_size(arch)))


def load_classifier_checkpoint(path, arch, module, num_classes, field='checkpoint'):
  """Variables from a converted or trained classifier directory, checked against `module`."""
  from qrnet_jax.weights import keras_h5  # pylint: disable=g-import-not-at-top
  info = convert.converted_info(path)
  if (info.get('arch'), info.get('num_classes')) != (arch, num_classes):
    raise ValueError(f'{field}: classifier checkpoint {path} holds {info.get("arch")} with '
                     f'{info.get("num_classes")} classes; the config asks for {arch} with '
                     f'{num_classes} (the dataset\'s class count)')
  variables = convert.load_converted(path)
  expected = variable_shapes(module, _init_size(arch))
  keras_h5.check_structure(variables, expected)
  return variables


def trained_or_saved(path, train_fn, info: dict):
  """Variables saved at `path`, or `train_fn()`'s result saved there first (so reruns reuse it).

  The format is the weight converter's (`variables/` + `classifier.json` holding `info`).
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


def classifier_seed(config, name) -> int:
  """One random stream per classifier name: the run's seed folded with a stable hash of the name
  (CRC-32 of its UTF-8 bytes; Python's hash() differs between processes), so names with the same
  letters get streams of their own, the same in every config with this seed."""
  key = jax.random.fold_in(jax.random.PRNGKey(config.seed), zlib.crc32(name.encode('utf-8')))
  return int(jax.random.randint(key, (), 0, 2 ** 31 - 1))


def classifier_spec(name, c, module, trainable_names, weight, update_batch_stats=False):
  return steps.Classifier(name=name, module=module, weight=float(weight),
                          trainable=tuple(trainable_names),
                          input_size=classifier_lib.input_size(c.arch),
                          update_batch_stats=update_batch_stats)


def split_variables(variables, trainable_names):
  """(frozen variables, trainable params): the frozen part keeps every non-param collection."""
  trainable, frozen_params = steps.split_params(variables['params'], tuple(trainable_names))
  return {**variables, 'params': frozen_params}, trainable
