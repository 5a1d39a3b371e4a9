"""Checks every config field before any data loading or compilation: the one validator.

`validate` checks a run's config; `validate_data` its data fields alone (what data.load_dataset
needs); `validate_suite` a suite's own fields (configs/suites/); `check_batch_divisible` a batch
against the devices or processes; `check_training_start` where a classifier's training starts.
Each error names the field (as it is written on the command line, `config.a.b`) and what is allowed.
"""
import hashlib
import json
import math
import os

import jax
import numpy as np
from jax.experimental import multihost_utils

from qrnet_jax import config_schema, corruptions, distortions, files
from qrnet_jax.errors import ConfigError  # re-exported: config_validation.ConfigError
from qrnet_jax.models import classifiers as classifier_lib
from qrnet_jax.models.qrnet import SIZE_MULTIPLE
from qrnet_jax.ops import conv, onednn

# No float16: training has no loss scaling, which float16 gradients would need.
DTYPES = ('float32', 'bfloat16')


def _require(condition, field, message):
  if not condition:
    raise ConfigError(f'config.{field}: {message}')


def _is_int(value):
  return isinstance(value, int) and not isinstance(value, bool)


def _is_finite_number(value):
  """An int or float that is not a bool, infinity or NaN."""
  return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _positive_int(config, field):
  value = _get(config, field)
  _require(_is_int(value) and value > 0, field, f'must be a positive integer, got {value!r}')


def _non_negative_int(config, field):
  value = _get(config, field)
  _require(_is_int(value) and value >= 0, field, f'must be an integer >= 0, got {value!r}')


def _get(config, field):
  value = config
  for part in field.split('.'):
    if part not in value:
      raise ConfigError(f'config.{field}: missing')
    value = value[part]
  return value


def validate(config, num_devices: int = 1, num_processes: int = 1):
  """Raises ConfigError naming the first bad field; returns None when the config is usable.
  Fields the config leaves out are checked at their defaults (config_schema)."""
  config = config_schema.completed(config)
  seed = _get(config, 'seed')
  _require(_is_int(seed), 'seed', f'must be an integer, got {seed!r}')
  _validate_data(config)
  _validate_model(config)
  _validate_distortion(config)
  _validate_classifiers(config)
  _validate_train(config, num_devices, num_processes)


def _validate_data(config):
  size = _get(config, 'data.image_size')
  _require(_is_int(size) and size > 0 and size % SIZE_MULTIPLE == 0, 'data.image_size',
           f'must be a positive multiple of {SIZE_MULTIPLE} (QRNet pools four times), got {size!r}')
  validate_data(config.data)


def validate_data(data_config) -> None:
  """The data fields alone (what data.load_dataset needs, at any image size): raises ConfigError
  naming the field; reads no data (cheap stat calls only)."""
  data_config = config_schema.completed_data(data_config)
  name = data_config.get('name', None)
  _require(name in config_schema.DATASETS, 'data.name',
           f'unknown dataset {name!r}; allowed: {config_schema.DATASETS}')
  size = data_config.get('image_size', None)
  _require(_is_int(size) and size > 0, 'data.image_size', f'{size!r}; must be a positive integer')
  for field, allowed in (('resize', config_schema.RESIZE_POLICIES),
                         ('cache', config_schema.CACHE_MODES)):
    _require(data_config[field] in allowed, f'data.{field}',
             f'{data_config[field]!r}; allowed: {allowed}')
  workers = data_config.num_workers
  _require(_is_int(workers) and workers >= 0, 'data.num_workers',
           f'{workers!r}; must be 0 (decode in threads of the main process) or a number of worker '
           'processes')
  seed = data_config.split_seed
  _require(_is_int(seed) and seed >= 0, 'data.split_seed',
           f'{seed!r}; must be a non-negative integer')
  checksum = data_config.archive_checksum
  if checksum:
    algorithm, _, digest = checksum.partition(':')
    length = {'sha256': 64, 'md5': 32}.get(algorithm.lower())
    _require(len(digest) == length and all(c in '0123456789abcdefABCDEF' for c in digest),
             'data.archive_checksum', f'{checksum!r}; expected sha256:<64 hex> or md5:<32 hex>, '
             'or empty for the official checksums')
  for field in ('max_train_examples', 'max_eval_examples', 'max_test_examples'):
    value = data_config[field]
    _require((field == 'max_test_examples' and value is None) or (_is_int(value) and value >= 0),
             f'data.{field}', f'{value!r}; must be 0 (all) or a positive integer')
  data_dir = data_config.data_dir or ''
  if name == 'synthetic':
    num_classes, num_examples = data_config.num_classes, data_config.num_examples
    _require(_is_int(num_classes) and num_classes >= 2, 'data.num_classes',
             f'{num_classes!r}; synthetic needs at least 2')
    _require(_is_int(num_examples) and num_examples >= 5 * num_classes, 'data.num_examples',
             f'{num_examples!r}; synthetic needs at least 5 per class ({5 * num_classes})')
  elif name in ('folder', 'caltech101', 'caltech256'):
    _require(data_dir, 'data.data_dir', f'empty; dataset {name!r} reads its images from that '
             'folder')
  elif name == 'tfds':
    _require(data_config.tfds_name, 'data.tfds_name',
             "empty; dataset 'tfds' needs the name of a prepared TFDS dataset")
  # fashion_mnist may fetch its files into a data_dir that does not exist yet (when downloading).
  fetches = name == 'fashion_mnist' and data_config.download
  if data_dir and name != 'synthetic' and not fetches:
    _require(files.reachable(data_dir, 'config.data.data_dir', files.is_dir), 'data.data_dir',
             f'{data_dir} does not exist'
             + (' (and config.data.download is off)' if name == 'fashion_mnist' else ''))


