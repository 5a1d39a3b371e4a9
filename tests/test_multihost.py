"""Two processes on localhost (jax.distributed, 2 CPU devices each) train exactly like one process
with 4 devices: the step is data-parallel across hosts, each reading its own slice of the batch."""
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def run_workers(tmp_path, num_processes, devices_per_process, steps=6):
  env = dict(os.environ, PYTHONPATH=ROOT,
             XLA_FLAGS=f'--xla_force_host_platform_device_count={devices_per_process}')
  out = str(tmp_path / f'{num_processes}.json')
  port = free_port()
  procs = [subprocess.Popen([sys.executable, os.path.join(HERE, 'multihost_worker.py'), str(port),
                             str(num_processes), str(i), str(steps), out], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
           for i in range(num_processes)]
  try:
    logs = [p.communicate(timeout=300)[0] for p in procs]
  finally:
    for p in procs:
      p.kill()
  for p, log in zip(procs, logs):
    assert p.returncode == 0, log[-3000:]
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
