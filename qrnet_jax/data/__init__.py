"""Datasets and the host pipeline: uint8 images and labels in, batches out (no distortion here).

`load_dataset(config.data, seed)` returns the paper's three splits (Section IV-A) as random-access
sources; `train_batches` / `eval_batches` (pipeline.py) turn them into per-process batches.

Datasets (config.data.name):
  synthetic      generated stripes (synthetic.py), no files.
  fashion_mnist  the four IDX files (fashion_mnist.py); official train + test pooled, then split.
  folder         any class-per-folder image tree at config.data.data_dir (folder.py).
  caltech101     101_ObjectCategories/ or its archive (caltech-101.zip, 101_ObjectCategories.tar.gz)
                 in config.data.data_dir; BACKGROUND_Google left out unless keep_background_class.
  caltech256     256_ObjectCategories/ or 256_ObjectCategories.tar; 257.clutter left out likewise.
  tfds           a prepared array_record TFDS dataset (config.data.tfds_name) in data_dir.

Every dataset but synthetic is split once (80/20, then 20 % of train for validation, stratified,
from config.data.split_seed) into a JSON split file beside the data, reused by every later run
and checked against the data on disk (splits.py).
"""
import dataclasses
import logging
import os

import jax
import numpy as np
from jax.experimental import multihost_utils

from qrnet_jax import config_schema, config_validation, files
from qrnet_jax.data import fashion_mnist as fashion_mnist_lib
from qrnet_jax.data import folder as folder_lib
from qrnet_jax.data import splits as splits_lib
from qrnet_jax.data.pipeline import (ArraySource, ImageSource, SubsetSource,
                                     eval_batches, steps_per_epoch, train_batches)
from qrnet_jax.data.splits import DatasetChangedError, split_indices
from qrnet_jax.data.synthetic import synthetic_images

CACHE_ROOT = os.path.join(os.environ.get('XDG_CACHE_HOME', os.path.expanduser('~/.cache')),
                          'qrnet_jax')


@dataclasses.dataclass
class Dataset:
  """The paper's three splits (Section IV-A) as random-access sources."""
  train: object
  val: object
  test: object
  num_classes: int
  info: dict = dataclasses.field(default_factory=dict)


def with_local_data_dir(data_config):
  """`data_config` with a gs:// data_dir replaced by its copy on local disk (TFDS reads gs://
  itself); local data_dirs unchanged."""
  data_dir = data_config.data_dir or ''
  if not files.is_remote(data_dir) or data_config.name in ('tfds', 'synthetic'):
    return data_config
  local = data_config.copy_and_resolve_references()
  with local.unlocked():
    local.data_dir = files.local_mirror(data_dir, os.path.join(CACHE_ROOT, 'gcs'))
  return local


def _state_dir(preferred, name):
  """Where the split file and disk cache live: beside the data if writable, else ~/.cache."""
  if preferred and os.access(preferred, os.W_OK):
    return preferred
  return os.path.join(CACHE_ROOT, name)


def _split_path(data_config, state_dir):
  path = data_config.split_file
  return os.path.expanduser(path) if path else os.path.join(
      state_dir, f'qrnet_split_{data_config.name}.json')


def _subsets(parent, record, position):
  return [SubsetSource(parent, np.array([position[k] for k in record['splits'][s]], np.int64))
          for s in splits_lib.SPLITS]


def _load_or_make_split(data_config, path, keys, tags, labels, class_names, skip_check=None):
  """The saved split if the data still match it, else a new one (saved); also returns created."""
  if files.exists(path):
    record = splits_lib.load(path)
    splits_lib.check_unchanged(record, path, keys, tags, class_names)
    seed = data_config.split_seed
    if record['seed'] != seed:
      logging.warning('reusing the split in %s made with seed %d (config.data.split_seed is %d): '
                      'the split is made once', path, record['seed'], seed)
    return record, False
  bad = skip_check() if skip_check else {}
  for key, error in bad.items():
    logging.warning('skipping unreadable image %s: %s', key, error)
  tag_of = dict(zip(keys, tags))
  usable = [(k, l) for k, l in zip(keys, labels) if k not in bad]
  skipped = sorted(bad)
  _check_no_class_left_empty(class_names, labels, [l for _, l in usable], keys, bad)
  record = splits_lib.make_split(
      data_config.name, [k for k, _ in usable], np.array([l for _, l in usable]),
      [tag_of[k] for k, _ in usable] + [tag_of[k] for k in skipped], class_names,
      data_config.split_seed, skipped=skipped)
  splits_lib.save(record, path)
  logging.info('made the split %s: %s', path,
               {s: len(v) for s, v in record['splits'].items()})
  return record, True


