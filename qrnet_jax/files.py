"""Paths and the small files that mark progress (config.json, summary.json, classifier.json, ...).

Every path the project reads or writes (workdirs, data directories, reports) is a local path or a
`gs://` URL; this module is the one place that tells them apart. Local paths behave as plain files
always did; URLs go through `etils.epath` (gcsfs underneath, the `gcs` extra). Orbax and
tensorboardX take the same strings and speak gs:// themselves.

Marker files are written atomically: locally through a temporary file and `os.replace` (mode from
the umask), on GCS as one object upload (an object appears whole or not at all). So a kill
mid-write leaves the old file or the new one, never a partial one. They read as None when missing
or unreadable, so a damaged marker means "not done", never a crash.
"""
import errno
import importlib
import io
import json
import logging
import os
import shutil
import tempfile
from typing import Any, Optional

from etils import epath

from qrnet_jax.errors import ConfigError

GCS_EXTRA = "pip install -e '.[gcs]'"


def is_remote(path) -> bool:
  """Whether `path` is a URL (gs://...) rather than a local path."""
  return '://' in os.fspath(path)


def absolute(path) -> str:
  """`path` with ~ expanded and made absolute; URLs unchanged."""
  path = os.fspath(path)
  return path if is_remote(path) else os.path.abspath(os.path.expanduser(path))


def as_path(path) -> epath.Path:
  return epath.Path(absolute(path))


def check_remote_support(path, field: str):
  """Raises ValueError naming `field` when `path` is a URL this installation cannot open."""
  if not is_remote(path):
    return
  scheme = os.fspath(path).split('://', 1)[0]
  if scheme != 'gs':
    raise ValueError(f'{field}={path}: only local paths and gs:// URLs are supported')
  try:
    for module in ('gcsfs', 'google.cloud.storage'):
      importlib.import_module(module)
  except ImportError as e:
    raise ValueError(f'{field}={path}: gs:// needs gcsfs and google-cloud-storage ({e}); '
                     f'install the gcs extra: {GCS_EXTRA}') from e


def exists(path) -> bool:
  return as_path(path).exists()


def is_file(path) -> bool:
  return as_path(path).is_file()


def is_dir(path) -> bool:
  return as_path(path).is_dir()


def make_dirs(path):
  """Creates the folder `path` and its parents (on GCS folders need not exist: nothing to do)."""
  if not is_remote(path):
    os.makedirs(absolute(path), exist_ok=True)


def remove(path):
  as_path(path).unlink()


def read_bytes(path) -> bytes:
  return as_path(path).read_bytes()


def read_text(path) -> str:
  return read_bytes(path).decode('utf-8')


class DiskFullError(OSError):
  """A write failed for lack of space; the message names the path and the space it needed."""

  def __init__(self, path, needed: Optional[int]):
    free = shutil.disk_usage(_existing_folder(path)).free if not is_remote(path) else None
    super().__init__(errno.ENOSPC, f'no space left to write {path}'
                     + (f' ({needed} bytes needed' if needed is not None else ' (')
                     + (f', {free} free there)' if free is not None else ')')
                     + '; what was written before it is intact: free some space and rerun')

  def __str__(self):
    return self.strerror


def is_disk_full(error: BaseException) -> bool:
  """Whether `error`, or an error it was raised from, is ENOSPC (no space left on device)."""
  while error is not None:
    if (isinstance(error, OSError) and error.errno == errno.ENOSPC
        or 'No space left on device' in str(error)):
      return True
    error = error.__cause__ or error.__context__
  return False


def tree_size(path) -> int:
  """Bytes in the files under the local folder `path`."""
  return sum(os.path.getsize(os.path.join(folder, name))
             for folder, _, names in os.walk(path) for name in names)


def _existing_folder(path) -> str:
  path = absolute(path)
  while not os.path.isdir(path):
    path = os.path.dirname(path)
  return path


