"""Experiment suites end to end: a tiny suite on generated data, its report, a re-evaluation, a
kill and resume, and the checks that stop a bad suite before its first run."""
import concurrent.futures
import json
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time

import jax
import numpy as np
import pytest

from configs import paper
from configs.suites import default as default_suite
from configs.suites import paper as paper_suite
from qrnet_jax import config_validation, preemption, suite, timing
from qrnet_jax import run as run_lib
from qrnet_jax.report.tables import TABLE_TITLES
from qrnet_jax.config_validation import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPERIMENT = 'fashion_mnist'  # the quick variant keeps the experiment's name, on generated data
FIGURES = ('fig4', 'fig5', 'fig6', 'fig7', 'fig8')
TABLES = ('table2', 'table3', 'table4', 'table5', 'table6')


def suite_command(workdir, *flags):
  return [sys.executable, '-m', 'qrnet_jax.main', '--config', 'configs/suites/default.py:quick',
          '--workdir', str(workdir), *flags]


def suite_env():
  """One device; XLA's -O0 compiles the tiny suite's many programs about twice as fast, and
  both the whole and the killed suites use it, so their numbers are comparable."""
  flags = os.environ.get('XLA_FLAGS', '').replace('--xla_force_host_platform_device_count=4', '')
  return dict(os.environ, PYTHONPATH=ROOT,
              XLA_FLAGS=f'{flags} --xla_backend_optimization_level=0'.strip())


def run_suite_cli(workdir, *flags, timeout=1200):
  result = subprocess.run(suite_command(workdir, *flags), cwd=ROOT, env=suite_env(),
                          capture_output=True, text=True, timeout=timeout)
  assert result.returncode == 0, result.stderr[-4000:]
  return result


def read_json(path):
  with open(path) as f:
    return json.load(f)


@pytest.fixture(scope='module')
def tiny_suite(tmp_path_factory):
  """The whole quick suite (13 runs on generated 16 px images), run once for this module."""
  workdir = tmp_path_factory.mktemp('suite')
  result = run_suite_cli(workdir)
  return workdir, result


def markdown_tables(text):
  """{heading: [[cell, ...], ...]} for every markdown table under a '### ' heading."""
  tables, heading = {}, None
  for line in text.splitlines():
    if line.startswith('### '):
      heading = line[4:].strip()
    elif line.startswith('|') and heading is not None and not set(line) <= set('|-: '):
      tables.setdefault(heading, []).append([c.strip() for c in line.strip('|').split('|')])
  return tables


def level_mean(test, distortion, metric):
  values = [v[metric] for level, v in test.items() if level.startswith(distortion + '/')]
  assert len(values) == 5
  return float(np.mean(values))


def test_tiny_suite_writes_every_table_and_figure(tiny_suite):
  workdir, result = tiny_suite
  assert f'report: {workdir}/report.md' in result.stdout
  for name in ('report.md', 'results.json', 'results.csv', 'suite_config.json'):
    assert os.path.getsize(workdir / name) > 0
  for figure in FIGURES:
    with open(workdir / f'{figure}_{EXPERIMENT}.png', 'rb') as f:
      assert f.read(8) == b'\x89PNG\r\n\x1a\n'
  results = read_json(workdir / 'results.json')
  experiment = results['experiments'][EXPERIMENT]
  assert sorted(experiment['runs']) == sorted(default_suite.get_config('quick')
                                              .experiments[EXPERIMENT].runs)
  assert set(TABLES) <= set(experiment['tables'])
  assert experiment['latency']['classifier']['1'] > 0
  assert experiment['parameters']['qrnet'] == 1_941_139
  assert results['provenance']['commit'] and results['provenance']['devices']
  # Where each run's time went: every part measured, adding up to the wall time.
  for run, r in experiment['runs'].items():
    assert list(r['parts']) == list(timing.PARTS), run
    assert sum(r['parts'].values()) == pytest.approx(r['wall_s'], rel=0.05), run
    assert r['parts']['other'] < 0.25 * r['wall_s'], (run, r['parts'])
    assert r['parts']['compile'] > 0 and r['parts']['test'] > 0 and r['parts']['setup'] > 0, run
    assert r['counts']['test_images'] == len(r['test']) * r['images']['test'], run
    assert r['counts']['train_images'] > 0 and r['parts']['train'] > 0, run
  # The findings: the paper's claims, each on the same test images, first in report.md.
  findings = {f['claim']: f for f in experiment['findings']}
  assert len(findings) == 20
  for f in findings.values():
    assert f['images'] == experiment['runs']['qrnet']['images']['test']
    assert f['low'] <= f['difference'] <= f['high']
    assert f['verdict'] in ('holds', 'reversed', 'not resolved')
  assert open(workdir / 'report.md').read().split('\n')[2] == '## Findings'


