"""The host pipeline (sharding, exact-once eval, resume), config validation and Fashion-MNIST."""
import gzip
import json
import os
import struct

import ml_collections
import numpy as np
import pytest

from qrnet_jax import config_validation, data
from qrnet_jax.config_validation import ConfigError
from qrnet_jax.data import fashion_mnist, pipeline


def identity_source(n):
  """Label i at index i, image filled with i % 256: batches show which examples they hold."""
  images = np.broadcast_to((np.arange(n) % 256).astype(np.uint8)[:, None, None, None],
                           (n, 2, 2, 3)).copy()
  return data.ArraySource(images, np.arange(n, dtype=np.int32))


def test_processes_see_disjoint_halves_of_each_global_batch():
  source, batch, seed = identity_source(50), 8, 3
  per_epoch = data.steps_per_epoch(len(source), batch)
  assert per_epoch == 6  # 50 // 8, the remainder dropped
  whole = data.train_batches(source, batch, seed)
  halves = [data.train_batches(source, batch, seed, process_index=p, process_count=2)
            for p in (0, 1)]
  for epoch in range(2):
    seen = []
    for _ in range(per_epoch):
      a, b, full = next(halves[0]), next(halves[1]), next(whole)
      assert len(a['label']) == len(b['label']) == batch // 2
      assert not set(a['label']) & set(b['label'])
      np.testing.assert_array_equal(np.concatenate([a['label'], b['label']]), full['label'])
      np.testing.assert_array_equal(a['image'][:, 0, 0, 0], a['label'] % 256)
      seen.extend(full['label'])
    assert len(set(seen)) == per_epoch * batch  # no example twice within an epoch
    assert seen == list(pipeline.epoch_permutation(50, seed, epoch)[:per_epoch * batch])


@pytest.mark.parametrize('batch', [4, 6, 20, 32])  # 20 examples: divides, doesn't, equal, larger
def test_eval_counts_every_image_exactly_once(batch):
  source = identity_source(20)
  counts = np.zeros(20, int)
  for process in (0, 1):
    for b in data.eval_batches(source, batch, process_index=process, process_count=2):
      assert len(b['label']) == len(b['mask']) == batch // 2 and b['mask'].dtype == bool
      np.add.at(counts, b['label'][b['mask']], 1)
  assert (counts == 1).all()


def test_resumed_iterator_continues_mid_epoch():
  source, batch = identity_source(37), 5  # 7 steps per epoch
  uninterrupted = data.train_batches(source, batch, seed=11)
  for _ in range(10):  # step 10 = epoch 1, step 3: mid-epoch
    next(uninterrupted)
  resumed = data.train_batches(source, batch, seed=11, start_step=10)
  for _ in range(12):
    a, b = next(uninterrupted), next(resumed)
    np.testing.assert_array_equal(a['label'], b['label'])
    np.testing.assert_array_equal(a['image'], b['image'])


def test_bad_batch_sizes_are_refused():
  with pytest.raises(ValueError, match='does not divide by the 3 processes'):
    next(data.train_batches(identity_source(20), 8, 0, process_count=3))
  with pytest.raises(ValueError, match='fewer than one batch'):
    next(data.train_batches(identity_source(5), 8, 0))


class _SlowLoader:
  """Picklable loader with a per-image cost, decoded in worker processes."""

  def __init__(self, n):
    self.n = n

  def __len__(self):
    return self.n

  def load(self, i):
    return np.full((4, 4, 3), i % 256, np.uint8)


def test_worker_processes_give_the_same_batches_as_the_main_process():
  labels = np.arange(64) % 3
  source = data.ImageSource(_SlowLoader(64), labels, 4, cache='none', num_workers=2)
  in_process = data.train_batches(source, 8, seed=5, start_step=3, num_workers=0)
  in_workers = data.train_batches(source, 8, seed=5, start_step=3)  # the source's 2 workers
  for _ in range(10):
    a, b = next(in_process), next(in_workers)
    np.testing.assert_array_equal(a['image'], b['image'])
    np.testing.assert_array_equal(a['label'], b['label'])
  in_workers.close()


