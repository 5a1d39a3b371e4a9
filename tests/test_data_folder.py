"""Class-per-folder trees and Caltech archives, read end to end from tiny files in tmp_path."""
import hashlib
import io
import json
import logging
import os
import shutil
import tarfile
import zipfile

import ml_collections
import numpy as np
import pytest
from PIL import Image

from qrnet_jax import data
from qrnet_jax.data import folder, images, splits

PER_CLASS = 10  # -> 2 test, 2 val, 6 train per class


def _pixels(rng, h, w):
  return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def make_tree(root, rng=None):
  """Caltech-style tree: JPEG, PNG, grey, CMYK, palette, RGBA, 16-bit, one truncated JPEG, junk."""
  rng = rng or np.random.default_rng(0)
  os.makedirs(root)
  for name in ('airplanes', 'Faces', 'Leopards', 'BACKGROUND_Google'):
    os.makedirs(os.path.join(root, name))
  for i in range(PER_CLASS):  # RGB JPEGs of several sizes
    Image.fromarray(_pixels(rng, 40 + i, 60)).save(
        os.path.join(root, 'airplanes', f'image_{i:04d}.jpg'))
  # In a sub-folder: part of the class for 'folder', ignored for Caltech (as torchvision does).
  os.makedirs(os.path.join(root, 'airplanes', 'extra'))
  Image.fromarray(_pixels(rng, 30, 30)).save(os.path.join(root, 'airplanes', 'extra', 'sub.jpg'))
  modes = ['L', 'P', 'RGBA', 'I;16'] + ['L'] * (PER_CLASS - 4)
  for i, mode in enumerate(modes):  # PNGs in every mode
    rgb = Image.fromarray(_pixels(rng, 30, 20))
    if mode == 'I;16':
      image = Image.fromarray(rng.integers(0, 65536, (30, 20), dtype=np.uint16))
      assert image.mode.startswith('I')
    else:
      image = rgb.convert(mode)
    image.save(os.path.join(root, 'Faces', f'image_{i:04d}.png'))
  for i in range(PER_CLASS):  # CMYK JPEGs
    Image.fromarray(_pixels(rng, 50, 50)).convert('CMYK').save(
        os.path.join(root, 'Leopards', f'image_{i:04d}.jpg'))
  for i in range(3):
    Image.fromarray(_pixels(rng, 20, 20)).save(
        os.path.join(root, 'BACKGROUND_Google', f'image_{i:04d}.jpg'))
  # A truncated JPEG (extra, so every class keeps PER_CLASS readable images).
  buffer = io.BytesIO()
  Image.fromarray(_pixels(rng, 64, 64)).save(buffer, 'JPEG')
  with open(os.path.join(root, 'Leopards', 'truncated.jpg'), 'wb') as f:
    f.write(buffer.getvalue()[:len(buffer.getvalue()) // 2])
  for junk in ('.DS_Store', 'Leopards/.DS_Store', 'Faces/Thumbs.db', 'airplanes/notes.txt'):
    with open(os.path.join(root, junk), 'wb') as f:
      f.write(b'\0\1junk')


def config(name, data_dir, **extra):
  fields = dict(name=name, image_size=16, data_dir=str(data_dir), num_examples=0, num_classes=0,
                num_workers=0)
  fields.update(extra)
  return ml_collections.ConfigDict(fields)


def all_batches(source, batch_size=8):
  out = [b for b in data.eval_batches(source, batch_size)]
  mask = np.concatenate([b['mask'] for b in out])
  return (np.concatenate([b['image'] for b in out])[mask],
          np.concatenate([b['label'] for b in out])[mask])


def test_image_modes_convert_to_rgb():
  rng = np.random.default_rng(1)
  rgb = Image.fromarray(_pixels(rng, 9, 7))
  for image in (rgb.convert('L'), rgb.convert('CMYK'), rgb.convert('P'), rgb.convert('RGBA'),
                rgb.convert('LA'), Image.fromarray(np.full((9, 7), 65535, np.uint16))):
    out = images.resize(image, 5)
    assert out.shape == (5, 5, 3) and out.dtype == np.uint8, image.mode
  white16 = images.resize(Image.fromarray(np.full((9, 7), 65535, np.uint16)), 5)
  assert (white16 == 255).all()  # 16-bit scaled, not clipped from a wrong range
  grey = images.resize(rgb.convert('L'), 5)
  assert (grey[..., 0] == grey[..., 1]).all() and (grey[..., 1] == grey[..., 2]).all()


def test_center_crop_keeps_the_middle():
  image = np.zeros((10, 30, 3), np.uint8)
  image[:, 10:20] = 255  # white middle square, black sides
  assert (images.resize_array(image, 10, 'center_crop') == 255).all()
  squashed = images.resize_array(image, 10, 'squash')
  assert squashed[:, 0].max() == 0 and squashed[:, 5].min() == 255


def test_caltech_tree_end_to_end(tmp_path, caplog):
  root = tmp_path / '101_ObjectCategories'
  make_tree(str(root))
  with caplog.at_level(logging.WARNING):
    ds = data.load_dataset(config('caltech101', tmp_path), seed=123)
  assert 'truncated.jpg' in caplog.text
  info = ds.info
  json.dumps(info)  # it goes into the run's JSON summary
  assert ds.num_classes == 3 and info['class_names'] == ['Faces', 'Leopards', 'airplanes']
  assert info['excluded_classes'] == ['BACKGROUND_Google']
  assert info['skipped_count'] == 1 and info['skipped_files'] == ['Leopards/truncated.jpg']
  # .DS_Store, Thumbs.db, notes.txt in class folders, and the sub-folder image.
  assert info['ignored_files_count'] == 4 and 'airplanes/extra/sub.jpg' in info['ignored_files']
  assert (len(ds.train), len(ds.val), len(ds.test)) == (18, 6, 6)
  record = json.loads((tmp_path / 'qrnet_split_caltech101.json').read_text())
  parts = [set(record['splits'][s]) for s in splits.SPLITS]
  assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
  assert len(set.union(*parts)) == 3 * PER_CLASS
  for source, n in ((ds.train, 6), (ds.val, 2), (ds.test, 2)):
    pixels, labels = all_batches(source)
    assert pixels.shape == (len(source), 16, 16, 3) and pixels.dtype == np.uint8
    assert labels.dtype == np.int32
    assert np.bincount(labels, minlength=3).tolist() == [n] * 3  # stratified per class
  assert all(not f.startswith('BACKGROUND') for f in set.union(*parts))


def test_split_file_is_reused_and_a_changed_tree_refused(tmp_path):
  root = tmp_path / '101_ObjectCategories'
  make_tree(str(root))
  first = data.load_dataset(config('caltech101', tmp_path), seed=0)
  assert first.info['split_created_now']
  # Another run, another split seed: the saved split is reused as it is.
  second = data.load_dataset(config('caltech101', tmp_path, split_seed=7), seed=1)
  assert not second.info['split_created_now']
  for a, b in ((first.train, second.train), (first.test, second.test)):
    np.testing.assert_array_equal(all_batches(a)[0], all_batches(b)[0])
  # A file added: refused, naming it.
  Image.new('RGB', (8, 8)).save(root / 'Faces' / 'new.png')
  with pytest.raises(splits.DatasetChangedError, match=r'1 files added.*Faces/new.png'):
    data.load_dataset(config('caltech101', tmp_path), seed=0)
  os.remove(root / 'Faces' / 'new.png')
  # A class removed: refused, saying the class count changed.
  shutil.rmtree(root / 'airplanes')
  with pytest.raises(splits.DatasetChangedError, match=r'classes: 3 in the split file, 2 now'):
    data.load_dataset(config('caltech101', tmp_path), seed=0)


def test_background_class_kept_on_request(tmp_path):
  make_tree(str(tmp_path / '101_ObjectCategories'))
  ds = data.load_dataset(config('caltech101', tmp_path, keep_background_class=True,
                                split_file=str(tmp_path / 'with_bg.json')), seed=0)
  assert ds.num_classes == 4 and 'BACKGROUND_Google' in ds.info['class_names']


def _sha256(path):
  return hashlib.sha256(open(path, 'rb').read()).hexdigest()


def test_caltech101_zip_and_caltech256_tar_are_verified_and_extracted_once(tmp_path):
  tree = tmp_path / 'src' / '101_ObjectCategories'
  make_tree(str(tree))
  # caltech-101.zip holding caltech-101/101_ObjectCategories.tar.gz, as published.
  inner = tmp_path / 'src' / '101_ObjectCategories.tar.gz'
  with tarfile.open(inner, 'w:gz') as tar:
    tar.add(tree, arcname='101_ObjectCategories')
  c101 = tmp_path / 'c101'
  c101.mkdir()
  with zipfile.ZipFile(c101 / 'caltech-101.zip', 'w') as z:
    z.write(inner, 'caltech-101/101_ObjectCategories.tar.gz')
  # The official checksum table rejects this home-made archive ...
  with pytest.raises(ValueError, match='does not match the expected 331234750f'):
    data.load_dataset(config('caltech101', c101), seed=0)
  assert not (c101 / '101_ObjectCategories').exists()
  # ... and an explicit checksum accepts it; extracted once, then the folder is used.
  checksum = 'sha256:' + _sha256(c101 / 'caltech-101.zip')
  ds = data.load_dataset(config('caltech101', c101, archive_checksum=checksum), seed=0)
  assert ds.info['extracted_now'] and (c101 / '101_ObjectCategories' / 'Faces').is_dir()
  assert (len(ds.train), len(ds.val), len(ds.test)) == (18, 6, 6)
  again = data.load_dataset(config('caltech101', c101, archive_checksum=checksum), seed=0)
  assert not again.info['extracted_now'] and not again.info['split_created_now']

  # caltech256: a plain tar of 256_ObjectCategories with 257.clutter left out by default.
  tree256 = tmp_path / 'src256' / '256_ObjectCategories'
  for i, name in enumerate(('001.ak47', '002.american-flag', '257.clutter')):
    (tree256 / name).mkdir(parents=True)
    for j in range(5):
      Image.new('RGB', (12, 9), (i * 80, j * 40, 0)).save(tree256 / name / f'{i:03d}_{j:04d}.jpg')
  c256 = tmp_path / 'c256'
  c256.mkdir()
  with tarfile.open(c256 / '256_ObjectCategories.tar', 'w') as tar:
    tar.add(tree256, arcname='256_ObjectCategories')
  checksum = 'md5:' + hashlib.md5(open(c256 / '256_ObjectCategories.tar', 'rb').read()).hexdigest()
  with pytest.raises(ValueError, match='md5'):
    data.load_dataset(config('caltech256', c256, archive_checksum='md5:' + '0' * 32), seed=0)
  ds = data.load_dataset(config('caltech256', c256, archive_checksum=checksum), seed=0)
  assert ds.info['class_names'] == ['001.ak47', '002.american-flag']
  assert (len(ds.train), len(ds.val), len(ds.test)) == (6, 2, 2)


def test_unknown_archive_checksum_is_recorded(tmp_path):
  archive = tmp_path / 'x.tar'
  with tarfile.open(archive, 'w') as tar:
    tar.add(tmp_path, arcname='empty', recursive=False)
  info = folder.verify_archive(str(archive))
  assert info['verified_against'] == []
  assert (tmp_path / 'x.tar.sha256').read_text().split()[0] == _sha256(archive)


def test_folder_errors_name_the_path(tmp_path):
  with pytest.raises(ValueError, match='data_dir.*does not exist'):
    data.load_dataset(config('folder', tmp_path / 'missing'), seed=0)
  with pytest.raises(FileNotFoundError, match=r'101_ObjectCategories.*' + str(tmp_path)):
    data.load_dataset(config('caltech101', tmp_path), seed=0)
  (tmp_path / 'only').mkdir()
  Image.new('RGB', (4, 4)).save(tmp_path / 'only' / 'a.png')
  with pytest.raises(ValueError, match=f'{tmp_path}.*1 class folder'):
    data.load_dataset(config('folder', tmp_path), seed=0)
  (tmp_path / 'empty').mkdir()
  (tmp_path / 'empty' / '.DS_Store').write_bytes(b'x')
  with pytest.raises(ValueError, match=f'{tmp_path / "empty"} holds no image files'):
    data.load_dataset(config('folder', tmp_path), seed=0)


@pytest.mark.parametrize('cache', ['memory', 'disk', 'none'])
def test_cache_modes_give_the_same_batches(tmp_path, cache):
  root = tmp_path / 'tree'
  make_tree(str(root))
  ds = data.load_dataset(config('folder', root, cache=cache, image_size=8), seed=0)
  # 'folder' reads sub-folders and has no background class to leave out: 4 classes.
  assert ds.num_classes == 4 and sum(map(len, (ds.train, ds.val, ds.test))) == 3 * PER_CLASS + 4
  reference = np.stack([images.decode_file(os.path.join(root, f), 8)
                        for f in json.loads(open(ds.info['split_file']).read())['splits']['val']])
  np.testing.assert_array_equal(all_batches(ds.val, 5)[0], reference)
  if cache == 'disk':
    cached = [f for f in os.listdir(root / '.qrnet_cache') if f.endswith('.npy')]
    assert len(cached) == 1
    again = data.load_dataset(config('folder', root, cache=cache, image_size=8), seed=0)
    again.val.prepare()
    assert isinstance(again.val.parent._images, np.memmap)  # read back, not decoded again
    np.testing.assert_array_equal(all_batches(again.val, 5)[0], reference)
