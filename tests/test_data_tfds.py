"""A tiny array_record TFDS dataset, built here without TensorFlow, read through the pipeline."""
import json

import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds

from qrnet_jax import data

NUM = {'train': 12, 'test': 6}  # pooled: 18 = 3 classes x 6 -> 4 train, 1 val, 1 test each


class TinyQrnetImages(tfds.core.GeneratorBasedBuilder):
  """Example i: an image of varying size filled with i, label i % 3 (uint8 Tensor: no TF needed)."""
  VERSION = tfds.core.Version('1.0.0')

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
        'image': tfds.features.Tensor(shape=(None, None, 3), dtype=np.uint8, encoding='zlib'),
        'label': tfds.features.ClassLabel(names=['cat', 'dog', 'fish']),
        'id': np.int32}))

  def _split_generators(self, dl_manager):
    del dl_manager  # nothing to download
    return {'train': self._generate_examples(0, NUM['train']),
            'test': self._generate_examples(NUM['train'], NUM['train'] + NUM['test'])}

  def _generate_examples(self, start, stop):
    for i in range(start, stop):
      yield i, {'image': np.full((6 + i, 9, 3), i, np.uint8), 'label': i % 3, 'id': i}


@pytest.fixture(scope='module')
def tfds_dir(tmp_path_factory):
  directory = tmp_path_factory.mktemp('tfds')
  # A builder with no downloads prepares locally; no test may reach a real download.
  TinyQrnetImages(data_dir=str(directory), file_format='array_record').download_and_prepare(
      download_config=tfds.download.DownloadConfig(try_download_gcs=False))
  return directory


def tfds_config(directory, **extra):
  fields = dict(name='tfds', tfds_name='tiny_qrnet_images', image_size=8, data_dir=str(directory),
                num_examples=0, num_classes=0, num_workers=0)
  fields.update(extra)
  return ml_collections.ConfigDict(fields)


def test_tfds_array_record_through_the_pipeline(tfds_dir):
  ds = data.load_dataset(tfds_config(tfds_dir), seed=0)
  assert ds.num_classes == 3 and ds.info['class_names'] == ['cat', 'dog', 'fish']
  assert ds.info['tfds_splits_pooled'] == ['test', 'train']
  json.dumps(ds.info)
  assert (len(ds.train), len(ds.val), len(ds.test)) == (12, 3, 3)
  record = json.loads(open(ds.info['split_file']).read())
  keys = [k for s in ('train', 'val', 'test') for k in record['splits'][s]]
  assert len(set(keys)) == 18
  ids = []
  for split in (ds.train, ds.val, ds.test):
    for batch in data.eval_batches(split, 4):
      images, labels = batch['image'][batch['mask']], batch['label'][batch['mask']]
      assert images.shape[1:] == (8, 8, 3) and images.dtype == np.uint8
      value = images[:, 0, 0, 0].astype(int)  # example i is filled with i
      assert (images == value[:, None, None, None]).all()
      np.testing.assert_array_equal(labels, value % 3)
      ids.extend(value)
  assert sorted(ids) == list(range(18))
  batch = next(data.train_batches(ds.train, 4, seed=0))
  assert batch['image'].shape == (4, 8, 8, 3)


def test_tfds_decoded_in_worker_processes(tfds_dir, tmp_path):
  config = tfds_config(tfds_dir, cache='none', num_workers=2,
                       split_file=str(tmp_path / 'split.json'))
  ds = data.load_dataset(config, seed=0)
  in_workers = [b['label'] for b in data.eval_batches(ds.train, 4)]
  in_process = [b['label'] for b in data.eval_batches(ds.train, 4, num_workers=0)]
  np.testing.assert_array_equal(np.concatenate(in_workers), np.concatenate(in_process))


def test_tfds_missing_dataset_names_the_fields(tmp_path):
  with pytest.raises(FileNotFoundError, match='config.data.tfds_name'):
    data.load_dataset(tfds_config(tmp_path, tfds_name='no_such_qrnet_dataset'), seed=0)
