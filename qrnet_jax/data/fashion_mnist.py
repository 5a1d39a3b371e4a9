"""Fashion-MNIST from its four IDX files: the embedded default dataset.

Found in config.data.data_dir, else in /usr/share/datasets/fashion-mnist (Debian package
`dataset-fashion-mnist`), else fetched from its authors' published location when online.

Split policy: the official 60,000 train and 10,000 test images are POOLED (train first, then test,
70,000 in all) and split like every other dataset here, as in the paper's Section IV-A: 80 % train /
20 % test, then 20 % of train for validation, stratified per class, made once from a seed and saved.
So the test split is NOT the official test set: numbers are comparable with this codebase's other
datasets, not with published Fashion-MNIST benchmarks.
"""
import dataclasses
import gzip
import hashlib
import logging
import os
import struct
import urllib.request
import zlib

import numpy as np

from qrnet_jax.data import images as images_lib

CLASS_NAMES = ('T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal', 'Shirt', 'Sneaker',
               'Bag', 'Ankle boot')
DEBIAN_DIR = '/usr/share/datasets/fashion-mnist'  # apt-get install dataset-fashion-mnist
SYSTEM_DIRS = (DEBIAN_DIR,)
URL = 'http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/'
# sha256 of the published .gz files (TFDS url_checksums/fashion_mnist.txt). Debian recompresses
# them (other .gz bytes, same content), so local files are checked by their IDX headers instead.
FILES = {
    'train_images': ('train-images-idx3-ubyte.gz',
                     '3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84'),
    'train_labels': ('train-labels-idx1-ubyte.gz',
                     'a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845'),
    'test_images': ('t10k-images-idx3-ubyte.gz',
                    '346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073'),
    'test_labels': ('t10k-labels-idx1-ubyte.gz',
                    '67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5'),
}
FETCH_TIMEOUT_S = 10


def read_idx(path: str) -> np.ndarray:
  """An IDX file (gzipped or not) as a numpy array of its declared shape."""
  opener = gzip.open if path.endswith('.gz') else open
  with opener(path, 'rb') as f:
    data = f.read()
  if len(data) < 4 or data[:2] != b'\0\0':
    raise ValueError(f'{path}: not an IDX file')
  dtypes = {0x08: np.uint8, 0x09: np.int8, 0x0B: '>i2', 0x0C: '>i4', 0x0D: '>f4', 0x0E: '>f8'}
  if data[2] not in dtypes:
    raise ValueError(f'{path}: unknown IDX element type {data[2]:#x}')
  ndim = data[3]
  shape = struct.unpack(f'>{ndim}I', data[4:4 + 4 * ndim])
  array = np.frombuffer(data, dtypes[data[2]], offset=4 + 4 * ndim)
  if array.size != int(np.prod(shape)):
    raise ValueError(f'{path}: header says shape {shape}, file holds {array.size} values '
                     '(truncated?)')
  return array.reshape(shape)


def _file_in(directory):
  """{key: path} when `directory` holds all four files (gzipped or not), else None."""
  found = {}
  for key, (name, _) in FILES.items():
    for candidate in (name, name[:-len('.gz')]):
      if os.path.isfile(os.path.join(directory, candidate)):
        found[key] = os.path.join(directory, candidate)
        break
  return found if len(found) == len(FILES) else None


def _fetch(directory):
  os.makedirs(directory, exist_ok=True)
  for name, sha256 in FILES.values():
    target = os.path.join(directory, name)
    if os.path.isfile(target):
      continue
    with urllib.request.urlopen(URL + name, timeout=FETCH_TIMEOUT_S) as response:
      payload = response.read()
    if hashlib.sha256(payload).hexdigest() != sha256:
      raise ValueError(f'{URL + name}: sha256 mismatch; not saved')
    with open(target + '.tmp', 'wb') as f:
      f.write(payload)
    os.replace(target + '.tmp', target)


def locate(data_dir: str, fetch_dir: str, download: bool = True) -> dict:
  """{key: path} of the four files: data_dir, then the system dirs, then fetched into fetch_dir."""
  searched = [d for d in (data_dir, *SYSTEM_DIRS) if d]
  for directory in searched:
    found = _file_in(directory)
    if found:
      return found
  names = [name for name, _ in FILES.values()]
  advice = (f'Install them (apt-get install dataset-fashion-mnist puts them in {DEBIAN_DIR}), '
            f'or download {names} from {URL} into a folder and set config.data.data_dir to it.')
  if not download:
    raise FileNotFoundError(f'Fashion-MNIST: the files {names} are not in {searched} and '
                            f'downloading is off (config.data.download). {advice}')
  logging.info('Fashion-MNIST not found in %s; fetching from %s into %s', searched, URL, fetch_dir)
  try:
    _fetch(fetch_dir)
  except OSError as e:
    raise FileNotFoundError(f'Fashion-MNIST: the files {names} are not in {searched}, and '
                            f'fetching them from {URL} failed ({e}); offline? {advice}') from e
  return _file_in(fetch_dir)


def load_arrays(paths: dict):
  """(uint8 images (70000, 28, 28), int32 labels (70000,)): official train, then official test."""
  parts = []
  for split, expected in (('train', 60000), ('test', 10000)):
    images, labels = read_idx(paths[f'{split}_images']), read_idx(paths[f'{split}_labels'])
    if images.ndim != 3 or images.dtype != np.uint8 or len(images) != len(labels):
      raise ValueError(f"{paths[f'{split}_images']}: expected uint8 (N, 28, 28) images matching "
                       f"the {len(labels)} labels, got {images.dtype} {images.shape}")
    if len(images) != expected:
      logging.warning('Fashion-MNIST %s: %d images, not the official %d', split, len(images),
                      expected)
    parts.append((images, labels))
  images = np.concatenate([p[0] for p in parts])
  labels = np.concatenate([p[1] for p in parts]).astype(np.int32)
  if labels.min() < 0 or labels.max() >= len(CLASS_NAMES):
    raise ValueError(f'Fashion-MNIST labels outside 0..{len(CLASS_NAMES) - 1}')
  return images, labels


def example_tags(images: np.ndarray) -> list:
  """A crc32 per image: the split fingerprint notices any changed pixel."""
  return [zlib.crc32(image.tobytes()) for image in images]


@dataclasses.dataclass(frozen=True)
class ArrayLoader:
  """Picklable: raw uint8 images (N, H, W[, C]) -> RGB uint8 (size, size, 3) on demand."""
  images: np.ndarray
  size: int
  resize: str
  parallel_decode = False  # resizing small arrays is faster than starting worker processes

  def __len__(self):
    return len(self.images)

  def load(self, i):
    image = self.images[i]
    if image.ndim == 2 and image.shape == (self.size, self.size):
      return np.repeat(image[..., None], 3, axis=-1)
    return images_lib.resize_array(image, self.size, self.resize)
