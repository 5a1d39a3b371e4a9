"""Host-side batching on grain: random-access sources in, uint8 batches out.

A training batch is a pure function of (seed, global step): the epoch's permutation comes from
(seed, epoch), the remainder of each epoch is dropped, so a resumed run continues mid-epoch with
the same order by starting at its step; there is no iterator state to checkpoint. Each process
takes its own contiguous slice of every global batch. Evaluation covers every image exactly once,
padding the last batch and marking real images in `mask`.

Sources are random access (`len(src)`, `src.batch(indices)`). `ImageSource` decodes images through
a picklable loader; with a cache ('memory' or 'disk') it decodes the whole dataset once, on first
use (`prepare()`), and every later batch is a slice of the cache. Without a cache every batch is
decoded again. Decoding runs on grain: in threads of this process (num_workers=0, the default:
Pillow releases the GIL, and on this project's 2-core machines threads decode 1.5-2x faster than
worker processes, which also take 1.5 s each to start) or in `num_workers` grain worker processes
(`mp_prefetch`; worth it on many cores). Either way batches are produced ahead of the training step
by grain's prefetching, in order.
"""
import dataclasses
import logging
import os
import threading
from typing import Iterator, Optional

import grain
import numpy as np

from qrnet_jax import files
from qrnet_jax.config_schema import CACHE_MODES

_ENDLESS = 2 ** 62  # grain MapDatasets are finite; this many steps never runs out
_PARALLEL_DECODE_MIN = 512  # fewer images decode faster in-process than worker start-up takes


@dataclasses.dataclass(frozen=True)
class ArraySource:
  """Random-access images (uint8 NHWC) and integer labels held in memory."""
  images: np.ndarray
  labels: np.ndarray

  def __len__(self):
    return len(self.labels)

  def __getitem__(self, index):
    return {'image': self.images[index], 'label': self.labels[index]}

  def batch(self, indices):
    return {'image': self.images[indices], 'label': self.labels[indices].astype(np.int32)}


class ImageSource:
  """Images decoded on demand by `loader.load(i) -> uint8 (S, S, 3)`, optionally cached.

  Args:
    loader: picklable; `len(loader)`, `loader.load(i)`; decoding happens in worker processes.
    labels: int labels, one per loader item.
    image_size: S.
    cache: 'memory' (one decode pass, then in RAM), 'disk' (one decode pass into a .npy file
      under cache_path, memory-mapped, reused by later runs) or 'none' (decode every batch).
    cache_path: the .npy file for 'disk'; its .json sidecar marks it complete.
    cache_key: written to the sidecar; a cache with another key is rebuilt.
    num_workers: grain worker processes for decoding; 0 decodes in this process with threads
      (Pillow releases the GIL), which is faster on few cores: see bench.py.
  """

  def __init__(self, loader, labels, image_size: int, cache: str = 'memory',
               cache_path: str = '', cache_key: str = '', num_workers: int = 0):
    if cache not in CACHE_MODES:
      raise ValueError(f'ImageSource: cache {cache!r}; allowed: {CACHE_MODES}')
    if cache == 'disk' and not cache_path:
      raise ValueError("cache='disk' needs a cache path")
    self.loader = loader
    self.labels = np.asarray(labels, np.int32)
    self.image_size = image_size
    self.cache = cache
    self.cache_path = cache_path
    self.cache_key = cache_key
    self.num_workers = num_workers
    self._images = None  # the filled cache
    self._lock = threading.Lock()

  def __len__(self):
    return len(self.labels)

  def __getstate__(self):
    # Worker processes get the loader only, never a copy of the cache.
    state = self.__dict__.copy()
    state['_images'] = None
    del state['_lock']
    return state

  def __setstate__(self, state):
    self.__dict__.update(state)
    self._lock = threading.Lock()

  @property
  def decodes_per_batch(self):
    return self.cache == 'none'

  def prepare(self):
    """Fills the cache (one decode pass over every image) unless it is filled or disabled."""
    if self.cache == 'none' or self._images is not None:
      return
    with self._lock:
      if self._images is None:
        self._fill()

  def _fill(self):
    if self.cache == 'disk' and self._disk_cache_complete():
      self._images = np.load(self.cache_path, mmap_mode='r')
      return
    shape = (len(self), self.image_size, self.image_size, 3)
    if self.cache == 'disk':
      try:
        os.remove(self._sidecar)  # stale: the cache is rebuilt
      except FileNotFoundError:
        pass
    if self.cache == 'memory':
      images = np.empty(shape, np.uint8)
    else:
      os.makedirs(os.path.dirname(os.path.abspath(self.cache_path)), exist_ok=True)
      # Per-process name: processes of one host sharing the cache dir each write a whole file
      # and rename it into place atomically (same content, the last one wins).
      partial = f'{self.cache_path}.{os.getpid()}.partial'
      images = np.lib.format.open_memmap(partial, mode='w+', dtype=np.uint8, shape=shape)
    decode_into(self.loader, images, self.num_workers)
    if self.cache == 'disk':
      images.flush()
      del images
      os.replace(partial, self.cache_path)
      files.write_json(self._sidecar, {'key': self.cache_key, 'shape': list(shape)})
      images = np.load(self.cache_path, mmap_mode='r')
      logging.info('cached %d decoded images in %s', len(self), self.cache_path)
    self._images = images

  @property
  def _sidecar(self):
    return os.path.splitext(self.cache_path)[0] + '.json'

  def _disk_cache_complete(self):
    meta = files.read_json(self._sidecar) or {}
    return (os.path.exists(self.cache_path) and meta.get('key') == self.cache_key
            and meta.get('shape') == [len(self), self.image_size, self.image_size, 3])

  def batch(self, indices):
    indices = np.asarray(indices)
    if self.cache != 'none':
      self.prepare()
      images = self._images[indices]
    else:
      images = np.empty((len(indices), self.image_size, self.image_size, 3), np.uint8)
      for row, index in enumerate(indices):
        images[row] = self.loader.load(int(index))
    return {'image': np.ascontiguousarray(images), 'label': self.labels[indices]}


