"""Test-set evaluation per distortion type and level: accuracy with and without QRNet, PSNR, SSIM.

These are the numbers behind Tables 2-5 and Figures 4-7: for every level, each classifier's top-1
accuracy on the distorted images as they are ("none") and after restoration ("qrnet"), and the
image quality of both against the clean image.
"""
import functools

import dm_pix as pix
import jax
import jax.numpy as jnp
import numpy as np

from qrnet_jax import data, distortions, losses, parallel
from qrnet_jax import outcomes as outcomes_lib
from qrnet_jax.steps import classifier_logits

# Evaluation noise comes from this seed and each image's index in its split, so every method (at
# any batch size or device count) sees the same distorted images.
EVAL_NOISE_SEED = 1234


def image_keys(key, index):
  """One key per image, from its index in its split: its distortion is the same in any batch."""
  return jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, index)


def distorted_at_level(clean, keys, case, sigma, *, types, max_blur):
  """`clean` at evaluation level (case, sigma): case 0 is clean, case i the i-th of `types`.

  The case is traced (lax.switch), so every level of a run is one compiled program.
  """
  def branch(distortion_type):
    return lambda images: distortions.distort(images, keys, distortion_type, sigma, max_blur)
  return jax.lax.switch(case, [lambda images: images] + [branch(t) for t in types], clean)


@functools.partial(jax.jit, static_argnames=('types', 'max_blur', 'qrnet', 'classifiers',
                                             'with_qrnet'))
def _per_image_by_level(params, frozen, batch, key, cases, sigmas, *, types, max_blur, qrnet,
                        classifiers, with_qrnet):
  """Every level's per-image PSNR, SSIM and correct-or-not, each (levels, batch): the batch is
  restored once per level and every classifier reads that restored batch. Levels run one after
  another (lax.map), so the program is compiled once for all of them."""
  clean = distortions.unit_range(batch['image'])
  keys = image_keys(key, batch['index'])

  def level(case_and_sigma):
    case, sigma = case_and_sigma
    distorted = distorted_at_level(clean, keys, case, sigma, types=types, max_blur=max_blur)
    stages = [('none', distorted)]
    if with_qrnet:
      stages.append(('qrnet', qrnet.apply({'params': params['qrnet']}, distorted, train=False)))
    values = {}
    for name, images in stages:
      values[f'{name}/psnr'] = pix.psnr(clean, images)
      values[f'{name}/ssim'] = pix.ssim(clean, images)
      for c in classifiers:
        logits, _ = classifier_logits(c, frozen[c.name], params['classifiers'].get(c.name, {}),
                                      images)
        values[f'{name}/{c.name}/accuracy'] = losses.correct(logits, batch['label'])
    return values

  return jax.lax.map(level, (cases, sigmas))


def level_cases(spec):
  """(type, sigma) of every evaluated level: ('clean', 0) first, then each type's levels."""
  return [('clean', 0.)] + [(t, float(level)) for t in spec.types
                            for level in spec.levels_by_type[t]]


def case_index(spec, distortion_type) -> jax.Array:
  """distorted_at_level's case of a level: 0 for clean, 1 + its index in spec.types."""
  return jnp.int32(0 if distortion_type == 'clean' else 1 + spec.types.index(distortion_type))


def level_name(distortion_type, sigma) -> str:
  """'clean', 'noise/20', 'blur/2': the keys of evaluate_by_level's results."""
  return 'clean' if distortion_type == 'clean' else f'{distortion_type}/{sigma:g}'


def max_blur_size(spec):
  """Kernel size for the strongest blur level of `spec` (None without blur)."""
  return (distortions.max_blur_kernel_size(spec.levels_by_type['blur'])
          if 'blur' in spec.types else None)


def masked_means(sums_fn, source, mesh, batch_size) -> dict:
  """The one evaluator: means over every image of `source` of what `sums_fn(batch_number,
  global_batch)` sums (masked per-image terms, with their 'count'), over all processes."""
  totals = None
  batches = data.eval_batches(source, batch_size, jax.process_index(), jax.process_count())
  for number, batch in enumerate(batches):
    sums = sums_fn(number, parallel.global_batch(batch, mesh))
    totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
  totals = jax.device_get(totals)
  count = totals.pop('count')
  return {name: float(value / count) for name, value in totals.items()}


