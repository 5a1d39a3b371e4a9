"""One owner per workdir: a run or a suite holds WORKDIR/workdir.lock for its lifetime.

On a local (or shared) filesystem the lock is an advisory `fcntl.flock` on that file: the kernel
drops it when the process ends, however it ends (kill -9 included), so a lock left by a dead
process never blocks a restart. On gs:// it is a lease object: created only where none is (a
generation precondition, atomic on GCS), renewed every HEARTBEAT_S by a thread, deleted at the
end; a lease not renewed for LEASE_S (its process died) has expired and is taken over. Either way
the file holds who took it (host, pid, since when, the command), which a refused process names.
The processes of one multi-host job are one owner: process 0 takes the lock and tells the others
whether it got it.
"""
import contextlib
import fcntl
import json
import logging
import os
import platform
import sys
import threading
import time

import jax
import numpy as np
from jax.experimental import multihost_utils

from qrnet_jax import files
from qrnet_jax.errors import ConfigError

LOCK_FILE = 'workdir.lock'
LEASE_S = 120  # a gs:// lease not renewed for this long belongs to a dead process
HEARTBEAT_S = 30


class WorkdirBusyError(ConfigError):
  """Another process owns the workdir; the message names it and what to do."""


@contextlib.contextmanager
def held(workdir: str):
  """Holds the workdir's lock for the block; raises WorkdirBusyError at once if another owner
  holds it."""
  path = os.path.join(files.absolute(workdir), LOCK_FILE)
  owner, holder = None, None
  if jax.process_index() == 0:
    files.make_dirs(workdir)
    owner = _Lease(path) if files.is_remote(workdir) else _FileLock(path)
    holder = owner.acquire()
  if jax.process_count() > 1:  # one owner: every process follows process 0
    got = bool(multihost_utils.broadcast_one_to_all(np.int32(holder is None)))
  else:
    got = holder is None
  if not got:
    raise WorkdirBusyError(
        f'--workdir={workdir} is in use by {holder or "another process of another job"} '
        f'(lock: {path}). Wait for that run to end, or stop it (kill -TERM: it saves a checkpoint '
        'and exits), then rerun this command; or give another --workdir.')
  try:
    yield
  finally:
    if owner is not None:
      owner.release()


def _me(expires=None) -> str:
  record = {'host': platform.node(), 'pid': os.getpid(),
            'since': time.strftime('%Y-%m-%d %H:%M:%S %Z'), 'command': ' '.join(sys.argv)}
  return json.dumps(record if expires is None else {**record, 'expires': expires})


def _describe(text) -> str:
  try:
    h = json.loads(text)
    until = (f', its lease expires at {time.strftime("%H:%M:%S %Z", time.localtime(h["expires"]))}'
             ' unless renewed' if 'expires' in h else '')
    return f'pid {h["pid"]} on host {h["host"]} since {h["since"]} ({h["command"]}{until})'
  except (ValueError, KeyError, TypeError):  # the holder is still writing its name
    return 'another process'


class _FileLock:
  """fcntl.flock on a local file, held while the file stays open."""

  def __init__(self, path):
    self.path, self.file = path, None

  def acquire(self):
    """None once held, else a description of the holder."""
    f = open(self.path, 'a+', encoding='utf-8')  # pylint: disable=consider-using-with
    try:
      fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      f.seek(0)
      holder = _describe(f.read())
      f.close()
      return holder
    f.seek(0)
    f.truncate()
    f.write(_me())
    f.flush()
    self.file = f
    return None

  def release(self):
    self.file.close()  # closing the file drops the lock


class _Lease:
  """A gs:// lease object, renewed by a thread; each write conditional on the generation this
  process last wrote, so a process that lost its lease (paused past LEASE_S) finds out."""

  def __init__(self, url):
    from google.cloud import storage  # pylint: disable=g-import-not-at-top (the gcs extra)
    bucket, _, name = url[len('gs://'):].partition('/')
    self.bucket, self.name = storage.Client().bucket(bucket), name
    self.generation, self.stop, self.thread = None, threading.Event(), None

  def acquire(self):
    from google.api_core import exceptions  # pylint: disable=g-import-not-at-top
    current = self.bucket.get_blob(self.name)
    if current is not None:
      text = current.download_as_bytes().decode('utf-8', 'replace')
      try:
        expired = json.loads(text)['expires'] < time.time()
      except (ValueError, KeyError, TypeError):
        expired = True  # unreadable: no owner to name
      if not expired:
        return _describe(text)
      logging.warning('%s: taking over an expired lease (%s)', self.name, _describe(text))
    try:
      self._write(if_generation_match=0 if current is None else current.generation)
    except exceptions.PreconditionFailed:  # another process took it meanwhile
      return _describe(self.bucket.blob(self.name).download_as_bytes())
    self.thread = threading.Thread(target=self._renew, name='workdir lease', daemon=True)
    self.thread.start()
    return None

  def _write(self, if_generation_match):
    blob = self.bucket.blob(self.name)
    blob.upload_from_string(_me(expires=time.time() + LEASE_S), content_type='application/json',
                            if_generation_match=if_generation_match)
    self.generation = blob.generation

  def _renew(self):
    from google.api_core import exceptions  # pylint: disable=g-import-not-at-top
    while not self.stop.wait(HEARTBEAT_S):
      try:
        self._write(if_generation_match=self.generation)
      except exceptions.PreconditionFailed:
        logging.error('gs://%s/%s: the lease was taken over by another process (this one did '
                      'not renew it for %d s); two jobs may now write this workdir',
                      self.bucket.name, self.name, LEASE_S)
        return
      except Exception as e:  # pylint: disable=broad-except (a network error: try again later)
        logging.warning('gs://%s/%s: lease not renewed (%s); trying again in %d s',
                        self.bucket.name, self.name, e, HEARTBEAT_S)

  def release(self):
    self.stop.set()
    self.thread.join()
    try:
      self.bucket.blob(self.name).delete(if_generation_match=self.generation)
    except Exception as e:  # pylint: disable=broad-except (it expires anyway)
      logging.warning('gs://%s/%s: lease not deleted (%s); it expires in %d s',
                      self.bucket.name, self.name, e, LEASE_S)
