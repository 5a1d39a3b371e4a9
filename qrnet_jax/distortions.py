"""Distortions of Section IV-A as jnp ops, computed on the device inside the jitted step.

Images are float NHWC in [0, 1]. Gaussian noise levels are standard deviations in 0-255 pixel units;
Gaussian blur levels are standard deviations in pixels with kernel size 4*sigma - 1 (Section IV-A),
which is OpenCV's `GaussianBlur(img, (k, k), sigma)` with its default reflect-101 border.
Beside the paper's two types, every common corruption of ImageNet-C (qrnet_jax/corruptions.py) is a
type too, its levels the severities 1-5: `distort` and Algorithm 1's `random_distortion` take
either.
"""
import dataclasses
import functools
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from qrnet_jax import corruptions

NOISE = 'noise'
BLUR = 'blur'
DISTORTION_TYPES = (NOISE, BLUR)  # the paper's
CORRUPTION_TYPES = corruptions.IMAGENET_C + corruptions.HELD_OUT  # levels: severities 1-5
TYPES = DISTORTION_TYPES + CORRUPTION_TYPES
# The paper's five evaluation levels per type (Section IV-A).
PAPER_LEVELS = {NOISE: (20., 40., 60., 80., 100.), BLUR: (2., 4., 6., 8., 10.)}


@dataclasses.dataclass(frozen=True)
class DistortionSpec:
  """Algorithm 1's sets D (types) and P_d (levels per type), static inside jit."""
  types: tuple
  levels: tuple  # ((type, (level, ...)), ...); a corruption's levels are its severities

  @property
  def levels_by_type(self):
    return dict(self.levels)


def unit_range(images):
  """uint8 images (as the data pipeline batches them) as float32 in [0, 1]."""
  return jnp.asarray(images).astype(jnp.float32) / 255.


def _per_image(value, batch_size):
  """A scalar or (B,) value as a (B, 1, 1, 1) float32 array that broadcasts over NHWC."""
  value = jnp.asarray(value, jnp.float32)
  if value.ndim == 0:
    value = jnp.full((batch_size,), value)
  if value.shape != (batch_size,):
    raise ValueError(f'sigma must be a scalar or have shape ({batch_size},), got {value.shape}')
  return value.reshape(batch_size, 1, 1, 1)


def gaussian_noise(images, sigma, key, mean=0.0):
  """Adds independent Gaussian noise to every pixel and channel, then clips to [0, 1].

  Args:
    images: float NHWC in [0, 1].
    sigma: standard deviation in 0-255 pixel units, a scalar or one value per image (B,).
    key: JAX PRNG key; the same key gives the same noise. Or one key per image (a batch of B
      keys), so an image's noise does not depend on the batch it is in.
    mean: mean of the noise in 0-255 pixel units.
  """
  sigma = _per_image(sigma, images.shape[0])
  key_ndim = 0 if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key) else 1
  if key.ndim > key_ndim:
    noise = jax.vmap(lambda k: jax.random.normal(k, images.shape[1:], jnp.float32))(key)
  else:
    noise = jax.random.normal(key, images.shape, jnp.float32)
  return jnp.clip(images + (mean + sigma * noise) / 255., 0., 1.).astype(images.dtype)


def blur_kernel_size(sigma):
  """Kernel size 4*sigma - 1 (Section IV-A); for a non-integer sigma the nearest odd size, >= 3.

  Works on numbers and numpy arrays (giving numpy results, usable as static sizes) and on jax
  arrays, also traced ones.
  """
  xp = jnp if isinstance(sigma, jax.Array) else np
  radius = xp.round((4. * xp.asarray(sigma, xp.float32) - 2.) / 2.)
  return 2 * xp.maximum(radius, 1.).astype(xp.int32) + 1


def max_blur_sigma(image_side: int) -> float:
  """The largest blur sigma for images of this side: at sigma = side (4*side - 1 taps) the Gaussian
  already flattens an image to nearly its mean; larger kernels only cost time and memory."""
  return float(image_side)


def max_blur_kernel_size(levels) -> int:
  """The static kernel size that covers every blur level in `levels`."""
  return int(np.max(blur_kernel_size(np.asarray(levels, np.float32))))


