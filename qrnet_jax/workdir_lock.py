"""One owner per workdir: a run or a suite holds WORKDIR/workdir.lock for its lifetime.

Locally the lock is an advisory `fcntl.flock` on that file: the kernel drops it when the process
ends, however it ends (kill -9 included), so a lock left by a dead process never blocks a restart.
The file also holds who took it (host, pid, since when, the command), which a refused process
names. The processes of one multi-host job are one owner: process 0 takes the lock and tells the
others whether it got it. A gs:// workdir is not locked yet (a lease object with a heartbeat and
an expiry would be the way); the run says so in a warning.
"""
import contextlib
import fcntl
import json
import logging
import os
import platform
import sys
import time

import jax
import numpy as np
from jax.experimental import multihost_utils

from qrnet_jax import files
from qrnet_jax.errors import ConfigError

LOCK_FILE = 'workdir.lock'


class WorkdirBusyError(ConfigError):
  """Another process owns the workdir; the message names it and what to do."""


@contextlib.contextmanager
def held(workdir: str):
  """Holds the workdir's lock for the block; raises WorkdirBusyError at once if another owner
  holds it."""
  if files.is_remote(workdir):
    logging.warning('%s: gs:// workdirs are not locked; make sure no other job uses it', workdir)
    yield
    return
  path = os.path.join(files.absolute(workdir), LOCK_FILE)
  lock, holder = None, None
  if jax.process_index() == 0:
    files.make_dirs(workdir)
    lock, holder = _try_lock(path)
  if jax.process_count() > 1:  # one owner: every process follows process 0
    got = bool(multihost_utils.broadcast_one_to_all(np.int32(lock is not None)))
  else:
    got = lock is not None
  if not got:
    raise WorkdirBusyError(
        f'--workdir={workdir} is in use by {holder or "another process of another job"} '
        f'(lock: {path}). Wait for that run to end, or stop it (kill -TERM: it saves a checkpoint '
        'and exits), then rerun this command; or give another --workdir.')
  try:
    yield
  finally:
    if lock is not None:
      lock.close()  # closing the file drops the lock


def _try_lock(path):
  """(open locked file, None), or (None, a description of the holder)."""
  f = open(path, 'a+', encoding='utf-8')  # pylint: disable=consider-using-with (held for the run)
  try:
    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError:
    f.seek(0)
    holder = _describe(f.read())
    f.close()
    return None, holder
  f.seek(0)
  f.truncate()
  f.write(json.dumps({'host': platform.node(), 'pid': os.getpid(),
                      'since': time.strftime('%Y-%m-%d %H:%M:%S %Z'),
                      'command': ' '.join(sys.argv)}))
  f.flush()
  return f, None


def _describe(text):
  try:
    h = json.loads(text)
    return f'pid {h["pid"]} on host {h["host"]} since {h["since"]} ({h["command"]})'
  except (ValueError, KeyError, TypeError):  # the holder is still writing its name
    return 'another process'
