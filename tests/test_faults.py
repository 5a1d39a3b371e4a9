"""What clusters and disks do to a run: a second job on its workdir, a damaged checkpoint, SIGTERM,
a full disk. Each case against one tiny uninterrupted run (16 px, generated data), run once."""
import errno
import glob
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import jax
import numpy as np
import pytest
from orbax.checkpoint._src.handlers import json_checkpoint_handler

from qrnet_jax import checkpointing, files, preemption, run, workdir_lock
from tests.test_gcs import BUCKET, gcs  # pylint: disable=unused-import (a fixture)
from tests.test_launch import _install, checkout, launch, recorded  # pylint: disable=unused-import
from tests.test_multihost import free_port, multiprocess_env
from tests.test_train import ROOT, committed_steps, latest_params, main_command, tiny_run_config

GRACE_S = 30  # what schedulers commonly give between SIGTERM and SIGKILL


def env():
  """One device (as the runs in tests/test_train.py), so the runs here share compiled programs."""
  flags = os.environ.get('XLA_FLAGS', '').replace('--xla_force_host_platform_device_count=4', '')
  return dict(os.environ, PYTHONPATH=ROOT, XLA_FLAGS=flags.strip())


def start(workdir):
  """The tiny run in a process of its own; its output goes to WORKDIR.log (`output`)."""
  with open(f'{workdir}.log', 'w') as log:
    return subprocess.Popen(main_command(workdir), cwd=ROOT, env=env(), stdout=log, stderr=log)


def output(workdir):
  with open(f'{workdir}.log') as f:
    return f.read()


def wait_for(condition, process, workdir, timeout=300):
  deadline = time.time() + timeout
  while time.time() < deadline and not condition():
    assert process.poll() is None, f'the run ended first: {output(workdir)[-3000:]}'
    time.sleep(0.05)
  assert condition(), 'timed out'


@pytest.fixture(scope='module')
def whole(tmp_path_factory):
  """A tiny run, uninterrupted: (workdir, final step, final parameters)."""
  workdir = tmp_path_factory.mktemp('whole') / 'run'
  subprocess.run(main_command(workdir), cwd=ROOT, env=env(), check=True, capture_output=True,
                 timeout=600)
  return (workdir, *latest_params(workdir))


def test_second_process_on_a_busy_workdir_is_refused_and_the_first_finishes(whole, tmp_path):
  workdir = tmp_path / 'run'
  first = start(workdir)
  lock = workdir / workdir_lock.LOCK_FILE
  wait_for(lambda: lock.exists() and lock.read_text(), first, workdir)
  begun = time.time()
  second = subprocess.run(main_command(workdir), cwd=ROOT, env=env(), capture_output=True,
                          text=True, timeout=120)
  assert time.time() - begun < 60  # at once (about 5 s): before any data loading or compilation
  assert second.returncode == 1 and 'Traceback' not in second.stderr
  assert re.search(rf'error: --workdir=\S+ is in use by pid {first.pid} on host \S+ since ',
                   second.stderr), second.stderr[-2000:]
  assert 'kill -TERM' in second.stderr
  assert first.wait(timeout=600) == 0, output(workdir)[-3000:]
  step, params = latest_params(workdir)
  assert step == whole[1]
  jax.tree.map(np.testing.assert_array_equal, params, whole[2])


def test_lock_of_a_killed_process_does_not_block_its_restart(tmp_path):
  holder = subprocess.Popen(
      [sys.executable, '-c', 'import sys, time\nfrom qrnet_jax import workdir_lock\n'
       'with workdir_lock.held(sys.argv[1]):\n  print("held", flush=True)\n  time.sleep(600)',
       str(tmp_path)], cwd=ROOT, env=env(), stdout=subprocess.PIPE, text=True)
  assert holder.stdout.readline() == 'held\n'
  with pytest.raises(workdir_lock.WorkdirBusyError, match=f'pid {holder.pid} on host'):
    with workdir_lock.held(str(tmp_path)):
      pass
  holder.send_signal(signal.SIGKILL)
  holder.wait()
  assert str(holder.pid) in (tmp_path / workdir_lock.LOCK_FILE).read_text()  # still there
  with workdir_lock.held(str(tmp_path)):  # the dead process's lock went with it
    assert str(os.getpid()) in (tmp_path / workdir_lock.LOCK_FILE).read_text()


