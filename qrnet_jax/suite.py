"""Experiment suites: every run behind the paper's tables, in dependency order, then the report.

A suite config (configs/suites/) holds `experiments` (one per dataset), each with its `runs`: a full
run config, the tags of the tables and figures it feeds, and `classifiers_from`, the runs whose
clean-trained classifiers it reads (configs/methods.py builds them): as they are, or as the start
of a run that fine-tunes them on distorted images (Table 4). `run_suite` checks every run before
the first starts, then runs each in WORKDIR/EXPERIMENT/RUN with its own `run.log`: a
finished run is skipped, an interrupted one resumes from its newest checkpoint, a run whose config
changed is refused, and a failed run stops the suite naming the run and its log. Then it measures
latency (Table 4) and writes WORKDIR/report.md, results.json, results.csv and the figures.

  python -m qrnet_jax.main --config configs/suites/default.py --workdir runs/default --only table2
"""
from concurrent import futures as concurrent_futures
import contextlib
import ctypes
import dataclasses
import logging
import multiprocessing
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from typing import Optional, Sequence

import jax
import ml_collections

from qrnet_jax import (config_schema, config_validation, files, latency, metrics, preemption,
                       report, run_classifiers, run_names, run_summary, timing)
from qrnet_jax import run as run_lib
from qrnet_jax import outcomes as outcomes_lib
from qrnet_jax.config_validation import ConfigError
from qrnet_jax.models import QRNet, variable_shapes

RUN_LOG = 'run.log'
RUN_TIME = 'wall_time.json'  # each finished or failed attempt of a run: its seconds and their parts
LATENCY = 'latency.json'


class SuiteRunError(RuntimeError):
  """A run of the suite failed; the message names the run and its log."""


@dataclasses.dataclass(frozen=True)
class Run:
  experiment: str
  name: str
  written: ml_collections.ConfigDict  # as the suite config writes it
  config: ml_collections.ConfigDict  # with classifier checkpoints pointing at the runs it reads
  needs: tuple
  tags: tuple
  workdir: str

  @property
  def id(self) -> str:
    return f'{self.experiment}/{self.name}'


def is_suite(config) -> bool:
  return 'experiments' in config


def _field(experiment, run=None):
  prefix = f'config.experiments.{experiment}'
  return prefix if run is None else f'{prefix}.runs.{run}'


def _resolved(experiment, e, run_name, spec, workdir):
  """The run's config with each classifier read from the run that trained it (its `checkpoint`,
  or its `init_checkpoint` where the run fine-tunes it on distorted images), and the experiment's
  data_dir, where set."""
  config = config_schema.completed(spec.config)
  if e.get('data_dir'):
    config.data.data_dir = e.data_dir
  for name, source in spec.classifiers_from.items():
    group = next(g for g in config_schema.CLASSIFIER_GROUPS if name in config[g])
    c = config[group][name]
    field = 'init_checkpoint' if c.train_distorted else 'checkpoint'
    c[field] = os.path.join(workdir, experiment, source, 'classifiers', name)
    try:  # fine-tuned from that run's classifier (classifiers_from), so not from ImageNet weights
      config_validation.check_training_start(c, f'{group}.{name}')
    except ConfigError as e:
      raise ConfigError(f'{_field(experiment, run_name)}.{e} (the run fine-tunes it from run '
                        f'{source!r}: classifiers_from)') from e
  return config


def plan(suite_config, workdir: str, only: Sequence[str] = ()) -> list:
  """The runs to execute, each after the runs it reads: those tagged with any of `only` (and
  what they need), or all. Raises ConfigError naming the field for a bad suite
  (config_validation.validate_suite)."""
  config_validation.validate_suite(suite_config, only, num_processes=jax.process_count(),
                                   backend=jax.default_backend())
  ordered = []
  for experiment, e in suite_config.experiments.items():
    runs = {name: Run(experiment, name, config_schema.completed(spec.config),
                      _resolved(experiment, e, name, spec, workdir),
                      needs=tuple(sorted(set(spec.classifiers_from.values()))),
                      tags=tuple(spec.tags), workdir=os.path.join(workdir, experiment, name))
            for name, spec in e.runs.items()}
    wanted = [n for n, r in runs.items() if not only or set(r.tags) & set(only)]
    ordered += _dependency_order(runs, wanted)
  return ordered


def _dependency_order(runs: dict, wanted) -> list:
  """`wanted` and the runs they read, each after those it reads (validate_suite refused cycles)."""
  order, done = [], set()

  def visit(name):
    if name in done:
      return
    done.add(name)
    for need in runs[name].needs:
      visit(need)
    order.append(runs[name])

  for name in wanted:
    visit(name)
  return order


