"""Class-per-folder image trees (any dataset, Caltech101, Caltech256) and their official archives.

A tree is `root/<class name>/**/<image>`; classes are the sorted sub-folder names. Hidden files,
.DS_Store, Thumbs.db and files without an image extension are ignored; files that Pillow cannot
decode completely (truncated, corrupt) are skipped with a warning, named in the split file and in
`info`. Caltech archives are verified against the checksums below and extracted once into the data
directory.
"""
import dataclasses
import hashlib
import logging
import os
import shutil
import tarfile
import zipfile
from typing import Sequence

from qrnet_jax.data import images as images_lib

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.gif', '.tif', '.tiff', '.webp', '.ppm',
                    '.pgm', '.pbm')
IGNORED_NAMES = ('.ds_store', 'thumbs.db', 'desktop.ini')

# Official archives: {file name: {algorithm: hex digest}}.
KNOWN_ARCHIVES = {
    # TFDS url_checksums (tensorflow_datasets/datasets/caltech101/checksums.tsv), 137,414,764 bytes,
    # from https://data.caltech.edu/records/mzrjq-6wc02/files/caltech-101.zip
    'caltech-101.zip': {
        'sha256': '331234750fc7f77520e50d9565e8b6907b03565e30320da1401130db08c61f91'},
    # The inner archive, 131,740,031 bytes: sha256 from TFDS (its Google Drive copy, id
    # 137RyRjvTBkBiIfeYBNZBtViDHQ6_Ewsp), md5 from torchvision.datasets.Caltech101.
    '101_ObjectCategories.tar.gz': {
        'sha256': 'af6ece2f339791ca20f855943d8b55dd60892c0a25105fcd631ee3d6430f9926',
        'md5': 'b224c7392d521a49829488ab0f1120d9'},
    # torchvision.datasets.Caltech256, from https://data.caltech.edu/records/nyy15-4j048
    '256_ObjectCategories.tar': {'md5': '67b4f42ca05d46448c6bb8ecd2220f6d'},
}

# dataset -> (extracted folder name, archives that hold it, most preferred first,
#             class folders excluded unless config.data.keep_background_class)
CALTECH = {
    'caltech101': ('101_ObjectCategories', ('101_ObjectCategories.tar.gz', 'caltech-101.zip'),
                   ('BACKGROUND_Google',)),
    'caltech256': ('256_ObjectCategories', ('256_ObjectCategories.tar',), ('257.clutter',)),
}
_EXTRACTED_MARK = '.qrnet_extracted'


def is_image_name(name: str) -> bool:
  lower = name.lower()
  return (not lower.startswith('.') and lower not in IGNORED_NAMES
          and lower.endswith(IMAGE_EXTENSIONS))


@dataclasses.dataclass
class Tree:
  """What a scan of an image tree found (before decoding)."""
  root: str
  class_names: list
  files: list  # paths relative to root, '/'-separated, sorted
  labels: list
  sizes: list  # bytes
  ignored: list  # non-image files, relative paths


def scan_tree(root: str, exclude: Sequence[str] = (), recursive: bool = True) -> Tree:
  """Lists the image files of a class-per-folder tree; errors name the offending path.

  recursive: images in sub-folders of a class folder belong to it (else they are ignored, as
  torchvision's Caltech loaders do: Caltech256's 056.dog/greg/ holds duplicates).
  """
  if not os.path.isdir(root):
    raise FileNotFoundError(f'image folder {root} does not exist (config.data.data_dir)')
  class_names = sorted(entry.name for entry in os.scandir(root)
                       if entry.is_dir() and not entry.name.startswith('.')
                       and entry.name not in exclude)
  files, labels, sizes, ignored = [], [], [], []
  for label, name in enumerate(class_names):
    found = []
    class_dir = os.path.join(root, name)
    for directory, subdirs, names in os.walk(class_dir):
      subdirs[:] = sorted(d for d in subdirs if not d.startswith('.'))
      for file_name in names:
        rel = os.path.relpath(os.path.join(directory, file_name), root).replace(os.sep, '/')
        usable = is_image_name(file_name) and (recursive or directory == class_dir)
        (found if usable else ignored).append(rel)
    if not found:
      raise ValueError(f'class folder {os.path.join(root, name)} holds no image files '
                       f'(extensions {IMAGE_EXTENSIONS})')
    for rel in sorted(found):
      files.append(rel)
      labels.append(label)
      sizes.append(_size(os.path.join(root, rel)))
  if len(class_names) < 2:
    raise ValueError(f'image folder {root} has {len(class_names)} class folder(s) '
                     f'{class_names}; a classification dataset needs at least two')
  return Tree(root, class_names, files, labels, sizes, sorted(ignored))


def _size(path) -> int:
  """Bytes of `path`; -1 where it cannot be read (e.g. a symlink to a missing file), which the
  readability check then skips and counts."""
  try:
    return os.path.getsize(path)
  except OSError:
    return -1


@dataclasses.dataclass(frozen=True)
class _Check:
  root: str
  files: tuple

  def __call__(self, k):
    try:
      images_lib.check_file(os.path.join(self.root, self.files[k]))
      return {'ok': True, 'error': ''}
    except Exception as e:  # pylint: disable=broad-except
      return {'ok': False, 'error': f'{type(e).__name__}: {e}'}


def unreadable_files(root: str, files: Sequence[str], num_workers: int = 0) -> dict:
  """{relative path: error} for files Pillow cannot decode completely (checked in parallel)."""
  from qrnet_jax.data import pipeline  # pylint: disable=import-outside-toplevel
  workers = num_workers if len(files) >= 256 else 0
  bad = {}
  results = pipeline.ordered_map(_Check(root, tuple(files)), len(files), workers, prefetch=16)
  for rel, result in zip(files, results):
    if not result['ok']:
      bad[rel] = str(result['error'])
  return bad


