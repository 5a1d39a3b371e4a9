"""A trained QRNet on your own images: `python -m qrnet_jax.restore` (see __main__.py).

`restore_files` reads every image Pillow reads (any size, any mode), optionally distorts it as the
paper does (Section IV-A, seeded per file), restores it with QRNet (tiles.py: padded to a multiple
of 16, large images in seamless tiles, images batched by shape so each shape compiles once), writes
it under the output folder, and, with a classifier of the run, records its top-5 classes before and
after restoration (predictions.py) and draws a contact sheet (sheet.py). A file that cannot be read
is reported with its reason and counted; the others are still written.
"""
import dataclasses
import logging
import math
import os
import time
import zlib
from typing import Optional

import jax
import numpy as np
import tqdm
from PIL import Image

from qrnet_jax import corruptions, distortions, files
from qrnet_jax.errors import ConfigError
from qrnet_jax.ops import conv
from qrnet_jax.restore import inputs as inputs_lib
from qrnet_jax.restore import predictions, sheet as sheet_lib, tiles
from qrnet_jax.restore.trained import TrainedRun

PREDICTIONS_FILE = 'predictions.csv'
SHEET_FILE = 'sheet.png'
SHEET_MAX_ROWS = 50


# Compiled once per family and image size: op by op, motion blur's and spatter's loops are slow.
_corrupt = jax.jit(corruptions.corrupt, static_argnames=('family', 'scale'))


@dataclasses.dataclass(frozen=True)
class Distortion:
  """One of the paper's distortions at one level, e.g. noise:60 (0-255 units) or blur:4 (px), or a
  common corruption at a severity, e.g. fog:3 (qrnet_jax/corruptions.py)."""
  type: str
  level: float

  @classmethod
  def parse(cls, text: str, flag: str = '--distort') -> 'Distortion':
    kind, _, level = text.partition(':')
    try:
      value = float(level)
    except ValueError:
      value = float('nan')
    if kind in corruptions.FAMILIES and value in corruptions.SEVERITIES:
      return cls(kind, int(value))
    if kind not in distortions.DISTORTION_TYPES or not (value > 0 and math.isfinite(value)):
      raise ConfigError(f'{flag}={text}: expected TYPE:LEVEL with TYPE one of '
                        f'{", ".join(distortions.DISTORTION_TYPES)} and a positive LEVEL, e.g. '
                        'noise:60 (sigma in 0-255 units) or blur:4 (sigma in px); or '
                        'FAMILY:SEVERITY with FAMILY one of '
                        f'{", ".join(corruptions.IMAGENET_C + corruptions.HELD_OUT)} and SEVERITY '
                        'an integer 1-5, e.g. fog:3')
    return cls(kind, value)

  def apply(self, image: np.ndarray, key) -> np.ndarray:
    """The distorted (H, W, 3) float image (blur: OpenCV's reflect-101 border; a sigma above the
    image's side raises ValueError; a corruption's pixel lengths scale with the shorter side)."""
    if self.type in corruptions.FAMILIES:
      return np.asarray(_corrupt(image[None], self.type, self.level, key)[0])
    return np.asarray(distortions.distort(image[None], key, self.type, self.level)[0])


def file_key(seed: int, relative: str):
  """The distortion key of a file: from the seed and its relative path, so its noise does not
  depend on the other files of the command."""
  digest = zlib.crc32(relative.encode('utf-8', 'surrogateescape')) & 0x7fffffff
  return jax.random.fold_in(jax.random.PRNGKey(seed), digest)


@dataclasses.dataclass(frozen=True)
class Settings:
  """The restore command's choices (its flags)."""
  keep_format: bool = False  # write each image in its input's format (else PNG)
  batch_size: int = 8  # images or tiles per QRNet call, and images per classifier call
  tile: int = tiles.DEFAULT_TILE
  distortion: Optional[Distortion] = None
  seed: int = 0  # of the distortion
  sheet: bool = False

  def check(self):
    if self.batch_size < 1:
      raise ConfigError(f'--batch_size={self.batch_size}: must be at least 1')
    if not tiles.is_valid_tile(self.tile):
      raise ConfigError(f'--tile={self.tile}: must be a multiple of 16 above '
                        f'{2 * tiles.TILE_MARGIN} (twice the overlap)')


