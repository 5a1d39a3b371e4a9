"""Locate or download the official Keras ImageNet weight files, verifying their hashes.

One attempt, a short connect timeout and no retries: without network this fails at once
with a message saying which file to fetch from where and which config field takes its path.
"""

import dataclasses
import hashlib
import os
import tempfile
import urllib.error
import urllib.request
import warnings
from typing import Optional

KERAS_BASE_URL = 'https://storage.googleapis.com/tensorflow/keras-applications'


@dataclasses.dataclass(frozen=True)
class KerasWeights:
  """An official Keras applications weight file and its published hash."""
  filename: str
  url: str
  md5: str


def _official(arch_dir: str, filename: str, md5: str) -> KerasWeights:
  return KerasWeights(filename, f'{KERAS_BASE_URL}/{arch_dir}/{filename}', md5)


# From keras/src/applications/{vgg16,inception_v3,resnet}.py (WEIGHTS_PATH, file_hash,
# WEIGHTS_HASHES['resnet50'][0]): the include_top files, md5.
KERAS_WEIGHTS = {
    'vgg16': _official('vgg16', 'vgg16_weights_tf_dim_ordering_tf_kernels.h5',
                       '64373286793e3c8b2b4e3219cbf3544b'),
    'inception_v3': _official('inception_v3', 'inception_v3_weights_tf_dim_ordering_tf_kernels.h5',
                              '9a0d58056eeedaa3f26cb7ebd46da564'),
    'resnet50': _official('resnet', 'resnet50_weights_tf_dim_ordering_tf_kernels.h5',
                          '2cb95161c43110f7111970584f804107'),
}


class WeightsUnavailableError(RuntimeError):
  """The weight file is neither given, nor cached, nor downloadable."""


class HashMismatchError(ValueError):
  """A weight file's md5 differs from the published one."""


def md5_of(path: str, chunk_bytes: int = 1 << 20) -> str:
  digest = hashlib.md5()
  with open(path, 'rb') as f:
    while chunk := f.read(chunk_bytes):
      digest.update(chunk)
  return digest.hexdigest()


def _weights_info(arch: str) -> KerasWeights:
  if arch not in KERAS_WEIGHTS:
    raise ValueError(f'No official Keras weights for arch {arch!r}; '
                     f'expected one of {sorted(KERAS_WEIGHTS)}.')
  return KERAS_WEIGHTS[arch]


def how_to_provide(arch: str, field: Optional[str] = None) -> str:
  """The instruction printed when a file cannot be obtained; `field` takes its path."""
  info = _weights_info(arch)
  field = field or f'config.classifiers.{arch}.keras_h5'
  return (f'Download {info.filename} from {info.url} (md5 {info.md5}) on a machine with '
          f'network, copy it here, and set {field} to its path.')


def fetch_weights(arch: str, cache_dir: str, path: Optional[str] = None,
                  timeout: float = 10.0, verify: bool = True, url: Optional[str] = None,
                  field: Optional[str] = None) -> str:
  """Path of the official Keras weight file for `arch`.

  Order: `path` if given (a hash mismatch only warns, so a user's own file still loads,
  strictly checked for structure later); else `cache_dir/<filename>`; else one download
  into the cache, hash-verified, renamed into place atomically.

  Args:
    arch: 'vgg16', 'inception_v3' or 'resnet50'.
    cache_dir: directory holding downloaded files.
    path: a local copy (config.classifiers.<arch>.keras_h5); must exist.
    timeout: seconds for the connection and for each read.
    verify: check the md5 of downloads and of `path`.
    url: override the official URL (tests use a local server).

  Raises:
    FileNotFoundError: `path` is given but does not exist.
    WeightsUnavailableError: the download failed (offline, timeout, HTTP error).
    HashMismatchError: the downloaded file's md5 is not the published one.
  """
  info = _weights_info(arch)
  if path:
    if not os.path.isfile(path):
      raise FileNotFoundError(f'{path} (config.classifiers.{arch}.keras_h5) does not exist. '
                              + how_to_provide(arch, field))
    if verify and md5_of(path) != info.md5:
      warnings.warn(f'{path}: md5 differs from the official {info.filename} ({info.md5}).')
    return path
  cached = os.path.join(cache_dir, info.filename)
  if os.path.isfile(cached):
    return cached
  return _download(url or info.url, cached, info.md5 if verify else None, timeout, arch, field)


def _download(url: str, target: str, md5: Optional[str], timeout: float, arch: str,
              field: Optional[str] = None) -> str:
  """One download to a temporary file beside `target`, checked, then renamed into place."""
  os.makedirs(os.path.dirname(target) or '.', exist_ok=True)
  fd, partial = tempfile.mkstemp(dir=os.path.dirname(target) or '.', suffix='.part')
  try:
    with os.fdopen(fd, 'wb') as out:
      try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
          while chunk := response.read(1 << 20):
            out.write(chunk)
      except (urllib.error.URLError, OSError) as error:  # URLError, HTTPError, timeouts.
        raise WeightsUnavailableError(
            f'Could not download {url}: {error}. ' + how_to_provide(arch, field)) from error
    if md5 is not None:
      got = md5_of(partial)
      if got != md5:
        raise HashMismatchError(f'{url}: md5 {got}, expected {md5}; the file was not kept.')
    os.replace(partial, target)  # Atomic: the cache never holds a partial file.
  finally:
    if os.path.exists(partial):
      os.remove(partial)
  return target
