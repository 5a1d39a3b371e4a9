"""Entry point: python -m qrnet_jax.main --config configs/default.py --workdir /tmp/qrnet.

Overrides: --config.train.batch_size=16, --config.classifiers.small_vgg.weight=0.1, ...
A suite config (configs/suites/) runs a whole experiment suite and writes its report:
  python -m qrnet_jax.main --config configs/suites/default.py --workdir runs/default [--only table2]
On several hosts (TPU pods, GPU clusters) every process runs this same command; see launch/.
"""
import logging
import os

import jax
from absl import app, flags
from ml_collections import config_flags

from qrnet_jax import config_validation, suite, train

COMPILATION_CACHE = os.path.join(
    os.environ.get('XDG_CACHE_HOME', os.path.expanduser('~/.cache')), 'qrnet_jax', 'jit')

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Experiment config file (get_config()).',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for checkpoints, metrics and results.')
_DISTRIBUTED = flags.DEFINE_bool(
    'distributed', False, 'Call jax.distributed.initialize() first (multi-host; the cluster is '
    'detected from the environment: TPU pods, SLURM, or JAX_COORDINATOR_ADDRESS etc.).')
_ONLY = flags.DEFINE_list(
    'only', [], 'Suites only: run the runs of these tables/figures (and the runs they read), e.g. '
    'table2 or table4,fig6; the report covers every finished run.')
_REEVALUATE = flags.DEFINE_bool(
    'reevaluate', False, 'Suites only: evaluate every selected run again from its checkpoints '
    '(finished runs are not trained again) and rewrite the report.')


def main(argv):
  del argv
  logging.getLogger().setLevel(logging.INFO)
  # Orbax and other libraries log through absl at INFO on every save; keep the console readable.
  logging.getLogger('absl').setLevel(logging.WARNING)
  if _DISTRIBUTED.value:
    jax.distributed.initialize()
  # Runs of a suite, and a resumed run, compile many of the same programs: keep them on disk.
  if not jax.config.jax_compilation_cache_dir:
    jax.config.update('jax_compilation_cache_dir', COMPILATION_CACHE)
  config = _CONFIG.value
  if '://' in _WORKDIR.value:
    raise app.UsageError(f'--workdir={_WORKDIR.value}: give a local or mounted shared path (e.g. a '
                         'GCS bucket mounted with gcsfuse, NFS); URLs are not supported')
  logging.info('JAX devices: %d (%s), processes: %d', jax.device_count(),
               jax.devices()[0].platform, jax.process_count())
  if suite.is_suite(config):  # every run is checked before the first starts
    suite.run_suite(config, _WORKDIR.value, only=_ONLY.value, reevaluate=_REEVALUATE.value)
    return
  if _ONLY.value or _REEVALUATE.value:
    raise app.UsageError('--only and --reevaluate apply to suite configs (configs/suites/)')
  # Fail on a bad field before any data loading or compilation.
  config_validation.validate(config, num_devices=jax.device_count(),
                             num_processes=jax.process_count())
  train.train_and_evaluate(config, _WORKDIR.value)


if __name__ == '__main__':
  flags.mark_flags_as_required(['config', 'workdir'])
  app.run(main)
