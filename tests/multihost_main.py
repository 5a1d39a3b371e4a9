"""`python -m qrnet_jax.main` as one process of a simulated multi-host run (test_multihost.py).

Usage: python multihost_main.py PORT NUM_PROCESSES PROCESS_ID [qrnet_jax.main flags...]
"""
import sys

import jax
from absl import app

if __name__ == '__main__':
  port, num_processes, process_id = (int(a) for a in sys.argv[1:4])
  del sys.argv[1:4]
  jax.distributed.initialize(f'localhost:{port}', num_processes, process_id)
  from qrnet_jax import main  # pylint: disable=g-import-not-at-top
  app.run(main.main, flags_parser=main.parse_flags)