def _validate_model(config):
  _require(isinstance(_get(config, 'model.small'), bool), 'model.small', 'must be True or False')
  rate = _get(config, 'model.dropout_rate')
  _require(isinstance(rate, (int, float)) and 0 <= rate < 1, 'model.dropout_rate',
           f'must be in [0, 1), got {rate!r}')
  _require(_get(config, 'model.dtype') in DTYPES, 'model.dtype',
           f'unknown dtype {config.model.dtype!r}; allowed: {", ".join(DTYPES)}')
  conv_impl = _get(config, 'model.conv_impl')
  _require(conv_impl in conv.CONV_IMPLS, 'model.conv_impl',
           f'unknown conv_impl {conv_impl!r}; allowed: {", ".join(conv.CONV_IMPLS)}')
  _require(conv_impl != 'onednn' or onednn.available(), 'model.conv_impl',
           'onednn, but the oneDNN extension is not built on this machine (bash '
           'scripts/setup_env.sh builds it on x86_64 Linux); use auto or xla')


def _validate_distortion(config):
  allowed = (f"allowed: {', '.join(distortions.DISTORTION_TYPES)} (the paper's) and ImageNet-C's "
             f"corruption families {', '.join(distortions.CORRUPTION_TYPES)}")
  for field, needed in (('distortion.types', True), ('distortion.eval_types', False)):
    types = tuple(_get(config, field))
    _require(len(types) > 0 or not needed, field, 'needs at least one distortion type')
    for t in types:
      _require(t in distortions.TYPES, field, f'unknown distortion {t!r}; {allowed}')
    _require(len(set(types)) == len(types), field, f'repeats a type: {types}')
  severities = tuple(_get(config, 'distortion.severities'))
  _require(len(severities) > 0 and len(set(severities)) == len(severities)
           and all(_is_int(s) and s in corruptions.SEVERITIES for s in severities),
           'distortion.severities', 'must be distinct integers, allowed: '
           f'{", ".join(map(str, corruptions.SEVERITIES))} (ImageNet-C\'s severities); got '
           f'{severities!r}')
  for t in distortions.DISTORTION_TYPES:
    field = f'distortion.{t}_levels'
    levels = tuple(_get(config, field))
    _require(len(levels) > 0 and all(_is_finite_number(v) and v > 0 for v in levels),
             field, f'must be a non-empty list of finite positive numbers, got {levels!r}')
  side = config.data.image_size
  too_strong = [s for s in _get(config, 'distortion.blur_levels')
                if s > distortions.max_blur_sigma(side)]
  _require(not too_strong, 'distortion.blur_levels',
           f'{too_strong} above {distortions.max_blur_sigma(side):g} px, the image side '
           '(config.data.image_size): such a blur flattens the image to its mean, and its kernel '
           'only costs time')


