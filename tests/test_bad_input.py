"""Bad input never crashes a run or passes silently (issue 8): command lines as a user types them,
refused within seconds naming the field or flag and leaving nothing behind; out-of-range values;
files that must be readable by others."""
import os
import stat
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from configs import default
from qrnet_jax import config_validation, data, distortions, files, run
from qrnet_jax.config_validation import ConfigError
from qrnet_jax.data import splits

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main_cli(*args, timeout=60):
  """`python -m qrnet_jax.main ARGS` as typed, on the tiny synthetic data."""
  return subprocess.run(
      [sys.executable, '-m', 'qrnet_jax.main', *args], cwd=ROOT, capture_output=True, text=True,
      env=dict(os.environ, PYTHONPATH=ROOT), timeout=timeout)


def assert_refused(result, message):
  assert result.returncode != 0
  assert message in result.stderr, result.stderr[-2000:]
  assert 'Traceback' not in result.stderr, result.stderr[-2000:]


def test_unknown_field_is_named_with_the_fields_there_closest_first(tmp_path):
  result = main_cli('--config', 'configs/default.py', '--workdir', str(tmp_path / 'run'),
                    '--config.data.imagesize=16')
  assert_refused(result, 'error: config.data.imagesize is not a field; the fields of '
                         'config.data: image_size, ')
  assert not os.path.exists(tmp_path / 'run')
  result = main_cli('--config', 'configs/suites/default.py:quick', '--workdir',
                    str(tmp_path / 'run'), '--config.experiments.fashion_mnist.runs.qrnt.tags=x')
  assert_refused(result, 'config.experiments.fashion_mnist.runs.qrnt is not a field; the fields '
                         'of config.experiments.fashion_mnist.runs: qrnet, ')


@pytest.mark.parametrize('workdir, message', [
    ('', 'error: --workdir: empty'),
    ('{file}', 'is a file, not a folder'),
    ('{file}/run', 'is a file, not a folder'),
])
def test_unusable_workdir_is_refused_naming_the_flag(tmp_path, workdir, message):
  (tmp_path / 'file').write_text('not a folder')
  result = main_cli('--config', 'configs/default.py',
                    f'--workdir={workdir.format(file=tmp_path / "file")}')
  assert_refused(result, message)
  assert sorted(os.listdir(tmp_path)) == ['file']


def read_only_folder(tmp_path):
  """A folder this user cannot create files in: a mode-555 folder, or, for root (who may write
  into any folder), /proc/sys."""
  if os.geteuid() != 0:
    folder = tmp_path / 'read_only'
    folder.mkdir()
    folder.chmod(stat.S_IRUSR | stat.S_IXUSR)
    return str(folder)
  if os.path.isdir('/proc/sys') and not os.access('/proc/sys', os.W_OK):
    return '/proc/sys'
  pytest.skip('no folder here that root cannot write into')


def test_read_only_workdir_is_refused(tmp_path):
  folder = read_only_folder(tmp_path)
  result = main_cli('--config', 'configs/default.py', f'--workdir={folder}/run')
  assert_refused(result, f'--workdir={folder}/run: {folder} is not writable')


@pytest.mark.parametrize('field, value', [
    ('classifiers.small_vgg.weight', float('inf')),
    ('classifiers.small_vgg.learning_rate', float('inf')),
    ('train.learning_rate', float('nan')),
    ('distortion.noise_levels', (20., float('inf'))),
])
def test_non_finite_numbers_are_refused(field, value):
  config = default.get_config()
  *parents, leaf = field.split('.')
  node = config
  for parent in parents:
    node = node[parent]
  node[leaf] = value
  with pytest.raises(ConfigError, match=f'config.{field}: .*finite'):
    config_validation.validate(config)


def test_batch_larger_than_the_training_split_is_refused_before_compilation(tmp_path,
                                                                             monkeypatch):
  config = default.get_config()
  config.data.name, config.data.image_size = 'synthetic', 16
  config.data.num_examples, config.data.num_classes = 40, 4
  config.train.batch_size = 64
  monkeypatch.setattr(jax, 'jit', lambda *a, **k: pytest.fail('compiled before the check'))
  with pytest.raises(ConfigError, match=r'config.train.batch_size: 64 is larger than the training '
                                        r'split \(\d+ images\)'):
    run.train_and_evaluate(config, str(tmp_path), jax.devices()[:1])


def test_missing_fashion_mnist_data_dir_is_refused_when_not_downloading(tmp_path):
  config = default.get_config().data
  config.data_dir, config.download = str(tmp_path / 'nowhere'), False
  with pytest.raises(ConfigError, match='config.data.data_dir: .*nowhere does not exist'):
    config_validation.validate_data(config)
  config.download = True  # then it is where the files are fetched to
  config_validation.validate_data(config)


def test_split_file_and_markers_are_readable_by_others(tmp_path):
  old = os.umask(0o022)
  try:
    splits.save({'format': splits.FORMAT_VERSION}, str(tmp_path / 'split.json'))
    files.write_json(str(tmp_path / 'summary.json'), {})
  finally:
    os.umask(old)
  for name in ('split.json', 'summary.json'):
    assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == 0o644


def test_blur_levels_above_the_image_side_are_refused():
  config = default.get_config()
  config.distortion.blur_levels = (1., 2., 33.)  # on 32 px images
  with pytest.raises(ConfigError, match=r'config.distortion.blur_levels: \[33.0\] above 32 px, '
                                        'the image side'):
    config_validation.validate(config)
  with pytest.raises(ValueError, match='sigma may be at most 8'):
    distortions.gaussian_blur(jnp.zeros((1, 8, 8, 3)), 9.)


