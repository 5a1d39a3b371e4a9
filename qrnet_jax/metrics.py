"""Metrics out: TensorBoard event files and the console, from process 0 only; a JSON summary."""
import io
import logging
import math
import os

import jax
import numpy as np

from qrnet_jax import files


class MetricWriter:
  """Writes scalars to WORKDIR/tensorboard (tensorboardX event files) and the log."""

  def __init__(self, workdir: str, enabled: bool = None):
    self.enabled = jax.process_index() == 0 if enabled is None else enabled
    self._writer = None
    if self.enabled:
      from tensorboardX import SummaryWriter, record_writer  # pylint: disable=g-import-not-at-top
      record_writer.register_writer_factory('gs', _RemoteEventFiles())
      self._writer = SummaryWriter(os.path.join(workdir, 'tensorboard'), flush_secs=10)

  def write_scalars(self, step: int, scalars: dict, log: bool = True):
    if not self.enabled:
      return
    scalars = {name: float(value) for name, value in scalars.items()}
    for name, value in scalars.items():
      self._writer.add_scalar(name, value, step)
    if log:
      logging.info('step %d: %s', step,
                   ', '.join(f'{name}={value:.5g}' for name, value in sorted(scalars.items())))

  def flush(self):
    if self._writer is not None:
      self._writer.flush()

  def close(self):
    if self._writer is not None:
      self._writer.close()


class _RemoteEventFile:
  """An event file on gs://, for tensorboardX: kept in memory and uploaded whole (through
  qrnet_jax.files) on each flush that has something new, as GCS objects cannot be appended to.
  Unlike tensorboardX's own GCS writer it uploads nothing when garbage-collected, so a writer left
  over at exit does not retry against a bucket that is gone."""

  def __init__(self, path):
    self.path, self.buffer, self.uploaded = path, io.BytesIO(), 0

  def write(self, data):
    self.buffer.write(data)

  def flush(self):
    if self.buffer.tell() != self.uploaded:
      files.write_bytes(self.path, self.buffer.getvalue())
      self.uploaded = self.buffer.tell()

  def close(self):
    self.flush()


class _RemoteEventFiles:
  """tensorboardX's writer factory for gs:// log directories."""

  def open(self, path):
    return _RemoteEventFile(path)

  def directory_check(self, path):
    del path  # GCS has no folders to create


class NonFiniteLossError(FloatingPointError):
  """Training produced NaN or inf; the last good checkpoint is kept."""


def check_finite(scalars: dict, where: str):
  bad = {name: float(v) for name, v in scalars.items() if not math.isfinite(float(v))}
  if bad:
    raise NonFiniteLossError(f'non-finite metrics {bad} at {where}; stopped without saving, the '
                             'last good checkpoint in WORKDIR/checkpoints/latest is kept')


def json_safe(value):
  """Plain JSON data: numpy scalars and arrays as Python values, NaN and inf as None."""
  if isinstance(value, dict):
    return {str(k): json_safe(v) for k, v in value.items()}
  if isinstance(value, (list, tuple, np.ndarray)):
    return [json_safe(v) for v in value]
  if isinstance(value, (bool, np.bool_)):
    return bool(value)
  if isinstance(value, (int, np.integer)):
    return int(value)
  if isinstance(value, (float, np.floating)):
    return float(value) if math.isfinite(value) else None
  return value


def write_json(path: str, obj):
  if jax.process_index() != 0:
    return
  files.write_json(path, obj)