def _as_suite_field(run: Run, check):
  """Runs `check`, naming the suite field in a ConfigError (config.x -> config.experiments...)."""
  try:
    check()
  except ConfigError as e:
    message = str(e)
    if message.startswith('config.'):
      message = f'{_field(run.experiment, run.name)}.config.{message[len("config."):]}'
    raise ConfigError(f'run {run.id}: {message}') from e


def is_finished(run: Run) -> bool:
  """Whether the run wrote its summary with exactly this config."""
  path = os.path.join(run.workdir, config_validation.CONFIG_FILE)
  if not run_summary.exists(run.workdir) or not files.is_file(path):
    return False
  return files.read_text(path) == config_validation.config_json(run.config)


def check_runs(runs: list, num_devices: int):
  """Every run's config, its agreement with what its workdir holds, and the ImageNet weight
  files it needs, before the first run starts."""
  for run in runs:
    # As written: the classifiers it reads from other runs do not exist yet.
    _as_suite_field(run, lambda: config_validation.validate(
        run.written, num_devices=num_devices, num_processes=jax.process_count()))
    _as_suite_field(run, lambda: config_validation.check_config_unchanged(run.config,
                                                                          run.workdir))
    _as_suite_field(run, lambda: run_classifiers.imagenet_weight_files(run.config, run.workdir))


def execute(run: Run, devices=None, show_progress=True) -> run_summary.RunSummary:
  """train_and_evaluate in the run's workdir, logging to its run.log; its wall time and where it
  went (timing.py) recorded in RUN_TIME, one entry per attempt."""
  files.make_dirs(run.workdir)
  log_path = os.path.join(run.workdir, RUN_LOG)
  with _logging_to(log_path), timing.stopwatch() as watch:
    start = time.perf_counter()
    try:
      return run_lib.train_and_evaluate(run.config, run.workdir, devices, show_progress)
    except preemption.Preempted as e:
      logging.warning('%s: %s', run.id, e)
      raise
    except Exception as e:
      logging.exception('run %s failed', run.id)
      raise SuiteRunError(f'run {run.id} failed ({type(e).__name__}: {e}); its log: '
                          f'{log_path}') from e
    finally:
      _add_attempt(run.workdir, watch.record(time.perf_counter() - start))


@contextlib.contextmanager
def _logging_to(log_path):
  """Log records of the block are also appended to `log_path`. A gs:// log (objects cannot be
  appended to) is written to a local file, then uploaded after what it held when the block ends."""
  local = log_path
  if files.is_remote(log_path):
    fd, local = tempfile.mkstemp(prefix='qrnet_jax_run.', suffix='.log')
    os.close(fd)
  handler = logging.FileHandler(local)
  handler.setFormatter(logging.Formatter('%(asctime)s %(levelname)s %(name)s: %(message)s'))
  handler.setLevel(logging.INFO)
  logging.getLogger().addHandler(handler)
  try:
    yield
  finally:
    logging.getLogger().removeHandler(handler)
    handler.close()
    if local != log_path:
      earlier = files.read_bytes(log_path) if files.exists(log_path) else b''
      with open(local, 'rb') as f:
        files.write_bytes(log_path, earlier + f.read())
      os.remove(local)


def expected_cost(run: Run) -> float:
  """A rough measure of a run's work, to start the longest runs first: training images through
  the restorer (Algorithm 1 doubles a batch) and its classifiers, plus the classifiers it trains
  (at most their train_epochs each)."""
  c = run.config
  images = c.data.max_train_examples or 50_000
  restorer = (c.train.pretrain_epochs + 2 * c.train.max_epochs) * (2 + len(c.classifiers))
  trained = sum(x.train_epochs * (2 if x.train_distorted else 1)
                for group in config_schema.CLASSIFIER_GROUPS for x in c[group].values()
                if not x.checkpoint)
  return float(images * (restorer + trained))


def priorities(runs: list) -> dict:
  """{run id: its expected cost plus that of every run that waits for it, directly or not}: of
  the runs ready to start, those that most work waits for start first, then the longest."""
  readers = {r.id: [s for s in runs if s.experiment == r.experiment and r.name in s.needs]
             for r in runs}

  def waiting_for(run, seen):
    for reader in readers[run.id]:
      if reader.id not in seen:
        seen.add(reader.id)
        waiting_for(reader, seen)
    return seen

  by_id = {r.id: r for r in runs}
  return {r.id: expected_cost(r) + sum(expected_cost(by_id[i]) for i in waiting_for(r, set()))
          for r in runs}


