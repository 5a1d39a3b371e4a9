"""A small generated image-classification dataset for tests and the no-download smoke run.

Each class is a family of oriented sinusoidal stripes (its own orientation and frequency) with a
random phase, a random colour tint and mild noise: easy to classify when clean, and harder after
blur (which removes the stripes) or heavy noise, which is what QRNet must undo.
"""
import numpy as np


def synthetic_images(num_images: int, num_classes: int, image_size: int, seed: int):
  """Returns (uint8 images (N, S, S, 3), int32 labels (N,)), balanced over classes."""
  rng = np.random.default_rng(seed)
  labels = np.arange(num_images, dtype=np.int32) % num_classes
  rng.shuffle(labels)
  angles = np.pi * np.arange(num_classes) / num_classes
  frequencies = 2. + 4. * (np.arange(num_classes) % 3) / 2.  # cycles per image: 2, 4, 6
  coords = np.arange(image_size, dtype=np.float32) / image_size
  yy, xx = np.meshgrid(coords, coords, indexing='ij')
  angle, frequency = angles[labels], frequencies[labels]
  phase = rng.uniform(0., 2. * np.pi, num_images)
  projection = (np.cos(angle)[:, None, None] * xx + np.sin(angle)[:, None, None] * yy)
  stripes = 0.5 + 0.4 * np.sin(2. * np.pi * frequency[:, None, None] * projection
                               + phase[:, None, None])
  tint = rng.uniform(0.5, 1., (num_images, 1, 1, 3))
  images = stripes[..., None] * tint + rng.normal(0., 0.03, stripes.shape + (3,))
  return np.round(np.clip(images, 0., 1.) * 255.).astype(np.uint8), labels