def flip_a_byte(step_folder):
  """One byte of the largest array file of a checkpoint, inverted (a bad disk, a bad copy)."""
  path = max(glob.glob(os.path.join(step_folder, 'state', '**', 'd', '*'), recursive=True),
             key=os.path.getsize)
  data = bytearray(open(path, 'rb').read())
  data[len(data) // 2] ^= 0xFF
  with open(path, 'wb') as f:
    f.write(bytes(data))


def test_flipped_byte_in_newest_checkpoint_resumes_from_the_one_before(whole, tmp_path):
  workdir = tmp_path / 'run'
  shutil.copytree(whole[0], workdir)
  newest, before = committed_steps(workdir)[::-1][:2]
  flip_a_byte(workdir / 'checkpoints' / 'latest' / str(newest))
  rerun = subprocess.run(main_command(workdir), cwd=ROOT, env=env(), check=True,
                         capture_output=True, text=True, timeout=600)
  assert re.search(rf'checkpoint latest step {newest} cannot be read \(state/\S+ differs from its '
                   r'SHA-256 at save', rerun.stderr), rerun.stderr[-3000:]
  # Moved aside, not deleted; the run trained again from the step before, to the same end.
  assert (workdir / 'checkpoints' / 'damaged' / f'latest_{newest}' / 'state').is_dir()
  assert before in committed_steps(workdir) and newest in committed_steps(workdir)
  step, params = latest_params(workdir)
  assert step == whole[1]
  jax.tree.map(np.testing.assert_array_equal, params, whole[2])


def test_flipped_byte_in_best_checkpoint_is_taken_again_from_latest(whole, tmp_path):
  workdir = tmp_path / 'run'
  shutil.copytree(whole[0], workdir)
  [best] = os.listdir(workdir / 'checkpoints' / 'best')
  assert int(best) in committed_steps(workdir)  # the tiny run's last epoch is its best
  flip_a_byte(workdir / 'checkpoints' / 'best' / best)
  rerun = subprocess.run(main_command(workdir), cwd=ROOT, env=env(), check=True,
                         capture_output=True, text=True, timeout=600)
  assert f'checkpoint best step {best} cannot be read' in rerun.stderr, rerun.stderr[-3000:]
  assert f'best step {best} restored from' in rerun.stderr
  assert os.listdir(workdir / 'checkpoints' / 'best') == [best]
  assert (workdir / 'checkpoints' / 'damaged' / f'best_{best}').is_dir()


def test_no_readable_checkpoint_left_stops_naming_the_directory(tmp_path, caplog):
  """Also for 'best'; a damaged record (JSON) is damage too, found by Orbax or the checksums."""
  state = {'w': np.arange(4000, dtype=np.float32), 'b': np.ones(3, np.float32)}
  checkpoints = checkpointing.Checkpoints(str(tmp_path))
  checkpoints.save(5, state, {'epoch': 1}, val_loss=0.5)
  checkpoints.save(9, state, {'epoch': 2})
  checkpoints.close()
  latest, best = tmp_path / 'checkpoints' / 'latest', tmp_path / 'checkpoints' / 'best'
  (latest / '9' / 'record' / 'metadata').write_text('{"epoch": 2')
  flip_a_byte(best / '5')
  abstract = checkpointing.abstract_like(state)
  checkpoints = checkpointing.Checkpoints(str(tmp_path))
  try:
    with caplog.at_level(logging.WARNING):
      restored, record = checkpoints.restore_latest(abstract)
    assert record == {'epoch': 1} and 'checkpoint latest step 9 cannot be read' in caplog.text
    with pytest.raises(checkpointing.DamagedCheckpointError,
                       match=rf'{best}: no readable checkpoint is left; the damaged ones were '
                             r'moved to \S+/checkpoints/damaged/best_5'):
      checkpoints.restore_best(abstract)
  finally:
    checkpoints.close()
  np.testing.assert_array_equal(restored['w'], state['w'])
  assert sorted(os.listdir(tmp_path / 'checkpoints' / 'damaged')) == ['best_5', 'latest_9']


def test_intact_checkpoint_that_does_not_fit_the_model_is_not_taken_for_damage(tmp_path):
  checkpoints = checkpointing.Checkpoints(str(tmp_path))
  checkpoints.save(5, {'w': np.zeros(8, np.float32)}, {'epoch': 1})
  checkpoints.close()
  checkpoints = checkpointing.Checkpoints(str(tmp_path))
  try:
    with pytest.raises(Exception) as raised:  # a changed model: Orbax's error, as before
      checkpoints.restore_latest(checkpointing.abstract_like({'v': np.zeros(3, np.float32)}))
  finally:
    checkpoints.close()
  assert not isinstance(raised.value, checkpointing.DamagedCheckpointError)
  assert committed_steps(tmp_path) == [5] and not (tmp_path / 'checkpoints' / 'damaged').exists()


def test_sigterm_mid_epoch_checkpoints_exits_75_and_resumes_bit_equal(whole, tmp_path):
  workdir = tmp_path / 'run'
  process = start(workdir)
  per_epoch = whole[1] // 4  # 4 epochs of the same length
  wait_for(lambda: any(s > per_epoch for s in committed_steps(workdir)), process, workdir)
  sent = time.time()
  process.send_signal(signal.SIGTERM)
  status = process.wait(timeout=GRACE_S + 30)
  assert time.time() - sent < GRACE_S
  stderr = output(workdir)
  assert status == preemption.EXIT_STATUS == 75, stderr[-3000:]
  stopped = int(re.search(r'stopped at step (\d+), after its checkpoint', stderr).group(1))
  assert max(committed_steps(workdir)) == stopped < whole[1]
  assert not glob.glob(str(workdir / 'checkpoints' / '*' / '*tmp*'))
  subprocess.run(main_command(workdir), cwd=ROOT, env=env(), check=True, capture_output=True,
                 timeout=600)
  step, params = latest_params(workdir)
  assert step == whole[1]
  jax.tree.map(np.testing.assert_array_equal, params, whole[2])


def test_several_processes_save_at_the_step_jax_sync_point_names(tmp_path, monkeypatch):
  """On several processes the loop asks JAX's preemption sync point after every step, with the
  step as its id (as Orbax does), and saves and stops at the step it names."""
  asked = []

  def sync_point(step_id):
    asked.append(step_id)
    return step_id == 5
  monkeypatch.setattr(preemption, 'jax', type('Jax', (), {'process_count': lambda: 2}))
  monkeypatch.setattr(preemption.multihost_utils, 'reached_preemption_sync_point', sync_point)
  with pytest.raises(preemption.Preempted, match='stopped at step 5, after its checkpoint'):
    run.train_and_evaluate(tiny_run_config(), str(tmp_path), jax.devices()[:1])
  assert set(asked) == {1, 2, 3, 4, 5}  # the classifier's first steps (Orbax asks at saves too)
  assert committed_steps(tmp_path / 'classifiers' / 'small_vgg') == [3, 5]


def test_full_disk_at_a_checkpoint_stops_naming_it_and_keeps_the_last_one(whole, tmp_path,
                                                                          monkeypatch):
  workdir = tmp_path / 'run'
  shutil.copytree(whole[0], workdir)
  before = committed_steps(workdir)

  async def no_space(self, x, directory):  # Orbax's write of the loop record, in its commit
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(directory))
  monkeypatch.setattr(json_checkpoint_handler.JsonCheckpointHandler, '_save_fn', no_space)
  with pytest.raises(files.DiskFullError,
                     match=rf'no space left to write {workdir}/checkpoints/latest \(\d+ bytes '
                           r'needed, \d+ free there\)'):
    run.train_and_evaluate(tiny_run_config(**{'train.max_epochs': 4}), str(workdir),
                             jax.devices()[:1])
  assert committed_steps(workdir) == before
  step, params = latest_params(workdir)
  assert step == whole[1]
  jax.tree.map(np.testing.assert_array_equal, params, whole[2])


