"""Two processes on localhost (jax.distributed, 2 CPU devices each) train like one process with 4
devices: the step is data-parallel across hosts, each reading its own slice of the batch, and a
whole run (classifier training, checkpoints, evaluation) works across processes."""
import json
import os
import re
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def multiprocess_env(devices_per_process, num_processes=2):
  """Environment of one simulated host. Gloo on CPU gives processes 30 s to meet at each new
  collective; with a shared persistent compilation cache one process loads what the other must
  compile, and on 2 busy cores that skew can pass 30 s. So processes of a multi-process run
  compile for themselves; a single process uses the test session's cache.
  """
  return dict(os.environ, PYTHONPATH=ROOT,
              JAX_ENABLE_COMPILATION_CACHE='false' if num_processes > 1 else 'true',
              XLA_FLAGS=f'--xla_force_host_platform_device_count={devices_per_process}')


def run_each_process(script, args_per_process, devices_per_process, timeout=400):
  """Runs tests/SCRIPT PORT NUM_PROCESSES PROCESS_ID ARGS... as process i of one simulated cluster
  on localhost, with args_per_process[i]; returns [(exit code, log)] per process."""
  port, num_processes = free_port(), len(args_per_process)
  env = multiprocess_env(devices_per_process, num_processes)
  procs = [subprocess.Popen(
      [sys.executable, os.path.join(HERE, script), str(port), str(num_processes), str(i)] + args,
      env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
           for i, args in enumerate(args_per_process)]
  try:
    logs = [p.communicate(timeout=timeout)[0] for p in procs]
  finally:
    for p in procs:
      p.kill()
  return [(p.returncode, log) for p, log in zip(procs, logs)]


def run_processes(script, num_processes, devices_per_process, args, timeout=400):
  """Runs SCRIPT with the same ARGS as every process; fails with the log of any that fails."""
  for code, log in run_each_process(script, [args] * num_processes, devices_per_process, timeout):
    assert code == 0, log[-3000:]


def run_workers(tmp_path, num_processes, devices_per_process, steps=6, resume_dir=None):
  tmp_path.mkdir(parents=True, exist_ok=True)
  out = str(tmp_path / f'{num_processes}.json')
  run_processes('multihost_worker.py', num_processes, devices_per_process,
                [str(steps), out] + ([str(resume_dir)] if resume_dir else []))
  with open(out) as f:
    return json.load(f)


@pytest.mark.slow  # five runs of 3-6 steps, two of them on 2 processes: about 2-3 min on 2 cores
def test_two_processes_match_one_and_checkpoints_move_between_them(tmp_path):
  """The data-parallel step on 2 processes (2 devices each) follows 1 process with 4 devices; a
  checkpoint saved by 2 processes resumes in 1 process and the reverse, and both continue as 6
  uninterrupted steps do."""
  whole = run_workers(tmp_path / 'whole', num_processes=1, devices_per_process=4, steps=6)
  assert (whole['processes'], whole['devices']) == (1, 4)
  for first, then in ((2, 1), (1, 2)):
    resume_dir = tmp_path / f'{first}_then_{then}'
    started = run_workers(resume_dir, first, 4 // first, steps=3, resume_dir=resume_dir)
    resumed = run_workers(resume_dir, then, 4 // then, steps=3, resume_dir=resume_dir)
    assert (started['processes'], resumed['processes'], resumed['devices']) == (first, then, 4)
    np.testing.assert_allclose(started['losses'] + resumed['losses'], whole['losses'], rtol=1e-5)
    # Adam amplifies all-reduce rounding on near-zero gradients; parameters agree to 1e-4.
    np.testing.assert_allclose(resumed['param_sums'], whole['param_sums'], rtol=1e-4)


@pytest.mark.slow
@pytest.mark.skipif(
    os.environ.get('QRNET_MULTIPROCESS_RUN_TEST') != '1',
    reason='opt-in (QRNET_MULTIPROCESS_RUN_TEST=1): two whole runs take 1-4 min on 2 cores, and '
    "gloo's fixed 30 s meeting deadline for CPU collectives fails about one run in three there "
    'when compilations of the two processes drift apart; the step-level test above stays in CI')
def test_two_process_training_run_matches_one_process(tmp_path):
  sys.path.insert(0, HERE)
  import test_train  # pylint: disable=g-import-not-at-top
  flags = [f'--config.{k}={v}' for k, v in {**test_train.TINY_FLAGS,
                                            'train.evaluate_test': True}.items()]
  main_args = ['--config', 'configs/default.py', '--workdir']
  run_processes('multihost_main.py', 2, 2, main_args + [str(tmp_path / 'two')] + flags)
  subprocess.run([sys.executable, '-m', 'qrnet_jax.main'] + main_args + [str(tmp_path / 'one')]
                 + flags, cwd=ROOT, check=True, env=multiprocess_env(4), capture_output=True,
                 timeout=400)
  two_step, two = test_train.latest_params(tmp_path / 'two')
  one_step, one = test_train.latest_params(tmp_path / 'one')
  assert two_step == one_step
  summaries = []
  for run in ('two', 'one'):
    with open(tmp_path / run / 'summary.json') as f:
      summaries.append(json.load(f))
  assert summaries[0]['devices'] == 4 and 'noise/100' in summaries[0]['test']
  # Same training up to float reassociation across processes (all-reduce order), which Adam
  # amplifies on near-zero gradients over the classifier's and QRNet's ~40 steps.
  np.testing.assert_allclose([h['val']['loss'] for h in summaries[0]['history']],
                             [h['val']['loss'] for h in summaries[1]['history']], rtol=1e-3)
  # Parameters: an Adam step moves a parameter by about the learning rate whatever the gradient's
  # size, so rounding-level gradient differences bound the parameters' only by lr x steps.
  diffs = np.concatenate([np.abs(a - b).ravel()
                          for a, b in zip(jax.tree.leaves(two), jax.tree.leaves(one))])
  assert np.median(diffs) < 1e-5 and diffs.max() <= 1e-3 * two_step


def test_processes_given_different_configs_all_stop_naming_the_field(tmp_path):
  sys.path.insert(0, HERE)
  import test_train  # pylint: disable=g-import-not-at-top
  args = ['--config', 'configs/default.py', '--workdir', str(tmp_path / 'run')] + [
      f'--config.{k}={v}' for k, v in test_train.TINY_FLAGS.items()]
  (code0, log0), (code1, log1) = run_each_process(
      'multihost_main.py', [args, args + ['--config.train.learning_rate=0.125']], 2, timeout=120)
  assert code0 != 0 and code1 != 0
  assert re.search(r'process 1 of 2 differs from process 0: config\.train\.learning_rate: 0\.125 '
                   r'here, [0-9.e-]+ on process 0', log1), log1[-2000:]
  assert 'processes [1] of 2 were given another config' in log0, log0[-2000:]
  assert 'Traceback' not in log0 + log1  # a config error, said as one
  assert not (tmp_path / 'run').exists()  # stopped before the run wrote anything

