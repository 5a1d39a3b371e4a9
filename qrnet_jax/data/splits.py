"""The paper's split (Section IV-A), made once and saved as a JSON file beside the data.

"We randomly split the data as 80% for training and 20% for testing. We use 20% of the training
data for validation. We divide the data into these datasets once." The split is stratified per
class and drawn from a seed; the file lists every example of each split by its key (a path relative
to the dataset root, or an index for array datasets) together with a fingerprint of the dataset.
Every later run reuses the file; if the dataset on disk no longer matches it, loading stops with an
error that says what changed, instead of silently mixing test images into training.
"""
import hashlib
import json
import os
from typing import Sequence

import numpy as np

from qrnet_jax import files

SPLITS = ('train', 'val', 'test')
FORMAT_VERSION = 1


class DatasetChangedError(ValueError):
  """The dataset on disk differs from the one the saved split was made from."""


def split_indices(labels, seed, test_fraction=0.2, val_fraction=0.2):
  """80 % train / 20 % test, then 20 % of train for validation, stratified per class.

  Returns sorted index arrays (train, val, test) into `labels`.
  """
  labels = np.asarray(labels)
  rng = np.random.default_rng(seed)
  train, val, test = [], [], []
  for label in np.unique(labels):
    members = rng.permutation(np.flatnonzero(labels == label))
    n_test = int(round(test_fraction * len(members)))
    n_val = int(round(val_fraction * (len(members) - n_test)))
    test.append(members[:n_test])
    val.append(members[n_test:n_test + n_val])
    train.append(members[n_test + n_val:])
  return tuple(np.sort(np.concatenate(part)).astype(np.int64) for part in (train, val, test))


def fingerprint(keys: Sequence, sizes: Sequence, class_names: Sequence[str]) -> str:
  """sha256 of (key, size) pairs and class names: changes when any file is added/removed/resized."""
  digest = hashlib.sha256()
  # surrogateescape: a file name that is not UTF-8 (legal on Linux) keeps its own bytes.
  for name in class_names:
    digest.update(f'class\t{name}\n'.encode('utf-8', 'surrogateescape'))
  for key, size in zip(keys, sizes):
    digest.update(f'{key}\t{size}\n'.encode('utf-8', 'surrogateescape'))
  return digest.hexdigest()


def make_split(dataset: str, keys: Sequence, labels, sizes: Sequence, class_names: Sequence[str],
               seed: int, skipped: Sequence = (), test_fraction=0.2, val_fraction=0.2) -> dict:
  """The split record for usable examples `keys` (with `labels`); `skipped` are unreadable ones.

  `sizes` are per-example byte sizes (or any per-example tag) of keys + skipped, in that order,
  used only for the fingerprint.
  """
  train, val, test = split_indices(labels, seed, test_fraction, val_fraction)
  keys = list(keys)
  all_keys = keys + list(skipped)
  order = sorted(range(len(all_keys)), key=lambda i: str(all_keys[i]))
  return {
      'format': FORMAT_VERSION,
      'dataset': dataset,
      'seed': int(seed),
      'fractions': {'test': test_fraction, 'val_of_train': val_fraction},
      'num_examples': len(all_keys),
      'num_classes': len(class_names),
      'class_names': list(class_names),
      'fingerprint': fingerprint([all_keys[i] for i in order], [sizes[i] for i in order],
                                 class_names),
      'skipped': list(skipped),
      'splits': {name: [_jsonable(keys[i]) for i in part]
                 for name, part in zip(SPLITS, (train, val, test))},
  }


def _jsonable(key):
  return key if isinstance(key, str) else int(key)


def save(record: dict, path: str) -> None:
  """Writes atomically, so a crash never leaves half a split file behind."""
  files.make_dirs(os.path.dirname(files.absolute(path)))
  files.write_text(path, json.dumps(record, indent=1))  # readable by others, as the umask allows


def load(path: str) -> dict:
  record = json.loads(files.read_text(path))
  if record.get('format') != FORMAT_VERSION or set(record.get('splits', {})) != set(SPLITS):
    raise ValueError(f'{path}: not a qrnet_jax split file (format {FORMAT_VERSION}); delete it '
                     'to make a new split')
  return record


def check_unchanged(record: dict, path: str, keys: Sequence, sizes: Sequence,
                    class_names: Sequence[str]) -> None:
  """Raises DatasetChangedError, saying what changed, unless the dataset matches `record`.

  keys/sizes: every candidate example found on disk now (usable or not).
  """
  order = sorted(range(len(keys)), key=lambda i: str(keys[i]))
  now = fingerprint([keys[i] for i in order], [sizes[i] for i in order], class_names)
  if now == record['fingerprint']:
    return
  saved = {str(k) for part in record['splits'].values() for k in part}
  saved |= {str(k) for k in record['skipped']}
  current = {str(k) for k in keys}
  added, removed = sorted(current - saved), sorted(saved - current)
  changes = []
  if len(class_names) != record['num_classes'] or list(class_names) != record['class_names']:
    changes.append(f"classes: {record['num_classes']} in the split file, {len(class_names)} now"
                   + _diff_names(set(record['class_names']), set(class_names)))
  if added:
    changes.append(f'{len(added)} files added (e.g. {added[:5]})')
  if removed:
    changes.append(f'{len(removed)} files removed (e.g. {removed[:5]})')
  if not added and not removed:
    changes.append('the same files, but some have changed size (edited or replaced)')
  raise DatasetChangedError(
      f'the dataset no longer matches its saved split {path} ('
      f"{record['num_examples']} examples when it was made, {len(keys)} now): "
      + '; '.join(changes) + '. Restore the data, or delete the split file (or set '
      'config.data.split_file elsewhere) to make a new split, knowing that results across the two '
      'splits are not comparable.')


def _diff_names(before, after):
  parts = []
  if after - before:
    parts.append(f' added {sorted(after - before)[:5]}')
  if before - after:
    parts.append(f' removed {sorted(before - after)[:5]}')
  return ','.join(parts)
