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
from qrnet_jax.steps import classifier_logits

# Evaluation noise comes from this seed and each image's index in its split, so every method (at
# any batch size or device count) sees the same distorted images.
EVAL_NOISE_SEED = 1234


@functools.partial(jax.jit, static_argnames=('distortion_type', 'max_blur', 'qrnet',
                                             'classifiers', 'with_qrnet'))
def _level_sums(params, frozen, batch, key, sigma, *, distortion_type, max_blur, qrnet,
                classifiers, with_qrnet):
  clean = batch['image'].astype(jnp.float32) / 255.
  mask = batch['mask'].astype(jnp.float32)
  if distortion_type == 'clean':
    distorted = clean
  else:
    image_keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, batch['index'])
    distorted = distortions.distort(clean, image_keys, distortion_type, sigma, max_blur)
  cases = [('none', distorted)]
  if with_qrnet:
    cases.append(('qrnet', qrnet.apply({'params': params['qrnet']}, distorted, train=False)))
  sums = {'count': mask.sum()}
  for name, images in cases:
    sums[f'{name}/psnr'] = (pix.psnr(clean, images) * mask).sum()
    sums[f'{name}/ssim'] = (pix.ssim(clean, images) * mask).sum()
    for c in classifiers:
      logits = classifier_logits(c, frozen[c.name], params['classifiers'].get(c.name, {}), images)
      sums[f'{name}/{c.name}/accuracy'] = (losses.correct(logits, batch['label']) * mask).sum()
  return sums


def evaluate_by_level(params, frozen, source, *, spec, qrnet, classifiers, mesh, batch_size,
                      seed=EVAL_NOISE_SEED, with_qrnet=True):
  """{'clean': metrics, '<type>/<level>': metrics} with metrics averaged over every image once.

  with_qrnet=False: the classifiers on the distorted images alone (no 'qrnet/...' metrics).
  """
  cases = [('clean', 0.)] + [(t, float(level)) for t in spec.types
                             for level in spec.levels_by_type[t]]
  max_blur = (distortions.max_blur_kernel_size(spec.levels_by_type['blur'])
              if 'blur' in spec.types else None)
  results = {}
  for distortion_type, sigma in cases:
    totals = None
    batches = data.eval_batches(source, batch_size, jax.process_index(), jax.process_count())
    per_process = batch_size // jax.process_count()
    for number, batch in enumerate(batches):
      first = number * batch_size + jax.process_index() * per_process
      batch['index'] = np.arange(first, first + per_process, dtype=np.int32)
      sums = _level_sums(params, frozen, parallel.global_batch(batch, mesh),
                         jax.random.PRNGKey(seed),
                         jnp.float32(sigma), distortion_type=distortion_type, max_blur=max_blur,
                         qrnet=qrnet, classifiers=tuple(classifiers), with_qrnet=with_qrnet)
      totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
    totals = jax.device_get(totals)
    count = totals.pop('count')
    name = 'clean' if distortion_type == 'clean' else f'{distortion_type}/{sigma:g}'
    results[name] = {metric: float(value / count) for metric, value in totals.items()}
  return results


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


def plot_results(results, classifiers, path: str):
  """Accuracy per level without and with QRNet, one panel per distortion type (cf. Figures 4-6)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  types = sorted({level.split('/')[0] for level in results if level != 'clean'})
  fig, axes = plt.subplots(1, max(len(types), 1), figsize=(5 * max(len(types), 1), 4),
                           squeeze=False)
  for ax, distortion_type in zip(axes[0], types):
    levels = sorted((level for level in results if level.startswith(distortion_type + '/')),
                    key=lambda level: float(level.split('/')[1]))
    sigmas = [float(level.split('/')[1]) for level in levels]
    for c in classifiers:
      for method, style in zip(_methods(results), ('--', '-')):
        ax.plot(sigmas, [results[level][f'{method}/{c.name}/accuracy'] for level in levels],
                style, marker='o', label=f'{c.name} + QRNet' if method == 'qrnet' else c.name)
    ax.set_title(f'Gaussian {distortion_type}')
    ax.set_xlabel('sigma (0-255 units)' if distortion_type == 'noise' else 'sigma (pixels)')
    ax.set_ylabel('test accuracy')
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