def _check_no_class_left_empty(class_names, labels, usable_labels, keys, bad):
  """A class whose every image is unreadable is refused, as an empty class folder is."""
  for label in sorted(set(labels) - set(usable_labels)):
    unreadable = [k for k, l in zip(keys, labels) if l == label and k in bad]
    raise ValueError(f'class {class_names[label]!r}: all its {len(unreadable)} images are '
                     f'unreadable ({", ".join(map(str, unreadable[:5]))}: {bad[unreadable[0]]}); '
                     'fix or remove them, or remove the class')


def _image_source(data_config, loader, labels, state_dir, fingerprint):
  cache = data_config.cache
  size, resize = data_config.image_size, data_config.resize
  cache_dir = os.path.expanduser(data_config.cache_dir) or os.path.join(
      state_dir, '.qrnet_cache')  # hidden: never taken for a class folder
  cache_path = os.path.join(cache_dir,
                            f'{data_config.name}_{size}px_{resize}_{fingerprint[:12]}.npy')
  return ImageSource(loader, labels, size, cache=cache,
                     cache_path=cache_path if cache == 'disk' else '',
                     cache_key=f'{fingerprint}/{size}/{resize}',
                     num_workers=data_config.num_workers)


def _info(data_config, record, path, created, source, **extra):
  info = {
      'dataset': data_config.name,
      'split_file': path,
      'split_created_now': created,
      'split_seed': record['seed'],
      'split_sizes': {s: len(v) for s, v in record['splits'].items()},
      'num_classes': record['num_classes'],
      'class_names': record['class_names'],
      'skipped_count': len(record['skipped']),
      'skipped_files': record['skipped'],
      'resize': data_config.resize,
      'cache': source.cache,
      'cache_path': source.cache_path,
  }
  info.update(extra)
  return info


def _load_folder(data_config):
  root, root_info = folder_lib.find_root(data_config)
  exclude = folder_lib.excluded_classes(data_config.name,
                                        data_config.keep_background_class)
  tree = folder_lib.scan_tree(root, exclude, recursive=data_config.name == 'folder')
  state_dir = _state_dir(os.path.dirname(os.path.normpath(root))
                         if data_config.name != 'folder' else os.path.expanduser(
                             data_config.data_dir), data_config.name)
  path = _split_path(data_config, state_dir)
  record, created = _load_or_make_split(
      data_config, path, tree.files, tree.sizes, tree.labels, tree.class_names,
      skip_check=lambda: folder_lib.unreadable_files(root, tree.files, data_config.num_workers))
  if record['skipped'] and not created:
    logging.warning('%d unreadable images skipped (listed in %s): %s', len(record['skipped']),
                    path, record['skipped'][:10])
  skipped = set(record['skipped'])
  kept = [f for f in tree.files if f not in skipped]
  labels = [tree.class_names.index(f.split('/')[0]) for f in kept]
  loader = folder_lib.FileLoader(root, tuple(kept), data_config.image_size,
                                 data_config.resize)
  source = _image_source(data_config, loader, labels, state_dir, record['fingerprint'])
  position = {f: i for i, f in enumerate(kept)}
  info = _info(data_config, record, path, created, source, excluded_classes=list(exclude),
               ignored_files_count=len(tree.ignored), ignored_files=tree.ignored[:50], **root_info)
  return Dataset(*_subsets(source, record, position), num_classes=len(tree.class_names),
                 info=info)


def _load_fashion_mnist(data_config):
  data_dir = os.path.expanduser(data_config.data_dir or '')
  fetch_dir = data_dir or os.path.join(CACHE_ROOT, 'fashion_mnist')
  paths = fashion_mnist_lib.locate(data_dir, fetch_dir, data_config.download)
  raw, labels = fashion_mnist_lib.load_arrays(paths)
  files_dir = os.path.dirname(paths['train_images'])
  # Never write into a package-managed folder (/usr/share/...), even as root.
  state_dir = _state_dir(None if files_dir in fashion_mnist_lib.SYSTEM_DIRS else files_dir,
                         'fashion_mnist')
  path = _split_path(data_config, state_dir)
  keys = list(range(len(labels)))
  record, created = _load_or_make_split(data_config, path, keys,
                                        fashion_mnist_lib.example_tags(raw), labels,
                                        list(fashion_mnist_lib.CLASS_NAMES))
  loader = fashion_mnist_lib.ArrayLoader(raw, data_config.image_size, data_config.resize)
  source = _image_source(data_config, loader, labels, state_dir, record['fingerprint'])
  info = _info(data_config, record, path, created, source, files=paths,
               split_policy='official train and test pooled, then split 80/20 and 20% of train')
  return Dataset(*_subsets(source, record, {k: k for k in keys}),
                 num_classes=len(fashion_mnist_lib.CLASS_NAMES), info=info)


