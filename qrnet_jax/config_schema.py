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


def default_for(field: str):
  """The value a config without `field` (dotted, e.g. 'classifiers.c.imagenet') takes, as its
  config.json holds it (tuples as lists); None for a field every config has."""
  for pattern, value in OPTIONAL_FIELDS.items():
    if _classifier_field(pattern):
      group = field.split('.', 1)[0]
      if group in CLASSIFIER_GROUPS and fnmatch.fnmatchcase(field, pattern):
        return json.loads(json.dumps(value))
    elif field == pattern:
      return json.loads(json.dumps(value))
  return None


def _fill(tree: ml_collections.ConfigDict, path: tuple, value):
  for part in path[:-1]:
    if part not in tree:
      tree[part] = ml_collections.ConfigDict()
    tree = tree[part]
  if path[-1] not in tree:
    tree[path[-1]] = ml_collections.ConfigDict(value) if isinstance(value, dict) else value


def completed(config) -> ml_collections.ConfigDict:
  """A copy of a run config with every optional field that it lacks set to its default."""
  config = ml_collections.ConfigDict(config.to_dict())
  for pattern, value in OPTIONAL_FIELDS.items():
    if not _classifier_field(pattern):
      _fill(config, tuple(pattern.split('.')), value)
  for group in CLASSIFIER_GROUPS:
    for name in config[group]:
      for pattern, value in OPTIONAL_FIELDS.items():
        if _classifier_field(pattern):
          _fill(config[group][name], (pattern.split('.')[-1],), value)
  return config


def completed_data(data_config) -> ml_collections.ConfigDict:
  """A copy of a run config's `data` field with every optional field it lacks set."""
  data_config = ml_collections.ConfigDict(data_config.to_dict())
  for pattern, value in OPTIONAL_FIELDS.items():
    group, _, field = pattern.partition('.')
    if group == 'data':
      _fill(data_config, (field,), value)
  return data_config