def evaluate_by_level(params, frozen, source, *, spec, qrnet, classifiers, mesh, batch_size,
                      seed=EVAL_NOISE_SEED, with_qrnet=True):
  """Every test image at every level, once: (means, outcomes).

  means: {'clean': metrics, '<type>/<level>': metrics}, each metric averaged over every image;
  outcomes: each image's correct-or-not per level and classifier (qrnet_jax.outcomes), for paired
  comparisons between methods. with_qrnet=False: the classifiers on the distorted images alone
  (no 'qrnet/...' metrics).
  """
  static = dict(types=spec.types, max_blur=max_blur_size(spec), qrnet=qrnet,
                classifiers=tuple(classifiers), with_qrnet=with_qrnet)
  cases = level_cases(spec)
  case_indices = jnp.stack([case_index(spec, t) for t, _ in cases])
  sigmas = jnp.asarray([sigma for _, sigma in cases], jnp.float32)
  key = jax.random.PRNGKey(seed)
  pending, per_batch, indices = [], [], []

  def fetch(values, mask, index):  # a batch's per-image values, its padding dropped, on the host
    values, mask, index = parallel.to_host((values, mask, index))
    keep = mask.astype(bool)
    per_batch.append({name: v[:, keep] for name, v in values.items()})
    indices.append(index[keep])

  for batch in data.eval_batches(source, batch_size, jax.process_index(), jax.process_count()):
    batch = parallel.global_batch(batch, mesh)
    pending.append((_per_image_by_level(params, frozen, batch, key, case_indices, sigmas,
                                        **static), batch['mask'], batch['index']))
    if len(pending) > 2:  # the device runs ahead of the host by two batches at most
      fetch(*pending.pop(0))
  for batch_outputs in pending:
    fetch(*batch_outputs)
  index = np.concatenate(indices)
  per_level = {level_name(*case): {name: np.concatenate([v[name][i] for v in per_batch])
                                   for name in per_batch[0]}
               for i, case in enumerate(cases)}
  means = {level: {name: float(np.mean(v, dtype=np.float64)) for name, v in values.items()}
           for level, values in per_level.items()}
  return means, outcomes_lib.from_per_image(index, per_level)


def restored_samples(params, source, *, spec, qrnet, num_images=4, seed=EVAL_NOISE_SEED):
  """The first `num_images` test images per level: clean, distorted as evaluate_by_level distorts
  them (same keys), and restored by QRNet (Figures 1 and 8). uint8 arrays, computed on this
  process's first device; `params` may be replicated over several processes."""
  local = jax.tree.map(lambda x: np.asarray(x.addressable_data(0)), params['qrnet'])
  num_images = min(num_images, len(source))
  batch = next(data.eval_batches(source, num_images))
  clean = distortions.unit_range(batch['image'])
  keys = image_keys(jax.random.PRNGKey(seed), batch['index'])
  levels, distorted, restored = [], [], []
  for distortion_type, sigma in level_cases(spec):
    levels.append(level_name(distortion_type, sigma))
    images, output = _distorted_and_restored(
        local, clean, keys, case_index(spec, distortion_type), jnp.float32(sigma),
        types=spec.types, max_blur=max_blur_size(spec), qrnet=qrnet)
    distorted.append(images)
    restored.append(output)
  to_uint8 = lambda x: np.asarray(jnp.round(jnp.clip(jnp.stack(x), 0, 1) * 255), np.uint8)
  return {'levels': np.asarray(levels), 'clean': np.asarray(batch['image'], np.uint8),
          'distorted': to_uint8(distorted), 'restored': to_uint8(restored)}


@functools.partial(jax.jit, static_argnames=('types', 'max_blur', 'qrnet'))
def _distorted_and_restored(qrnet_params, clean, keys, case, sigma, *, types, max_blur, qrnet):
  distorted = distorted_at_level(clean, keys, case, sigma, types=types, max_blur=max_blur)
  return distorted, qrnet.apply({'params': qrnet_params}, distorted, train=False)


def _methods(results):
  """'none', and 'qrnet' where the results hold QRNet's output too."""
  first = next(iter(results.values()))
  return [m for m in ('none', 'qrnet') if f'{m}/psnr' in first]


def format_table(results, classifiers) -> str:
  """A plain-text table: one row per level, accuracy without/with QRNet, PSNR, SSIM."""
  methods = _methods(results)
  header = (['level'] + [f'{c.name} {m}' for c in classifiers for m in methods]
            + [f'PSNR {m}' for m in methods] + [f'SSIM {m}' for m in methods])
  rows = [header]
  for level, metrics in results.items():
    row = [level] + [f"{metrics[f'{m}/{c.name}/accuracy']:.3f}" for c in classifiers
                     for m in methods]
    row += [f"{metrics[f'{m}/psnr']:.2f}" for m in methods]
    row += [f"{metrics[f'{m}/ssim']:.3f}" for m in methods]
    rows.append(row)
  widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
  return '\n'.join('  '.join(cell.rjust(w) for cell, w in zip(r, widths)) for r in rows)
