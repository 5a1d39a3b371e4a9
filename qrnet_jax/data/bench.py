"""Host pipeline throughput at 224 px on generated JPEGs: cold (decoding) and warm (cached).

Run:
  python -m qrnet_jax.data.bench                 # 1,000 JPEGs of Caltech-like sizes
  python -m qrnet_jax.data.bench --num_images 3000 --workers 1,2,4

Prints images/s for: decoding in one process (per worker process), the training iterator with
cache='none' (every batch decoded by grain worker processes), the one-pass cache fill, and the
training iterator over the filled cache in memory and on disk (memory-mapped .npy). What the
pipeline must keep up with, the train step, is timed by `python -m qrnet_jax.benchmark`.
"""
import argparse
import os
import tempfile
import time

import numpy as np
from PIL import Image

from qrnet_jax.data import folder, images, pipeline


def write_jpegs(root: str, num_images: int, num_classes: int = 10, seed: int = 0):
  """Smooth random colour fields plus noise, Caltech101-like sizes (about 300 x 250), quality 90."""
  rng = np.random.default_rng(seed)
  for c in range(num_classes):
    os.makedirs(os.path.join(root, f'class_{c:03d}'), exist_ok=True)
  for i in range(num_images):
    h, w = int(rng.integers(180, 320)), int(rng.integers(240, 400))
    coarse = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    field = np.asarray(Image.fromarray(coarse).resize((w, h), Image.Resampling.BICUBIC), np.int16)
    pixels = np.clip(field + rng.normal(0, 12, field.shape), 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(os.path.join(root, f'class_{i % num_classes:03d}', f'{i:05d}.jpg'),
                                 quality=90)


def _rate(n, seconds):
  return f'{n / seconds:9.0f} images/s  ({n} in {seconds:.2f} s)'


def _epoch(source, batch_size, workers, epochs=1):
  """Images/s of `epochs` epochs of train_batches, timed after the first batch (start-up apart)."""
  steps = pipeline.steps_per_epoch(len(source), batch_size) * epochs
  start = time.perf_counter()
  batches = pipeline.train_batches(source, batch_size, seed=0, num_workers=workers)
  next(batches)
  first = time.perf_counter()
  for _ in range(steps - 1):
    next(batches)
  end = time.perf_counter()
  batches.close()
  return (steps - 1) * batch_size, end - first, first - start


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--num_images', type=int, default=1000)
  parser.add_argument('--image_size', type=int, default=224)
  parser.add_argument('--batch_size', type=int, default=32)
  parser.add_argument('--workers', default='', help='comma-separated num_workers values (0: '
                      'threads of the main process); default 0, 1 and the CPU count')
  parser.add_argument('--dir', default='', help='where to write the JPEGs (default: a temp dir)')
  args = parser.parse_args()
  cpus = os.cpu_count() or 1
  worker_counts = ([int(w) for w in args.workers.split(',')] if args.workers
                   else sorted({0, 1, cpus}))
  size = args.image_size
  with tempfile.TemporaryDirectory(dir=args.dir or None) as tmp:
    root = os.path.join(tmp, 'jpegs')
    t = time.perf_counter()
    write_jpegs(root, args.num_images)
    tree = folder.scan_tree(root)
    megabytes = sum(tree.sizes) / 2 ** 20
    print(f'{len(tree.files)} JPEGs, {megabytes:.1f} MB, written in '
          f'{time.perf_counter() - t:.1f} s; {size} px, batch {args.batch_size}, {cpus} CPUs')
    loader = folder.FileLoader(root, tuple(tree.files), size, 'squash')

    n = min(300, len(tree.files))
    t = time.perf_counter()
    for i in range(n):
      loader.load(i)
    print(f'cold, decode + resize in one process:       {_rate(n, time.perf_counter() - t)}')
    t = time.perf_counter()
    for i in range(n):
      images.decode_file(os.path.join(root, tree.files[i]), size, 'center_crop')
    print(f"cold, same with resize='center_crop':       {_rate(n, time.perf_counter() - t)}")

    for workers in worker_counts:
      source = pipeline.ImageSource(loader, tree.labels, size, cache='none', num_workers=workers)
      count, seconds, startup = _epoch(source, args.batch_size, workers)
      mode = f'{workers} worker processes' if workers else f'threads ({cpus} CPUs)'
      per = f'{count / seconds / workers:.0f} per worker, ' if workers else ''
      print(f"cold, train_batches cache='none', {mode}: {_rate(count, seconds)}"
            f' ({per}start-up {startup:.1f} s)')

    for cache, workers in (('memory', 0), ('disk', 0), ('memory', max(worker_counts))):
      source = pipeline.ImageSource(loader, tree.labels, size, cache=cache,
                                    cache_path=os.path.join(tmp, f'cache{workers}', 'images.npy'),
                                    cache_key='bench', num_workers=workers)
      t = time.perf_counter()
      source.prepare()
      print(f"cache fill ({cache}, num_workers={workers}, one pass): "
            f'{_rate(len(source), time.perf_counter() - t)}')
      count, seconds, _ = _epoch(source, args.batch_size, None, epochs=5)
      print(f"warm, train_batches cache='{cache}', 5 epochs: {_rate(count, seconds)}")

  print('compare with the train step at the same size: python -m qrnet_jax.benchmark '
        f'--image_size {size} --batch_size {args.batch_size}')


if __name__ == '__main__':
  main()
