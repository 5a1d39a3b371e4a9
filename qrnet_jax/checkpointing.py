"""Orbax checkpoints in the workdir: the newest few (to resume) and the best (by validation loss).

Each checkpoint holds the train state (QRNet's parameters, the trainable parts of classifiers, the
optimizer state, the step and the key) and a JSON record of the loop (epoch, early-stopping counters,
history). Frozen classifier parameters are never written here.
"""
import os

import jax
import orbax.checkpoint as ocp

LATEST = 'latest'
BEST = 'best'


class Checkpoints:
  """The 'latest' and 'best' Orbax CheckpointManagers under WORKDIR/checkpoints."""

  def __init__(self, workdir: str, keep: int = 2):
    root = os.path.join(os.path.abspath(workdir), 'checkpoints')
    self.latest = ocp.CheckpointManager(
        os.path.join(root, LATEST),
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True))
    self.best = ocp.CheckpointManager(
        os.path.join(root, BEST),
        options=ocp.CheckpointManagerOptions(
            max_to_keep=1, create=True, best_fn=lambda metrics: metrics['val_loss'],
            best_mode='min'))

  def save(self, step: int, state, record: dict, val_loss=None):
    """Saves to 'latest'; also to 'best' when `val_loss` is given (a new best)."""
    args = ocp.args.Composite(state=ocp.args.StandardSave(state), record=ocp.args.JsonSave(record))
    self.latest.save(step, args=args)
    if val_loss is not None:
      self.best.save(step, args=args, metrics={'val_loss': float(val_loss)})

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


def abstract_like(tree):
  """Shape, dtype and sharding of every array in `tree`: the restore target."""
  return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)
