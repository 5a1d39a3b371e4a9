"""The fields a config may leave out, and the value a run takes for each: the one place of defaults.

A run's config.json written before a field existed, and a config written by hand, may lack these
fields. `completed` fills them in once, where a config enters the package (a run, a suite's plan,
restore reading a run's config.json; the data package's entry points for a bare `config.data`);
everything after reads fields as attributes. A resumed run compares its config with the saved one
through `default_for`, so a field added since the run was written reads as the value it had then.
configs/default.py writes every field out, with its meaning.
"""
import fnmatch
import json

import ml_collections

CLASSIFIER_GROUPS = ('classifiers', 'eval_classifiers')

# The values some fields allow (config_validation refuses others, naming the field).
DATASETS = ('synthetic', 'fashion_mnist', 'folder', 'caltech101', 'caltech256', 'tfds')
RESIZE_POLICIES = ('squash', 'center_crop')  # data.resize: data/images.py
CACHE_MODES = ('memory', 'disk', 'none')  # data.cache: data/pipeline.py

OPTIONAL_FIELDS = {
    'eval_classifiers': {},  # classifiers only evaluated with QRNet's output (Figure 6's unseen)
    'model.conv_impl': 'auto',
    'distortion.severities': (1, 2, 3, 4, 5),  # the corruption families' levels
    'distortion.eval_types': (),  # the test split's distortions; empty: the training types
    'train.eval_batch_size': 256,
    'data.data_dir': '',
    'data.resize': 'squash',
    'data.cache': 'memory',
    'data.cache_dir': '',
    'data.num_workers': 0,
    'data.split_file': '',
    'data.split_seed': 0,
    'data.keep_background_class': False,
    'data.archive_checksum': '',
    'data.download': True,
    'data.tfds_name': '',
    'data.tfds_image_key': 'image',
    'data.tfds_label_key': 'label',
    'data.max_train_examples': 0,
    'data.max_eval_examples': 0,
    'data.max_test_examples': None,  # None: as max_eval_examples
    'data.num_examples': 0,  # synthetic only (validation asks for enough)
    'data.num_classes': 0,  # synthetic only
    # Every classifier entry, in both groups (*: its name).
    '*.*.learning_rate': 1e-3,
    '*.*.imagenet': False,
    '*.*.keras_h5': '',
    '*.*.clean_trainable': 'all',
    '*.*.train_distorted': False,
    '*.*.init_checkpoint': '',
}


def _classifier_field(pattern: str) -> bool:
  return pattern.startswith('*.*.')


def _matches(pattern: str, field: str) -> bool:
  if _classifier_field(pattern):
    return (field.split('.', 1)[0] in CLASSIFIER_GROUPS
            and fnmatch.fnmatchcase(field, pattern))
  return field == pattern


def default_for(field: str):
  """The value a config without `field` (dotted, e.g. 'classifiers.c.imagenet') takes, as its
  config.json holds it (tuples as lists); None for a field every config has."""
  value = next((v for pattern, v in OPTIONAL_FIELDS.items() if _matches(pattern, field)), None)
  return json.loads(json.dumps(value))


def _fields_under(prefix: str) -> dict:
  """The optional fields whose patterns start with `prefix`, relative to it."""
  return {pattern[len(prefix):]: value for pattern, value in OPTIONAL_FIELDS.items()
          if pattern.startswith(prefix)}


def _fill(tree: ml_collections.ConfigDict, fields: dict):
  """Sets each dotted field of `fields` that `tree` lacks (making the groups on its way)."""
  for field, value in fields.items():
    *groups, leaf = field.split('.')
    node = tree
    for part in groups:
      if part not in node:
        node[part] = ml_collections.ConfigDict()
      node = node[part]
    if leaf not in node:
      node[leaf] = ml_collections.ConfigDict(value) if isinstance(value, dict) else value


def completed(config) -> ml_collections.ConfigDict:
  """A copy of a run config with every optional field that it lacks set to its default."""
  config = ml_collections.ConfigDict(config.to_dict())
  _fill(config, {p: v for p, v in OPTIONAL_FIELDS.items() if not _classifier_field(p)})
  for group in CLASSIFIER_GROUPS:
    for name in config[group]:
      _fill(config[group][name], _fields_under('*.*.'))
  return config


SUITE_OPTIONAL_FIELDS = {
    'concurrent_runs': 1,  # runs of the suite executing at once (worker processes, one CPU host)
}


def completed_suite(suite_config) -> ml_collections.ConfigDict:
  """A copy of a suite config with its own optional fields set (its runs' configs as written)."""
  suite_config = ml_collections.ConfigDict(suite_config.to_dict())
  _fill(suite_config, SUITE_OPTIONAL_FIELDS)
  return suite_config


def completed_data(data_config) -> ml_collections.ConfigDict:
  """A copy of a run config's `data` field with every optional field it lacks set."""
  data_config = ml_collections.ConfigDict(data_config.to_dict())
  _fill(data_config, _fields_under('data.'))
  return data_config