def test_blur_traces_to_the_same_program_size_whatever_the_kernel():
  images = jnp.zeros((2, 64, 64, 3))
  sizes = [str(jax.make_jaxpr(lambda x, s=s: distortions.gaussian_blur(x, s))(images)).count('\n')
           for s in (1., 10., 60.)]  # lines of the program, nested ones included
  assert sizes[0] == sizes[1] == sizes[2], sizes


# Folders of real-world files.

def image_folder(root, classes=('a', 'b', 'c'), per_class=6):
  rng = np.random.default_rng(0)
  for name in classes:
    os.makedirs(os.path.join(root, name))
    for i in range(per_class):
      Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(
          os.path.join(root, name, f'{i}.png'))
  return root


def folder_config(root):
  config = default.get_config().data
  config.name, config.data_dir, config.image_size, config.cache = 'folder', str(root), 16, 'none'
  return config


def delivered(dataset):
  """Each split's labels by image, from its evaluation batches (every image once, in order)."""
  out = {}
  for name in ('train', 'val', 'test'):
    split = getattr(dataset, name)
    indices = []
    for batch in data.eval_batches(split, 4):
      indices += [int(i) for i, m in zip(batch['index'], batch['mask']) if m]
    out[name] = indices
    assert indices == list(range(len(split)))  # every image exactly once
  return out


def test_dangling_symlink_and_non_utf8_name_are_handled(tmp_path):
  root = image_folder(str(tmp_path / 'images'))
  os.symlink(os.path.join(root, 'nowhere.png'), os.path.join(root, 'a', 'dangling.png'))
  name = os.fsdecode(b'\xff\xfe caf\xe9.png')  # not UTF-8: a surrogate-escaped str
  Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(os.path.join(root, 'b', name))
  dataset = data.load_dataset(folder_config(root), seed=0)
  assert dataset.info['skipped_count'] == 1
  assert dataset.info['skipped_files'] == ['a/dangling.png']
  sizes = {k: len(v) for k, v in delivered(dataset).items()}
  assert sum(sizes.values()) == 3 * 6 + 1  # every readable image, the non-UTF-8 one included
  files.write_json(str(tmp_path / 'summary.json'), dataset.info)
  assert files.read_json(str(tmp_path / 'summary.json'))['skipped_count'] == 1
  again = data.load_dataset(folder_config(root), seed=0)  # the saved split file reads back
  assert again.info['split_sizes'] == dataset.info['split_sizes']


def test_class_with_only_unreadable_files_is_refused_naming_it(tmp_path):
  root = image_folder(str(tmp_path / 'images'))
  os.makedirs(os.path.join(root, 'd'))
  for i in range(3):
    with open(os.path.join(root, 'd', f'{i}.jpg'), 'wb') as f:
      f.write(b'not a jpeg')
  with pytest.raises(ValueError, match=r"class 'd': all its 3 images are unreadable \(d/0.jpg"):
    data.load_dataset(folder_config(root), seed=0)


@pytest.mark.parametrize('field, value, message', [
    ('distortion.types', ('noise', 'frostbite'), "unknown distortion 'frostbite'; allowed: noise, "
     "blur (the paper's) and ImageNet-C's corruption families gaussian_noise, shot_noise, "),
    ('distortion.eval_types', ('fog', 'Fog'), "unknown distortion 'Fog'; allowed: noise, blur"),
    ('distortion.eval_types', ('fog', 'fog'), 'repeats a type'),
    ('distortion.severities', (1, 6), 'must be distinct integers, allowed: 1, 2, 3, 4, 5 '
     "(ImageNet-C's severities); got (1, 6)"),
    ('distortion.severities', (0,), 'allowed: 1, 2, 3, 4, 5'),
    ('distortion.severities', (2.5,), 'allowed: 1, 2, 3, 4, 5'),
    ('distortion.severities', (), 'allowed: 1, 2, 3, 4, 5'),
])
def test_unknown_corruption_family_or_severity_is_refused_naming_the_field(field, value, message):
  config = default.get_config()
  config.distortion[field.split('.')[1]] = value
  with pytest.raises(ConfigError, match=f'^config.{field}: ') as raised:
    config_validation.validate(config)
  assert message in str(raised.value)


def test_corruption_families_and_severities_are_accepted():
  config = default.get_config()
  config.distortion.types = ('noise', 'fog', 'jpeg_compression')
  config.distortion.eval_types = distortions.TYPES
  config.distortion.severities = (2, 4)
  config_validation.validate(config)
  spec = run.evaluation_spec(config)
  assert spec.types == distortions.TYPES
  assert spec.levels_by_type['saturate'] == (2, 4)
  assert spec.levels_by_type['noise'] == config.distortion.noise_levels
  assert run.distortion_spec(config).types == ('noise', 'fog', 'jpeg_compression')


def test_bad_severity_is_refused_before_any_data_loading(tmp_path):
  result = main_cli('--config', 'configs/default.py', '--workdir', str(tmp_path / 'run'),
                    '--config.data.data_dir', str(tmp_path / 'nowhere'),
                    '--config.distortion.severities=(1,2,9)')
  assert_refused(result, 'config.distortion.severities: must be distinct integers, allowed: '
                         '1, 2, 3, 4, 5')
  assert os.listdir(tmp_path) == ['run']  # the workdir (its lock), no data folder
  assert config_validation.CONFIG_FILE not in os.listdir(tmp_path / 'run')
