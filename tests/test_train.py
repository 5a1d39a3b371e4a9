"""The train step and loop: loss goes down, frozen classifiers stay frozen, 1 vs 4 devices agree,
a killed run resumes to the same parameters, bad values stop the run with a clear message."""
import dataclasses
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from configs import default
from qrnet_jax import (benchmark, checkpointing, config_schema, config_validation, corruptions,
                       data, distortions, evaluate, loop, metrics, parallel, run, run_classifiers,
                       steps)
from qrnet_jax.models import QRNet, init_variables
from qrnet_jax.models.small import SmallResNet, SmallVGG

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE = 16
SPEC = steps.DistortionSpec(types=('noise', 'blur'),
                            levels=tuple(distortions.PAPER_LEVELS.items()))


def tiny_dataset(num_examples=96, num_classes=4, seed=0):
  return data.load_dataset(_data_config(num_examples, num_classes), seed)


def _data_config(num_examples, num_classes):
  config = default.get_config().data
  config.name, config.image_size = 'synthetic', SIZE
  config.num_examples, config.num_classes = num_examples, num_classes
  return config


def random_classifier(seed, module=None):
  """SmallResNet with random weights and random BatchNorm statistics (so the BN mode matters)."""
  module = module or SmallResNet(num_classes=4)
  variables = jax.device_get(init_variables(module, seed, SIZE))
  rng = np.random.default_rng(seed)
  variables['batch_stats'] = jax.tree_util.tree_map_with_path(
      lambda path, x: (rng.uniform(0.5, 2., x.shape) if 'var' in jax.tree_util.keystr(path)
                       else rng.normal(0., 0.2, x.shape)).astype(np.float32),
      variables['batch_stats'])
  return module, variables


def setup_step(mesh, trainable=(), small=True, seed=0):
  """A QRNet train state against a randomly initialised, frozen classifier with BatchNorm."""
  qrnet = QRNet(small=small)
  classifier_module, variables = random_classifier(seed + 1)
  trainable_params, frozen_params = steps.split_params(variables['params'], trainable)
  frozen = {'clf': {**variables, 'params': frozen_params}}
  classifier = steps.Classifier('clf', classifier_module, weight=0.01, trainable=trainable)
  tx = optax.adam(1e-3)
  state = steps.create_train_state(init_variables(qrnet, seed, SIZE)['params'],
                                   {'clf': trainable_params}, tx, seed)
  step_fn = steps.jit_train_step(mesh, qrnet=qrnet, classifiers=(classifier,), tx=tx,
                                 distortion=SPEC)
  return (parallel.replicate(state, mesh), parallel.replicate(frozen, mesh), step_fn,
          jax.device_get(frozen))


def run_steps(mesh, num_steps, dataset, batch_size=8, **kwargs):
  state, frozen, step_fn, frozen_before = setup_step(mesh, **kwargs)
  batches = data.train_batches(dataset.train, batch_size, seed=0)
  losses = []
  for _ in range(num_steps):
    state, m = step_fn(state, parallel.global_batch(next(batches), mesh), frozen)
    losses.append(float(m['loss']))
  return state, frozen, frozen_before, np.asarray(losses)


def test_training_lowers_loss_and_frozen_classifier_is_untouched():
  mesh = parallel.make_mesh(jax.devices()[:1])
  state, frozen, frozen_before, losses = run_steps(mesh, 200, tiny_dataset())
  assert losses[-20:].mean() < 0.7 * losses[:20].mean(), (losses[:20].mean(), losses[-20:].mean())
  # The classifier was an argument under stop_gradient: bit-identical (its BatchNorm statistics
  # too), absent from the state, and the optimizer holds moments for QRNet's parameters only.
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(frozen), frozen_before)
  assert jax.tree.leaves(state.params['classifiers']) == []
  qrnet_arrays = len(jax.tree.leaves(state.params['qrnet']))
  moments = [x for x in jax.tree.leaves(state.opt_state) if x.ndim > 0]
  assert len(moments) == 2 * qrnet_arrays  # Adam's mu and nu
  assert int(state.step) == 200