@dataclasses.dataclass(frozen=True)
class SubsetSource:
  """One split: a view of a parent source through an index array (shares its cache)."""
  parent: object
  indices: np.ndarray

  def __len__(self):
    return len(self.indices)

  @property
  def labels(self):
    return np.asarray(self.parent.labels)[self.indices]

  def batch(self, indices):
    return self.parent.batch(self.indices[np.asarray(indices)])

  def prepare(self):
    if hasattr(self.parent, 'prepare'):
      self.parent.prepare()

  @property
  def num_workers(self):
    return getattr(self.parent, 'num_workers', 0)

  @property
  def decodes_per_batch(self):
    return getattr(self.parent, 'decodes_per_batch', False)


def _ensure_absl_flags_parsed():
  # grain's worker processes read an absl flag; outside an absl app (pytest, notebooks) the
  # flags are not parsed, so mark them parsed with their defaults, as grain's own tests do.
  from absl import flags
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()


def _iterate(dataset: grain.MapDataset, num_workers: int, prefetch: int = 2,
             num_threads: int = 0):
  """Ordered iteration, mapped by `num_workers` processes, or by threads of this process (0).

  Threads decode in parallel too: Pillow releases the GIL while it decodes and resizes.
  """
  num_threads = num_threads or min(16, os.cpu_count() or 1)
  if num_workers > 0:
    _ensure_absl_flags_parsed()
    iter_ds = dataset.to_iter_dataset(grain.ReadOptions(num_threads=1, prefetch_buffer_size=1))
    iter_ds = iter_ds.mp_prefetch(grain.MultiprocessingOptions(
        num_workers=num_workers, per_worker_buffer_size=prefetch))
  else:
    iter_ds = dataset.to_iter_dataset(grain.ReadOptions(
        num_threads=num_threads, prefetch_buffer_size=max(prefetch, num_threads)))
  iterator = iter(iter_ds)
  try:
    yield from iterator
  finally:
    close = getattr(iterator, 'close', None)
    if close is not None:
      close()


@dataclasses.dataclass(frozen=True)
class _Bounded:
  fn: object
  n: int

  def __call__(self, k):
    return self.fn(k) if k < self.n else np.zeros(0, np.uint8)  # never yielded


def ordered_map(fn, n: int, num_workers: int = 0, prefetch: int = 2) -> Iterator:
  """fn(0), ..., fn(n - 1) in order, computed ahead by threads or grain worker processes.

  The grain dataset is endless and closed after n items: worker processes that reach the end of a
  finite dataset leave shared-memory blocks behind (grain 0.2.18; a resource_tracker warning at
  exit), closing before the end does not.
  """
  items = _iterate(grain.MapDataset.range(_ENDLESS).map(_Bounded(fn, n)), num_workers, prefetch)
  try:
    for _ in range(n):
      yield next(items)
  finally:
    items.close()


@dataclasses.dataclass(frozen=True)
class _DecodeChunk:
  loader: object
  chunk: int
  total: int

  def __call__(self, k):
    start, stop = k * self.chunk, min((k + 1) * self.chunk, self.total)
    return {'start': np.int64(start),
            'images': np.stack([self.loader.load(i) for i in range(start, stop)])}