def execute_all(runs: list, concurrent: int, devices=None):
  """Executes `runs` (in dependency order), each as soon as the runs it reads have finished,
  those that most work waits for first (priorities): here, one at a time, or up to `concurrent`
  at a time in worker processes (one per run). After a failure no run starts; those running
  finish, then the first failure is raised."""
  pending = {r.id for r in runs}  # not finished yet
  waiting, running, failure = list(runs), {}, None
  priority = priorities(runs)
  with _executor(concurrent) as pool:
    while waiting or running:
      ready = sorted((r for r in waiting
                      if not any(f'{r.experiment}/{need}' in pending for need in r.needs)),
                     key=lambda r: priority[r.id], reverse=True)  # what most work waits for
      if preemption.received() and failure is None:  # signalled: no run starts; workers stop
        failure = preemption.Preempted('the end of a run')
      for run in ready[:concurrent - len(running)] if failure is None else []:
        waiting.remove(run)
        logging.info('[%d/%d] %s: running (log: %s)', len(runs) - len(waiting), len(runs),
                     run.id, os.path.join(run.workdir, RUN_LOG))
        with preemption.blocked(concurrent > 1):  # until the worker's handlers are in place
          running[pool.submit(execute, run, devices) if concurrent == 1
                  else pool.submit(_execute_in_worker, run, jax.config.jax_compilation_cache_dir)
                  ] = run
      if not running:
        break
      finished, _ = concurrent_futures.wait(running, return_when='FIRST_COMPLETED')
      for future in sorted(finished, key=lambda f: runs.index(running[f])):
        run = running.pop(future)
        if future.exception() is None:
          pending.discard(run.id)
          logging.info('%s: finished', run.id)
        else:
          failure = failure or future.exception()
  if failure is not None:
    raise failure


class _Inline(concurrent_futures.Executor):
  """Runs each task at once, in this thread (Ctrl-C stops it at once)."""

  def submit(self, fn, /, *args, **kwargs):
    future = concurrent_futures.Future()
    try:
      future.set_result(fn(*args, **kwargs))
    except Exception as e:  # pylint: disable=broad-except (handed to the caller, as a pool does)
      future.set_exception(e)
    return future


def _executor(concurrent: int) -> concurrent_futures.Executor:
  if concurrent == 1:
    return _Inline()
  # A fresh process per run: Orbax's and JAX's process-wide state is then the run's own.
  return concurrent_futures.ProcessPoolExecutor(
      concurrent, mp_context=multiprocessing.get_context('spawn'), max_tasks_per_child=1)


def _execute_in_worker(run: Run, compilation_cache_dir):
  """`execute` in a worker process: dies with the suite's process (a killed suite leaves no run
  behind), logs to the console with the run's name, no progress bars (they would interleave)."""
  if sys.platform.startswith('linux'):
    ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
  handler = logging.StreamHandler()
  handler.setFormatter(logging.Formatter(f'%(asctime)s {run.id}: %(message)s', '%H:%M:%S'))
  logging.getLogger().handlers = [handler]  # the only console handler (no default one beside it)
  logging.getLogger().setLevel(logging.INFO)
  logging.getLogger('absl').setLevel(logging.WARNING)
  if compilation_cache_dir:
    jax.config.update('jax_compilation_cache_dir', compilation_cache_dir)
  with preemption.handling():  # the suite's process passes SIGTERM and SIGINT on
    return execute(run, show_progress=False)


def _add_attempt(workdir, attempt: dict):
  path = os.path.join(workdir, RUN_TIME)
  metrics.write_json(path, (files.read_json(path) or []) + [attempt])


def run_time(workdir) -> dict:
  """A run's wall time and its parts, summed over its attempts (RUN_TIME); an attempt written
  before parts were measured counts as 'other'."""
  total = {'wall_s': 0., 'parts': dict.fromkeys(timing.PARTS, 0.), 'counts': {}}
  for attempt in files.read_json(os.path.join(workdir, RUN_TIME)) or []:
    if not isinstance(attempt, dict):
      attempt = {'wall_s': attempt, 'parts': {'other': attempt}}
    total['wall_s'] += attempt['wall_s']
    for part, seconds in attempt.get('parts', {}).items():
      total['parts'][part] += seconds
    for name, n in attempt.get('counts', {}).items():
      total['counts'][name] = total['counts'].get(name, 0) + n
  return total