def test_validate_data_names_the_field():
  from configs import default  # pylint: disable=import-outside-toplevel
  config_validation.validate_data(default.get_config().data)
  good = dict(name='synthetic', image_size=32, data_dir='', num_examples=100, num_classes=10)
  for bad, message in (
      (dict(name='foo'), r"config.data.name: unknown dataset 'foo'; allowed: \('synthetic'"),
      (dict(image_size=0), 'config.data.image_size'),
      (dict(resize='stretch'), "config.data.resize: 'stretch'"),
      (dict(cache='ram'), "config.data.cache: 'ram'"),
      (dict(num_workers=-1), 'config.data.num_workers'),
      (dict(archive_checksum='sha1:abc'), 'config.data.archive_checksum'),
      (dict(num_classes=1), 'config.data.num_classes'),
      (dict(name='caltech101'), 'config.data.data_dir: empty'),
      (dict(name='tfds'), 'config.data.tfds_name'),
      (dict(name='folder', data_dir='/nonexistent/qrnet'), '/nonexistent/qrnet does not exist'),
  ):
    with pytest.raises(ConfigError, match=message):
      config_validation.validate_data(ml_collections.ConfigDict({**good, **bad}))


def test_synthetic_dataset_keeps_its_interface():
  config = ml_collections.ConfigDict(dict(name='synthetic', image_size=16, data_dir='',
                                          num_examples=100, num_classes=4))
  ds = data.load_dataset(config, seed=0)
  assert (len(ds.train), len(ds.val), len(ds.test)) == (64, 16, 20)
  batch = ds.train.batch(np.arange(3))
  assert batch['image'].shape == (3, 16, 16, 3) and batch['label'].dtype == np.int32


def test_subsets_of_each_split_are_fixed_and_the_test_size_is_its_own():
  config = ml_collections.ConfigDict(dict(name='synthetic', image_size=16, data_dir='',
                                          num_examples=400, num_classes=4, max_train_examples=50,
                                          max_eval_examples=10, max_test_examples=None))
  follows = data.load_dataset(config, seed=0)
  assert (len(follows.train), len(follows.val), len(follows.test)) == (50, 10, 10)
  config.max_test_examples = 30
  own = data.load_dataset(config, seed=0)
  assert (len(own.train), len(own.val), len(own.test)) == (50, 10, 30)
  assert own.info['used_sizes'] == {'train': 50, 'val': 10, 'test': 30}
  # The training and validation subsets do not depend on the test split's size.
  for split in ('train', 'val'):
    np.testing.assert_array_equal(getattr(own, split).batch(np.arange(10))['image'],
                                  getattr(follows, split).batch(np.arange(10))['image'])
  config.max_test_examples = -1
  with pytest.raises(ConfigError, match=r'config.data.max_test_examples: -1'):
    data.load_dataset(config, seed=0)


def write_idx(path, array):
  array = np.asarray(array, np.uint8)
  header = struct.pack('>BBBB', 0, 0, 0x08, array.ndim) + struct.pack(f'>{array.ndim}I',
                                                                      *array.shape)
  with gzip.open(path, 'wb') as f:
    f.write(header + array.tobytes())


@pytest.fixture
def no_system_fashion_mnist(monkeypatch, tmp_path):
  monkeypatch.setattr(fashion_mnist, 'SYSTEM_DIRS', ())
  monkeypatch.setattr(data, 'CACHE_ROOT', str(tmp_path / 'cache'))


def fashion_config(data_dir, **extra):
  fields = dict(name='fashion_mnist', image_size=28, data_dir=str(data_dir), num_examples=0,
                num_classes=0)
  fields.update(extra)
  return ml_collections.ConfigDict(fields)