def _validate_classifiers(config):
  entries = [f'classifiers.{name}' for name in _get(config, 'classifiers')]
  for name in config.eval_classifiers:
    field = f'eval_classifiers.{name}'
    _require(name not in config.classifiers, field,
             'a classifier of that name is already in config.classifiers')
    _require(_get(config, f'{field}.trainable') == 'none', f'{field}.trainable',
             'evaluation-only classifiers are frozen; use none')
    entries.append(field)
  for field in entries:
    c = _get(config, field)
    arch = _get(config, f'{field}.arch')
    _require(arch in classifier_lib.CLASSIFIERS, f'{field}.arch',
             f'unknown classifier {arch!r}; allowed: '
             f'{", ".join(sorted(classifier_lib.CLASSIFIERS))}')
    weight = _get(config, f'{field}.weight')
    _require(_is_finite_number(weight) and weight >= 0, f'{field}.weight',
             f'lambda must be a finite number >= 0, got {weight!r}')
    rate = c.learning_rate
    _require(_is_finite_number(rate) and rate > 0, f'{field}.learning_rate',
             f'must be a finite number > 0, got {rate!r}')
    for partition_field, partition in (('trainable', _get(config, f'{field}.trainable')),
                                       ('clean_trainable', c.clean_trainable)):
      _require(partition in classifier_lib.PARTITIONS, f'{field}.{partition_field}',
               f'unknown partition {partition!r}; allowed: {", ".join(classifier_lib.PARTITIONS)}')
    checkpoint = _get(config, f'{field}.checkpoint')
    init_checkpoint = c.init_checkpoint
    for path_field, path in (('checkpoint', checkpoint), ('keras_h5', c.keras_h5),
                             ('init_checkpoint', init_checkpoint)):
      if path:
        _check_path_exists(path, f'{field}.{path_field}')
    _require(not (init_checkpoint and checkpoint), f'{field}.init_checkpoint',
             'a classifier with a trained checkpoint is not trained again; set one of checkpoint '
             'and init_checkpoint')
    check_training_start(c, field)
    if c.imagenet or c.keras_h5:
      from qrnet_jax import weights  # pylint: disable=g-import-not-at-top
      _require(arch in weights.KERAS_WEIGHTS, f'{field}.imagenet',
               f'no official ImageNet weights for {arch!r}; those exist for '
               f'{", ".join(sorted(weights.KERAS_WEIGHTS))}')
    _non_negative_int(config, f'{field}.train_epochs')
    _require(checkpoint or c.train_epochs > 0, f'{field}.checkpoint',
             'a classifier needs either a trained checkpoint or train_epochs > 0 to train one')


def check_training_start(c, field):
  """The one rule of where a classifier's training starts: from `init_checkpoint` (Table 4's
  fine-tuning starts from the clean-trained classifier) or from the ImageNet weights (imagenet,
  keras_h5), not both. `c`: a completed classifier entry; `field`: its name, e.g. classifiers.c."""
  _require(not (c.init_checkpoint and (c.imagenet or c.keras_h5)), f'{field}.init_checkpoint',
           'training starts from init_checkpoint or from the ImageNet weights (imagenet, '
           'keras_h5), not both')


def _validate_train(config, num_devices, num_processes):
  for field in ('train.batch_size', 'train.eval_batch_size', 'train.early_stopping_patience',
                'train.log_every_steps', 'train.checkpoints_to_keep'):
    _positive_int(config, field)
  _non_negative_int(config, 'train.pretrain_epochs')
  # max_epochs=0: no QRNet training, e.g. to evaluate fine-tuned classifiers alone (Table 4).
  _non_negative_int(config, 'train.max_epochs')
  _non_negative_int(config, 'train.checkpoint_every_steps')
  lr = _get(config, 'train.learning_rate')
  _require(_is_finite_number(lr) and lr > 0, 'train.learning_rate',
           f'must be a finite number > 0, got {lr!r}')
  for field in ('train.batch_size', 'train.eval_batch_size'):
    for divisor, what in ((num_devices, 'devices'), (num_processes, 'processes')):
      check_batch_divisible(f'config.{field}', _get(config, field), divisor, what)


def check_batch_divisible(field: str, batch_size: int, divisor: int, what: str):
  """The one check that a batch splits evenly over `divisor` devices or processes: the error
  names the field (or flag) and the nearest sizes that do."""
  if batch_size % divisor == 0:
    return
  below = batch_size - batch_size % divisor
  nearest = ' or '.join(str(n) for n in (below, below + divisor) if n > 0)
  raise ConfigError(f'{field}: {batch_size} does not divide by the {divisor} {what}; the nearest '
                    f'sizes that do: {nearest}')


