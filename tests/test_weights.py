"""Keras .h5 porting (structure checks, both weight namings, new heads), the Orbax
converter round trip, and fetching against local files and a local HTTP server only."""
import functools
import hashlib
import http.server
import json
import os
import socket
import threading
import time

import h5py
import jax
import numpy as np
import pytest

from qrnet_jax.weights import convert, fetch, keras_h5
from qrnet_jax.weights import KERAS_WEIGHTS, KerasH5Error, fetch_weights, load_keras_h5


# --- Synthetic files in the official layout ----------------------------------------------

def abstract(arch, num_classes=1000):
  return keras_h5.expected_variables(arch, num_classes)


def random_like(tree, seed=0):
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda s: rng.standard_normal(s.shape).astype(np.float32), tree)


def equal_trees(a, b):
  same_structure = jax.tree.structure(a) == jax.tree.structure(b)
  return same_structure and all(np.array_equal(x, y) for x, y in
                                zip(jax.tree.leaves(a), jax.tree.leaves(b)))


@pytest.fixture(scope='module')
def resnet50_file(tmp_path_factory):
  """A ResNet50 file of random values (about 100 MB), and those values."""
  values = random_like(abstract('resnet50'))
  path = str(tmp_path_factory.mktemp('h5') / 'resnet50.h5')
  keras_h5.write_keras_h5(path, values)
  return path, values


def test_nested_names_round_trip_exactly(resnet50_file):
  path, values = resnet50_file
  with h5py.File(path, 'r') as f:
    assert list(f['conv1_bn'].attrs['weight_names']) == [
        b'conv1_bn/gamma:0', b'conv1_bn/beta:0', b'conv1_bn/moving_mean:0',
        b'conv1_bn/moving_variance:0']
  assert equal_trees(load_keras_h5(path, 'resnet50'), values)


def test_vgg16_flat_keras1_names(tmp_path):
  # Full-size structure with unwritten (zero) datasets; two small layers hold real values.
  variables = dict(abstract('vgg16'))
  params = dict(variables['params'])
  small = random_like({'block1_conv1': params['block1_conv1'],
                       'predictions': {'bias': params['predictions']['bias']}}, seed=1)
  params['block1_conv1'] = small['block1_conv1']
  params['predictions'] = {**params['predictions'], 'bias': small['predictions']['bias']}
  path = str(tmp_path / 'vgg16.h5')
  keras_h5.write_keras_h5(path, {'params': params}, naming='flat')
  with h5py.File(path, 'r') as f:
    assert list(f['block1_conv1'].attrs['weight_names']) == [b'block1_conv1_W_1:0',
                                                            b'block1_conv1_b_1:0']
  ported = load_keras_h5(path, 'vgg16')
  assert set(ported) == {'params'}
  np.testing.assert_array_equal(ported['params']['block1_conv1']['kernel'],
                                small['block1_conv1']['kernel'])
  np.testing.assert_array_equal(ported['params']['predictions']['bias'],
                                small['predictions']['bias'])
  assert ported['params']['fc1']['kernel'].shape == (25088, 4096)


def test_inception_v3_structure_and_chunked_layer_names(tmp_path):
  path = str(tmp_path / 'inception_v3.h5')
  keras_h5.write_keras_h5(path, abstract('inception_v3'))
  with h5py.File(path, 'a') as f:  # Keras splits long name lists into layer_names0, 1, ...
    names = f.attrs['layer_names']
    del f.attrs['layer_names']
    f.attrs['layer_names0'], f.attrs['layer_names1'] = names[:100], names[100:]
    assert list(f['batch_normalization_94'].attrs['weight_names']) == [
        b'batch_normalization_94/beta:0', b'batch_normalization_94/moving_mean:0',
        b'batch_normalization_94/moving_variance:0']
  ported = load_keras_h5(path, 'inception_v3')
  keras_h5.check_structure(ported, abstract('inception_v3'))
  assert 'scale' not in ported['params']['batch_normalization_1']


def test_new_head_is_fresh_and_keeps_the_rest(resnet50_file):
  path, values = resnet50_file
  ported = load_keras_h5(path, 'resnet50', num_classes=10, rng=3)
  keras_h5.check_structure(ported, abstract('resnet50', 10))
  head = ported['params']['predictions']
  assert head['kernel'].shape == (2048, 10) and np.all(head['bias'] == 0)
  assert 0.5 / np.sqrt(2048) < head['kernel'].std() < 2 / np.sqrt(2048)  # lecun_normal
  assert equal_trees({k: v for k, v in ported['params'].items() if k != 'predictions'},
                     {k: v for k, v in values['params'].items() if k != 'predictions'})
  again = load_keras_h5(path, 'resnet50', num_classes=10, rng=3)['params']['predictions']
  other = load_keras_h5(path, 'resnet50', num_classes=10, rng=4)['params']['predictions']
  assert equal_trees(again, head) and not np.array_equal(other['kernel'], head['kernel'])


