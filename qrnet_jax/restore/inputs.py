"""The images a restore command reads, and where it writes each one.

Inputs are files, folders (searched recursively) and glob patterns. Each image keeps its path
relative to the folder (or the pattern's fixed leading folders) it was found under, and is written
there under the output folder: as PNG, or in its own format with keep_format.
"""
import dataclasses
import glob
import io
import itertools
import os
from typing import Optional

import numpy as np
from PIL import Image

from qrnet_jax.data import images as images_lib
from qrnet_jax import files
from qrnet_jax.errors import ConfigError

# Pillow saves these formats; others (e.g. MPO, ICNS) are written as PNG even with keep_format.
WRITABLE_FORMATS = ('PNG', 'JPEG', 'GIF', 'BMP', 'TIFF', 'WEBP', 'PPM', 'TGA')
WITHOUT_ALPHA = ('JPEG', 'BMP', 'PPM')
# Files never taken for images in a folder (a folder's other files are tried, and reported when
# Pillow cannot read them).
IGNORED_NAMES = ('.DS_Store', 'Thumbs.db', 'desktop.ini')


@dataclasses.dataclass(frozen=True)
class InputImage:
  path: str  # as found
  relative: str  # where it is written, under the output folder (before the format's suffix)


def printable(path: str) -> str:
  """A path as text for a CSV, a log or a picture: bytes of a name that are not UTF-8 (kept by
  Python as surrogates) shown as U+FFFD."""
  return path.encode('utf-8', 'surrogateescape').decode('utf-8', 'replace')


def _glob_root(pattern: str) -> str:
  """The leading folders of a glob pattern that hold no wildcard."""
  parts = pattern.split(os.sep)
  fixed = list(itertools.takewhile(lambda part: not glob.has_magic(part), parts))
  return os.sep.join(fixed) or (os.sep if pattern.startswith(os.sep) else '.')


def _in_folder(folder: str, skip: str) -> list:
  found = []
  for parent, subfolders, names in os.walk(folder):
    subfolders[:] = sorted(d for d in subfolders if not d.startswith('.')
                           and os.path.abspath(os.path.join(parent, d)) != skip)
    found += [os.path.join(parent, n) for n in sorted(names)
              if not n.startswith('.') and n not in IGNORED_NAMES]
  return found


def find_inputs(paths, output_dir: str) -> list:
  """InputImage for every file named, in a named folder (recursively; the output folder and
  hidden ones skipped) or matched by a pattern; each file once, in the order given."""
  skip = os.path.abspath(output_dir)
  found, seen = [], set()
  for path in paths:
    if os.path.isdir(path):
      pairs = [(f, os.path.relpath(f, path)) for f in _in_folder(path, skip)]
    elif os.path.isfile(path) or os.path.islink(path):
      pairs = [(path, os.path.basename(path))]
    elif glob.has_magic(path):
      root = _glob_root(path)
      pairs = [(f, os.path.relpath(f, root)) for f in sorted(glob.glob(path, recursive=True))
               if os.path.isfile(f) and not os.path.abspath(f).startswith(skip + os.sep)]
    else:
      raise ConfigError(f'--input={path}: no such file or folder, and not a pattern')
    for file, relative in pairs:
      if os.path.abspath(file) not in seen:
        seen.add(os.path.abspath(file))
        found.append(InputImage(file, relative))
  if not found:
    raise ConfigError(f'--input={",".join(paths)}: no files found')
  return found


def output_format(image_format: Optional[str], keep_format: bool) -> str:
  """The format an image is written in: PNG, or with keep_format its own where Pillow writes it
  (a camera's MPO JPEG as JPEG)."""
  image_format = 'JPEG' if image_format == 'MPO' else image_format
  return image_format if keep_format and image_format in WRITABLE_FORMATS else 'PNG'


def output_relative(item: InputImage, image_format: str, taken: set) -> str:
  """Its relative output path: the input's with .png for PNG output (unless it already ends so),
  the input's own name otherwise; a name already taken gets the input's suffix kept before
  '.png' (a.jpg -> a.jpg.png beside a.png)."""
  stem, suffix = os.path.splitext(item.relative)
  if image_format != 'PNG' or suffix.lower() == '.png':
    relative = item.relative
  else:
    relative = stem + '.png'
  if relative in taken:
    relative = item.relative + '.png'
  taken.add(relative)
  return relative


def check_no_input_overwritten(outputs, inputs):
  """Raises ConfigError when an output path is an input file."""
  sources = {os.path.realpath(i.path): i.path for i in inputs}
  for output in outputs:
    if os.path.realpath(output) in sources:
      raise ConfigError(f'--output: writing {output} would overwrite the input '
                        f'{sources[os.path.realpath(output)]}; choose another output folder')


def read_rgb(path: str):
  """(float32 RGB (H, W, 3) in [0, 1], alpha (H, W) uint8 or None, Pillow format name).

  Any mode Pillow reads (grey, palette, 16-bit, CMYK, ...) becomes 8-bit RGB as the run's data
  pipeline converts it; the first frame of an animation is taken."""
  with Image.open(path) as image:
    image.load()
    alpha = None
    if image.mode in ('RGBA', 'LA', 'PA') or (image.mode == 'P' and 'transparency' in image.info):
      alpha = np.asarray(image.convert('RGBA'))[..., 3]
    rgb = np.asarray(images_lib.to_rgb(image), np.float32) / 255.
    return rgb, alpha, image.format


def to_uint8(image: np.ndarray) -> np.ndarray:
  """Float [0, 1] -> uint8, rounded."""
  return np.round(np.clip(image, 0., 1.) * 255.).astype(np.uint8)


def write_image(path: str, rgb: np.ndarray, alpha: Optional[np.ndarray], image_format: str):
  """Writes uint8 RGB (with the input's alpha where the format holds one) atomically: through a
  temporary file in the same folder, so a killed command leaves no partial image."""
  image = Image.fromarray(rgb, 'RGB')
  if alpha is not None and image_format not in WITHOUT_ALPHA:
    image.putalpha(Image.fromarray(alpha, 'L'))
  buffer = io.BytesIO()
  image.save(buffer, format=image_format)
  files.make_dirs(os.path.dirname(files.absolute(path)))
  files.write_bytes(path, buffer.getvalue())