@pytest.fixture
def small_filesystem(tmp_path):
  """A 20 MB tmpfs: room for two of the tiny run's QRNet checkpoints (8 MB each), not three.
  Needs root (mount); skipped elsewhere."""
  folder = tmp_path / 'small'
  folder.mkdir()
  if os.geteuid() != 0 or subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=20m', 'tmpfs',
                                          str(folder)], capture_output=True).returncode:
    pytest.skip('mounting a small tmpfs needs root')
  try:
    yield folder
  finally:
    subprocess.run(['umount', str(folder)], check=True)


def test_full_disk_on_a_small_filesystem_stops_naming_the_path_and_keeps_the_last_checkpoint(
    whole, small_filesystem):
  workdir = small_filesystem / 'run'
  result = subprocess.run(main_command(workdir), cwd=ROOT, env=env(), capture_output=True,
                          text=True, timeout=600)
  assert result.returncode == 1
  # Which write meets the full disk first depends on the timing of Orbax's asynchronous saves:
  # 'latest' most often, 'best' or a step's checksum file at times. Each names its own path.
  errors = [line for line in result.stderr.splitlines() if 'error:' in line or 'Error' in line]
  assert re.search(rf'error: no space left to write {workdir}/checkpoints/\S+ '
                   r'\(\d+ bytes needed, \d+ free there\)', result.stderr), errors[-20:]
  step, _ = latest_params(workdir)  # readable: the newest step committed before the disk filled
  assert step == max(committed_steps(workdir)) < whole[1]
  assert files.read_json(workdir / 'config.json') == files.read_json(whole[0] / 'config.json')


