"""Convert an official Keras ImageNet .h5 file into an Orbax checkpoint of Linen variables.

  python -m qrnet_jax.weights.convert --arch vgg16 \
      --h5 vgg16_weights_tf_dim_ordering_tf_kernels.h5 --out /tmp/vgg16_imagenet [--num_classes K]

The output directory holds `variables/` (an Orbax StandardCheckpointer checkpoint of
{'params', 'batch_stats'}) and `classifier.json` (arch, num_classes, source file), so
training jobs restore the port without h5py and without re-checking the file.
"""

import argparse
import os
from typing import Optional, Sequence

import jax
import numpy as np
import orbax.checkpoint as ocp

from qrnet_jax import files
from qrnet_jax.weights.keras_h5 import IMAGENET_CLASSES, KERAS_ARCHS, Variables, load_keras_h5

VARIABLES_DIR = 'variables'
INFO_FILE = 'classifier.json'


def save_converted(out_dir: str, variables: Variables, info: dict) -> None:
  """Writes `variables` as an Orbax checkpoint and `info` as JSON under `out_dir`."""
  out_dir = files.absolute(out_dir)
  files.make_dirs(out_dir)
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(os.path.join(out_dir, VARIABLES_DIR), variables, force=True)
  checkpointer.wait_until_finished()
  files.write_json(os.path.join(out_dir, INFO_FILE), info)  # last: marks the variables complete


def converted_info(out_dir: str) -> dict:
  """The {'arch', 'num_classes', 'source'} record written beside the checkpoint ({} when it is
  missing or unreadable)."""
  return files.read_json(os.path.join(out_dir, INFO_FILE)) or {}


def load_converted(out_dir: str) -> Variables:
  """The variables written by `convert`, as float32 numpy arrays (host memory)."""
  checkpointer = ocp.StandardCheckpointer()
  restored = checkpointer.restore(os.path.join(files.absolute(out_dir), VARIABLES_DIR))
  return jax.tree.map(lambda x: np.asarray(x, dtype=np.float32), restored)


def convert(arch: str, h5_path: str, out_dir: str, num_classes: int = IMAGENET_CLASSES,
            seed: int = 0) -> Variables:
  """Ports `h5_path` (strictly checked) and saves it under `out_dir`; returns the variables."""
  variables = load_keras_h5(h5_path, arch, num_classes=num_classes, rng=seed)
  info = {'arch': arch, 'num_classes': num_classes, 'source': os.path.abspath(h5_path),
          'head_seed': seed if num_classes != IMAGENET_CLASSES else None}
  save_converted(out_dir, variables, info)
  return variables


def main(argv: Optional[Sequence[str]] = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--arch', required=True, choices=KERAS_ARCHS)
  parser.add_argument('--h5', required=True, help='official Keras application weight file')
  parser.add_argument('--out', required=True, help='output directory')
  parser.add_argument('--num_classes', type=int, default=IMAGENET_CLASSES,
                      help='1000: ImageNet head; otherwise a new, freshly initialised head')
  parser.add_argument('--seed', type=int, default=0, help='seed of a new head')
  args = parser.parse_args(argv)
  variables = convert(args.arch, args.h5, args.out, args.num_classes, args.seed)
  count = sum(np.size(x) for x in jax.tree.leaves(variables))
  print(f'Wrote {args.arch} ({count:,} values) to {os.path.abspath(args.out)}')


if __name__ == '__main__':
  main()
