"""Orbax checkpoints in the workdir: the newest few (to resume) and the best (by validation loss).

Each checkpoint holds the train state (QRNet's parameters, the trainable parts of classifiers, the
optimizer state, the step and the key) and a JSON record of the loop (epoch, early-stopping counters,
history). Frozen classifier parameters are never written here.

A new best commits to 'latest' first, then to 'best', each waited for: a run killed between the two
commits resumes from 'latest', whose record names the best step, and `ensure_best` writes it to
'best' again. Temporary folders of a save cut short are removed when the managers open.
"""
import os

import jax
import orbax.checkpoint as ocp

from qrnet_jax import files

LATEST = 'latest'
BEST = 'best'


class Checkpoints:
  """The 'latest' and 'best' Orbax CheckpointManagers under WORKDIR/checkpoints."""

  def __init__(self, workdir: str, keep: int = 2):
    root = os.path.join(files.absolute(workdir), 'checkpoints')
    self.latest = ocp.CheckpointManager(
        os.path.join(root, LATEST),
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                             cleanup_tmp_directories=True))
    self.best = ocp.CheckpointManager(
        os.path.join(root, BEST),
        options=ocp.CheckpointManagerOptions(
            max_to_keep=1, create=True, best_fn=lambda metrics: metrics['val_loss'],
            best_mode='min', cleanup_tmp_directories=True))

  def save(self, step: int, state, record: dict, val_loss=None):
    """Saves to 'latest'; also to 'best' when `val_loss` is given (a new best), once 'latest' has
    committed."""
    self.latest.save(step, args=_save_args(state, record))
    if val_loss is not None:
      self.latest.wait_until_finished()
      self._save_best(step, state, record, val_loss)

  def ensure_best(self, step: int, state, record: dict, val_loss):
    """Saves `state` (at `step`) as the best unless 'best' holds that step already: the repair after
    a kill between the 'latest' and 'best' commits of a new best."""
    if self.best.best_step() != step:
      self._save_best(step, state, record, val_loss)

  def _save_best(self, step, state, record, val_loss):
    self.best.save(step, args=_save_args(state, record), metrics={'val_loss': float(val_loss)})
    self.best.wait_until_finished()

  def restore_latest(self, abstract_state):
    """(state, record) from the newest checkpoint, or None when there is none."""
    return self._restore(self.latest, self.latest.latest_step(), abstract_state)

  def restore_best(self, abstract_state):
    return self._restore(self.best, self.best.best_step(), abstract_state)

  @staticmethod
  def _restore(manager, step, abstract_state):
    if step is None:
      return None
    restored = manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state), record=ocp.args.JsonRestore()))
    return restored.state, restored.record

  def close(self):
    for manager in (self.latest, self.best):
      manager.wait_until_finished()
      manager.close()


def _save_args(state, record):
  return ocp.args.Composite(state=ocp.args.StandardSave(state), record=ocp.args.JsonSave(record))


def abstract_like(tree):
  """Shape, dtype and sharding of every array in `tree`: the restore target."""
  return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)