def test_full_disk_at_a_marker_keeps_the_old_file(tmp_path, monkeypatch):
  path = tmp_path / 'summary.json'
  files.write_json(path, {'old': 1})
  real = tempfile.NamedTemporaryFile

  class Full:  # what a full disk does to the temporary file's write
    def __init__(self, *args, **kwargs):
      self.file = real(*args, **kwargs)
      self.name = self.file.name

    def write(self, data):
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name):
      return getattr(self.file, name)

    def __enter__(self):
      return self

    def __exit__(self, *exc):
      self.file.close()
  monkeypatch.setattr(tempfile, 'NamedTemporaryFile', Full)
  with pytest.raises(files.DiskFullError,
                     match=rf'no space left to write {path} \(14 bytes needed, \d+ free'):
    files.write_json(path, {'new': 2})
  assert files.read_json(path) == {'old': 1} and os.listdir(tmp_path) == ['summary.json']


def test_slurm_job_requeues_itself_when_the_run_stops_at_a_checkpoint(checkout):
  repo, env, calls = checkout
  _install(repo / '.venv' / 'bin' / 'python')
  bin_dir = calls.parent / 'bin'
  _install(bin_dir / 'scontrol')
  srun = bin_dir / 'srun'  # a run that SIGTERM stopped at its checkpoint
  srun.write_text(srun.read_text() + f'sys.exit({preemption.EXIT_STATUS})\n')
  slurm = {'SLURM_JOB_ID': '7', 'SLURM_NNODES': '2', 'SLURM_SUBMIT_DIR': str(repo)}
  ran = launch(checkout, 'gpu_slurm.sbatch', 'runs/q101', 'configs/default.py', env=slurm)
  assert ran.returncode == preemption.EXIT_STATUS, ran.stderr
  assert [c['argv'][:3] for c in recorded(calls)] == [['srun', '--nodes=2', '--ntasks=2'],
                                                      ['scontrol', 'requeue', '7']]
  srun.write_text(srun.read_text().replace(f'sys.exit({preemption.EXIT_STATUS})', 'sys.exit(1)'))
  calls.unlink()
  failed = launch(checkout, 'gpu_slurm.sbatch', 'runs/q101', 'configs/default.py', env=slurm)
  assert failed.returncode == 1 and [c['argv'][0] for c in recorded(calls)] == ['srun']