def _blur_taps(sigma, radius):
  """Per-image normalised Gaussian taps at offsets -radius..radius, shape (B, 2*radius+1).

  Taps outside an image's own kernel (size `blur_kernel_size(sigma)`) are zero, so one static
  `radius` serves a batch with a different sigma per image.
  """
  offsets = jnp.arange(-radius, radius + 1, dtype=jnp.float32)
  own_radius = ((blur_kernel_size(sigma) - 1) // 2)[:, None]
  taps = jnp.exp(-offsets ** 2 / (2. * sigma[:, None] ** 2))
  taps = jnp.where(jnp.abs(offsets) <= own_radius, taps, 0.)
  return taps / taps.sum(axis=1, keepdims=True)


def _blur_axis(images, taps, radius, axis):
  """Separable 1-D pass along `axis` (1 = height, 2 = width) with reflect-101 borders.

  The pass is one matrix per image, (size, size), built by one scatter of the taps to the source
  rows they read (reflected): a fixed number of operations whatever the kernel size, so tracing
  and compiling do not grow with sigma.
  """
  size = images.shape[axis]
  offsets = np.arange(-radius, radius + 1)
  rows = np.broadcast_to(np.arange(size)[:, None], (size, offsets.size))
  sources = corruptions.border_index(rows + offsets[None, :], size, 'reflect101')
  matrix = jnp.zeros((images.shape[0], size, size), taps.dtype).at[:, rows, sources].add(
      jnp.broadcast_to(taps[:, None, :], (images.shape[0], size, offsets.size)))
  spec = 'bij,bjwc->biwc' if axis == 1 else 'bij,bhjc->bhic'
  return jnp.einsum(spec, matrix, images, precision=jax.lax.Precision.HIGHEST)


def gaussian_blur(images, sigma, max_kernel_size: Optional[int] = None):
  """Gaussian blur with kernel size 4*sigma - 1 and OpenCV's reflect-101 border.

  Equals `cv2.GaussianBlur(image, (k, k), sigma)` for k = 4*sigma - 1 (integer sigma). A non-integer
  sigma gets the nearest odd kernel size, at least 3. The blur is separable (rows, then columns).

  Args:
    images: float NHWC.
    sigma: standard deviation in pixels, a scalar or one value per image (B,), may be traced.
    max_kernel_size: static upper bound of the kernel sizes in the batch; required when sigma is
      traced (e.g. a level drawn inside jit), since the kernel's extent must be static. Taps beyond
      each image's own kernel are zero.
  """
  batch_size = images.shape[0]
  if max_kernel_size is None:
    if isinstance(sigma, jax.core.Tracer):
      raise ValueError('gaussian_blur: sigma is traced, so pass a static max_kernel_size '
                       '(e.g. max_blur_kernel_size(levels))')
    max_kernel_size = max_blur_kernel_size(sigma)
  side = max(images.shape[1:3])
  if int(max_kernel_size) > int(blur_kernel_size(max_blur_sigma(side))):
    raise ValueError(f'gaussian_blur: a {int(max_kernel_size)}-tap kernel on {side} px images; '
                     f'sigma may be at most {max_blur_sigma(side):g}, the image side, beyond which '
                     'the blur flattens the image to its mean')
  sigma = _per_image(sigma, batch_size).reshape(batch_size)
  return _separable_blur(images, sigma, (int(max_kernel_size) - 1) // 2)


@functools.partial(jax.jit, static_argnames='radius')
def _separable_blur(images, sigma, radius):
  taps = _blur_taps(sigma, radius).astype(images.dtype)
  return _blur_axis(_blur_axis(images, taps, radius, axis=1), taps, radius, axis=2)


def distort(images, key, distortion_type: str, level, max_blur_kernel_size=None):
  """Applies one named distortion at `level` (scalar or per image, may be traced): the paper's
  noise (sigma, 0-255 units) or blur (sigma, px), or a common corruption at a severity 1-5
  (corruptions.corrupt, its pixel lengths scaled to the image). `key`: one PRNG key, or one per
  image."""
  if distortion_type == NOISE:
    return gaussian_noise(images, level, key)
  if distortion_type == BLUR:
    return gaussian_blur(images, level, max_blur_kernel_size)
  if distortion_type in CORRUPTION_TYPES:
    return corruptions.corrupt(images, distortion_type, level, key)
  raise ValueError(f'unknown distortion type {distortion_type!r}; allowed: {", ".join(TYPES)}')


def random_distortion(images, key, types: Sequence[str], levels: dict):
  """Algorithm 1: one distortion type and one of its levels drawn per batch, applied to all of it.

  Args:
    images: float NHWC in [0, 1].
    key: PRNG key; it decides the type, the level and the noise.
    types: the distortion types to draw from ('noise', 'blur' or corruptions of TYPES); one type
      is RecNet/fine-tuning "single", both "multiple".
    levels: {type: sequence of levels}, e.g. PAPER_LEVELS; a corruption's are severities 1-5.

  Returns:
    (distorted images, type index into `types`, level index into levels[type]).
  """
  type_key, level_key, noise_key = jax.random.split(key, 3)
  type_index = jax.random.randint(type_key, (), 0, len(types))
  max_blur = max_blur_kernel_size(levels[BLUR]) if BLUR in types else None

  def branch(name):
    table = jnp.asarray(levels[name], jnp.float32)

    def apply(images):
      level_index = jax.random.randint(level_key, (), 0, table.shape[0])
      out = distort(images, noise_key, name, table[level_index], max_blur)
      return out, level_index
    return apply

  distorted, level_index = jax.lax.switch(type_index, [branch(t) for t in types], images)
  return distorted, type_index, level_index
