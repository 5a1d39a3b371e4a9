"""One process of a simulated multi-host job (used by test_faults.py): it takes the workdir lock
and asks the preemption sync point after every 50 ms "step", as fit does after each train step.

Usage: python multihost_preemption.py PORT NUM_PROCESSES PROCESS_ID WORKDIR
Prints "locked", then {"process": i, "saved_at": step} once the sync point is reached.
"""
import json
import sys
import time

import jax


def main(port, num_processes, process_id, workdir):
  jax.distributed.initialize(f'localhost:{port}', num_processes, process_id)
  from qrnet_jax import preemption, workdir_lock  # pylint: disable=g-import-not-at-top
  with workdir_lock.held(workdir), preemption.handling():
    print('locked', flush=True)
    for step in range(1, 2000):
      time.sleep(0.05)
      if preemption.reached(step):
        print(json.dumps({'process': process_id, 'saved_at': step}), flush=True)
        return


if __name__ == '__main__':
  main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