def test_gcs_lease_refuses_a_second_owner_and_a_dead_owners_lease_expires(gcs, monkeypatch):
  from google.cloud import storage  # pylint: disable=g-import-not-at-top (the gcs extra)
  lease = storage.Client().bucket(BUCKET).blob(f'lease/{workdir_lock.LOCK_FILE}')
  read = lambda: json.loads(lease.download_as_bytes())
  monkeypatch.setattr(workdir_lock, 'HEARTBEAT_S', 0.2)
  with workdir_lock.held(f'{gcs}/lease'):
    first = read()
    with pytest.raises(workdir_lock.WorkdirBusyError,
                       match=rf'pid {os.getpid()} on host \S+ since .*its lease expires at'):
      with workdir_lock.held(f'{gcs}/lease'):
        pass
    time.sleep(1)
    assert read()['expires'] > first['expires']  # renewed by its heartbeat
  assert not lease.exists()  # given back
  # What a killed process leaves: a lease that is no longer renewed. Refused until it expires.
  dead = {**first, 'pid': 1}
  lease.upload_from_string(json.dumps({**dead, 'expires': time.time() + 60}))
  with pytest.raises(workdir_lock.WorkdirBusyError, match='pid 1 on host'):
    with workdir_lock.held(f'{gcs}/lease'):
      pass
  lease.upload_from_string(json.dumps({**dead, 'expires': time.time() - 1}))
  with workdir_lock.held(f'{gcs}/lease'):
    assert read()['pid'] == os.getpid()


def test_damaged_checkpoint_on_gcs_is_moved_aside_there(gcs):
  state = {'w': np.arange(4000, dtype=np.float32)}
  workdir = f'{gcs}/damaged'
  checkpoints = checkpointing.Checkpoints(workdir)
  checkpoints.save(5, state, {'epoch': 1})
  checkpoints.save(9, {'w': state['w'] + 1}, {'epoch': 2})
  checkpoints.close()
  step_9 = f'{workdir}/checkpoints/latest/9'
  array_file = max((r for r in files.relative_files(step_9) if '/d/' in r),
                   key=lambda r: len(files.read_bytes(f'{step_9}/{r}')))
  data = bytearray(files.read_bytes(f'{step_9}/{array_file}'))
  data[len(data) // 2] ^= 0xFF
  files.write_bytes(f'{step_9}/{array_file}', bytes(data))
  checkpoints = checkpointing.Checkpoints(workdir)
  try:
    restored, record = checkpoints.restore_latest(checkpointing.abstract_like(state))
  finally:
    checkpoints.close()
  assert record == {'epoch': 1}
  np.testing.assert_array_equal(restored['w'], state['w'])
  assert files.is_file(f'{workdir}/checkpoints/damaged/latest_9/{array_file}')
  assert not files.exists(step_9)


def test_sigterm_to_one_of_two_processes_stops_both_at_one_step(tmp_path):
  """JAX's preemption service, as the loop uses it: one process is signalled, every process of
  the job reaches the sync point at the same step (so no process saves alone); both took the
  workdir lock as one owner."""
  port = free_port()
  processes = [subprocess.Popen(
      [sys.executable, os.path.join(ROOT, 'tests', 'multihost_preemption.py'), str(port), '2',
       str(i), str(tmp_path)], cwd=ROOT, env=multiprocess_env(1), stdout=subprocess.PIPE,
      stderr=subprocess.DEVNULL, text=True) for i in range(2)]
  try:
    for process in processes:  # each holds the lock, process 0's
      assert 'locked\n' in iter(process.stdout.readline, '')
    processes[1].send_signal(signal.SIGTERM)
    saved = [json.loads(process.communicate(timeout=120)[0].splitlines()[-1])
             for process in processes]
  finally:
    for process in processes:
      process.kill()
  assert saved[0]['saved_at'] == saved[1]['saved_at'] is not None