def test_report_numbers_are_the_runs_numbers(tiny_suite):
  """Every table cell of report.md is the number in results.json, and the table averages are the
  means over the levels of what each run wrote to its summary.json."""
  workdir, _ = tiny_suite
  results = read_json(workdir / 'results.json')['experiments'][EXPERIMENT]
  markdown = markdown_tables(open(workdir / 'report.md').read())
  checked = 0
  for table_name in TABLES:
    table = results['tables'][table_name]
    header, *rows = markdown[TABLE_TITLES[table_name]]
    by_method = {row[0]: dict(zip(header, row)) for row in rows}
    assert sorted(by_method) == sorted(r['method'] for r in table['rows'])
    for row in table['rows']:
      for column, value in row['values'].items():
        cell = by_method[row['method']][column].split(' (')[0].replace(',', '')  # (interval)
        if value is None:
          assert cell in ('—', '')
          continue
        decimals = len(cell.split('.')[1]) if '.' in cell else 0
        assert abs(float(cell) - value) <= 0.5 * 10 ** -decimals + 1e-9, (table_name, row, column)
        checked += 1
  assert checked > 60
  summaries = {run: read_json(workdir / EXPERIMENT / run / 'summary.json')['test']
               for run in ('qrnet', 'classifier_small_vgg', 'mqrnet')}
  table2 = {r['method']: r['values'] for r in results['tables']['table2']['rows']}
  for distortion in ('noise', 'blur'):
    assert math.isclose(table2['QRNet + small_vgg'][distortion],
                        level_mean(summaries['qrnet'], distortion, 'qrnet/small_vgg/accuracy'))
    assert math.isclose(table2['small_vgg'][distortion], level_mean(
        summaries['classifier_small_vgg'], distortion, 'none/small_vgg/accuracy'))
  table6 = {r['method']: r['values'] for r in results['tables']['table6']['rows']}
  assert math.isclose(table6['MQRNet + small_resnet']['noise'],
                      level_mean(summaries['mqrnet'], 'noise', 'qrnet/small_resnet/accuracy'))
  # Every method is evaluated on every level; the unseen classifier only evaluates MQRNet.
  assert len(summaries['mqrnet']) == 11
  mqrnet_config = read_json(workdir / EXPERIMENT / 'mqrnet' / 'config.json')
  assert set(mqrnet_config['classifiers']) == {'small_vgg', 'small_inception'}
  assert set(mqrnet_config['eval_classifiers']) == {'small_resnet'}