def _load_tfds(data_config):
  from qrnet_jax.data import tfds_data  # pylint: disable=import-outside-toplevel
  data_dir = os.path.expanduser(data_config.data_dir or '')
  name = data_config.tfds_name
  loader, labels, keys, class_names = tfds_data.describe(
      name, data_dir, data_config.tfds_image_key, data_config.tfds_label_key,
      data_config.image_size, data_config.resize)
  state_dir = _state_dir(data_dir, f'tfds_{name}')
  path = _split_path(data_config, state_dir)
  record, created = _load_or_make_split(data_config, path, keys, [int(l) for l in labels],
                                        labels, class_names)
  source = _image_source(data_config, loader, labels, state_dir, record['fingerprint'])
  info = _info(data_config, record, path, created, source, tfds_name=name,
               tfds_splits_pooled=list(loader.splits))
  return Dataset(*_subsets(source, record, {k: i for i, k in enumerate(keys)}),
                 num_classes=len(class_names), info=info)


def load_dataset(data_config, seed: int) -> Dataset:
  """Builds the splits named by `data_config.name` at `data_config.image_size`.

  Raises ConfigError / FileNotFoundError naming the field or path for a bad config or missing data,
  and DatasetChangedError (a ValueError) if the data no longer match their saved split.
  """
  data_config = config_schema.completed_data(data_config)
  config_validation.validate_data(data_config)
  dataset = _load_splits(with_local_data_dir(data_config), seed)
  max_test = data_config.max_test_examples
  return _limited(dataset, data_config.max_train_examples,
                  data_config.max_eval_examples,
                  data_config.max_eval_examples if max_test is None else max_test,
                  data_config.split_seed)


def _limited(dataset, max_train, max_val, max_test, seed):
  """Keeps a fixed random subset of each split where a maximum is set (0 = keep all)."""
  def subset(source, maximum, salt):
    if not maximum or len(source) <= maximum:
      return source
    keep = np.sort(np.random.default_rng([seed, salt]).permutation(len(source))[:maximum])
    return SubsetSource(source, keep)
  if not (max_train or max_val or max_test):
    return dataset
  limited = dataclasses.replace(
      dataset, train=subset(dataset.train, max_train, 0), val=subset(dataset.val, max_val, 1),
      test=subset(dataset.test, max_test, 2))
  limited.info = {**dataset.info, 'used_sizes': {
      'train': len(limited.train), 'val': len(limited.val), 'test': len(limited.test)}}
  return limited


def _load_splits(data_config, seed: int) -> Dataset:
  if data_config.name == 'synthetic':
    images, labels = synthetic_images(data_config.num_examples, data_config.num_classes,
                                      data_config.image_size, seed)
    train, val, test = split_indices(labels, seed)
    sources = [ArraySource(images[i], labels[i]) for i in (train, val, test)]
    return Dataset(*sources, num_classes=data_config.num_classes,
                   info={'dataset': 'synthetic', 'split_sizes': {
                       'train': len(train), 'val': len(val), 'test': len(test)}})
  if data_config.name == 'fashion_mnist':
    return _load_fashion_mnist(data_config)
  if data_config.name == 'tfds':
    return _load_tfds(data_config)
  return _load_folder(data_config)


def load_dataset_once(config):
  """The dataset; on several processes, process 0 prepares it first (extracts archives, writes the
  split file and a disk cache) while the others wait, then they read what it prepared."""
  if jax.process_count() == 1:
    return load_dataset(config.data, config.seed)
  if jax.process_index() == 0:
    dataset = load_dataset(config.data, config.seed)
    if config.data.cache == 'disk' and hasattr(dataset.train, 'prepare'):
      dataset.train.prepare()  # fills the shared cache file the splits read from
    multihost_utils.sync_global_devices('qrnet_jax: dataset prepared')
    return dataset
  multihost_utils.sync_global_devices('qrnet_jax: dataset prepared')
  return load_dataset(config.data, config.seed)
