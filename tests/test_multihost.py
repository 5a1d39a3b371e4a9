"""Two processes on localhost (jax.distributed, 2 CPU devices each) train like one process with 4
devices: the step is data-parallel across hosts, each reading its own slice of the batch, and a
whole run (classifier training, checkpoints, evaluation) works across processes."""
import json
import os
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


def multiprocess_env(devices_per_process):
  """Environment of one simulated host. Gloo on CPU gives processes 30 s to meet at each new
  collective; with a shared persistent compilation cache one process loads what the other must
  compile, and on 2 busy cores that skew can pass 30 s. So these processes compile for themselves.
  """
  return dict(os.environ, PYTHONPATH=ROOT, JAX_ENABLE_COMPILATION_CACHE='false',
              XLA_FLAGS=f'--xla_force_host_platform_device_count={devices_per_process}')


def run_processes(script, num_processes, devices_per_process, args, timeout=400):
  """Runs tests/SCRIPT PORT NUM_PROCESSES PROCESS_ID ARGS... as every process of one simulated
  cluster on localhost; fails with the log of any process that fails."""
  env = multiprocess_env(devices_per_process)
  port = free_port()
  procs = [subprocess.Popen(
      [sys.executable, os.path.join(HERE, script), str(port), str(num_processes), str(i)] + args,
      env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
           for i in range(num_processes)]
  try:
    logs = [p.communicate(timeout=timeout)[0] for p in procs]
  finally:
    for p in procs:
      p.kill()
  for p, log in zip(procs, logs):
    assert p.returncode == 0, log[-3000:]


def run_workers(tmp_path, num_processes, devices_per_process, steps=6):
  out = str(tmp_path / f'{num_processes}.json')
  run_processes('multihost_worker.py', num_processes, devices_per_process, [str(steps), out])
  with open(out) as f:
    return json.load(f)


@pytest.mark.slow  # three processes compile the step: about 90 s on 2 cores
def test_two_processes_match_one_process(tmp_path):
  two = run_workers(tmp_path, num_processes=2, devices_per_process=2)
  one = run_workers(tmp_path, num_processes=1, devices_per_process=4)
  assert (two['processes'], two['devices']) == (2, 4)
  assert (one['processes'], one['devices']) == (1, 4)
  np.testing.assert_allclose(two['losses'], one['losses'], rtol=1e-5)
  # Adam amplifies all-reduce rounding on near-zero gradients; parameters agree to 1e-4.
  np.testing.assert_allclose(two['param_sums'], one['param_sums'], rtol=1e-4)


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
