"""Preemption: on SIGTERM or SIGINT a run finishes its step, saves a checkpoint and exits with
EXIT_STATUS, which the launch scripts requeue on; a restart resumes there, bit-equal.

On one process the handler only notes the signal (and passes it on to the suite's worker
processes); the training loop asks `reached()` after every step. On several processes JAX's
preemption service (started by jax.distributed.initialize) receives SIGTERM instead, and
`reached()` is its sync point: the processes agree on the step to save at, so that no process
saves alone. A second Ctrl-C stops at once (KeyboardInterrupt), without a checkpoint.
"""
import contextlib
import logging
import multiprocessing
import os
import signal
from typing import Optional

import jax
from jax.experimental import multihost_utils

EXIT_STATUS = 75  # EX_TEMPFAIL (sysexits.h): stopped with a checkpoint; rerun to resume
SIGNALS = (signal.SIGTERM, signal.SIGINT)

_received: Optional[str] = None  # the name of the signal received, once one is


class Preempted(BaseException):
  """A signal stopped the run after its checkpoint. Not an Exception, so that no `except
  Exception` on the way (a suite's run failure) takes it for a failed run."""

  def __str__(self):
    return f'stopped at {self.args[0]}, after its checkpoint; rerun to resume'


@contextlib.contextmanager
def handling():
  """Signal handlers for the block (one process only: on several, JAX's preemption service
  handles SIGTERM); the previous handlers are restored after it."""
  if jax.process_count() > 1:
    yield
    return
  previous = {s: signal.signal(s, _note) for s in SIGNALS}
  signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS)  # a suite's worker starts with them blocked
  try:
    yield
  finally:
    for s, handler in previous.items():
      signal.signal(s, handler)


@contextlib.contextmanager
def blocked(block: bool = True):
  """SIGTERM and SIGINT held back in this thread for the block (when `block`). Processes and
  threads started in it inherit that, so a suite's worker that is still starting (importing JAX,
  before its handlers) keeps a signal pending instead of dying of it."""
  if not block:
    yield
    return
  previous = signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
  try:
    yield
  finally:
    signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _note(signum, frame):
  del frame
  global _received
  if _received is not None and signum == signal.SIGINT:
    raise KeyboardInterrupt  # a second Ctrl-C: stop now
  name = signal.Signals(signum).name
  if _received is None:
    logging.warning('%s: finishing the current step, saving a checkpoint, then exiting with '
                    'status %d (rerun the same command to resume)', name, EXIT_STATUS)
  _received = name
  for child in multiprocessing.active_children():  # a suite's workers stop the same way
    os.kill(child.pid, signum)


def received() -> Optional[str]:
  """The name of the signal that asked this process to stop, or None."""
  return _received


def reached(step: int) -> bool:
  """Whether to checkpoint at `step` and stop. Every process calls it after each train step, as
  JAX's sync point requires; with the step as its id, as Orbax's CheckpointManager.save does."""
  if jax.process_count() > 1:
    return multihost_utils.reached_preemption_sync_point(step)
  return _received is not None
