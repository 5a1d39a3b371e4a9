"""Entry point: python -m qrnet_jax.main --config configs/default.py --workdir /tmp/qrnet.

Overrides: --config.train.batch_size=16, --config.classifiers.small_vgg.weight=0.1, ...
On several hosts (TPU pods, GPU clusters) every process runs this same command; see launch/.
"""
import logging

import jax
from absl import app, flags
from ml_collections import config_flags

from qrnet_jax import config_validation, train

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Experiment config file (get_config()).',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for checkpoints, metrics and results.')
_DISTRIBUTED = flags.DEFINE_bool(
    'distributed', False, 'Call jax.distributed.initialize() first (multi-host; the cluster is '
    'detected from the environment: TPU pods, SLURM, or JAX_COORDINATOR_ADDRESS etc.).')


def main(argv):
  del argv
  logging.getLogger().setLevel(logging.INFO)
  # Orbax and other libraries log through absl at INFO on every save; keep the console readable.
  logging.getLogger('absl').setLevel(logging.WARNING)
  if _DISTRIBUTED.value:
    jax.distributed.initialize()
  config = _CONFIG.value
  if '://' in _WORKDIR.value:
    raise app.UsageError(f'--workdir={_WORKDIR.value}: give a local or mounted shared path (e.g. a '
                         'GCS bucket mounted with gcsfuse, NFS); URLs are not supported')
  # Fail on a bad field before any data loading or compilation.
  config_validation.validate(config, num_devices=jax.device_count(),
                             num_processes=jax.process_count())
  logging.info('JAX devices: %d (%s), processes: %d', jax.device_count(),
               jax.devices()[0].platform, jax.process_count())
  train.train_and_evaluate(config, _WORKDIR.value)


if __name__ == '__main__':
  flags.mark_flags_as_required(['config', 'workdir'])
  app.run(main)