@dataclasses.dataclass(frozen=True)
class FileLoader:
  """Picklable: item i of `files` decoded and resized to uint8 (size, size, 3)."""
  root: str
  files: tuple
  size: int
  resize: str

  def __len__(self):
    return len(self.files)

  def load(self, i):
    path = os.path.join(self.root, self.files[i])
    try:
      return images_lib.decode_file(path, self.size, self.resize)
    except Exception as e:
      raise OSError(f'cannot decode {path} (it was readable when the split was made): '
                    f'{type(e).__name__}: {e}') from e


def file_digests(path: str, algorithms=('md5', 'sha256')) -> dict:
  hashes = {name: hashlib.new(name) for name in algorithms}
  with open(path, 'rb') as f:
    for block in iter(lambda: f.read(1 << 22), b''):
      for h in hashes.values():
        h.update(block)
  return {name: h.hexdigest() for name, h in hashes.items()}


def verify_archive(path: str, expected: str = '') -> dict:
  """Checks `path` against `expected` ('sha256:HEX' or 'md5:HEX') or the official table.

  An archive with no known checksum is accepted; its sha256 is recorded beside it
  (PATH.sha256) and returned, so later runs and other machines can compare.
  """
  digests = file_digests(path)
  if expected:
    algorithm, _, digest = expected.partition(':')
    wanted = {algorithm.lower(): digest.lower()}
  else:
    wanted = KNOWN_ARCHIVES.get(os.path.basename(path), {})
  for algorithm, digest in wanted.items():
    if digests.get(algorithm) != digest:
      raise ValueError(f'archive {path}: {algorithm} {digests.get(algorithm)} does not match the '
                       f'expected {digest} (incomplete or different download; fetch it again, or '
                       'set config.data.archive_checksum to the checksum of the file you trust)')
  if not wanted:
    logging.warning('archive %s: no known checksum; recorded its sha256 %s in %s.sha256', path,
                    digests['sha256'], path)
    record = path + '.sha256'
    if os.access(os.path.dirname(os.path.abspath(path)), os.W_OK):
      with open(record, 'w') as f:
        f.write(f"{digests['sha256']}  {os.path.basename(path)}\n")
  return {'archive': path, 'sha256': digests['sha256'], 'verified_against': sorted(wanted)}


def _extract_tar(archive, member_dir: str, destination: str):
  with tarfile.open(archive) as tar:
    tar.extractall(destination, filter='data')
  if not os.path.isdir(os.path.join(destination, member_dir)):
    raise ValueError(f'archive {archive} does not hold the folder {member_dir}/')


def extract_caltech(data_dir: str, name: str, archive_checksum: str = '') -> tuple:
  """Root of the extracted Caltech tree in data_dir, extracting a verified archive once.

  Returns (root, info dict).
  """
  folder, archives, _ = CALTECH[name]
  for candidate in (os.path.join(data_dir, folder),
                    os.path.join(data_dir, 'caltech-101', folder),
                    data_dir if os.path.basename(os.path.normpath(data_dir)) == folder else None):
    if candidate and os.path.isdir(candidate):
      return candidate, {'root': candidate, 'extracted_now': False}
  present = [os.path.join(data_dir, a) for a in archives
             if os.path.isfile(os.path.join(data_dir, a))]
  if not present:
    raise FileNotFoundError(
        f'{name}: found neither the folder {folder}/ nor an archive {list(archives)} in '
        f'{data_dir} (config.data.data_dir). Put the official archive there.')
  archive = present[0]
  info = verify_archive(archive, archive_checksum)
  if not os.access(data_dir, os.W_OK):
    raise PermissionError(f'{data_dir} is not writable: extract {archive} yourself, or copy it to '
                          'a writable folder named by config.data.data_dir')
  staging = os.path.join(data_dir, f'.{folder}.extracting')
  shutil.rmtree(staging, ignore_errors=True)
  os.makedirs(staging)
  logging.info('extracting %s into %s', archive, data_dir)
  if archive.endswith('.zip'):
    inner = f'caltech-101/{archives[0]}'
    with zipfile.ZipFile(archive) as zipped:
      if inner not in zipped.namelist():
        raise ValueError(f'archive {archive} does not hold {inner}')
      zipped.extract(inner, staging)
    _extract_tar(os.path.join(staging, inner), folder, staging)
  else:
    _extract_tar(archive, folder, staging)
  os.replace(os.path.join(staging, folder), os.path.join(data_dir, folder))
  shutil.rmtree(staging, ignore_errors=True)
  root = os.path.join(data_dir, folder)
  with open(os.path.join(root, _EXTRACTED_MARK), 'w') as f:
    f.write(f"{os.path.basename(archive)} sha256 {info['sha256']}\n")
  info.update(root=root, extracted_now=True)
  return root, info


def excluded_classes(name: str, keep_background: bool) -> tuple:
  if name in CALTECH and not keep_background:
    return CALTECH[name][2]
  return ()


def find_root(data_config) -> tuple:
  """(root of the class-per-folder tree, info) for 'folder', 'caltech101' and 'caltech256'."""
  data_dir = os.path.expanduser(data_config.data_dir or '')
  if not data_dir:
    raise ValueError(f'config.data.data_dir: empty; dataset {data_config.name!r} reads its images '
                     'from that folder')
  if not os.path.isdir(data_dir):
    raise FileNotFoundError(f'config.data.data_dir: {data_dir} does not exist')
  if data_config.name == 'folder':
    return data_dir, {'root': data_dir}
  return extract_caltech(data_dir, data_config.name,
                         data_config.archive_checksum or '')