def test_vgg16_new_head_takes_fc1_fc2_from_the_file(tmp_path):
  variables = abstract('vgg16')
  params = dict(variables['params'])
  params['fc2'] = random_like(params['fc2'], seed=2)
  path = str(tmp_path / 'vgg16.h5')
  keras_h5.write_keras_h5(path, {'params': params}, naming='flat')
  ported = load_keras_h5(path, 'vgg16', num_classes=101)
  np.testing.assert_array_equal(ported['params']['fc2']['kernel'], params['fc2']['kernel'])
  assert ported['params']['fc1']['kernel'].shape == (25088, 4096)
  assert ported['params']['predictions']['kernel'].shape == (4096, 101)


# --- Wrong files fail, naming the layer ------------------------------------------------------

def write_variant(tmp_path, arch, edit, naming='nested'):
  variables = jax.tree.map(lambda x: x, abstract(arch))  # a mutable copy of the dicts
  edit(variables)
  path = str(tmp_path / f'{arch}_variant.h5')
  keras_h5.write_keras_h5(path, variables, naming=naming)
  return path


def test_missing_layer_is_named(tmp_path):
  def drop(v):
    del v['params']['conv2d_94'], v['params']['batch_normalization_94']
    del v['batch_stats']['batch_normalization_94']
  path = write_variant(tmp_path, 'inception_v3', drop)
  with pytest.raises(KerasH5Error, match='missing layers: batch_normalization_94, conv2d_94'):
    load_keras_h5(path, 'inception_v3')


def test_wrong_shape_names_layer_and_both_shapes(tmp_path):
  def shrink(v):
    v['params']['fc1']['kernel'] = jax.ShapeDtypeStruct((1000, 4096), np.float32)
  path = write_variant(tmp_path, 'vgg16', shrink, naming='flat')
  with pytest.raises(KerasH5Error) as error:
    load_keras_h5(path, 'vgg16')
  message = str(error.value)
  assert 'layer fc1 weight kernel (fc1_W_1:0)' in message
  assert 'expected shape (25088, 4096), file shape (1000, 4096)' in message


def test_extra_layer_and_wrong_weight_count_are_named(tmp_path):
  def extend(v):
    v['params']['extra_dense'] = {'kernel': jax.ShapeDtypeStruct((4, 4), np.float32)}
    v['params']['batch_normalization_7'] = {
        'scale': jax.ShapeDtypeStruct((64,), np.float32), **v['params']['batch_normalization_7']}
  path = write_variant(tmp_path, 'inception_v3', extend)
  with pytest.raises(KerasH5Error) as error:
    load_keras_h5(path, 'inception_v3')
  message = str(error.value)
  assert 'unexpected layers: extra_dense' in message
  assert 'layer batch_normalization_7: expected 3 weights' in message
  assert 'file has 4' in message


def test_wrong_architecture_is_named(resnet50_file):
  path, _ = resnet50_file
  with pytest.raises(KerasH5Error) as error:
    load_keras_h5(path, 'vgg16')
  message = str(error.value)
  assert 'missing layers: block1_conv1' in message and 'conv1_conv' in message
  assert 'another architecture' in message and 'those of resnet50' in message
  with pytest.raises(ValueError, match="'small_vgg'"):
    load_keras_h5(path, 'small_vgg')


def test_structure_check_names_left_over_and_missing():
  expected = {'params': {'a': {'kernel': jax.ShapeDtypeStruct((2, 3), np.float32)}}}
  with pytest.raises(KerasH5Error, match=r"left over.*'b'"):
    keras_h5.check_structure({'params': {'a': {'kernel': np.zeros((2, 3))},
                                         'b': {'bias': np.zeros(3)}}}, expected)
  with pytest.raises(KerasH5Error, match=r"expected shape \(2, 3\), got \(3, 2\)"):
    keras_h5.check_structure({'params': {'a': {'kernel': np.zeros((3, 2))}}}, expected)
  with pytest.raises(KerasH5Error, match="missing"):
    keras_h5.check_structure({'params': {}}, expected)


# --- Orbax converter ----------------------------------------------------------------------

def test_converter_round_trip(resnet50_file, tmp_path):
  path, values = resnet50_file
  out = str(tmp_path / 'resnet50_imagenet')
  convert.main(['--arch', 'resnet50', '--h5', path, '--out', out])
  assert equal_trees(convert.load_converted(out), values)
  assert convert.converted_info(out)['arch'] == 'resnet50'

  out10 = str(tmp_path / 'resnet50_k10')
  convert.main(['--arch', 'resnet50', '--h5', path, '--out', out10, '--num_classes', '10'])
  restored = convert.load_converted(out10)
  assert equal_trees(restored, load_keras_h5(path, 'resnet50', num_classes=10, rng=0))
  with open(os.path.join(out10, convert.INFO_FILE)) as f:
    assert json.load(f)['num_classes'] == 10


# --- Fetching: local files and a local server only -----------------------------------------