def validate_suite(suite_config, only=(), num_processes: int = 1, backend: str = 'cpu'):
  """A suite's own fields (configs/suites/), before any run's: the tables of --only, each
  experiment's runs, what each run reads from another (classifiers_from: a run of the same
  experiment that trains that classifier, no cycle) and config.concurrent_runs. Each run's own
  config is checked by `validate` (suite.check_runs). Raises ConfigError naming the field."""
  suite_config = config_schema.completed_suite(suite_config)
  all_tags = {t for e in suite_config.experiments.values() for r in e.runs.values()
              for t in r.tags}
  unknown = sorted(set(only) - all_tags)
  if unknown:
    raise ConfigError(f'--only: unknown table {", ".join(unknown)}; the suite has '
                      f'{", ".join(sorted(all_tags))}')
  for experiment, e in suite_config.experiments.items():
    field = f'experiments.{experiment}'
    _require(e.runs, f'{field}.runs', 'no runs')
    configs = {name: config_schema.completed(spec.config) for name, spec in e.runs.items()}
    for name, spec in e.runs.items():
      for classifier, source in spec.classifiers_from.items():
        _check_classifier_source(e.runs, configs, f'{field}.runs', name, classifier, source)
    _check_no_cycle({name: set(spec.classifiers_from.values()) for name, spec in e.runs.items()},
                    f'{field}.runs')
  value = suite_config.concurrent_runs
  _require(_is_int(value) and value >= 1, 'concurrent_runs',
           f'must be an integer >= 1, got {value!r}')
  if value > 1 and (num_processes > 1 or backend != 'cpu'):
    raise ConfigError(f'config.concurrent_runs={value}: concurrent runs are for one CPU host; '
                      f'here ({num_processes} processes, {backend}) runs execute one at a time '
                      '(set 1)')


def _check_classifier_source(specs, configs, runs_field, name, classifier, source):
  field = f'{runs_field}.{name}.classifiers_from.{classifier}'
  _require(source in specs, field,
           f'no run {source!r} in config.{runs_field}; runs: {", ".join(specs)}')
  trains = {n: c for g in config_schema.CLASSIFIER_GROUPS for n, c in configs[source][g].items()}
  _require(classifier in trains and not trains[classifier].checkpoint
           and classifier not in specs[source].classifiers_from, field,
           f'run {source!r} does not train a classifier {classifier!r}')
  _require(any(classifier in configs[name][g] for g in config_schema.CLASSIFIER_GROUPS), field,
           f'the run has no classifier {classifier!r}')


def _check_no_cycle(reads: dict, field):
  """`reads`: {run: the runs it reads}; refuses runs that read each other, naming the cycle."""
  done, visiting = set(), []

  def visit(name):
    if name in visiting:
      cycle = ' -> '.join(visiting[visiting.index(name):] + [name])
      _require(False, field, f'the runs read each other\'s classifiers in a cycle: {cycle}')
    if name not in done:
      visiting.append(name)
      for source in sorted(reads[name]):
        visit(source)
      visiting.pop()
      done.add(name)

  for name in reads:
    visit(name)


# Fields a resumed run may change: they do not alter the training trajectory.
RESUMABLE_CHANGES = ('train.max_epochs', 'train.early_stopping_patience', 'train.log_every_steps',
                     'train.checkpoint_every_steps', 'train.checkpoints_to_keep',
                     'train.evaluate_test', 'train.eval_batch_size', 'data.max_test_examples',
                     'data.data_dir',
                     'data.num_workers', 'data.cache',
                     'data.cache_dir', 'data.download')


def _saved_value(saved: dict, field: str):
  """A saved config's field; one it lacks (added since it was written) reads as its default."""
  return saved[field] if field in saved else config_schema.default_for(field)


def check_batch_fits(config, train_size: int):
  """Once the training split's size is known, before any compilation: a batch must fit in it."""
  batch_size = config.train.batch_size
  _require(batch_size <= train_size, 'train.batch_size',
           f'{batch_size} is larger than the training split ({train_size} images); use at most '
           f'{train_size}')


def _check_path_exists(path, field):
  """A local path or gs:// URL that must exist (its bucket reachable)."""
  _require(files.reachable(path, f'config.{field}', files.exists), field,
           f'no such file or directory: {path}')