def decode_into(loader, images: np.ndarray, num_workers: int, chunk: int = 32) -> None:
  """images[i] = loader.load(i) for every i, decoded by threads or grain worker processes."""
  total = len(images)
  if total == 0:
    return
  # Loaders of in-memory arrays resize faster in-process than worker processes start.
  parallel = getattr(loader, 'parallel_decode', True) and total >= _PARALLEL_DECODE_MIN
  workers = num_workers if parallel else 0
  n_chunks = -(-total // chunk)
  for item in ordered_map(_DecodeChunk(loader, chunk, total), n_chunks, workers, prefetch=2):
    start = int(item['start'])
    images[start:start + len(item['images'])] = item['images']


def steps_per_epoch(num_examples: int, global_batch_size: int) -> int:
  """Training batches per epoch; the remainder is dropped."""
  return num_examples // global_batch_size


def epoch_permutation(num_examples: int, seed: int, epoch: int) -> np.ndarray:
  return np.random.default_rng([seed, epoch]).permutation(num_examples)


def _local_slice(global_batch_size, process_index, process_count):
  if not 0 <= process_index < process_count:
    raise ValueError(f'process index {process_index} outside 0..{process_count - 1}')
  if global_batch_size % process_count:
    raise ValueError(f'global batch size {global_batch_size} does not divide by the '
                     f'{process_count} processes')
  per_process = global_batch_size // process_count
  return slice(process_index * per_process, (process_index + 1) * per_process)


@dataclasses.dataclass(frozen=True)
class _TrainBatch:
  """Global step -> this process's slice of that step's batch (a pure function)."""
  source: object
  global_batch_size: int
  seed: int
  local: slice
  per_epoch: int

  def indices(self, step):
    epoch, index = divmod(int(step), self.per_epoch)
    order = epoch_permutation(len(self.source), self.seed, epoch)
    return order[index * self.global_batch_size:(index + 1) * self.global_batch_size][self.local]

  def __call__(self, step):
    return self.source.batch(self.indices(step))


def _workers_for(source, num_workers):
  # Workers pay off only where batches need decoding; cached batches are slices of an array
  # (and a worker process would fill a cache of its own).
  if not getattr(source, 'decodes_per_batch', False):
    return 0
  return getattr(source, 'num_workers', 0) if num_workers is None else num_workers


def train_batches(source, global_batch_size: int, seed: int, start_step: int = 0,
                  process_index: int = 0, process_count: int = 1,
                  num_workers: Optional[int] = None) -> Iterator[dict]:
  """Endless iterator of this process's part of the global training batches, from `start_step`.

  Batch k is a pure function of (seed, k), so resuming needs only the step (no iterator state).
  num_workers: decoding processes; None takes the source's own setting.
  """
  per_epoch = steps_per_epoch(len(source), global_batch_size)
  if per_epoch == 0:
    raise ValueError(f'the training split has {len(source)} images, fewer than one batch of '
                     f'{global_batch_size} (config.train.batch_size)')
  local = _local_slice(global_batch_size, process_index, process_count)
  if hasattr(source, 'prepare'):
    source.prepare()
  make = _TrainBatch(source, global_batch_size, seed, local, per_epoch)
  dataset = grain.MapDataset.range(start_step, _ENDLESS).map(make)
  yield from _iterate(dataset, _workers_for(source, num_workers))


@dataclasses.dataclass(frozen=True)
class _EvalBatch:
  source: object
  global_batch_size: int
  local: slice

  def __call__(self, k):
    start = int(k) * self.global_batch_size
    indices = np.arange(start, start + self.global_batch_size)
    mask = indices < len(self.source)
    batch = self.source.batch(np.where(mask, indices, 0)[self.local])
    batch['mask'] = mask[self.local]
    batch['index'] = indices[self.local].astype(np.int32)  # the image's place in its split
    return batch


def eval_batches(source, global_batch_size: int, process_index: int = 0, process_count: int = 1,
                 num_workers: Optional[int] = None) -> Iterator[dict]:
  """Every image exactly once in order; the last batch is padded and `mask` marks real images.

  Each batch carries `index`, every image's position in `source` (what evaluation keys its
  distortion by, so that an image is distorted alike at any batch size or device count).
  """
  local = _local_slice(global_batch_size, process_index, process_count)
  if hasattr(source, 'prepare'):
    source.prepare()
  n_batches = -(-len(source) // global_batch_size)
  yield from ordered_map(_EvalBatch(source, global_batch_size, local), n_batches,
                         _workers_for(source, num_workers))