def test_loss_uses_frozen_classifier_in_inference_mode_and_no_gradient_reaches_it():
  module, variables = random_classifier(5)
  qrnet = QRNet(small=True)
  params = {'qrnet': init_variables(qrnet, 0, SIZE)['params'], 'classifiers': {}}
  classifier = steps.Classifier('clf', module, weight=0.01)
  images = jax.random.uniform(jax.random.PRNGKey(1), (6, SIZE, SIZE, 3))
  labels = jnp.arange(6) % 4

  def loss(params, frozen, images):
    terms, _ = steps.per_image_losses(params, frozen, images, images, labels, qrnet=qrnet,
                                      classifiers=(classifier,), train=False)
    return terms['loss'].mean(), terms

  (_, terms), (grad_params, grad_frozen, grad_images) = jax.value_and_grad(
      loss, argnums=(0, 1, 2), has_aux=True)(params, {'clf': variables}, images)
  # Independent of steps.py: the classifier on QRNet's output with running statistics.
  restored = qrnet.apply({'params': params['qrnet']}, images)
  expected = optax.softmax_cross_entropy_with_integer_labels(
      module.apply(variables, restored, train=False), labels)
  batch_mode, _ = module.apply(variables, restored, train=True, mutable=['batch_stats'])
  np.testing.assert_allclose(terms['clf/ce'], expected, rtol=1e-5)
  assert not np.allclose(
      terms['clf/ce'], optax.softmax_cross_entropy_with_integer_labels(batch_mode, labels),
      rtol=1e-3)
  assert all(not np.any(g) for g in jax.tree.leaves(grad_frozen))
  assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grad_params))
  assert np.any(grad_images) and np.all(np.isfinite(grad_images))


def test_end_to_end_hook_trains_only_the_named_part():
  mesh = parallel.make_mesh(jax.devices()[:1])
  state0, _, _, frozen_before = setup_step(mesh, trainable=('predictions',))
  head_before = jax.device_get(state0.params['classifiers']['clf'])
  state, frozen, _, _ = run_steps(mesh, 5, tiny_dataset(), trainable=('predictions',))
  head_after = jax.device_get(state.params['classifiers']['clf'])
  assert set(head_after) == {'predictions'}
  # Adam moments for QRNet and the head only; nothing else of the classifier is in the state.
  trained_arrays = len(jax.tree.leaves(state.params))
  assert len([x for x in jax.tree.leaves(state.opt_state) if x.ndim > 0]) == 2 * trained_arrays
  assert not np.allclose(head_after['predictions']['kernel'], head_before['predictions']['kernel'])
  assert 'predictions' not in frozen_before['clf']['params']
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(frozen), frozen_before)


def test_four_devices_match_one_device():
  dataset = tiny_dataset()
  one = run_steps(parallel.make_mesh(jax.devices()[:1]), 12, dataset)
  four = run_steps(parallel.make_mesh(jax.devices()[:4]), 12, dataset)
  assert len(jax.devices()) >= 4
  np.testing.assert_allclose(four[3], one[3], rtol=2e-5)
  # Summation order differs across 4 shards; Adam rescales such float noise in small gradients,
  # so parameters may drift by a few 1e-5. A wrong reduction moves them by whole steps (1e-3).
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4),
               jax.device_get(four[0].params), jax.device_get(one[0].params))


# The tiny run, as command-line overrides of configs/default.py.
TINY_FLAGS = {'data.name': 'synthetic', 'data.image_size': SIZE, 'data.num_examples': 96, 'data.num_classes': 4,
              'model.small': True, 'train.batch_size': 8, 'train.pretrain_epochs': 1,
              'train.max_epochs': 3, 'train.log_every_steps': 4, 'train.evaluate_test': False,
              'classifiers.small_vgg.train_epochs': 1, 'train.checkpoint_every_steps': 3}


def with_overrides(config, overrides):
  """`config` with {'a.b': value} set, as --config.a.b=value would."""
  for field, value in overrides.items():
    node = config
    *parents, leaf = field.split('.')
    for parent in parents:
      node = node[parent]
    node[leaf] = value
  return config


def tiny_run_config(**overrides):
  return with_overrides(default.get_config(), {**TINY_FLAGS, **overrides})


def main_command(workdir, **extra):
  flags = [f'--config.{k}={v}' for k, v in {**TINY_FLAGS, **extra}.items()]
  return [sys.executable, '-m', 'qrnet_jax.main', '--config', 'configs/default.py',
          '--workdir', str(workdir)] + flags


def latest_params(workdir):
  """(step, params) of the newest checkpoint of a tiny run, restored onto this process's first
  device whatever devices and processes wrote it."""
  tx = optax.adam(1e-3)
  state = steps.create_train_state(init_variables(QRNet(small=True), 0, SIZE)['params'],
                                   {'small_vgg': {}}, tx, 0)
  abstract = checkpointing.abstract_like(jax.device_put(state, jax.devices()[0]))
  manager = checkpointing.Checkpoints(str(workdir))
  try:
    restored, _ = manager.restore_latest(abstract)
    return int(restored.step), jax.device_get(restored.params)
  finally:
    manager.close()