@dataclasses.dataclass
class Outcome:
  written: list = dataclasses.field(default_factory=list)  # (input path, output path)
  failed: list = dataclasses.field(default_factory=list)  # (input path, reason)
  predictions_csv: Optional[str] = None
  sheet: Optional[str] = None
  seconds: float = 0.


@dataclasses.dataclass(frozen=True)
class PlannedImage:
  """An input whose header was read: its size, and where and how it is written."""
  source: inputs_lib.InputImage
  size: tuple  # (H, W)
  output: str
  image_format: str


def _reason(error: Exception) -> str:
  return f'{type(error).__name__}: {error}'


def plan(found, output_dir: str, settings: Settings, failed: list) -> dict:
  """{shape QRNet sees: [PlannedImage]} from the files' headers (not decoded); a file Pillow
  cannot open goes to `failed` with its reason."""
  groups, taken = {}, set()
  for source in found:
    try:
      with Image.open(source.path) as image:
        size, image_format = (image.height, image.width), image.format
    except Exception as e:  # pylint: disable=broad-except  (any unreadable file is reported)
      failed.append((source.path, _reason(e)))
      continue
    fmt = inputs_lib.output_format(image_format, settings.keep_format)
    output = os.path.join(output_dir, inputs_lib.output_relative(source, fmt, taken))
    groups.setdefault(tiles.window_shape(*size, settings.tile), []).append(
        PlannedImage(source, size, output, fmt))
  return groups


def _check_outputs(groups, found, output_dir, settings, with_classifier):
  """Stops before any work when an output would replace an input or another output."""
  extra = ([os.path.join(output_dir, PREDICTIONS_FILE)] * with_classifier
           + [os.path.join(output_dir, SHEET_FILE)] * settings.sheet)
  outputs = [item.output for group in groups.values() for item in group]
  inputs_lib.check_no_input_overwritten(outputs + extra, found)
  if set(extra) & set(outputs):
    raise ConfigError(f'--output={output_dir}: an input would be written over '
                      f'{" or ".join(sorted(set(extra) & set(outputs)))}; choose another folder')


def _chunks_of_images(items, tile, batch_size):
  """Consecutive items whose windows fill about one batch (one large image may fill many)."""
  chunk, count = [], 0
  for item in items:
    chunk.append(item)
    count += tiles.window_count(*item.size, tile)
    if count >= batch_size:
      yield chunk
      chunk, count = [], 0
  if chunk:
    yield chunk


def restore_files(run: TrainedRun, paths, output_dir: str, settings: Settings = Settings(),
                  progress: bool = True) -> Outcome:
  """Restores every image found in `paths` into `output_dir`; see the module docstring."""
  settings.check()
  found = inputs_lib.find_inputs(paths, output_dir)
  outcome, start = Outcome(), time.perf_counter()
  groups = plan(found, output_dir, settings, outcome.failed)
  _check_outputs(groups, found, output_dir, settings, run.classifier is not None)
  os.makedirs(output_dir, exist_ok=True)
  rows, sheet_rows = {}, {}
  bar = tqdm.tqdm(total=len(found), unit='img', desc='restore', disable=not progress)
  bar.update(len(outcome.failed))
  restore = jax.jit(lambda params, images: run.qrnet.apply({'params': params}, images))
  with conv.conv_impl(run.config.model.conv_impl):
    for _, items in sorted(groups.items()):
      # One batch size per shape, so each shape compiles once.
      batch = min(settings.batch_size, sum(tiles.window_count(*i.size, settings.tile)
                                           for i in items))
      for chunk in _chunks_of_images(items, settings.tile, batch):
        for item, rgb, alpha, restored, ranked in _restored_chunk(
            chunk, lambda x: restore(run.qrnet_params, x), run, settings, batch,
            outcome.failed):
          _write(item, rgb, alpha, restored, ranked, settings, outcome, rows, sheet_rows)
        bar.update(len(chunk))
  bar.close()
  outcome.seconds = time.perf_counter() - start
  if run.classifier is not None:
    outcome.predictions_csv = os.path.join(output_dir, PREDICTIONS_FILE)
    failed = dict(outcome.failed)
    files.write_text(outcome.predictions_csv, predictions.csv_text(
        [rows.get(s.path) or {'input': inputs_lib.printable(s.path),
                              'error': failed.get(s.path, '')} for s in found]))
  if settings.sheet:
    outcome.sheet = os.path.join(output_dir, SHEET_FILE)
    picture = sheet_lib.contact_sheet(
        [sheet_rows[s.path] for s in found if s.path in sheet_rows][:SHEET_MAX_ROWS])
    inputs_lib.write_image(outcome.sheet, np.asarray(picture), None, 'PNG')
  return outcome


