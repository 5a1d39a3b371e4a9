"""Corruption throughput: images/s per family on this host, jitted, severities 1-5 across the batch.

  python -m qrnet_jax.corruptions_benchmark --sides 224,32 --batch_size 32 [--reference 4]

One row per family: compile time, then the median over `--repeats` timed calls of images/s at
each side (batch of smooth random images, severities 1-5 spread over it, one key per image). With
`--reference N` (imagecorruptions-imaug installed, the test extra) the reference's images/s on the
host, one image at a time over N images, beside it.
"""
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from qrnet_jax import corruptions

_SIDES = flags.DEFINE_list('sides', ['224', '32'], 'Image sides to time.')
_BATCH_SIZE = flags.DEFINE_integer('batch_size', 32, 'Images per call.')
_FAMILIES = flags.DEFINE_list('families', [], 'Families to time (default: all there are).')
_REPEATS = flags.DEFINE_integer('repeats', 5, 'Timed calls per family and side.')
_REFERENCE = flags.DEFINE_integer('reference', 0,
                                  'Also time imagecorruptions on this many images (0: not).')


def family_throughput(family, side, batch_size, repeats):
  """(compile seconds, median images/s) of `corrupt` on a batch of side x side images."""
  rng = np.random.default_rng(0)
  images = jax.image.resize(jnp.asarray(rng.random((batch_size, side // 4, side // 4, 3)),
                                        jnp.float32), (batch_size, side, side, 3), 'cubic')
  images = jnp.clip(images, 0., 1.)
  severities = jnp.asarray(np.arange(batch_size) % 5 + 1, jnp.int32)
  keys = jax.random.split(jax.random.key(0), batch_size)
  run = jax.jit(lambda x, s, k: corruptions.corrupt(x, family, s, k))
  start = time.perf_counter()
  run(images, severities, keys).block_until_ready()
  compile_s = time.perf_counter() - start
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    run(images, severities, keys).block_until_ready()
    times.append(time.perf_counter() - start)
  return compile_s, batch_size / float(np.median(times))


def reference_throughput(family, side, count):
  """imagecorruptions' images/s, one uint8 image at a time, severities 1-5 in turn."""
  from imagecorruptions import corrupt
  rng = np.random.default_rng(0)
  images = (rng.random((count, side, side, 3)) * 255).astype(np.uint8)
  start = time.perf_counter()
  for i, image in enumerate(images):
    corrupt(image, severity=i % 5 + 1, corruption_name=family)
  return count / (time.perf_counter() - start)


def main(argv):
  del argv
  families = _FAMILIES.value or [f for f in corruptions.IMAGENET_C + corruptions.HELD_OUT
                                 if f in corruptions.FAMILIES]
  sides = [int(s) for s in _SIDES.value]
  header = ['family'] + [f'{s} px img/s (compile s)' for s in sides]
  if _REFERENCE.value:
    header += [f'{s} px reference img/s' for s in sides]
  print(f'{jax.devices()[0].device_kind}, batch {_BATCH_SIZE.value}')
  print('| ' + ' | '.join(header) + ' |')
  print('|' + '---|' * len(header))
  for family in families:
    row = [family]
    for side in sides:
      compile_s, rate = family_throughput(family, side, _BATCH_SIZE.value, _REPEATS.value)
      row.append(f'{rate:.0f} ({compile_s:.1f})')
    if _REFERENCE.value:
      row += [f'{reference_throughput(family, side, _REFERENCE.value):.0f}' for side in sides]
    print('| ' + ' | '.join(row) + ' |', flush=True)


if __name__ == '__main__':
  app.run(main)