def committed_steps(workdir):
  latest = os.path.join(workdir, 'checkpoints', 'latest')
  if not os.path.isdir(latest):
    return []
  return sorted(int(name) for name in os.listdir(latest) if name.isdigit())


def test_killed_run_resumes_to_the_same_parameters(tmp_path):
  env = dict(os.environ, PYTHONPATH=ROOT)
  subprocess.run(main_command(tmp_path / 'whole'), cwd=ROOT, env=env, check=True,
                 capture_output=True, timeout=600)
  # What a finished run leaves: resolved config, event files, the JSON summary.
  with open(tmp_path / 'whole' / 'summary.json') as f:
    summary = json.load(f)
  assert [h['phase'] for h in summary['history']] == ['pretrain'] + ['train'] * 3
  assert json.load(open(tmp_path / 'whole' / 'config.json'))['train']['batch_size'] == 8
  assert any(name.startswith('events.out.tfevents')
             for name in os.listdir(tmp_path / 'whole' / 'tensorboard'))
  interrupted = tmp_path / 'interrupted'
  process = subprocess.Popen(main_command(interrupted), cwd=ROOT, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  deadline = time.time() + 300
  per_epoch = data.steps_per_epoch(len(tiny_dataset().train), 8)

  def mid_epoch_saved():  # inside an Algorithm 1 epoch, after pretraining
    return [s for s in committed_steps(interrupted) if s > per_epoch and s % per_epoch]

  while time.time() < deadline and not mid_epoch_saved():
    if process.poll() is not None:
      break
    time.sleep(0.05)
  assert process.poll() is None, 'the run ended before it could be killed'
  process.send_signal(signal.SIGKILL)
  process.wait()
  killed_at = committed_steps(interrupted)  # newest: almost always the mid-epoch one
  subprocess.run(main_command(interrupted), cwd=ROOT, env=env, check=True, capture_output=True,
                 timeout=600)
  whole_step, whole = latest_params(tmp_path / 'whole')
  resumed_step, resumed = latest_params(interrupted)
  assert killed_at and max(killed_at) < whole_step == resumed_step
  jax.tree.map(np.testing.assert_array_equal, resumed, whole)


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
  devices = jax.devices()[:1]
  run.train_and_evaluate(tiny_run_config(**{'train.max_epochs': 1}), str(tmp_path), devices)
  good = committed_steps(tmp_path)
  monkeypatch.setattr(steps.losses, 'quality_loss',
                      lambda restored, target: jnp.full(restored.shape[:1], jnp.nan))
  with pytest.raises(metrics.NonFiniteLossError, match='non-finite'):
    run.train_and_evaluate(tiny_run_config(**{'train.max_epochs': 3}), str(tmp_path), devices)
  assert committed_steps(tmp_path) == good


@pytest.mark.parametrize('field, value, message', [
    ('distortion.types', ('noise', 'jpeg'), "config.distortion.types: unknown distortion 'jpeg'"),
    ('classifiers.small_vgg.weight', -0.01, 'config.classifiers.small_vgg.weight'),
    ('train.batch_size', 6, 'config.train.batch_size: 6 does not divide by the 4 devices; the '
                            'nearest sizes that do: 4 or 8'),
    ('train.eval_batch_size', 2, 'config.train.eval_batch_size: 2 does not divide by the 4 '
                                 'devices; the nearest sizes that do: 4'),
    ('data.image_size', 30, 'config.data.image_size: must be a positive multiple of 16'),
    ('classifiers.small_vgg.arch', 'alexnet', "config.classifiers.small_vgg.arch: unknown"),
    ('model.dtype', 'float16', "config.model.dtype: unknown dtype 'float16'"),  # no loss scaling
    ('data.cache', 'ram', "config.data.cache: 'ram'"),  # config_validation.validate_data
])
def test_bad_config_fails_before_data_or_compilation(tmp_path, monkeypatch, field, value, message):
  def forbidden(*args, **kwargs):
    raise AssertionError('data loading or compilation started before the config was checked')
  monkeypatch.setattr(run.data, 'load_dataset', forbidden)
  monkeypatch.setattr(jax, 'jit', forbidden)
  with pytest.raises(config_validation.ConfigError, match=message.replace('(', r'\(')):
    run.train_and_evaluate(tiny_run_config(**{field: value}), str(tmp_path), jax.devices()[:4])


def test_batch_divisibility_has_one_message_with_the_nearest_sizes():
  config_validation.check_batch_divisible('config.train.batch_size', 32, 4, 'devices')
  with pytest.raises(config_validation.ConfigError, match=re.escape(
      'config.train.batch_size: 30 does not divide by the 8 processes; the nearest sizes that '
      'do: 24 or 32')):
    config_validation.check_batch_divisible('config.train.batch_size', 30, 8, 'processes')
  with pytest.raises(config_validation.ConfigError,
                     match='config.train.batch_size: 33 does not divide by the 2 processes; the '
                           'nearest sizes that do: 32 or 34'):
    config_validation.validate(tiny_run_config(**{'train.batch_size': 33}), num_devices=1,
                               num_processes=2)


def test_benchmark_batch_that_does_not_divide_by_the_devices_is_refused_naming_its_flag():
  assert jax.device_count() == 4  # conftest.py
  with pytest.raises(config_validation.ConfigError,
                     match='batch_size: 6 does not divide by the 4 devices; the nearest sizes that '
                           'do: 4 or 8'):
    benchmark.train_step_timer(32, 6, ('small_vgg',), 'float32', num_classes=10, small=True)


def test_cli_names_the_bad_field(tmp_path):
  result = subprocess.run(
      main_command(tmp_path, **{'distortion.types': "('noise','jpeg')"}), cwd=ROOT,
      env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True, text=True, timeout=120)
  assert result.returncode != 0
  assert "config.distortion.types: unknown distortion 'jpeg'" in result.stderr
  assert not os.path.exists(tmp_path / 'config.json')


def test_classifier_checkpoint_is_checked_against_the_config(tmp_path):
  from qrnet_jax.weights import convert
  module = SmallVGG(num_classes=4)
  variables = jax.device_get(init_variables(module, 0, SIZE))
  convert.save_converted(str(tmp_path), variables, {'arch': 'small_vgg', 'num_classes': 4})
  loaded = run_classifiers.load_classifier_checkpoint(str(tmp_path), 'small_vgg', module, 4)
  jax.tree.map(np.testing.assert_array_equal, loaded, variables)
  with pytest.raises(ValueError, match='holds small_vgg with 4 classes; the config asks for '
                                       'small_resnet with 4'):
    run_classifiers.load_classifier_checkpoint(str(tmp_path), 'small_resnet', module, 4)
  with pytest.raises(ValueError, match='small_vgg with 10'):
    run_classifiers.load_classifier_checkpoint(str(tmp_path), 'small_vgg', SmallVGG(num_classes=10), 10)


def test_classifier_seeds_are_the_run_seed_folded_with_a_stable_hash_of_the_name():
  """Names with the same letters get different streams; a name's seed is fold_in(PRNGKey(seed),
  CRC-32 of the name), computed here with zlib and jax.random directly."""
  import zlib  # pylint: disable=g-import-not-at-top
  config = ml_collections.ConfigDict(dict(seed=3))
  seeds = {name: run_classifiers.classifier_seed(config, name)
           for name in ('small_vgg', 'vgg_small', 'lams_vgg')}  # anagrams
  assert len(set(seeds.values())) == 3
  key = jax.random.fold_in(jax.random.PRNGKey(3), zlib.crc32(b'small_vgg'))
  assert seeds['small_vgg'] == int(jax.random.randint(key, (), 0, 2 ** 31 - 1))
  assert run_classifiers.classifier_seed(ml_collections.ConfigDict(dict(seed=4)),
                                         'small_vgg') != seeds['small_vgg']


def test_finetuning_starts_from_init_checkpoint(tmp_path, monkeypatch):
  """Table 4's fine-tuned classifier starts from the clean-trained one's variables, all of them."""
  from qrnet_jax.weights import convert
  dataset = tiny_dataset()
  module = SmallVGG(num_classes=dataset.num_classes)
  clean = jax.device_get(init_variables(module, 7, SIZE))
  convert.save_converted(str(tmp_path / 'clean'), clean,
                         {'arch': 'small_vgg', 'num_classes': dataset.num_classes})
  config = default.get_config()
  config.classifiers = ml_collections.ConfigDict()
  config.eval_classifiers = ml_collections.ConfigDict(dict(small_vgg=default.classifier_config(
      'small_vgg', train_distorted=True, init_checkpoint=str(tmp_path / 'clean'))))
  config_validation.validate(config)
  started_from = []

  def capture(config, dataset, mesh, workdir, spec, c, initial, trainable_names, show_progress):
    started_from.append((initial, c.train_distorted))
    return initial

  monkeypatch.setattr(run, 'train_classifier', capture)
  run.prepare_classifiers(config, 'eval_classifiers', dataset, str(tmp_path / 'run'), {}, None)
  (variables, distorted), = started_from
  assert distorted
  jax.tree.map(np.testing.assert_array_equal, variables, clean)
  config.eval_classifiers.small_vgg.imagenet = True
  with pytest.raises(config_validation.ConfigError,
                     match='eval_classifiers.small_vgg.init_checkpoint: training starts from '
                           'init_checkpoint or from the ImageNet weights'):
    config_validation.validate(config)


def test_missing_imagenet_weights_fail_at_once_naming_the_field(tmp_path, monkeypatch):
  from configs import paper
  from qrnet_jax.weights import fetch
  # A closed port on this machine stands for the unreachable download server.
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
  for arch, info in list(fetch.KERAS_WEIGHTS.items()):
    monkeypatch.setitem(fetch.KERAS_WEIGHTS, arch, dataclasses.replace(
        info, url=f'http://127.0.0.1:{port}/{info.filename}'))
  monkeypatch.setattr(run_classifiers, 'WEIGHTS_CACHE', str(tmp_path))
  monkeypatch.setattr(run.data, 'load_dataset', lambda *a: pytest.fail('loaded data first'))
  config = paper.get_config('method=mqrnet')
  config.data.name, config.data.image_size = 'synthetic', SIZE
  start = time.time()
  with pytest.raises(fetch.WeightsUnavailableError,
                     match=r'set config.classifiers.inception_v3.keras_h5 to its path'):
    run.train_and_evaluate(config, str(tmp_path / 'run'), jax.devices()[:1])
  assert time.time() - start < 30


def test_rerun_with_a_trajectory_changing_config_is_refused(tmp_path):
  run.train_and_evaluate(tiny_run_config(**{'train.max_epochs': 1}), str(tmp_path),
                           jax.devices()[:1])
  with pytest.raises(ValueError, match=r"config.train.learning_rate: 0.001 -> 0.01"):
    run.train_and_evaluate(tiny_run_config(**{'train.learning_rate': 0.01}), str(tmp_path),
                             jax.devices()[:1])
  # Allowed: more epochs, another log interval.
  summary = run.train_and_evaluate(
      tiny_run_config(**{'train.max_epochs': 2, 'train.log_every_steps': 2}), str(tmp_path),
      jax.devices()[:1])
  assert summary.epochs == 3


def test_run_written_before_a_field_existed_resumes_with_its_implicit_value(tmp_path):
  config = tiny_run_config()
  written = json.loads(config_validation.config_json(config))
  del written['model']['conv_impl'], written['classifiers']['small_vgg']['init_checkpoint']
  del written['distortion']['severities'], written['distortion']['eval_types']
  (tmp_path / config_validation.CONFIG_FILE).write_text(json.dumps(written))
  config_validation.check_config_unchanged(config, str(tmp_path))  # 'auto' and '' then as now
  with pytest.raises(ValueError, match=r"config.distortion.eval_types: \[\] -> \['fog'\]"):
    config_validation.check_config_unchanged(
        tiny_run_config(**{'distortion.eval_types': ('fog',)}), str(tmp_path))
  with pytest.raises(ValueError, match=r"config.model.conv_impl: 'auto' -> 'xla'"):
    config_validation.check_config_unchanged(tiny_run_config(**{'model.conv_impl': 'xla'}),
                                             str(tmp_path))
  del written['model']['small']  # not an added field: its absence is a change
  (tmp_path / config_validation.CONFIG_FILE).write_text(json.dumps(written))
  with pytest.raises(ValueError, match=r"config.model.small: None -> True"):
    config_validation.check_config_unchanged(config, str(tmp_path))


def test_a_config_without_the_optional_fields_is_completed_once_with_their_defaults():
  """An old run's config.json (no eval_classifiers, data fields, classifier options) reads as the
  config with those fields at their defaults; a config with every field is left as it is."""
  full = tiny_run_config()
  assert config_validation.config_json(config_schema.completed(full)) == (
      config_validation.config_json(full))
  old = json.loads(config_validation.config_json(full))
  del old['eval_classifiers'], old['model']['conv_impl'], old['train']['eval_batch_size']
  for field in ('resize', 'cache', 'split_seed', 'max_test_examples', 'download'):
    del old['data'][field]
  for field in ('imagenet', 'keras_h5', 'clean_trainable', 'train_distorted', 'init_checkpoint',
                'learning_rate'):
    del old['classifiers']['small_vgg'][field]
  completed = config_schema.completed(ml_collections.ConfigDict(old))
  assert completed.eval_classifiers == ml_collections.ConfigDict()
  assert (completed.model.conv_impl, completed.train.eval_batch_size) == ('auto', 256)
  assert (completed.data.resize, completed.data.cache, completed.data.split_seed,
          completed.data.max_test_examples, completed.data.download) == (
              'squash', 'memory', 0, None, True)
  c = completed.classifiers.small_vgg
  assert (c.imagenet, c.keras_h5, c.clean_trainable, c.train_distorted, c.init_checkpoint,
          c.learning_rate) == (False, '', 'all', False, '', 1e-3)
  config_validation.validate(ml_collections.ConfigDict(old))  # checked at the defaults
  with pytest.raises(config_validation.ConfigError, match='config.model.small: missing'):
    del old['model']['small']  # a field every config has
    config_validation.validate(ml_collections.ConfigDict(old))


def test_paper_config_uses_whole_splits_and_imagenet_classifiers():
  from configs import paper
  for method in paper.METHODS:
    config = paper.get_config(f'dataset=caltech256,method={method}')
    assert (config.data.max_train_examples, config.data.max_eval_examples) == (0, 0)
    assert config.data.image_size == 224
    for c in list(config.classifiers.values()) + list(config.eval_classifiers.values()):
      assert c.imagenet
  assert set(paper.get_config('method=mqrnet').eval_classifiers) == {'resnet50'}
  assert paper.get_config('method=end_to_end').classifiers.vgg16.trainable == 'fc'


def test_evaluation_does_not_depend_on_batch_size_or_devices():
  dataset = tiny_dataset(num_examples=60)
  module, variables = random_classifier(3)
  qrnet = QRNet(small=True)
  params = {'qrnet': init_variables(qrnet, 0, SIZE)['params'], 'classifiers': {}}
  classifier = steps.Classifier('clf', module, weight=0.01)
  results = [evaluate.evaluate_by_level(
      params, {'clf': variables}, dataset.test, spec=SPEC, qrnet=qrnet, classifiers=(classifier,),
      mesh=parallel.make_mesh(jax.devices()[:devices]), batch_size=batch_size)
      for devices, batch_size in ((1, 4), (4, 8))]
  assert len(dataset.test) % 8  # a padded last batch in both runs
  (means, outcomes), (other_means, other_outcomes) = results
  for level, level_metrics in means.items():
    for name, value in level_metrics.items():
      assert other_means[level][name] == pytest.approx(value, rel=1e-5, abs=1e-6), (level, name)
  # Every image once, each with the same outcome; the means are the outcomes' means.
  np.testing.assert_array_equal(outcomes.index, np.arange(len(dataset.test)))
  np.testing.assert_array_equal(outcomes.correct, other_outcomes.correct)
  assert len(outcomes.levels) == 11 and outcomes.metrics == ('none/clf/accuracy',
                                                             'qrnet/clf/accuracy')
  for level in outcomes.levels:
    for metric in outcomes.metrics:
      assert means[level][metric] == pytest.approx(outcomes.get(level, metric).mean(), abs=1e-12)


def test_evaluation_covers_corruption_families_at_each_severity():
  """Levels 'FAMILY/SEVERITY' beside the paper's, each image corrupted with its own key (from its
  index) as corruptions.corrupt does it, the classifier's outcomes recomputed independently."""
  dataset = tiny_dataset(num_examples=60)
  module, variables = random_classifier(3)
  classifier = steps.Classifier('clf', module, weight=0.01)
  spec = distortions.DistortionSpec(('blur', 'fog', 'pixelate'),
                                    (('blur', (1.,)), ('fog', (2, 5)), ('pixelate', (4,))))
  means, outcomes = evaluate.evaluate_by_level(
      {'classifiers': {}}, {'clf': variables}, dataset.test, spec=spec, qrnet=QRNet(small=True),
      classifiers=(classifier,), mesh=parallel.make_mesh(jax.devices()[:1]), batch_size=8,
      with_qrnet=False)
  assert list(means) == ['clean', 'blur/1', 'fog/2', 'fog/5', 'pixelate/4']
  batch = next(data.eval_batches(dataset.test, len(dataset.test)))
  clean = jnp.asarray(batch['image'], jnp.float32) / 255.
  keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(
      jax.random.PRNGKey(evaluate.EVAL_NOISE_SEED), jnp.asarray(batch['index']))
  for family, severity in (('fog', 2), ('fog', 5), ('pixelate', 4)):
    logits = module.apply(variables, corruptions.corrupt(clean, family, severity, keys))
    correct = np.asarray(jnp.argmax(logits, -1) == batch['label'])
    level = f'{family}/{severity}'
    np.testing.assert_array_equal(outcomes.get(level, 'none/clf/accuracy'), correct)
    assert means[level]['none/clf/accuracy'] == pytest.approx(correct.mean())


def test_fine_tuned_classifier_trains_on_clean_and_distorted_batches():
  """The one train step without QRNet: a classifier on Algorithm 1's batch, lambda = 1."""
  module = SmallVGG(num_classes=4)
  variables = jax.device_get(init_variables(module, 0, SIZE))
  tx = optax.adam(1e-3)
  state = steps.create_train_state(None, {'clf': variables['params']}, tx, seed=7)
  classifier = steps.Classifier('clf', module, weight=1., trainable=tuple(variables['params']))
  batch = next(data.train_batches(tiny_dataset().train, 8, seed=0))
  _, metrics = steps.train_step(state, batch, {'clf': {'params': {}}}, qrnet=None,
                                classifiers=(classifier,), tx=tx, distortion=SPEC)
  # Independently: Algorithm 1's batch (the sampler with the step's key), then the mean CE.
  clean = jnp.asarray(batch['image'], jnp.float32) / 255.
  _, distortion_key = jax.random.split(jax.random.fold_in(jax.random.PRNGKey(7), 0))
  distorted, _, _ = distortions.random_distortion(clean, distortion_key, SPEC.types,
                                                  SPEC.levels_by_type)
  logits = module.apply(variables, jnp.concatenate([clean, distorted]))
  expected = optax.softmax_cross_entropy_with_integer_labels(
      logits, jnp.concatenate([batch['label'], batch['label']])).mean()
  assert float(metrics['loss']) == pytest.approx(float(expected), rel=1e-5)
  assert 'l1' not in metrics


def classifier_training_config(**overrides):
  """A run that only trains a classifier (SmallResNet: its BatchNorm statistics train too)."""
  config = tiny_run_config(**{'train.max_epochs': 0, 'train.pretrain_epochs': 0,
                              'train.checkpoint_every_steps': 2, **overrides})
  config.classifiers = ml_collections.ConfigDict()
  config.eval_classifiers = ml_collections.ConfigDict(
      {'clf': default.classifier_config('small_resnet', train_epochs=3)})
  return config


def trained_classifier(workdir):
  from qrnet_jax.weights import convert
  path = run_classifiers.trained_classifier_dir(str(workdir), 'clf')
  with open(os.path.join(path, run.TRAINING_RECORD)) as f:
    record = json.load(f)
  return convert.load_converted(path), record


class Killed(Exception):
  pass


def test_killed_classifier_training_resumes_to_the_same_variables(tmp_path, monkeypatch):
  devices = jax.devices()[:1]
  run.train_and_evaluate(classifier_training_config(), str(tmp_path / 'whole'), devices)
  whole, whole_record = trained_classifier(tmp_path / 'whole')
  assert whole_record['epoch'] == 3 and not whole_record['stopped_early']
  real_jit = steps.jit_train_step

  def dies_at_step_11(mesh, **static):
    step_fn, calls = real_jit(mesh, **static), []
    def counted(*args):
      calls.append(1)
      if len(calls) == 11:
        raise Killed()
      return step_fn(*args)
    return counted
  monkeypatch.setattr(steps, 'jit_train_step', dies_at_step_11)
  killed_dir = tmp_path / 'killed'
  with pytest.raises(Killed):
    run.train_and_evaluate(classifier_training_config(), str(killed_dir), devices)
  clf_dir = run_classifiers.trained_classifier_dir(str(killed_dir), 'clf')
  per_epoch = data.steps_per_epoch(len(tiny_dataset().train), 8)
  assert max(committed_steps(clf_dir)) == 10 and 10 % per_epoch  # inside epoch 2
  assert not run_classifiers.is_trained(clf_dir)
  monkeypatch.setattr(steps, 'jit_train_step', real_jit)
  run.train_and_evaluate(classifier_training_config(), str(killed_dir), devices)
  resumed, resumed_record = trained_classifier(killed_dir)
  jax.tree.map(np.testing.assert_array_equal, resumed, whole)
  drop_speed = lambda history: [{**h, 'train': {k: v for k, v in h['train'].items()
                                                if k != 'images_per_second'}} for h in history]
  assert drop_speed(resumed_record['history']) == drop_speed(whole_record['history'])


def test_classifier_training_stops_early_and_keeps_its_best_epoch(tmp_path, monkeypatch):
  devices = jax.devices()[:1]
  real_terms = loop.validation_terms

  def validation_losses(*losses):
    losses = iter(losses)
    monkeypatch.setattr(loop, 'validation_terms', lambda *args, **kwargs: {
        **real_terms(*args, **kwargs), 'loss': next(losses)})
  validation_losses(1.0, 0.5)
  config = classifier_training_config()
  config.eval_classifiers.clf.train_epochs = 2
  run.train_and_evaluate(config, str(tmp_path / 'two_epochs'), devices)
  two_epochs, _ = trained_classifier(tmp_path / 'two_epochs')
  validation_losses(1.0, 0.5, 0.7, 0.8, 0.9, 1.0)  # best after epoch 2, then worse
  config = classifier_training_config(**{'train.early_stopping_patience': 2,
                                         'train.evaluate_test': True})
  config.eval_classifiers.clf.train_epochs = 6
  summary = run.train_and_evaluate(config, str(tmp_path / 'stopped'), devices)
  stopped, record = trained_classifier(tmp_path / 'stopped')
  assert (record['epoch'], record['best_epoch'], record['stopped_early']) == (4, 2, True)
  # The classifier it keeps is the best epoch's: the same as a run that ended there.
  jax.tree.map(np.testing.assert_array_equal, stopped, two_epochs)
  assert set(summary.test['noise/20']) == {'none/psnr', 'none/ssim', 'none/clf/accuracy'}


def test_kill_between_latest_and_best_commits_resumes_to_the_same_best(tmp_path, monkeypatch):
  """A kill after 'latest' committed a new best epoch but before 'best' did: the restarted run
  writes that best again and keeps it, as an uninterrupted run does."""
  devices = jax.devices()[:1]
  real_terms = loop.validation_terms

  def validation_losses(*losses):
    losses = iter(losses)
    monkeypatch.setattr(loop, 'validation_terms', lambda *args, **kwargs: {
        **real_terms(*args, **kwargs), 'loss': next(losses)})
  validation_losses(1.0, 0.5, 0.7)  # epoch 2 is the last that improves
  run.train_and_evaluate(classifier_training_config(), str(tmp_path / 'whole'), devices)
  whole, whole_record = trained_classifier(tmp_path / 'whole')
  assert whole_record['best_epoch'] == 2
  real_save_best = checkpointing.Checkpoints._save_best

  def killed_at_epoch_2(self, step, state, record, val_loss):
    if record['epoch'] == 2:
      raise Killed()
    real_save_best(self, step, state, record, val_loss)
  monkeypatch.setattr(checkpointing.Checkpoints, '_save_best', killed_at_epoch_2)
  validation_losses(1.0, 0.5)
  killed_dir = tmp_path / 'killed'
  with pytest.raises(Killed):
    run.train_and_evaluate(classifier_training_config(), str(killed_dir), devices)
  checkpoints = os.path.join(run_classifiers.trained_classifier_dir(str(killed_dir), 'clf'),
                             'checkpoints')
  best_steps = lambda: sorted(int(n) for n in os.listdir(os.path.join(checkpoints, 'best'))
                              if n.isdigit())
  per_epoch = data.steps_per_epoch(len(tiny_dataset().train), 8)
  assert committed_steps(os.path.dirname(checkpoints))[-1] == 2 * per_epoch
  assert best_steps() == [per_epoch]  # 'best' still holds epoch 1
  monkeypatch.setattr(checkpointing.Checkpoints, '_save_best', real_save_best)
  validation_losses(0.7)
  run.train_and_evaluate(classifier_training_config(), str(killed_dir), devices)
  resumed, resumed_record = trained_classifier(killed_dir)
  assert best_steps() == [2 * per_epoch]
  assert resumed_record['best_epoch'] == 2
  jax.tree.map(np.testing.assert_array_equal, resumed, whole)


def test_empty_config_json_and_classifier_json_are_taken_as_not_written(tmp_path):
  """What a kill during their write would leave (were they not written atomically): the rerun
  writes them again and ends with the same classifier."""
  devices = jax.devices()[:1]
  config = classifier_training_config()
  run.train_and_evaluate(config, str(tmp_path), devices)
  before, _ = trained_classifier(tmp_path)
  clf_dir = run_classifiers.trained_classifier_dir(str(tmp_path), 'clf')
  for path in (tmp_path / 'config.json', os.path.join(clf_dir, 'classifier.json')):
    open(path, 'w').close()
  assert not run_classifiers.is_trained(clf_dir)
  run.train_and_evaluate(config, str(tmp_path), devices)
  after, _ = trained_classifier(tmp_path)
  jax.tree.map(np.testing.assert_array_equal, after, before)
  assert run_classifiers.is_trained(clf_dir)
  assert (tmp_path / 'config.json').read_text() == config_validation.config_json(config)


def test_small_files_are_written_atomically_and_readable_by_others(tmp_path):
  from qrnet_jax import files
  path = tmp_path / 'marker.json'
  files.write_json(str(path), {'a': 1})
  old_umask = os.umask(0o022)
  try:
    files.write_json(str(path), {'a': 2})
  finally:
    os.umask(old_umask)
  assert files.read_json(str(path)) == {'a': 2}
  assert os.stat(path).st_mode & 0o777 == 0o644
  assert os.listdir(tmp_path) == ['marker.json']  # no temporary file left
  path.write_text('{"a": ')  # cut short
  assert files.read_json(str(path)) is None