def test_table_holds_the_official_files():
  assert KERAS_WEIGHTS['vgg16'].url == ('https://storage.googleapis.com/tensorflow/'
                                        'keras-applications/vgg16/'
                                        'vgg16_weights_tf_dim_ordering_tf_kernels.h5')
  assert KERAS_WEIGHTS['inception_v3'].md5 == '9a0d58056eeedaa3f26cb7ebd46da564'
  assert KERAS_WEIGHTS['resnet50'].url.endswith(
      '/resnet/resnet50_weights_tf_dim_ordering_tf_kernels.h5')
  assert KERAS_WEIGHTS['resnet50'].md5 == '2cb95161c43110f7111970584f804107'


PAYLOAD = b'not really weights, but bytes with a known md5\n' * 100


@pytest.fixture
def served(tmp_path, monkeypatch):
  """PAYLOAD served on 127.0.0.1 as the vgg16 file, with KERAS_WEIGHTS pointing at it."""
  root = tmp_path / 'server'
  root.mkdir()
  (root / 'vgg16.h5').write_bytes(PAYLOAD)
  handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
  handler.log_message = lambda *args: None
  server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
  thread = threading.Thread(target=server.serve_forever, daemon=True)
  thread.start()
  url = f'http://127.0.0.1:{server.server_address[1]}/vgg16.h5'
  info = fetch.KerasWeights('vgg16_weights_tf_dim_ordering_tf_kernels.h5', url,
                            hashlib.md5(PAYLOAD).hexdigest())
  monkeypatch.setitem(fetch.KERAS_WEIGHTS, 'vgg16', info)
  yield info
  server.shutdown()
  server.server_close()


def test_download_verifies_and_caches(served, tmp_path):
  cache = str(tmp_path / 'cache')
  path = fetch_weights('vgg16', cache)
  assert path == os.path.join(cache, served.filename)
  assert open(path, 'rb').read() == PAYLOAD
  assert os.listdir(cache) == [served.filename]  # no partial file left behind
  assert fetch_weights('vgg16', cache, url='http://127.0.0.1:9/unused') == path  # cache hit


def test_download_hash_mismatch_keeps_nothing(served, tmp_path, monkeypatch):
  monkeypatch.setitem(fetch.KERAS_WEIGHTS, 'vgg16',
                      fetch.KerasWeights(served.filename, served.url, '0' * 32))
  cache = str(tmp_path / 'cache')
  with pytest.raises(fetch.HashMismatchError, match='md5'):
    fetch_weights('vgg16', cache)
  assert os.listdir(cache) == []


def test_missing_on_server_is_a_clear_error(served, tmp_path):
  with pytest.raises(fetch.WeightsUnavailableError, match='config.classifiers.vgg16.keras_h5'):
    fetch_weights('vgg16', str(tmp_path / 'cache'), url=served.url + '.absent')


def _closed_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def test_unreachable_server_fails_fast_with_instructions(tmp_path):
  start = time.monotonic()
  with pytest.raises(fetch.WeightsUnavailableError) as error:
    fetch_weights('inception_v3', str(tmp_path / 'cache'), timeout=1.0,
                  url=f'http://127.0.0.1:{_closed_port()}/x.h5')
  assert time.monotonic() - start < 5
  message = str(error.value)
  assert KERAS_WEIGHTS['inception_v3'].filename in message
  assert KERAS_WEIGHTS['inception_v3'].url in message
  assert 'config.classifiers.inception_v3.keras_h5' in message


def test_silent_server_times_out(tmp_path):
  with socket.socket() as listener:  # accepts connections, never answers
    listener.bind(('127.0.0.1', 0))
    listener.listen(1)
    start = time.monotonic()
    with pytest.raises(fetch.WeightsUnavailableError):
      fetch_weights('resnet50', str(tmp_path / 'cache'), timeout=0.5,
                    url=f'http://127.0.0.1:{listener.getsockname()[1]}/x.h5')
    assert time.monotonic() - start < 5


def test_local_path_wins_and_a_hash_mismatch_only_warns(tmp_path):
  local = tmp_path / 'my_vgg16.h5'
  local.write_bytes(PAYLOAD)
  with pytest.warns(UserWarning, match='md5 differs'):
    assert fetch_weights('vgg16', str(tmp_path / 'cache'), path=str(local)) == str(local)
  with pytest.raises(FileNotFoundError, match='config.classifiers.vgg16.keras_h5'):
    fetch_weights('vgg16', str(tmp_path / 'cache'), path=str(tmp_path / 'absent.h5'))
  with pytest.raises(ValueError, match="'vgg19'"):
    fetch_weights('vgg19', str(tmp_path / 'cache'))


def test_local_path_with_the_right_hash_is_silent(tmp_path, served, recwarn):
  local = tmp_path / 'vgg16.h5'
  local.write_bytes(PAYLOAD)
  assert fetch_weights('vgg16', str(tmp_path / 'cache'), path=str(local)) == str(local)
  assert not [w for w in recwarn if 'md5' in str(w.message)]