def write_bytes(path, data: bytes):
  """Writes `data` to `path` atomically: a temporary file in the same folder and os.replace
  locally, one object upload on GCS. Without the space for it, the old file stays and
  DiskFullError names the path."""
  if is_remote(path):
    as_path(path).write_bytes(data)
    return
  folder = os.path.dirname(absolute(path))
  with tempfile.NamedTemporaryFile('wb', dir=folder, prefix=os.path.basename(path) + '.',
                                   suffix='.tmp', delete=False) as f:
    try:
      f.write(data)
      f.flush()
    except OSError as e:
      f.close()
      os.remove(f.name)
      if e.errno == errno.ENOSPC:
        raise DiskFullError(path, len(data)) from e
      raise
  os.chmod(f.name, 0o666 & ~_umask())
  os.replace(f.name, absolute(path))


def write_figure(fig, path, dpi: int = 100):
  """A matplotlib figure as a PNG at `path`, written atomically."""
  buffer = io.BytesIO()
  fig.savefig(buffer, format='png', dpi=dpi)
  write_bytes(path, buffer.getvalue())


def write_text(path, text: str):
  write_bytes(path, text.encode('utf-8'))


def write_json(path, obj: Any):
  write_text(path, json.dumps(obj, indent=2, sort_keys=True))


def local_mirror(url: str, local_root: str) -> str:
  """The files under the gs:// folder `url`, copied to LOCAL_ROOT/BUCKET/PATH (only those missing
  there or of another size; each copy lands whole through os.replace); returns that folder.
  Datasets read from a bucket are decoded from this copy."""
  root = as_path(url)
  if not root.is_dir():
    raise FileNotFoundError(f'{url}: no such folder')
  local = _local_path(url, local_root)
  copied = 0
  for folder, _, names in root.walk():  # folders may come back without their gs:// prefix
    relative = os.path.relpath(_without_scheme(folder), _without_scheme(url).rstrip('/'))
    parts = [] if relative == '.' else relative.split('/')
    os.makedirs(os.path.join(local, *parts), exist_ok=True)
    for name in names:
      copied += _copy_if_changed(root.joinpath(*parts, name), os.path.join(local, *parts, name))
  logging.info('%s: %d files copied to %s', url, copied, local)
  return local


def local_copy(url: str, local_root: str) -> str:
  """The gs:// file `url` copied to LOCAL_ROOT/BUCKET/PATH (unless there with its size already);
  returns that path. For readers that need a local file (h5py)."""
  local = _local_path(url, local_root)
  os.makedirs(os.path.dirname(local), exist_ok=True)
  _copy_if_changed(as_path(url), local)
  return local


def _copy_if_changed(source: epath.Path, target: str) -> int:
  """Copies `source` to the local `target` unless it is there with the same size; 1 if copied."""
  if os.path.isfile(target) and os.path.getsize(target) == source.stat().length:
    return 0
  write_bytes(target, source.read_bytes())
  return 1


def relative_files(folder) -> list:
  """The paths of the files under `folder` (local or gs://), relative to it, '/'-separated."""
  root, found = as_path(folder), []
  for parent, _, names in root.walk():  # folders may come back without their gs:// prefix
    relative = os.path.relpath(_without_scheme(parent), _without_scheme(folder).rstrip('/'))
    found += [name if relative == '.' else f'{relative}/{name}' for name in names]
  return found


def _local_path(url: str, local_root: str) -> str:
  """Where a copy of `url` lives under `local_root`: LOCAL_ROOT/BUCKET/PATH."""
  return os.path.join(local_root, _without_scheme(url).strip('/'))


def _without_scheme(path) -> str:
  return os.fspath(path).split('://', 1)[-1]


def read_json(path) -> Optional[Any]:
  """The JSON in `path`; None when it is missing, empty or unreadable (with a warning)."""
  if not is_file(path):
    return None
  try:
    return json.loads(read_bytes(path))
  except (OSError, ValueError) as e:
    logging.warning('%s is unreadable (%s): taken as not written', path, e)
    return None


def _umask() -> int:
  mask = os.umask(0)
  os.umask(mask)
  return mask


def reachable(path, name: str, probe, failure: str = 'cannot be read'):
  """`probe(path)` for a local path or gs:// URL. A URL this installation cannot open, or a
  probe that fails (gcsfs: credentials, network, no such bucket), is a ConfigError naming `name`
  (a config field or flag)."""
  try:
    check_remote_support(path, name)
    return probe(path)
  except ValueError as e:
    raise ConfigError(str(e)) from e
  except Exception as e:  # pylint: disable=broad-except
    raise ConfigError(f'{name}={path}: {failure} ({type(e).__name__}: {e})') from e