def test_fashion_mnist_from_idx_files(tmp_path, no_system_fashion_mnist):
  rng = np.random.default_rng(0)
  raw = rng.integers(0, 256, (70, 28, 28), dtype=np.uint8)
  labels = np.arange(70) % 10
  write_idx(tmp_path / 'train-images-idx3-ubyte.gz', raw[:50])
  write_idx(tmp_path / 'train-labels-idx1-ubyte.gz', labels[:50])
  write_idx(tmp_path / 't10k-images-idx3-ubyte.gz', raw[50:])
  write_idx(tmp_path / 't10k-labels-idx1-ubyte.gz', labels[50:])
  ds = data.load_dataset(fashion_config(tmp_path), seed=0)
  assert ds.num_classes == 10 and ds.info['class_names'][9] == 'Ankle boot'
  json.dumps(ds.info)  # it goes into the run's JSON summary
  # 7 per class pooled: 1 test, 1 val, 5 train each.
  assert (len(ds.train), len(ds.val), len(ds.test)) == (50, 10, 10)
  assert ds.info['split_file'] == str(tmp_path / 'qrnet_split_fashion_mnist.json')
  seen = []
  for split in (ds.train, ds.val, ds.test):
    indices = split.indices
    batch = split.batch(np.arange(len(split)))
    assert batch['image'].shape == (len(split), 28, 28, 3) and batch['image'].dtype == np.uint8
    np.testing.assert_array_equal(batch['label'], labels[indices])
    for channel in range(3):  # grey copied to R, G and B, pixels unchanged at 28 px
      np.testing.assert_array_equal(batch['image'][..., channel], raw[indices])
    seen.extend(indices)
  assert sorted(seen) == list(range(70))
  # The default 32 px: resized, still grey in RGB.
  ds32 = data.load_dataset(fashion_config(tmp_path, image_size=32), seed=0)
  image = next(data.eval_batches(ds32.test, 4))['image']
  assert image.shape == (4, 32, 32, 3)
  assert (image[..., 0] == image[..., 2]).all()
  # Changed pixels are noticed against the saved split.
  raw[3, 0, 0] ^= 1
  write_idx(tmp_path / 'train-images-idx3-ubyte.gz', raw[:50])
  with pytest.raises(data.DatasetChangedError, match='changed size'):
    data.load_dataset(fashion_config(tmp_path), seed=0)


def test_fashion_mnist_offline_error_says_what_to_fetch(tmp_path, no_system_fashion_mnist):
  with pytest.raises(FileNotFoundError, match=r"train-images-idx3-ubyte.gz.*config.data.data_dir"):
    data.load_dataset(fashion_config(tmp_path, download=False), seed=0)


@pytest.mark.skipif(not os.path.isfile('/usr/share/datasets/fashion-mnist/'
                                       't10k-labels-idx1-ubyte.gz'),
                    reason='apt-get install dataset-fashion-mnist')
def test_fashion_mnist_from_the_debian_package(tmp_path, monkeypatch):
  monkeypatch.setattr(data, 'CACHE_ROOT', str(tmp_path))
  ds = data.load_dataset(fashion_config('', image_size=32, cache='none'), seed=0)
  assert (len(ds.train), len(ds.val), len(ds.test)) == (44800, 11200, 14000)
  assert ds.info['split_file'].startswith(str(tmp_path))  # never into /usr/share
  assert np.bincount(ds.test.labels).tolist() == [1400] * 10
  batch = next(data.eval_batches(ds.test, 8))
  assert batch['image'].shape == (8, 32, 32, 3) and batch['image'].max() > 0


def test_fashion_mnist_fetch_checks_sha256(tmp_path, no_system_fashion_mnist, monkeypatch):
  """Fetching (no network here: urlopen is replaced) saves only files with the published sha256."""
  import hashlib, io, urllib.error  # pylint: disable=import-outside-toplevel,multiple-imports
  served = {}
  for key, (name, _) in fashion_mnist.FILES.items():
    n = 20 if key.startswith('train') else 10
    array = np.arange(n) % 10 if key.endswith('labels') else np.zeros((n, 28, 28))
    write_idx(tmp_path / name, array)
    served[name] = (tmp_path / name).read_bytes()
    os.remove(tmp_path / name)
  monkeypatch.setattr(fashion_mnist, 'FILES', {
      key: (name, hashlib.sha256(served[name]).hexdigest())
      for key, (name, _) in fashion_mnist.FILES.items()})
  monkeypatch.setattr(fashion_mnist.urllib.request, 'urlopen',
                      lambda url, timeout: io.BytesIO(served[url.rsplit('/', 1)[1]]))
  ds = data.load_dataset(fashion_config(tmp_path / 'fetched'), seed=0)
  assert len(ds.train) + len(ds.val) + len(ds.test) == 30
  assert (tmp_path / 'fetched' / 't10k-labels-idx1-ubyte.gz').is_file()

  def offline(url, timeout):
    raise urllib.error.URLError('no network')
  monkeypatch.setattr(fashion_mnist.urllib.request, 'urlopen', offline)
  with pytest.raises(FileNotFoundError, match=r'offline\?.*dataset-fashion-mnist.*data_dir'):
    data.load_dataset(fashion_config(tmp_path / 'elsewhere'), seed=0)
