"""Orbax checkpoints in the workdir: the newest few (to resume) and the best (by validation loss).

Each checkpoint holds the train state (QRNet's parameters, the trainable parts of classifiers, the
optimizer state, the step and the key) and a JSON record of the loop (epoch, early-stopping counters,
history). Frozen classifier parameters are never written here.

A new best commits to 'latest' first, then to 'best', each waited for: a run killed between the two
commits resumes from 'latest', whose record names the best step, and `ensure_best` writes it to
'best' again. Temporary folders of a save cut short are removed when the managers open.

A damaged checkpoint is survived. Orbax commits a step by renaming its temporary folder (a commit
file on GCS), so a step folder is whole or absent; but a byte flipped in an array file later reads
back silently. So once a save has committed, CHECKSUMS (the SHA-256 of each of its files) is
written into its folder, and a restore checks them first. A step whose files differ from them
is moved (never deleted) to WORKDIR/checkpoints/damaged/ with a warning naming it, and the step
before it is tried; with none left the run stops naming the directory. A step without CHECKSUMS
(a kill between its commit and their write, or written before them) is moved when Orbax cannot
read it; one whose files match but that does not restore (a changed model, say) is not damage:
Orbax's error stops the run. A save that fails for lack of space stops the run with
files.DiskFullError; the steps committed before it are untouched.
"""
import contextlib
import functools
import hashlib
import logging
import os

import jax
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from qrnet_jax import files, timing

LATEST = 'latest'
BEST = 'best'
DAMAGED = 'damaged'  # WORKDIR/checkpoints/damaged/{latest,best}_STEP: unreadable steps, kept
CHECKSUMS = 'sha256.json'


def _timed(method):
  """The method's time counts as the run's 'checkpoints' part (timing.py)."""
  @functools.wraps(method)
  def timed(*args, **kwargs):
    with timing.part('checkpoints'):
      return method(*args, **kwargs)
  return timed


class DamagedCheckpointError(RuntimeError):
  """No readable checkpoint is left in a directory that held some; the message names it."""


class Checkpoints:
  """The 'latest' and 'best' Orbax CheckpointManagers under WORKDIR/checkpoints."""

  @_timed
  def __init__(self, workdir: str, keep: int = 2):
    root = os.path.join(files.absolute(workdir), 'checkpoints')
    self.root = root
    self._unsealed = {LATEST: [], BEST: []}  # steps saved here whose checksums are not written
    self.latest = ocp.CheckpointManager(
        os.path.join(root, LATEST),
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                             cleanup_tmp_directories=True))
    self.best = ocp.CheckpointManager(
        os.path.join(root, BEST),
        options=ocp.CheckpointManagerOptions(
            max_to_keep=1, create=True, best_fn=lambda metrics: metrics['val_loss'],
            best_mode='min', cleanup_tmp_directories=True))

  @_timed
  def save(self, step: int, state, record: dict, val_loss=None):
    """Saves to 'latest'; also to 'best' when `val_loss` is given (a new best), once 'latest' has
    committed."""
    self._seal(self.latest, LATEST)  # the previous save, committed by now
    with _disk_full_named(self.latest.directory):
      self.latest.save(step, args=_save_args(state, record))
    self._unsealed[LATEST].append(step)
    if val_loss is not None:
      self._seal(self.latest, LATEST)
      self._save_best(step, state, record, val_loss)

  @_timed
  def ensure_best(self, step: int, state, record: dict, val_loss):
    """Saves `state` (at `step`) as the best unless 'best' holds that step already: the repair after
    a kill between the 'latest' and 'best' commits of a new best."""
    if self.best.best_step() != step:
      self._save_best(step, state, record, val_loss)

  def _save_best(self, step, state, record, val_loss):
    with _disk_full_named(self.best.directory):
      self.best.save(step, args=_save_args(state, record), metrics={'val_loss': float(val_loss)})
    self._unsealed[BEST].append(step)
    self._seal(self.best, BEST)

  def _seal(self, manager, which):
    """Waits for `manager`'s save to commit, then writes CHECKSUMS into each step saved here."""
    with _disk_full_named(manager.directory):
      manager.wait_until_finished()
      for step in self._unsealed[which]:
        folder = _step_folder(manager, step)
        if jax.process_index() == 0 and files.is_dir(folder):
          files.write_json(os.path.join(folder, CHECKSUMS), _digests(folder))
    self._unsealed[which] = []

  @_timed
  def restore_latest(self, abstract_state):
    """(state, record) from the newest readable checkpoint, or None when there is none."""
    return self._restore(self.latest, LATEST, lambda: self.latest.latest_step(), abstract_state)

  @_timed
  def restore_best(self, abstract_state, step=None):
    """(state, record) of the best checkpoint, or None when there is none. `step`: the best step
    the loop's record names; where 'best' lost it (damaged and moved aside), it is restored from
    'latest' and written to 'best' again, or, gone there too, DamagedCheckpointError."""
    try:
      restored = self._restore(self.best, BEST, self.best.best_step, abstract_state)
    except DamagedCheckpointError:
      if step is None:
        raise
      restored = None
    if step is None or self.best.best_step() == step:
      return restored
    restored = self._restore(
        self.latest, LATEST, lambda: step if step in self.latest.all_steps() else None,
        abstract_state)
    if restored is None:
      raise DamagedCheckpointError(
          f'{self.best.directory}: the best step {step} is not readable there, nor in '
          f'{self.latest.directory}; see {os.path.join(self.root, DAMAGED)}')
    logging.warning('best step %d restored from %s and written to %s again', step,
                    self.latest.directory, self.best.directory)
    self._save_best(step, restored[0], restored[1], restored[1]['best_val_loss'])
    return restored

  def _restore(self, manager, which, pick_step, abstract_state):
    """Restores the step `pick_step()` names; a damaged one is moved aside and the next tried."""
    moved = []
    while (step := pick_step()) is not None:
      folder = _step_folder(manager, step)
      problem = _checksum_problem(folder)
      if problem is None:
        try:
          restored = manager.restore(step, args=ocp.args.Composite(
              state=ocp.args.StandardRestore(abstract_state), record=ocp.args.JsonRestore()))
          return restored.state, restored.record
        except Exception as e:  # pylint: disable=broad-except (tensorstore raises plain ones)
          if files.exists(os.path.join(folder, CHECKSUMS)):
            raise  # its files are as written: not damage (a changed model, say)
          problem = f'{type(e).__name__}: {str(e)[:300]}'
      moved.append(self._move_aside(manager, which, step))
      logging.warning('checkpoint %s step %d cannot be read (%s): moved to %s; trying the one '
                      'before it', which, step, problem, moved[-1])
    if moved:
      raise DamagedCheckpointError(
          f'{manager.directory}: no readable checkpoint is left; the damaged ones were moved to '
          f'{", ".join(moved)}. Move one back if its problem is not damage, or start again in '
          'a new workdir.')
    return None

  def _move_aside(self, manager, which, step) -> str:
    target = os.path.join(self.root, DAMAGED, f'{which}_{step}')
    if jax.process_index() == 0:
      files.make_dirs(os.path.dirname(target))
      suffix = 0
      while files.exists(target + (f'.{suffix}' if suffix else '')):
        suffix += 1
      target += f'.{suffix}' if suffix else ''
      _move_folder(_step_folder(manager, step), target)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices(f'qrnet_jax: {which} step {step} moved aside')
    manager.reload()
    return target

  @_timed
  def wait_until_finished(self):
    """Until both managers' saves have committed."""
    self.latest.wait_until_finished()
    self.best.wait_until_finished()

  @_timed
  def close(self):
    try:
      self._seal(self.latest, LATEST)
      self._seal(self.best, BEST)
    finally:
      for manager in (self.latest, self.best):
        manager.close()