def test_mqrnet_run_evaluates_every_level_with_its_unseen_classifier(tiny_suite):
  workdir, _ = tiny_suite
  test = read_json(workdir / EXPERIMENT / 'mqrnet' / 'summary.json')['test']
  config = default_suite.get_config('quick').experiments[EXPERIMENT].runs.mqrnet.config
  noise = [f'noise/{s:g}' for s in config.distortion.noise_levels]
  blur = [f'blur/{s:g}' for s in config.distortion.blur_levels]
  assert set(test) == {'clean', *noise, *blur}
  for level in test.values():
    for name in ('small_vgg', 'small_inception', 'small_resnet'):  # small_resnet: unseen
      for stage in ('none', 'qrnet'):
        assert 0. <= level[f'{stage}/{name}/accuracy'] <= 1.
  # Independent check of the image-quality numbers: noise of sigma 20/255 on mid-range images
  # has an RMSE a little under 20/255 after clipping, i.e. a PSNR a little over 22.1 dB.
  assert 22. < test['noise/20']['none/psnr'] < 24.
  assert test['clean']['none/ssim'] == pytest.approx(1.)
  psnr = [test[level]['none/psnr'] for level in noise]
  assert psnr == sorted(psnr, reverse=True)
  ssim = [test[level]['none/ssim'] for level in blur]
  assert ssim == sorted(ssim, reverse=True)


def test_every_method_reads_the_classifiers_trained_once(tiny_suite):
  workdir, _ = tiny_suite
  for run in ('qrnet', 'recnet', 'end_to_end', 'small_qrnet', 'mqrnet'):
    config = read_json(workdir / EXPERIMENT / run / 'config.json')
    for group in ('classifiers', 'eval_classifiers'):
      for name, c in config[group].items():
        assert c['checkpoint'] == str(workdir / EXPERIMENT / f'classifier_{name}' / 'classifiers'
                                      / name)
    assert not os.path.exists(workdir / EXPERIMENT / run / 'classifiers')
  # Table 4's fine-tuned classifiers train their own on clean + distorted batches, starting from
  # the clean-trained one.
  for run in ('finetuned_noise', 'finetuned_blur', 'finetuned'):
    finetuned = read_json(workdir / EXPERIMENT / run / 'config.json')['eval_classifiers']
    assert finetuned['small_vgg']['train_distorted']
    assert finetuned['small_vgg']['checkpoint'] == ''
    assert finetuned['small_vgg']['init_checkpoint'] == str(
        workdir / EXPERIMENT / 'classifier_small_vgg' / 'classifiers' / 'small_vgg')
    assert os.path.isdir(workdir / EXPERIMENT / run / 'classifiers' / 'small_vgg')


def test_second_evaluation_of_the_same_checkpoints_gives_identical_tables(tiny_suite):
  workdir, _ = tiny_suite
  before = read_json(workdir / 'results.json')
  report_before = open(workdir / 'report.md').read()
  result = run_suite_cli(workdir, '--reevaluate')
  after = read_json(workdir / 'results.json')
  assert 'finished earlier, skipped' not in result.stderr  # every run evaluated again
  for name, experiment in before['experiments'].items():
    assert after['experiments'][name]['tables'] == experiment['tables']
    for run, numbers in experiment['runs'].items():
      assert after['experiments'][name]['runs'][run]['test'] == numbers['test']
  tables_before = markdown_tables(report_before)
  tables_after = markdown_tables(open(workdir / 'report.md').read())
  for heading, rows in tables_before.items():
    if heading in TABLE_TITLES.values():
      assert tables_after[heading] == rows


def committed_steps(run_dir):
  latest = os.path.join(run_dir, 'checkpoints', 'latest')
  return sorted(int(n) for n in os.listdir(latest) if n.isdigit()) if os.path.isdir(latest) else []