def _restored_chunk(chunk, apply_fn, run, settings, batch_size, failed):
  """(item, input, alpha, restored, (top-5 before, after) or None) per readable image of a chunk:
  read, distorted if asked, restored in windows of `batch_size`, cropped back."""
  loaded = []
  for item in chunk:
    try:
      rgb, alpha, _ = inputs_lib.read_rgb(item.source.path)
      if settings.distortion is not None:
        rgb = settings.distortion.apply(rgb, file_key(settings.seed, item.source.relative))
      loaded.append((item, rgb, alpha))
    except Exception as e:  # pylint: disable=broad-except  (decoding errors of any kind)
      failed.append((item.source.path, _reason(e)))
  if not loaded:
    return []
  padded = tiles.restore_padded([tiles.pad_to_multiple(rgb) for _, rgb, _ in loaded], apply_fn,
                                batch_size, settings.tile)
  restored = [out[:rgb.shape[0], :rgb.shape[1]] for out, (_, rgb, _) in zip(padded, loaded)]
  ranked = _predictions(run, [rgb for _, rgb, _ in loaded], restored, settings.batch_size)
  return [(item, rgb, alpha, out, ranked[i] if ranked else None)
          for i, ((item, rgb, alpha), out) in enumerate(zip(loaded, restored))]


def _write(item, rgb, alpha, restored, ranked, settings, outcome, rows, sheet_rows):
  """Writes one restored image; records its CSV row and sheet row."""
  try:
    inputs_lib.write_image(item.output, inputs_lib.to_uint8(restored), alpha, item.image_format)
  except Exception as e:  # pylint: disable=broad-except  (e.g. a format that cannot hold it)
    outcome.failed.append((item.source.path, _reason(e)))
    return
  outcome.written.append((item.source.path, item.output))
  rows[item.source.path] = {'input': inputs_lib.printable(item.source.path),
                            'output': inputs_lib.printable(item.output),
                            **(dict(zip(predictions.STAGES, ranked)) if ranked else {})}
  if settings.sheet and len(sheet_rows) < SHEET_MAX_ROWS:
    captions = tuple(sheet_lib.prediction_lines(r) for r in ranked) if ranked else ((), ())
    sheet_rows[item.source.path] = sheet_lib.Row(
        inputs_lib.printable(item.source.relative), sheet_lib.thumbnail(inputs_lib.to_uint8(rgb)),
        sheet_lib.thumbnail(inputs_lib.to_uint8(restored)),
        sheet_lib.thumbnail(sheet_lib.difference(restored, rgb)), captions + ((),))


def _predictions(run, originals, restored, batch_size):
  """[(top-5 before, top-5 after)] per image, or None without a classifier."""
  c = run.classifier
  if c is None:
    return None
  policy = run.config.data.resize
  ranked = []
  for images in (originals, restored):
    batch = np.stack([predictions.classifier_input(x, c.image_size, policy) for x in images])
    ranked.append([predictions.top_k(p, c.class_names)
                   for p in predictions.classify(c, batch, batch_size)])
  return list(zip(*ranked))


def log_outcome(outcome: Outcome, output_dir: str):
  count = len(outcome.written)
  logging.info('restored %d image%s into %s in %.1f s (%.2f images/s)', count,
               '' if count == 1 else 's', output_dir, outcome.seconds,
               count / max(outcome.seconds, 1e-9))
  for path in (outcome.predictions_csv, outcome.sheet):
    if path:
      logging.info('wrote %s', path)
  if outcome.failed:
    logging.warning('%d file%s could not be restored:\n%s', len(outcome.failed),
                    '' if len(outcome.failed) == 1 else 's',
                    '\n'.join(f'  {inputs_lib.printable(path)}: {reason}'
                              for path, reason in outcome.failed))
