"""Small files that mark progress (config.json, summary.json, classifier.json, ...): written
atomically, so a kill mid-write leaves the old file or the new one, never a partial one; and read
as None when missing or unreadable, so a damaged marker means "not done", never a crash."""
import json
import logging
import os
import tempfile
from typing import Any, Optional


def write_text(path: str, text: str):
  """Writes `text` to `path` through a temporary file in the same folder and os.replace."""
  folder = os.path.dirname(os.path.abspath(path))
  with tempfile.NamedTemporaryFile('w', encoding='utf-8', newline='', dir=folder,
                                   prefix=os.path.basename(path) + '.', suffix='.tmp',
                                   delete=False) as f:
    f.write(text)
  os.chmod(f.name, 0o666 & ~_umask())
  os.replace(f.name, path)


def write_json(path: str, obj: Any):
  write_text(path, json.dumps(obj, indent=2, sort_keys=True))


def read_json(path: str) -> Optional[Any]:
  """The JSON in `path`; None when it is missing, empty or unreadable (with a warning)."""
  if not os.path.isfile(path):
    return None
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError) as e:
    logging.warning('%s is unreadable (%s): taken as not written', path, e)
    return None


def _umask() -> int:
  mask = os.umask(0)
  os.umask(mask)
  return mask
