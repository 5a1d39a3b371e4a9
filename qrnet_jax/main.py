"""Entry point: python -m qrnet_jax.main --config configs/default.py --workdir /tmp/qrnet.

Overrides: --config.train.batch_size=16, --config.classifiers.small_vgg.weight=0.1, ...
A suite config (configs/suites/) runs a whole experiment suite and writes its report:
  python -m qrnet_jax.main --config configs/suites/default.py --workdir runs/default [--only table2]
On several hosts (TPU pods, GPU clusters) every process runs this same command; see launch/.
"""
import difflib
import importlib.util
import logging
import os
import re
import sys

import jax
import ml_collections
from absl import app, flags
from ml_collections import config_flags

from qrnet_jax import checkpointing, config_validation, files, preemption, run, suite
from qrnet_jax import workdir_lock
from qrnet_jax.errors import ConfigError

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


def parse_flags(argv):
  """absl's flag parsing; an override of a field the config does not have stops the command
  naming it, with the fields that exist there (closest first)."""
  try:
    return flags.FLAGS(argv)
  except (AttributeError, KeyError) as e:
    sys.exit(f'error: {unknown_field(argv) or e}')


def unknown_field(argv):
  """The message for the first --config.a.b override that names no field, or None."""
  spec = next((a.split('=', 1)[1] if '=' in a else argv[i + 1]
               for i, a in enumerate(argv) if re.fullmatch(r'--config(=.*)?', a)), None)
  if not spec:
    return None
  path, _, variant = spec.partition(':')
  module_spec = importlib.util.spec_from_file_location('_qrnet_config', path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  config = module.get_config(variant) if variant else module.get_config()
  for arg in argv:
    match = re.fullmatch(r'--config\.([\w.]+)(=.*)?', arg)
    node, walked = config, ['config']
    for key in match.group(1).split('.') if match else ():
      if not isinstance(node, ml_collections.ConfigDict) or key not in node:
        fields = sorted(node.keys() if isinstance(node, ml_collections.ConfigDict) else (),
                        key=lambda k: -difflib.SequenceMatcher(None, key, k).ratio())
        return (f'{".".join(walked + [key])} is not a field; the fields of {".".join(walked)}: '
                f'{", ".join(fields) or "none (it is a value)"}')
      node, walked = node[key], walked + [key]
  return None


def main(argv):
  del argv
  try:
    execute(_CONFIG.value, _WORKDIR.value)
  except (ConfigError, files.DiskFullError, checkpointing.DamagedCheckpointError) as e:
    sys.exit(f'error: {e}')  # a bad field, flag or file, a full disk: the message says which
  except preemption.Preempted as e:  # SIGTERM or SIGINT: checkpointed; schedulers requeue on this
    logging.warning('%s', e)
    sys.exit(preemption.EXIT_STATUS)


def execute(config, workdir):
  """One run or a suite in `workdir`, after the checks that need no data."""
  config_validation.check_workdir(workdir)
  logging.getLogger().setLevel(logging.INFO)
  # Orbax and other libraries log through absl at INFO on every save; keep the console readable.
  logging.getLogger('absl').setLevel(logging.WARNING)
  if _DISTRIBUTED.value:
    jax.distributed.initialize()
  config_validation.check_same_on_every_process(config)
  # Runs of a suite, and a resumed run, compile many of the same programs: keep them on disk.
  if not jax.config.jax_compilation_cache_dir:
    jax.config.update('jax_compilation_cache_dir', COMPILATION_CACHE)
  logging.info('JAX devices: %d (%s), processes: %d', jax.device_count(),
               jax.devices()[0].platform, jax.process_count())
  # One owner per workdir for the whole command; signals stop it at a checkpoint.
  with workdir_lock.held(workdir), preemption.handling():
    if suite.is_suite(config):  # every run is checked before the first starts
      suite.run_suite(config, workdir, only=_ONLY.value, reevaluate=_REEVALUATE.value)
      return
    if _ONLY.value or _REEVALUATE.value:
      raise ConfigError('--only and --reevaluate apply to suite configs (configs/suites/)')
    # Fail on a bad field before any data loading or compilation.
    config_validation.validate(config, num_devices=jax.device_count(),
                               num_processes=jax.process_count())
    run.train_and_evaluate(config, workdir)


if __name__ == '__main__':
  flags.mark_flags_as_required(['config', 'workdir'])
  app.run(main, flags_parser=parse_flags)
