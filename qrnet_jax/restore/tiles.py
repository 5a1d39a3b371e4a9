"""QRNet on images of any size: reflect-padded to a multiple of 16 and cropped back; images larger
than a tile restored in overlapping tiles whose centres are kept, so the result equals the whole
image restored at once (to float rounding) and has no seams.

An output pixel of QRNet depends on input pixels at most RECEPTIVE_RADIUS away (see
`receptive_radius`); each tile reaches TILE_MARGIN >= that beyond the part of it that is kept, and
tiles start on multiples of 16, so their 2x2 poolings fall on the whole image's pooling grid.
"""
import dataclasses
from typing import Callable, Iterator, Sequence

import numpy as np

from qrnet_jax.models.qrnet import ENCODER_CHANNELS, SIZE_MULTIPLE

TILE_MARGIN = 128  # >= receptive_radius(small=False) = 122, a multiple of 16
DEFAULT_TILE = 1024  # the side of the largest image restored in one piece; a tile's side


def receptive_radius(small: bool) -> int:
  """How far (px) an input pixel reaches in QRNet's output: each 3x3 convolution reaches one cell
  of its scale, each 2x2 pooling and transposed convolution one more (Table 1's layout)."""
  convs = 1 if small else 2
  levels = [2 ** level for level in range(len(ENCODER_CHANNELS))]  # scales of the four stages
  encoder_and_decoder = sum((2 * convs + 2) * scale for scale in levels)
  return encoder_and_decoder + convs * 2 ** len(ENCODER_CHANNELS)  # + the bottleneck


def padded_size(side):
  """The side rounded up to a multiple of 16 (also for a symbolic side, see export.py)."""
  return SIZE_MULTIPLE * ((side + SIZE_MULTIPLE - 1) // SIZE_MULTIPLE)


def reflect_indices(size, length, xp=np):
  """Indices into a side of `size` pixels for `length` positions: 0..size-1, then reflected
  (numpy's 'reflect', the distortions' reflect-101 border), again and again for a side shorter
  than the padding; a 1 px side repeats."""
  index = xp.arange(length)
  period = xp.maximum(2 * (xp.asarray(size) - 1), 1)
  index = index % period
  return xp.where(index >= size, period - index, index)


def pad_to_multiple(images, xp=np):
  """(..., H, W, C) reflect-padded at the bottom and right to multiples of 16; with xp=jax.numpy
  also for symbolic H and W."""
  for axis in (-3, -2):
    side = images.shape[axis]
    images = xp.take(images, reflect_indices(side, padded_size(side), xp), axis=axis)
  return images


@dataclasses.dataclass(frozen=True)
class Window:
  """One tile: the input read at [top:top+height, left:left+width] of the padded image, and the
  part of its output kept, [keep_top:keep_bottom, keep_left:keep_right] in image coordinates."""
  top: int
  left: int
  height: int
  width: int
  keep: tuple  # (keep_top, keep_bottom, keep_left, keep_right)


def _spans(length: int, tile: int, margin: int):
  """(start of the read span, kept start, kept end) along one axis of `length` (a multiple of 16).

  One span when the side fits in a tile. Else each tile keeps all but `margin` px on each side
  that is not the image's edge (there the result is exact: the whole image ends there too); the
  last tile is slid back inside the image.
  """
  if length <= tile:
    return [(0, 0, length)]
  spans, kept = [], 0
  while kept < length:
    start = min(max(kept - margin, 0), length - tile)
    end = length if start + tile == length else start + tile - margin
    spans.append((start, kept, end))
    kept = end
  return spans


def is_valid_tile(tile: int, margin: int = TILE_MARGIN) -> bool:
  """A tile side is a multiple of 16 that keeps something beside its two margins."""
  return tile % SIZE_MULTIPLE == 0 and tile > 2 * margin


def windows(height: int, width: int, tile: int = DEFAULT_TILE,
            margin: int = TILE_MARGIN) -> list:
  """The tiles of a padded (height, width) image; all of one shape: (min(height, tile),
  min(width, tile))."""
  if not is_valid_tile(tile, margin):
    raise ValueError(f'tile {tile}: must be a multiple of {SIZE_MULTIPLE} above twice the margin '
                     f'({2 * margin})')
  rows, cols = _spans(height, tile, margin), _spans(width, tile, margin)
  return [Window(top, left, min(height, tile), min(width, tile), (y0, y1, x0, x1))
          for top, y0, y1 in rows for left, x0, x1 in cols]


def window_shape(height: int, width: int, tile: int = DEFAULT_TILE) -> tuple:
  """The shape QRNet sees for an image of this (unpadded) size: its padded size, or a tile."""
  return min(padded_size(height), tile), min(padded_size(width), tile)


def window_count(height: int, width: int, tile: int = DEFAULT_TILE) -> int:
  """How many tiles an image of this (unpadded) size is restored in."""
  return len(windows(padded_size(height), padded_size(width), tile))


def restore_padded(images: Sequence[np.ndarray], apply_fn: Callable, batch_size: int,
                   tile: int = DEFAULT_TILE, margin: int = TILE_MARGIN) -> list:
  """QRNet's output for padded float (H, W, 3) images whose windows share one shape.

  `apply_fn` maps a (batch_size, h, w, 3) array to its restoration; every call gets exactly
  batch_size windows (the last batch filled with zeros), so it compiles once.
  """
  outputs = [np.empty(image.shape, np.float32) for image in images]
  jobs = [(i, w) for i, image in enumerate(images) for w in windows(*image.shape[:2], tile, margin)]
  for chunk in _chunks(jobs, batch_size):
    batch = np.zeros((batch_size, chunk[0][1].height, chunk[0][1].width, 3), np.float32)
    for row, (i, w) in enumerate(chunk):
      batch[row] = images[i][w.top:w.top + w.height, w.left:w.left + w.width]
    restored = np.asarray(apply_fn(batch))
    for row, (i, w) in enumerate(chunk):
      y0, y1, x0, x1 = w.keep
      outputs[i][y0:y1, x0:x1] = restored[row, y0 - w.top:y1 - w.top, x0 - w.left:x1 - w.left]
  return outputs


def _chunks(items: list, size: int) -> Iterator[list]:
  for start in range(0, len(items), size):
    yield items[start:start + size]
