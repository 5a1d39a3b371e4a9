"""Restore your own images with a trained run's QRNet, or export it.

  python -m qrnet_jax.restore --workdir runs/x --input photos/ more/*.jpg --output restored/ \
      [--classifier small_vgg] [--sheet] [--distort noise:60] [--keep_format] [--tile 1024]
  python -m qrnet_jax.restore export --workdir runs/x --out qrnet.stablehlo [--classifier NAME]

Bad flags and files stop the command with `error: ...` naming them; unreadable images are listed
at the end and make the exit status 1, after every other image is written.
"""
import argparse
import logging
import os
import sys

from qrnet_jax import files
from qrnet_jax.errors import ConfigError
from qrnet_jax.restore import tiles


def _common(parser):
  parser.add_argument('--workdir', required=True, help="the run's folder (python -m "
                      'qrnet_jax.main --workdir)')
  parser.add_argument('--checkpoint', default='', help="QRNet's parameters: best (default), "
                      'latest, or a checkpoint step folder such as RUN/checkpoints/latest/1200')
  parser.add_argument('--classifier', default='', help='one of the run\'s classifiers (its '
                      'config name, e.g. small_vgg): top-5 classes before and after restoration')


def restore_parser():
  parser = argparse.ArgumentParser(prog='python -m qrnet_jax.restore',
                                   description=__doc__.split('\n')[0])
  _common(parser)
  parser.add_argument('--input', nargs='+', required=True,
                      help='image files, folders (recursive) and glob patterns (quoted for **)')
  parser.add_argument('--output', required=True, help='folder for the restored images; each '
                      'keeps its path relative to the folder or pattern it was found under')
  parser.add_argument('--keep_format', action='store_true',
                      help="write each image in its input's format (default: PNG)")
  parser.add_argument('--sheet', action='store_true',
                      help='also write OUTPUT/sheet.png: input | restored | difference per image')
  parser.add_argument('--distort', default='', help='distort each image first, as the paper does: '
                      'noise:SIGMA (0-255 units) or blur:SIGMA (px), or with a common corruption '
                      'at a severity, FAMILY:1-5 (e.g. fog:3; docs/corruptions.md); seeded per '
                      'file')
  parser.add_argument('--seed', type=int, default=0, help='seed of --distort noise and corruptions')
  parser.add_argument('--batch_size', type=int, default=8, help='images (or tiles) per call')
  parser.add_argument('--tile', type=int, default=tiles.DEFAULT_TILE,
                      help='side (px, a multiple of 16 above %d) of the largest image restored in '
                      'one piece; larger ones are restored in tiles of this side, each read %d px '
                      'beyond the part it keeps, which gives the same result' % (
                          2 * tiles.TILE_MARGIN, tiles.TILE_MARGIN))
  return parser


def export_parser():
  parser = argparse.ArgumentParser(prog='python -m qrnet_jax.restore export',
                                   description='Export QRNet as serialized StableHLO (jax.export).')
  _common(parser)
  parser.add_argument('--out', required=True, help='file to write')
  parser.add_argument('--platforms', default='', help='comma-separated, e.g. cpu,cuda (default: '
                      "this machine's)")
  return parser


def run_restore(args) -> int:
  from qrnet_jax import restore  # pylint: disable=g-import-not-at-top
  from qrnet_jax.restore import trained  # pylint: disable=g-import-not-at-top
  settings = restore.Settings(
      keep_format=args.keep_format, batch_size=args.batch_size, tile=args.tile,
      distortion=restore.Distortion.parse(args.distort) if args.distort else None,
      seed=args.seed, sheet=args.sheet)
  settings.check()  # bad flags stop the command before the run is read
  if os.path.exists(args.output) and not os.path.isdir(args.output):
    raise ConfigError(f'--output={args.output}: a file, not a folder')
  run = trained.load_run(args.workdir, args.checkpoint, args.classifier)
  outcome = restore.restore_files(run, args.input, args.output, settings)
  restore.log_outcome(outcome, args.output)
  return 1 if outcome.failed else 0


def run_export(args) -> int:
  from qrnet_jax.restore import export, trained  # pylint: disable=g-import-not-at-top
  run = trained.load_run(args.workdir, args.checkpoint, args.classifier)
  platforms = tuple(p for p in args.platforms.split(',') if p) or None
  exported = export.export_run(run, platforms=platforms)
  try:
    serialized = exported.serialize()
  except ImportError as e:  # jax.export serializes with flatbuffers (requirements.txt)
    sys.exit(f'error: {e} (pip install flatbuffers)')
  files.make_dirs(os.path.dirname(files.absolute(args.out)))
  files.write_bytes(args.out, serialized)
  logging.info('wrote %s: inputs %s, outputs %s', args.out, exported.in_avals, exported.out_avals)
  return 0


def main(argv=None) -> int:
  argv = sys.argv[1:] if argv is None else list(argv)
  logging.getLogger().setLevel(logging.INFO)
  # Orbax warns through absl that read-only checkpoints are read-only; keep the console readable.
  logging.getLogger('absl').setLevel(logging.ERROR)
  logging.getLogger('jax._src.xla_bridge').setLevel(logging.WARNING)  # 'no TPU here'
  try:
    if argv[:1] == ['export']:
      return run_export(export_parser().parse_args(argv[1:]))
    return run_restore(restore_parser().parse_args(argv))
  except ConfigError as e:  # a bad flag or file: its message says which; no traceback
    sys.exit(f'error: {e}')


if __name__ == '__main__':
  sys.exit(main())
