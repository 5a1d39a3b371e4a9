"""gs:// workdirs and data directories, against a GCS emulator on 127.0.0.1 (gcp-storage-emulator,
a pinned test requirement): a run on GCS is killed and resumed there and ends bit-equal to the same
run on local disk, writing the same files; a dataset is read from a bucket.

What the emulator cannot show: real GCS's latency, eventual listing and IAM; Orbax's GCS path
(commit files instead of renames) and tensorboardX's uploads do run against it.
"""
import importlib
import io
import json
import os
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from PIL import Image

from qrnet_jax import config_validation, data, files, run, steps
from qrnet_jax.errors import ConfigError
from tests.test_train import Killed, latest_params, tiny_run_config

BUCKET = 'qrnet-test'
# The emulator, plus the x-goog-generation header on downloads, which real GCS sends and
# tensorstore (Orbax's array writer) requires to read an object back.
SERVER = """
import sys, time
from gcp_storage_emulator.handlers import objects
emulator_download = objects.download

def download(request, response, storage, *args, **kwargs):
  try:
    found = storage.get_file_obj(request.params['bucket_name'], request.params['object_id'])
    response['x-goog-generation'] = found['generation']
    response['x-goog-metageneration'] = found['metageneration']
  except Exception:  # not found: the emulator answers 404
    pass
  return emulator_download(request, response, storage, *args, **kwargs)

objects.download = download
from gcp_storage_emulator.server import create_server
server = create_server('127.0.0.1', int(sys.argv[1]), in_memory=True, default_bucket=sys.argv[2])
server.start()
while True:
  time.sleep(60)
"""


def _free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _wait_for_port(port, process, timeout_s=30):
  deadline = time.time() + timeout_s
  while time.time() < deadline and process.poll() is None:
    with socket.socket() as s:
      if s.connect_ex(('127.0.0.1', port)) == 0:
        return True
    time.sleep(0.1)
  return False