def _save_args(state, record):
  return ocp.args.Composite(state=ocp.args.StandardSave(state), record=ocp.args.JsonSave(record))


def abstract_like(tree):
  """Shape, dtype and sharding of every array in `tree`: the restore target."""
  return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


def _step_folder(manager, step) -> str:
  return os.path.join(os.fspath(manager.directory), str(step))


def _move_folder(source, target):
  """A rename locally; on GCS (no folders, no renames) each object copied, then the originals
  removed."""
  if not files.is_remote(source):
    os.rename(source, target)
    return
  for relative in files.relative_files(source):
    files.write_bytes(f'{target}/{relative}', files.read_bytes(f'{source}/{relative}'))
  files.as_path(source).rmtree()


def _digests(folder) -> dict:
  """{path relative to `folder`: SHA-256} of every file under it, but CHECKSUMS."""
  return {relative: hashlib.sha256(files.read_bytes(f'{folder}/{relative}')).hexdigest()
          for relative in files.relative_files(folder) if relative != CHECKSUMS}


def _checksum_problem(folder):
  """What differs from the step's CHECKSUMS (a missing or changed file), or None; None too when
  it has none."""
  written = files.read_json(os.path.join(folder, CHECKSUMS))
  if written is None:
    return None
  found = _digests(folder)
  for relative, digest in sorted(written.items()):
    if relative not in found:
      return f'{relative} is missing'
    if found[relative] != digest:
      return f'{relative} differs from its SHA-256 at save ({CHECKSUMS})'
  return None


@contextlib.contextmanager
def _disk_full_named(directory):
  """Turns a save that failed for lack of space (Orbax raises it at the save or at the next wait)
  into files.DiskFullError naming the checkpoint directory and the size of its newest step."""
  try:
    yield
  except Exception as e:
    if isinstance(e, files.DiskFullError) or not files.is_disk_full(e):
      raise
    directory = os.fspath(directory)
    steps = [] if files.is_remote(directory) else [int(n) for n in os.listdir(directory)
                                                   if n.isdigit()]
    needed = files.tree_size(os.path.join(directory, str(max(steps)))) if steps else None
    raise files.DiskFullError(directory, needed) from e
