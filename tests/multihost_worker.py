"""One process of a simulated multi-host run (used by test_multihost.py).

Usage: python multihost_worker.py PORT NUM_PROCESSES PROCESS_ID NUM_STEPS OUT.json [RESUME_DIR]
Each process owns XLA_FLAGS' simulated CPU devices, reads only its slice of every global batch
and runs the same jitted train step; process 0 writes the losses and a parameter checksum.
With RESUME_DIR, the state starts from the newest checkpoint there (if any) and the state after
the steps is saved there (qrnet_jax.checkpointing, as a run saves it).
"""
import json
import os
import sys

import jax


def main(port, num_processes, process_id, num_steps, out, resume_dir=None):
  if num_processes > 1:
    jax.distributed.initialize(f'localhost:{port}', num_processes, process_id)
  sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
  import test_train  # pylint: disable=g-import-not-at-top
  from qrnet_jax import checkpointing, data, parallel  # pylint: disable=g-import-not-at-top
  mesh = parallel.make_mesh()
  state, frozen, step_fn, _ = test_train.setup_step(mesh)
  checkpoints = checkpointing.Checkpoints(resume_dir) if resume_dir else None
  restored = checkpoints and checkpoints.restore_latest(checkpointing.abstract_like(state))
  if restored:
    state = restored[0]
  dataset = test_train.tiny_dataset()
  batches = data.train_batches(dataset.train, 8, 0, int(state.step), jax.process_index(),
                               jax.process_count())
  losses = []
  for _ in range(num_steps):
    state, metrics = step_fn(state, parallel.global_batch(next(batches), mesh), frozen)
    losses.append(float(metrics['loss']))
  if checkpoints:
    checkpoints.save(int(state.step), state, {'processes': jax.process_count()})
    checkpoints.close()
  params = jax.device_get(jax.tree.map(lambda x: x.addressable_data(0), state.params))
  if jax.process_index() == 0:
    with open(out, 'w') as f:
      json.dump({'losses': losses, 'devices': jax.device_count(),
                 'processes': jax.process_count(),
                 'param_sums': [float(abs(x).sum()) for x in jax.tree.leaves(params)]}, f)


if __name__ == '__main__':
  main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5],
       *sys.argv[6:7])
