"""A run's classifier on images of any size, fed as the run's evaluation feeds it: resized to
data.image_size as the run's data pipeline resizes (config.data.resize: the whole image squashed,
or its centre square), then, by the classifier's own step (steps.classifier_logits), to its input
side where it has one (VGG16 224, InceptionV3 299); then the top-5 classes with their
probabilities.

The resize is a pair of matrices (bilinear, antialiased when shrinking, as Pillow's BILINEAR that
the pipeline uses), written for numpy and for jax.numpy alike, so the exported model resizes as
the restore command does, also for a symbolic image size.
"""
import csv
import functools
import io

import jax
import jax.numpy as jnp
import numpy as np

from qrnet_jax import steps

TOP_K = 5
STAGES = ('before', 'after')  # the classifier on the input (distorted), and on QRNet's output


def resize_weights(out_size: int, in_size, start, length, xp=np):
  """(out_size, in_size) weights that resample pixels [start, start + length) of an axis of
  `in_size` pixels onto `out_size` (bilinear; the triangle widened by the scale when shrinking)."""
  scale = length / out_size
  support = xp.maximum(scale, 1.)
  centres = start + (xp.arange(out_size, dtype=xp.float32) + 0.5) * scale
  pixels = xp.arange(in_size, dtype=xp.float32) + 0.5
  weights = xp.maximum(0., 1. - xp.abs(pixels[None, :] - centres[:, None]) / support)
  return (weights / weights.sum(axis=1, keepdims=True)).astype(xp.float32)


def classifier_input(images, size: int, policy: str = 'squash', xp=np):
  """(..., H, W, 3) float images resized to (..., size, size, 3): 'squash' the whole image,
  'center_crop' its centre square (data.images' policies). Unchanged at that size already."""
  height, width = images.shape[-3], images.shape[-2]
  if isinstance(height, int) and isinstance(width, int) and (height, width) == (size, size):
    return images
  h, w = (xp.asarray(side, xp.float32) for side in (height, width))
  side = xp.minimum(h, w) if policy == 'center_crop' else None
  rows = resize_weights(size, height, *(((h - side) / 2., side) if side is not None else (0., h)),
                        xp=xp)
  cols = resize_weights(size, width, *(((w - side) / 2., side) if side is not None else (0., w)),
                        xp=xp)
  kwargs = {'precision': jax.lax.Precision.HIGHEST} if xp is jnp else {}
  return xp.einsum('ih,...hwc,jw->...ijc', rows, images, cols, **kwargs)


@functools.partial(jax.jit, static_argnames='spec')
def probabilities(frozen, trainable, images, *, spec: steps.Classifier):
  """Softmax of the classifier's logits, computed as the run's steps compute them."""
  logits, _ = steps.classifier_logits(spec, frozen, trainable, images)
  return jax.nn.softmax(logits.astype(jnp.float32), axis=-1)


def classify(classifier, images: np.ndarray, batch_size: int) -> np.ndarray:
  """Probabilities (N, classes) for (N, size, size, 3) images, in batches of exactly
  `batch_size` (the last filled with zeros), so one program serves every call."""
  out = []
  for start in range(0, len(images), batch_size):
    batch = np.zeros((batch_size,) + images.shape[1:], np.float32)
    batch[:len(images[start:start + batch_size])] = images[start:start + batch_size]
    p = probabilities(classifier.frozen, classifier.trainable, batch, spec=classifier.spec)
    out.append(np.asarray(p)[:len(images[start:start + batch_size])])
  return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def top_k(probs: np.ndarray, class_names=None, k: int = TOP_K) -> list:
  """[(class index, name or '', probability)] of the k most probable classes, best first."""
  order = np.argsort(-probs, kind='stable')[:k]
  return [(int(i), class_names[i] if class_names else '', float(probs[i])) for i in order]


def csv_header(k: int = TOP_K) -> list:
  return ['input', 'output', 'error'] + [f'{stage}_{rank}_{field}' for stage in STAGES
                                         for rank in range(1, k + 1)
                                         for field in ('class', 'name', 'probability')]


def csv_text(rows: list, k: int = TOP_K) -> str:
  """rows: dicts with 'input', 'output', 'error' and, per stage, a top_k list."""
  buffer = io.StringIO()
  writer = csv.writer(buffer, lineterminator='\n')
  writer.writerow(csv_header(k))
  for row in rows:
    cells = [row['input'], row.get('output', ''), row.get('error', '')]
    for stage in STAGES:
      ranked = row.get(stage) or []
      for rank in range(k):
        cells += ([ranked[rank][0], ranked[rank][1], f'{ranked[rank][2]:.6g}']
                  if rank < len(ranked) else ['', '', ''])
    writer.writerow(cells)
  return buffer.getvalue()
