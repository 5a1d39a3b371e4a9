"""A prepared TFDS dataset read through `tfds.data_source` (array_record, no TensorFlow).

Only datasets already prepared in config.data.data_dir are read: `download_and_prepare` is never
called (offline it retries for minutes, and image features need TensorFlow to prepare anyway).
The image feature must be a uint8 Tensor (H, W, C) (C = 1, 3 or 4; any H, W); labels integers or a
ClassLabel. All splits of the dataset are pooled and split again by the paper's policy
(splits.py), the pooled order being the dataset's splits sorted by name.
"""
import dataclasses
import os

import numpy as np

from qrnet_jax.data import images as images_lib


def _tfds():
  os.environ.setdefault('NO_GCE_CHECK', 'true')  # no probing of GCS metadata servers
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  return tfds


def open_builder(name: str, data_dir: str):
  """The builder of a prepared dataset; a clear error if it is not prepared in data_dir."""
  tfds = _tfds()
  try:
    builder = tfds.builder(name, data_dir=data_dir or None)
  except Exception as e:  # tfds raises several kinds: not registered, not found, bad version
    where = data_dir or 'the TFDS default data dir'
    raise FileNotFoundError(f'TFDS dataset {name!r} not found in {where} (config.data.tfds_name, '
                            f'config.data.data_dir): {type(e).__name__}: {e}') from e
  if not builder.is_prepared():
    raise FileNotFoundError(f'TFDS dataset {name!r} is not prepared in {builder.data_dir}; prepare '
                            'it (array_record format) where TensorFlow and the network are '
                            'available, then point config.data.data_dir at it')
  return builder


@dataclasses.dataclass
class TfdsLoader:
  """Picklable: pooled example i -> RGB uint8 (size, size, 3); opens its source once per process."""
  name: str
  data_dir: str
  splits: tuple
  offsets: tuple  # start of each split in the pooled order, plus the total at the end
  image_key: str
  size: int
  resize: str

  def __post_init__(self):
    self._sources = None

  def __getstate__(self):
    state = self.__dict__.copy()
    state['_sources'] = None
    return state

  def __len__(self):
    return self.offsets[-1]

  def record(self, i):
    if self._sources is None:
      builder = open_builder(self.name, self.data_dir)
      self._sources = [builder.as_data_source(split=s) for s in self.splits]
    part = int(np.searchsorted(self.offsets, i, side='right')) - 1
    return self._sources[part][int(i - self.offsets[part])]

  def load(self, i):
    return images_lib.resize_array(self.record(i)[self.image_key], self.size, self.resize)


def describe(name: str, data_dir: str, image_key: str, label_key: str, size: int, resize: str):
  """(loader, labels, keys, class_names) of the pooled splits of a prepared dataset."""
  builder = open_builder(name, data_dir)
  features = builder.info.features
  for key in (image_key, label_key):
    if key not in features:
      raise ValueError(f'TFDS dataset {name!r} has no feature {key!r} (features: '
                       f'{list(features)}; config.data.tfds_image_key / tfds_label_key)')
  image_feature = features[image_key]
  is_tensor = type(image_feature).__name__ == 'Tensor'
  if not is_tensor or getattr(image_feature, 'np_dtype', None) != np.uint8:
    raise ValueError(f'TFDS dataset {name!r}: feature {image_key!r} is {image_feature!r}; only '
                     'uint8 Tensor images are readable without TensorFlow')
  splits = tuple(sorted(builder.info.splits))
  lengths = [builder.info.splits[s].num_examples for s in splits]
  offsets = tuple(int(x) for x in np.concatenate([[0], np.cumsum(lengths)]))
  loader = TfdsLoader(name, data_dir, splits, offsets, image_key, size, resize)
  labels = np.array([int(loader.record(i)[label_key]) for i in range(len(loader))], np.int32)
  names = getattr(features[label_key], 'names', None)
  class_names = list(names) if names else [str(c) for c in range(int(labels.max()) + 1)]
  keys = [f'{s}/{j}' for s, n in zip(splits, lengths) for j in range(n)]
  return loader, labels, keys, class_names