@pytest.fixture(scope='module')
def gcs():
  """A GCS emulator with one bucket; the libraries pointed at it through their environment
  variables (gcsfs and google-cloud-storage: STORAGE_EMULATOR_HOST; tensorstore, which Orbax
  writes arrays with: TENSORSTORE_GCS_HTTP_URL and a test token)."""
  port = _free_port()
  url = f'http://127.0.0.1:{port}'
  # gcsfs's zonal-bucket probe needs real credentials; against the emulator it only warns, per call.
  env = {'STORAGE_EMULATOR_HOST': url, 'TENSORSTORE_GCS_HTTP_URL': url,
         'GOOGLE_AUTH_TOKEN_FOR_TESTING': 'emulator', 'GOOGLE_CLOUD_PROJECT': 'test',
         'GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT': 'false'}
  saved = {k: os.environ.get(k) for k in env}
  os.environ.update(env)
  server = None
  try:
    try:
      importlib.import_module('gcp_storage_emulator')
      files.check_remote_support('gs://x', 'gcs')
    except (ImportError, ValueError) as e:
      pytest.skip(f'the GCS emulator or the gcs libraries are not installed: {e}')
    server = subprocess.Popen([sys.executable, '-c', SERVER, str(port), BUCKET],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if not _wait_for_port(port, server):
      pytest.skip(f'the GCS emulator did not start on 127.0.0.1:{port} '
                  f'(exit code {server.poll()})')
    yield f'gs://{BUCKET}'
  finally:
    for k, v in saved.items():
      if v is None:
        os.environ.pop(k, None)
      else:
        os.environ[k] = v
    if server is not None:
      server.kill()
      server.wait()


def _relative_files(root):
  """Files under `root` (local or gs://), relative, outside Orbax's checkpoint folders (whose
  commit protocol differs on GCS by design); event file names reduced to their kind."""
  root_path = files.as_path(root)
  found = set()
  for folder, _, names in root_path.walk():
    relative = os.path.relpath(os.fspath(folder).split('://')[-1],
                               os.fspath(root_path).split('://')[-1])
    for name in names:
      path = os.path.normpath(os.path.join(relative, name))
      if 'checkpoints' in path.split(os.sep) or 'variables' in path.split(os.sep):
        continue
      found.add(path.split('events.out.tfevents')[0] + 'events' if 'tfevents' in path else path)
  return found


def _dies_at_step(step):
  real_jit = steps.jit_train_step

  def jit_train_step(mesh, **static):
    step_fn, calls = real_jit(mesh, **static), []

    def counted(*args):
      calls.append(1)
      if len(calls) == step:
        raise Killed()
      return step_fn(*args)
    return counted
  return jit_train_step


def test_run_on_gcs_killed_and_resumed_equals_the_local_run(gcs, tmp_path, monkeypatch):
  devices = jax.devices()[:1]
  config = tiny_run_config(**{'train.evaluate_test': True})
  local = str(tmp_path / 'local')
  remote = f'{gcs}/runs/tiny'
  local_summary = run.train_and_evaluate(config, local, devices)

  config_validation.check_workdir(remote)
  monkeypatch.setattr(steps, 'jit_train_step', _dies_at_step(14))  # in QRNet's Algorithm 1 epochs
  with pytest.raises(Killed):
    run.train_and_evaluate(config, remote, devices)
  assert files.is_file(f'{remote}/config.json') and not files.exists(f'{remote}/summary.json')
  monkeypatch.undo()
  remote_summary = run.train_and_evaluate(config, remote, devices)

  local_step, local_params = latest_params(local)
  remote_step, remote_params = latest_params(remote)
  assert remote_step == local_step > 14
  jax.tree.map(np.testing.assert_array_equal, remote_params, local_params)
  assert remote_summary.test == local_summary.test
  assert remote_summary.workdir == remote
  assert json.loads(files.read_text(f'{remote}/summary.json'))['final_step'] == remote_step
  with np.load(io.BytesIO(files.read_bytes(f'{remote}/{run.SAMPLES_FILE}'))) as remote_samples, \
       np.load(os.path.join(local, run.SAMPLES_FILE)) as local_samples:
    np.testing.assert_array_equal(remote_samples['restored'], local_samples['restored'])
  assert _relative_files(remote) == _relative_files(local)
  assert {'config.json', 'summary.json', 'accuracy_by_level.png', 'tensorboard/events',
          'classifiers/small_vgg/classifier.json'} <= _relative_files(local)


def test_dataset_read_from_a_bucket_equals_the_local_folder(gcs, tmp_path, monkeypatch):
  monkeypatch.setattr(data, 'CACHE_ROOT', str(tmp_path / 'cache'))
  local = tmp_path / 'images'
  rng = np.random.default_rng(0)
  for c in range(3):
    for i in range(6):
      pixels = rng.integers(0, 256, (20 + i, 24, 3), dtype=np.uint8)
      relative = f'class_{c}/img_{i}.png'
      (local / f'class_{c}').mkdir(parents=True, exist_ok=True)
      Image.fromarray(pixels).save(local / relative)
      files.write_bytes(f'{gcs}/images/{relative}', (local / relative).read_bytes())
  config = tiny_run_config(**{'data.name': 'folder', 'data.image_size': 16,
                              'data.cache': 'none'}).data
  config.data_dir = str(local)
  from_disk = data.load_dataset(config, seed=0)
  config.data_dir = f'{gcs}/images'
  config.split_file = f'{gcs}/splits/images.json'  # the split file may live in a bucket too
  from_bucket = data.load_dataset(config, seed=0)
  assert files.read_json(config.split_file)['splits'] == json.loads(
      open(from_disk.info['split_file']).read())['splits']
  for split in ('train', 'val', 'test'):
    a, b = getattr(from_disk, split), getattr(from_bucket, split)
    assert len(a) == len(b) > 0
    every = np.arange(len(a))
    np.testing.assert_array_equal(a.batch(every)['image'], b.batch(every)['image'])
    np.testing.assert_array_equal(a.batch(every)['label'], b.batch(every)['label'])
  assert from_bucket.info['root'] == str(tmp_path / 'cache' / 'gcs' / BUCKET / 'images')


def test_unreachable_bucket_is_refused_naming_the_flag(gcs):
  with pytest.raises(ConfigError, match=r'--workdir=gs://no-such-bucket/run: cannot write'):
    config_validation.check_workdir('gs://no-such-bucket/run')
  config = tiny_run_config(**{'data.name': 'folder'}).data
  config.data_dir = f'{gcs}/no/such/folder'
  with pytest.raises(ConfigError, match=r'config.data.data_dir: gs://.*/no/such/folder does not'):
    config_validation.validate_data(config)


def test_a_file_needed_locally_is_copied_once(gcs, tmp_path):
  files.write_bytes(f'{gcs}/weights/vgg16.h5', b'weights')
  local = files.local_copy(f'{gcs}/weights/vgg16.h5', str(tmp_path))
  assert local == str(tmp_path / BUCKET / 'weights' / 'vgg16.h5')
  assert open(local, 'rb').read() == b'weights'
  os.utime(local, (0, 0))
  assert files.local_copy(f'{gcs}/weights/vgg16.h5', str(tmp_path)) == local
  assert os.stat(local).st_mtime == 0  # the same size: not copied again


def test_small_files_on_gcs(gcs):
  path = f'{gcs}/small/marker.json'
  assert files.read_json(path) is None
  files.write_json(path, {'a': [1, 2]})
  assert files.read_json(path) == {'a': [1, 2]}
  files.write_text(path, '')
  assert files.read_json(path) is None  # empty: taken as not written