def check_workdir(workdir: str, flag: str = '--workdir'):
  """A workdir is a writable folder, or a path where one can be made, or a gs:// URL in a bucket
  this process can write to. Raises ConfigError."""
  if not workdir:
    raise ConfigError(f'{flag}: empty; give the folder for checkpoints and results')
  if files.is_remote(workdir):
    _check_remote_workdir(workdir, flag)
    return
  path = os.path.abspath(os.path.expanduser(workdir))
  existing = path
  while not os.path.exists(existing):
    existing = os.path.dirname(existing)
  if not os.path.isdir(existing):
    raise ConfigError(f'{flag}={workdir}: {existing} is a file, not a folder')
  if not os.access(existing, os.W_OK | os.X_OK):
    raise ConfigError(f'{flag}={workdir}: {existing} is not writable by this user')


def _check_remote_workdir(workdir, flag):
  """Writes and removes a probe object, so that a bucket that is missing or not writable stops
  the run here, not at its first checkpoint."""
  def write_and_remove_probe(workdir):
    probe = os.path.join(workdir, f'.write_probe.{os.getpid()}')
    files.write_bytes(probe, b'')
    files.remove(probe)
  files.reachable(workdir, flag, write_and_remove_probe, failure='cannot write there')


def _flat(tree, prefix=''):
  if isinstance(tree, dict):
    return {k: v for key, sub in tree.items() for k, v in _flat(sub, f'{prefix}{key}.').items()}
  return {prefix[:-1]: tree}


CONFIG_FILE = 'config.json'  # the resolved config of a run, in its workdir


def config_json(config) -> str:
  """The resolved config as a run writes it to WORKDIR/config.json."""
  return config.to_json_best_effort(indent=2, sort_keys=True)


def check_config_unchanged(config, workdir):
  """Stops a rerun in `workdir` whose config would change the run it resumes."""
  saved = files.read_json(os.path.join(workdir, CONFIG_FILE))
  if saved is None:  # a new run, or a kill while config.json was first written
    return
  saved = _flat(saved)
  now = _flat(json.loads(config.to_json_best_effort()))
  changed = sorted(k for k in set(saved) | set(now)
                   if _saved_value(saved, k) != now.get(k) and k not in RESUMABLE_CHANGES)
  if changed:
    details = '; '.join(f'config.{k}: {_saved_value(saved, k)!r} -> {now.get(k)!r}'
                        for k in changed)
    raise ConfigError(
        f'{workdir} holds a run made with another config ({details}); resuming would mix the two. '
        f'Use a new --workdir, or set those fields back.')


def code_version() -> str:
  """A digest of the package's source (Python and C++), the same on hosts whose checkouts match
  whatever their git state."""
  root = os.path.dirname(os.path.abspath(__file__))
  digest = hashlib.sha256()
  for folder, _, names in sorted(os.walk(root)):
    for name in sorted(n for n in names if n.endswith(('.py', '.cc'))):
      path = os.path.join(folder, name)
      digest.update(os.path.relpath(path, root).encode() + b'\0')
      with open(path, 'rb') as f:
        digest.update(f.read() + b'\0')
  return digest.hexdigest()[:16]


def check_same_on_every_process(config):
  """Every process of a multi-process run holds process 0's config and code version; otherwise
  every process stops (none waits at a collective for the others), each naming what differs."""
  if jax.process_count() == 1:
    return
  mine = {f'config.{k}': v for k, v in _flat(json.loads(config.to_json_best_effort())).items()}
  mine['code version (config_validation.code_version)'] = code_version()
  text = json.dumps(mine, sort_keys=True).encode()
  size = int(multihost_utils.broadcast_one_to_all(np.int64(len(text))))
  buffer = np.frombuffer(text, np.uint8) if jax.process_index() == 0 else np.zeros(size, np.uint8)
  first = json.loads(bytes(np.asarray(multihost_utils.broadcast_one_to_all(buffer))).decode())
  differing = sorted(k for k in set(first) | set(mine) if first.get(k) != mine.get(k))
  stopped = np.asarray(multihost_utils.process_allgather(np.int32(bool(differing)))).ravel()
  if differing:
    details = '; '.join(f'{k}: {mine.get(k)!r} here, {first.get(k)!r} on process 0'
                        for k in differing[:10])
    raise ConfigError(f'process {jax.process_index()} of {jax.process_count()} differs from '
                      f'process 0: {details}. Every process must run the same command on the same '
                      'code.')
  if stopped.any():
    raise ConfigError(f'processes {np.flatnonzero(stopped).tolist()} of {jax.process_count()} '
                      'were given another config or code than this one (their logs name the '
                      'fields). Every process must run the same command on the same code.')