def run_suite(suite_config, workdir: str, only: Sequence[str] = (), reevaluate: bool = False,
              devices=None) -> dict:
  """Runs (or resumes) the suite in `workdir`; returns the results it writes to report.md."""
  start = time.perf_counter()
  runs = plan(suite_config, workdir, only)
  num_devices = len(devices) if devices is not None else jax.device_count()
  concurrent = config_schema.completed_suite(suite_config).concurrent_runs
  check_runs(runs, num_devices)
  # Decided once, before any run, so that every process of a multi-host suite agrees.
  to_run = [r for r in runs if reevaluate or not is_finished(r)]
  files.make_dirs(workdir)
  metrics.write_json(os.path.join(workdir, 'suite_config.json'), suite_config.to_dict())
  logging.info('suite %s: %d runs selected, %d to run (%s)', workdir, len(runs), len(to_run),
               ', '.join(r.id for r in to_run) or 'none')
  for run in runs:
    if run not in to_run:
      logging.info('%s: finished earlier, skipped', run.id)
  root = logging.getLogger()
  level = root.level
  root.setLevel(min(level, logging.INFO) if level else logging.INFO)  # for the runs' logs
  try:
    execute_all(to_run, concurrent, devices)
  finally:
    root.setLevel(level)
  results = None
  if jax.process_index() == 0:
    experiments = [_experiment_results(suite_config, workdir, name)
                   for name in suite_config.experiments]
    results = report.write_report(workdir, experiments, _provenance(
        workdir, time.perf_counter() - start, only))
    print(f'report: {os.path.join(workdir, "report.md")}', flush=True)
  return results


def _experiment_results(suite_config, workdir, name) -> dict:
  """What report.write_report takes for one experiment: every finished run's test results."""
  e = suite_config.experiments[name]
  runs, image_size = {}, None
  for run_name, spec in e.runs.items():
    run_dir = os.path.join(workdir, name, run_name)
    summary = run_summary.read(run_dir)
    if summary is None:
      continue
    image_size = spec.config.data.image_size
    samples = os.path.join(run_dir, run_lib.SAMPLES_FILE)
    outcomes = os.path.join(run_dir, outcomes_lib.OUTCOMES_FILE)
    runs[run_name] = {
        'test': summary.test, **run_time(run_dir),
        'samples': samples if files.is_file(samples) else None,
        'outcomes': outcomes if files.is_file(outcomes) else None,
        'images': summary.images, 'trained_on': summary.trained_on,
        'devices': f'{summary.devices} x {summary.device_kind}'}
  classifier_run = run_names.classifier_run(e.classifier)
  return {
      'name': name, 'title': e.title, 'classifier': e.classifier, 'unseen': e.unseen or None,
      'paper': e.paper or None, 'runs': runs,
      'latency': (_latency(suite_config, workdir, name, classifier_run)
                  if classifier_run in runs and 'qrnet' in runs else None),
      'parameters': {'qrnet': _qrnet_parameters(False), 'small_qrnet': _qrnet_parameters(True)},
      'image_size': image_size}


def _qrnet_parameters(small: bool) -> int:
  """Table 3's parameter counts (independent of the image size)."""
  shapes = variable_shapes(QRNet(small=small), 16)
  return int(sum(x.size for x in jax.tree.leaves(shapes['params'])))


def _latency(suite_config, workdir, name, classifier_run) -> dict:
  """Table 4's milliseconds per image on this device; measured once per experiment (latency.json),
  so a re-evaluation gives the same report."""
  path = os.path.join(workdir, name, LATENCY)
  measured = files.read_json(path)
  if measured is None:
    e = suite_config.experiments[name]
    config = e.runs[classifier_run].config
    summary = run_summary.read(os.path.join(workdir, name, classifier_run))
    arch = config.eval_classifiers[e.classifier].arch
    logging.info('measuring the latency of %s and of QRNet + %s', arch, arch)
    measured = latency.latency_for(
        arch, summary.data.get('num_classes', config.data.num_classes),
        config.data.image_size, dtype=config.model.dtype,
        batch_sizes=tuple(suite_config.latency.batch_sizes), repeats=suite_config.latency.repeats)
    metrics.write_json(path, measured)
  return measured


def _git(*args) -> Optional[str]:
  try:
    return subprocess.run(['git', *args], cwd=os.path.dirname(__file__), capture_output=True,
                          text=True, timeout=10, check=True).stdout.strip()
  except (OSError, subprocess.SubprocessError):
    return None


def _provenance(workdir, wall_s, only) -> dict:
  status = _git('status', '--porcelain', '--untracked-files=no')
  return {'commit': _git('rev-parse', 'HEAD'), 'dirty': bool(status) if status is not None
          else None, 'date': time.strftime('%Y-%m-%d %H:%M:%S %Z'),
          'command': ' '.join(sys.argv), 'only': list(only), 'workdir': files.absolute(workdir),
          'configs': 'suite_config.json and EXPERIMENT/RUN/config.json in the workdir',
          'devices': f'{jax.device_count()} x {jax.devices()[0].platform} '
                     f'{jax.devices()[0].device_kind}',
          'processes': jax.process_count(), 'jax': jax.__version__,
          'python': platform.python_version(), 'host': platform.node(),
          'suite_wall_s_this_invocation': round(wall_s, 1)}