def test_killed_suite_resumes_to_the_same_report_numbers(tiny_suite, tmp_path):
  """Table 3's runs, SIGKILLed inside the QRNet run and restarted, give the whole suite's numbers
  (the finished classifier runs are skipped on restart). The restart runs one run at a time, the
  whole suite two: a run's numbers do not depend on what runs beside it."""
  whole, _ = tiny_suite
  workdir = tmp_path / 'killed'
  process = subprocess.Popen(suite_command(workdir, '--only', 'table3'), cwd=ROOT,
                             env=suite_env(), stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
  qrnet_dir = workdir / EXPERIMENT / 'qrnet'
  deadline = time.time() + 900
  while time.time() < deadline and process.poll() is None and not committed_steps(qrnet_dir):
    time.sleep(0.05)
  assert process.poll() is None, 'the suite ended before it could be killed'
  process.send_signal(signal.SIGKILL)
  process.wait()
  assert committed_steps(qrnet_dir) and not os.path.exists(qrnet_dir / 'summary.json')
  result = run_suite_cli(workdir, '--only', 'table3', '--config.concurrent_runs=1')
  assert re.search(r'classifier_small_vgg: finished earlier, skipped', result.stderr)
  resumed = read_json(workdir / 'results.json')['experiments'][EXPERIMENT]
  reference = read_json(whole / 'results.json')['experiments'][EXPERIMENT]
  assert sorted(resumed['runs']) == ['classifier_small_resnet', 'classifier_small_vgg', 'qrnet',
                                     'small_qrnet']
  for run, numbers in resumed['runs'].items():
    assert numbers['test'] == reference['runs'][run]['test'], run
  assert resumed['tables']['table3'] == reference['tables']['table3']
  reference_findings = {f['claim']: f for f in reference['findings']}
  assert resumed['findings'] and all(f == reference_findings[f['claim']]
                                     for f in resumed['findings'])


def test_sigterm_stops_the_suite_and_its_workers_and_a_rerun_gives_the_same_numbers(tiny_suite,
                                                                                     tmp_path):
  """SIGTERM to the suite's process while its workers train Table 3's QRNets: it passes the signal
  on, each worker saves a checkpoint at its step and stops, the suite exits with status 75 within
  30 s; the same command again gives the whole suite's numbers."""
  whole, _ = tiny_suite
  workdir = tmp_path / 'stopped'
  with open(tmp_path / 'suite.log', 'w') as log:
    process = subprocess.Popen(suite_command(workdir, '--only', 'table3'), cwd=ROOT,
                               env=suite_env(), stdout=log, stderr=log)
  qrnet_dir = workdir / EXPERIMENT / 'qrnet'
  deadline = time.time() + 900
  while time.time() < deadline and process.poll() is None and not committed_steps(qrnet_dir):
    time.sleep(0.05)
  assert process.poll() is None, 'the suite ended before it could be stopped'
  sent = time.time()
  process.send_signal(signal.SIGTERM)
  assert process.wait(timeout=90) == preemption.EXIT_STATUS
  assert time.time() - sent < 30
  output = (tmp_path / 'suite.log').read_text()
  stopped = re.search(rf'{EXPERIMENT}/qrnet: stopped at step (\d+), after its checkpoint', output)
  assert stopped, output[-3000:]
  assert max(committed_steps(qrnet_dir)) == int(stopped.group(1))
  assert not os.path.exists(qrnet_dir / 'summary.json')
  assert not os.path.exists(workdir / 'report.md')
  run_suite_cli(workdir, '--only', 'table3')
  resumed = read_json(workdir / 'results.json')['experiments'][EXPERIMENT]
  reference = read_json(whole / 'results.json')['experiments'][EXPERIMENT]
  for run, numbers in resumed['runs'].items():
    assert numbers['test'] == reference['runs'][run]['test'], run
  assert resumed['tables']['table3'] == reference['tables']['table3']


# Checks that stop a bad suite before its first run (in-process, no training).

def quick_suite():
  return default_suite.get_config('quick')


@pytest.fixture
def no_training(monkeypatch):
  def fail(*args, **kwargs):
    raise AssertionError('a run started')
  monkeypatch.setattr(run_lib, 'train_and_evaluate', fail)


def test_runs_come_after_the_runs_they_read(tmp_path):
  runs = suite.plan(quick_suite(), str(tmp_path))
  order = [r.name for r in runs]
  assert len(order) == 13
  for run in runs:
    for need in run.needs:
      assert order.index(need) < order.index(run.name)
  only = [r.name for r in suite.plan(quick_suite(), str(tmp_path), only=['table3'])]
  assert sorted(only) == ['classifier_small_resnet', 'classifier_small_vgg', 'qrnet',
                          'small_qrnet']


@pytest.mark.parametrize('change, message', [
    (lambda c: c.experiments.fashion_mnist.runs.qrnet.classifiers_from.update(
        {'small_vgg': 'nowhere'}),
     r"config.experiments.fashion_mnist.runs.qrnet.classifiers_from.small_vgg: no run 'nowhere'"),
    (lambda c: c.experiments.fashion_mnist.runs.qrnet.classifiers_from.update(
        {'small_vgg': 'recnet'}),
     r"classifiers_from.small_vgg: run 'recnet' does not train a classifier 'small_vgg'"),
    (lambda c: c.experiments.fashion_mnist.runs.qrnet.classifiers_from.update(
        {'small_inception': 'classifier_small_inception'}),
     r"config.experiments.fashion_mnist.runs.qrnet.classifiers_from.small_inception: the run has "
     r"no classifier 'small_inception'"),
    (lambda c: setattr(c.experiments.fashion_mnist, 'runs', {}),
     r'config.experiments.fashion_mnist.runs: no runs'),
    # The fine-tuned classifier starts from the clean-trained one it reads, not ImageNet weights.
    (lambda c: c.experiments.fashion_mnist.runs.finetuned.config.eval_classifiers.small_vgg.update(
        {'imagenet': True}),
     r"config.experiments.fashion_mnist.runs.finetuned.config.eval_classifiers.small_vgg."
     r"init_checkpoint: training starts from init_checkpoint or from the ImageNet weights .* "
     r"not both \(the run fine-tunes it from run 'classifier_small_vgg'"),
])
def test_bad_suite_structure_is_refused_naming_the_field(tmp_path, no_training, change, message):
  config = quick_suite()
  change(config)
  with pytest.raises(ConfigError, match=message):
    suite.run_suite(config, str(tmp_path), devices=jax.devices()[:1])


def _read_each_other(config):
  """classifier_small_vgg and classifier_small_resnet each read the other's classifier."""
  runs = config.experiments.fashion_mnist.runs
  vgg, resnet = runs.classifier_small_vgg, runs.classifier_small_resnet
  vgg.config.eval_classifiers.small_resnet = resnet.config.eval_classifiers.small_resnet
  resnet.config.eval_classifiers.small_vgg = vgg.config.eval_classifiers.small_vgg
  vgg.classifiers_from = {'small_resnet': 'classifier_small_resnet'}
  resnet.classifiers_from = {'small_vgg': 'classifier_small_vgg'}


def test_runs_that_read_each_other_are_refused(tmp_path, no_training):
  config = quick_suite()
  _read_each_other(config)
  with pytest.raises(ConfigError, match=r"config.experiments.fashion_mnist.runs: the runs read each "
                     r"other's classifiers in a cycle: classifier_small_resnet -> "
                     r"classifier_small_vgg -> classifier_small_resnet"):
    suite.run_suite(config, str(tmp_path), devices=jax.devices()[:1])


def test_concurrent_runs_are_for_one_cpu_host():
  config = quick_suite()
  config.concurrent_runs = 2
  config_validation.validate_suite(config, num_processes=1, backend='cpu')
  for processes, backend in ((2, 'cpu'), (1, 'gpu')):
    with pytest.raises(ConfigError, match=re.escape(
        f'config.concurrent_runs=2: concurrent runs are for one CPU host; here ({processes} '
        f'processes, {backend}) runs execute one at a time (set 1)')):
      config_validation.validate_suite(config, num_processes=processes, backend=backend)


def test_unknown_table_and_bad_run_field_are_refused_before_any_run(tmp_path, no_training):
  with pytest.raises(ConfigError, match=r'--only: unknown table table9'):
    suite.run_suite(quick_suite(), str(tmp_path), only=['table9'])
  config = quick_suite()
  config.experiments.fashion_mnist.runs.small_qrnet.config.train.batch_size = 0
  with pytest.raises(ConfigError, match=r'run fashion_mnist/small_qrnet: config.experiments.'
                     r'fashion_mnist.runs.small_qrnet.config.train.batch_size: must be a positive'):
    suite.run_suite(config, str(tmp_path), devices=jax.devices()[:1])
  assert not os.path.exists(tmp_path / EXPERIMENT)


def test_changed_run_config_is_refused(tiny_suite, tmp_path, no_training):
  workdir, _ = tiny_suite
  config = quick_suite()
  config.experiments.fashion_mnist.runs.recnet.config.train.learning_rate = 0.01
  with pytest.raises(ConfigError, match=r'run fashion_mnist/recnet: .*config.train.learning_rate: '
                     r'0.001 -> 0.01'):
    suite.run_suite(config, str(workdir), devices=jax.devices()[:1])


def test_failed_run_stops_the_suite_naming_the_run_and_its_log(tmp_path, monkeypatch):
  def fail(config, workdir, devices=None, show_progress=True):
    import logging  # pylint: disable=g-import-not-at-top
    logging.info('starting %s', workdir)
    raise FloatingPointError('loss is nan')
  monkeypatch.setattr(run_lib, 'train_and_evaluate', fail)
  config = quick_suite()
  config.concurrent_runs = 1
  with pytest.raises(suite.SuiteRunError) as error:
    suite.run_suite(config, str(tmp_path), devices=jax.devices()[:1])
  # The first run: the classifier that every other run reads (suite.priorities).
  log = tmp_path / EXPERIMENT / 'classifier_small_vgg' / 'run.log'
  assert str(error.value) == (f'run {EXPERIMENT}/classifier_small_vgg failed '
                              f'(FloatingPointError: loss is nan); its log: {log}')
  text = log.read_text()
  assert 'starting' in text and 'FloatingPointError: loss is nan' in text
  for other in ('classifier_small_resnet', 'classifier_small_inception'):
    assert not os.path.exists(tmp_path / EXPERIMENT / other)


def test_concurrent_runs_wait_for_what_they_read_and_none_starts_after_a_failure(monkeypatch):
  runs = suite.plan(quick_suite(), '/nonexistent')
  events = []  # (time, 'start' | 'end', run id)
  lock = threading.Lock()

  def execute(run, compilation_cache_dir):  # what a worker process does, in a thread here
    with lock:
      events.append((time.monotonic(), 'start', run.id))
    time.sleep(0.02 * (1 + len(run.name) % 3))
    with lock:
      events.append((time.monotonic(), 'end', run.id))
    if run.name == 'recnet':
      raise suite.SuiteRunError('recnet failed')
  monkeypatch.setattr(suite, '_execute_in_worker', execute)
  monkeypatch.setattr(suite, '_executor', concurrent.futures.ThreadPoolExecutor)
  with pytest.raises(suite.SuiteRunError, match='recnet failed'):
    suite.execute_all(runs, 2)
  started = [r for _, kind, r in events if kind == 'start']
  ended = {r: t for t, kind, r in events if kind == 'end'}
  assert len(started) == len(set(started)) < len(runs)
  assert max(sum(1 for _, k, r in events[:i + 1] if k == 'start')
             - sum(1 for _, k, r in events[:i + 1] if k == 'end')
             for i in range(len(events))) == 2  # two at a time, never more
  by_id = {r.id: r for r in runs}
  for t, kind, run_id in events:
    if kind == 'start':  # after every run it reads has ended
      assert all(ended[f'{EXPERIMENT}/{need}'] <= t for need in by_id[run_id].needs)
      # None after the failure: a run can start only in the instant between recnet's end and its
      # future's exception (the loop has not seen it yet), not a run's length (>= 20 ms) later.
      assert t <= ended[f'{EXPERIMENT}/recnet'] + 0.015
  assert set(ended) == set(started)  # the runs already running finished


def test_concurrent_runs_must_be_a_positive_integer(tmp_path, no_training):
  config = quick_suite()
  config.concurrent_runs = 0
  with pytest.raises(ConfigError, match='config.concurrent_runs: must be an integer >= 1, got 0'):
    suite.run_suite(config, str(tmp_path), devices=jax.devices()[:1])


def test_main_job_is_sized_for_the_findings_and_all_adds_every_method():
  """The main job (issue: at least 4,000 training and 2,000 test images, 1 + 3 restorer epochs,
  classifiers stopped by their validation loss) and its `all` variant with every method."""
  runs = default_suite.get_config().experiments[EXPERIMENT].runs
  assert sorted(runs) == ['classifier_small_inception', 'classifier_small_resnet',
                          'classifier_small_vgg', 'mqrnet', 'qrnet', 'recnet']
  for name, spec in runs.items():
    data, schedule = spec.config.data, spec.config.train
    assert data.max_train_examples >= 4000 and data.max_test_examples >= 2000, name
    if not name.startswith('classifier_'):
      assert schedule.pretrain_epochs >= 1 and schedule.max_epochs >= 3, name
    for c in spec.config.eval_classifiers.values():
      assert c.train_epochs >= 30 and schedule.early_stopping_patience <= 10, name
  every = default_suite.get_config('all').experiments[EXPERIMENT].runs
  assert len(every) == 13
  assert every.qrnet.config.to_dict() == runs.qrnet.config.to_dict()  # the same scale
  # Of the ready runs, the longest start first: MQRNet before QRNet before RecNet.
  planned = {r.name: suite.expected_cost(r) for r in suite.plan(
      default_suite.get_config('all'), '/nowhere')}
  assert planned['mqrnet'] > planned['qrnet'] > planned['recnet']
  # What most work waits for starts first: C and U (every restorer reads them) before MQRNet's
  # second classifier, which only MQRNet reads.
  main = suite.plan(default_suite.get_config(), '/nowhere')
  first = sorted(main, key=lambda r: suite.priorities(main)[r.id], reverse=True)
  assert {r.name for r in first[:2]} == {'classifier_small_vgg', 'classifier_small_resnet'}
  assert first[2].name == 'classifier_small_inception' and first[3].name == 'mqrnet'


def test_paper_suite_trains_every_model_by_the_papers_rule():
  """Section IV-A: at most 200 epochs, stopped after 5 without a better validation loss; for the
  clean-trained and fine-tuned classifiers as for QRNet."""
  runs = [spec.config for e in paper_suite.get_config().experiments.values()
          for spec in e.runs.values()]
  assert len(runs) == 2 * 13  # per dataset: the 10 methods and the 3 classifier runs
  for config in runs:
    assert config.train.early_stopping_patience == 5
    assert config.train.max_epochs in (0, 200)  # 0: a classifier alone, no QRNet
    for c in list(config.classifiers.values()) + list(config.eval_classifiers.values()):
      assert c.train_epochs == 200, c.arch


@pytest.mark.parametrize('arg, message', [
    ('method=qrnet', "unknown option 'method'; allowed: dataset"),
    ('dataset=mnist', "dataset='mnist'; allowed: caltech101, caltech256"),
])
def test_paper_suite_reads_its_argument_as_the_paper_config_does(arg, message):
  assert list(paper_suite.get_config('dataset=caltech256').experiments) == ['caltech256']
  assert list(paper_suite.get_config().experiments) == list(paper.DATASETS)
  with pytest.raises(ValueError, match=re.escape(f'configs/suites/paper.py: {message}')):
    paper_suite.get_config(arg)
  with pytest.raises(ValueError, match=re.escape(
      "configs/paper.py: dataset='mnist'; allowed: caltech101, caltech256")):
    paper.get_config('dataset=mnist,method=qrnet')
