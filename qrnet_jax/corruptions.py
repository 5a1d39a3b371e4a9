"""The common corruptions of ImageNet-C (Hendrycks & Dietterich, ICLR 2019) as jnp ops on the device.

Fifteen families of the benchmark and four held-out ones, each at severity 1-5 with ImageNet-C's
parameters as the reference implementation `imagecorruptions-imaug` 1.1.5 has them (its
corruptions.py; the tests compare with it). Images are float NHWC RGB in [0, 1], any size; the
severity is one integer per image (traced is fine) and the randomness comes from one PRNG key per
image (or one key, split per image), so `corrupt` is jittable and vmappable and an image's
corruption does not depend on the batch it is in. Outputs stay in [0, 1] and are not quantised to
8 bits (the reference returns uint8; its quantisation is left out).

Sizes (the rule). ImageNet-C's parameters in pixels assume a 224 px image. `corrupt` multiplies
every length in pixels by `scale`, by default min(H, W) / 224: the blur sigmas and radii (gaussian,
glass, defocus, motion), glass blur's displacement, snow's grain (its zoom factor, at least 1) and
streak, spatter's blob sizes and frost's texture scale. Integer lengths are rounded, at least 1.
Relative quantities are not scaled: zoom blur's factors, pixelate's factor, the noise levels, the
colour changes. Fog (a fractal of the image's own size), elastic (ImageNet-C already scales it with
the image) and frost's crop (cut to the image) follow the image as the reference does. At 224 px the
rule is the identity; `scale=1.` gives the reference's own parameters at any size (the reference
does not scale: its defocus disk of radius 10 on a 32 px image is the tests' comparison there).

Where the reference is sequential or uses a codec, the docstrings say what is done instead and how
close it comes (measured in tests/test_corruptions.py; table in docs/corruptions.md).
"""
import functools
import importlib.util
import math
import os
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

IMAGENET_C = ('gaussian_noise', 'shot_noise', 'impulse_noise', 'defocus_blur', 'glass_blur',
              'motion_blur', 'zoom_blur', 'snow', 'frost', 'fog', 'brightness', 'contrast',
              'elastic_transform', 'pixelate', 'jpeg_compression')
HELD_OUT = ('speckle_noise', 'gaussian_blur', 'spatter', 'saturate')
SEVERITIES = (1, 2, 3, 4, 5)
REFERENCE_SIDE = 224  # ImageNet-C's image side, at which its pixel parameters hold

# Severity parameters, copied from imagecorruptions-imaug 1.1.5 (imagecorruptions/corruptions.py).
GAUSSIAN_NOISE = (.08, .12, 0.18, 0.26, 0.38)
SHOT_NOISE = (60, 25, 12, 5, 3)
IMPULSE_NOISE = (.03, .06, .09, 0.17, 0.27)
SPECKLE_NOISE = (.15, .2, 0.35, 0.45, 0.6)
GAUSSIAN_BLUR = (1, 2, 3, 4, 6)
GLASS_BLUR = ((0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2))  # sigma, delta, iters
DEFOCUS_BLUR = ((3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5))  # radius, alias blur
MOTION_BLUR = ((10, 3), (15, 5), (15, 8), (15, 12), (20, 15))  # radius, sigma
ZOOM_BLUR = tuple(np.arange(1, stop, step) for stop, step in
                  ((1.11, 0.01), (1.16, 0.01), (1.21, 0.02), (1.26, 0.02), (1.31, 0.03)))
FOG = ((1.5, 2), (2., 2), (2.5, 1.7), (2.5, 1.5), (3., 1.4))  # strength, wibble decay
FROST = ((1, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75))  # image, frost weights
FROST_FILES = ('frost1.png', 'frost2.png', 'frost3.png', 'frost4.jpg', 'frost5.jpg', 'frost6.jpg')
SNOW = ((0.1, 0.3, 3, 0.5, 10, 4, 0.8),  # mean, std, zoom, threshold, radius, sigma, image weight
        (0.2, 0.3, 2, 0.5, 12, 4, 0.7),
        (0.55, 0.3, 4, 0.9, 12, 8, 0.7),
        (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65),
        (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55))
CONTRAST = (0.4, .3, .2, .1, .05)
BRIGHTNESS = (.1, .2, .3, .4, .5)
SATURATE = ((0.3, 0), (0.1, 0), (2, 0), (5, 0.1), (20, 0.2))  # saturation factor, offset
JPEG_QUALITY = (25, 18, 15, 10, 7)
PIXELATE = (0.6, 0.5, 0.4, 0.3, 0.25)
ELASTIC = tuple(250 * a for a in (0.05, 0.065, 0.085, 0.1, 0.12))  # alpha
HIGHEST = jax.lax.Precision.HIGHEST


def default_scale(height: int, width: int) -> float:
  """The rule: pixel lengths scale with the shorter side against ImageNet-C's 224 px."""
  return min(height, width) / REFERENCE_SIDE


def _length(value, scale):
  """A length in pixels, scaled; integer lengths stay integers >= 1."""
  if isinstance(value, (int, np.integer)):
    return max(1, int(round(value * scale)))
  return float(value) * scale


# ---------------------------------------------------------------- linear operators along one axis

def border_index(index, size, mode):
  """Source index for `index` (any integers, also far outside [0, size)) under a border mode:
  'nearest' (clamp), 'reflect' (scipy's: d c b a | a b c d) or 'reflect101' (OpenCV's default
  BORDER_REFLECT_101, numpy's 'reflect': d c b | a b c d)."""
  if mode == 'nearest':
    return np.clip(index, 0, size - 1)
  if mode == 'reflect':
    index = np.mod(index, 2 * size)
    return np.where(index >= size, 2 * size - 1 - index, index)
  if size == 1:
    return np.zeros_like(index)
  period = 2 * (size - 1)
  index = np.mod(index, period)
  return np.where(index >= size, period - index, index)


def _filter_matrix(size, taps, mode):
  """(size, size) matrix of a centred 1-D correlation with `taps` under a border mode."""
  radius = (len(taps) - 1) // 2
  matrix = np.zeros((size, size))
  rows = np.arange(size)
  for k, tap in enumerate(taps):
    np.add.at(matrix, (rows, border_index(rows + k - radius, size, mode)), tap)
  return matrix


def _gaussian_taps(sigma, truncate=4.0):
  """scipy.ndimage.gaussian_filter's taps (skimage.filters.gaussian): radius int(truncate*sigma+.5)."""
  radius = int(truncate * sigma + 0.5)
  if sigma <= 0 or radius == 0:
    return np.ones(1)
  x = np.arange(-radius, radius + 1)
  taps = np.exp(-0.5 * x ** 2 / sigma ** 2)
  return taps / taps.sum()


def _gaussian_matrices(size, sigmas, mode='nearest', truncate=4.0):
  """(len(sigmas), size, size) float32: one Gaussian filter matrix per severity."""
  return np.stack([_filter_matrix(size, _gaussian_taps(s, truncate), mode)
                   for s in sigmas]).astype(np.float32)


def _apply_axes(image, rows, cols):
  """rows @ image @ cols^T on every channel of an (H, W, C) image."""
  return jnp.einsum('ij,jkc,lk->ilc', rows, image, cols, precision=HIGHEST)


def _zoom_matrix(size, factor):
  """Rows of scipy's clipped zoom (ImageNet-C's clipped_zoom): the central ceil(size/factor)
  pixels zoomed by `factor` with linear interpolation (scipy.ndimage.zoom, order 1), the first
  `size` of the result."""
  crop = int(np.ceil(size / float(factor)))
  top = (size - crop) // 2
  out = int(round(crop * factor))
  coords = np.arange(size) * ((crop - 1) / (out - 1) if out > 1 else 0.)
  low = np.floor(coords).astype(int)
  frac = coords - low
  matrix = np.zeros((size, size))
  rows = np.arange(size)
  np.add.at(matrix, (rows, top + np.clip(low, 0, crop - 1)), 1. - frac)
  np.add.at(matrix, (rows, top + np.clip(low + 1, 0, crop - 1)), frac)
  return matrix


# ---------------------------------------------------------------- colour

def rgb_to_hsv(rgb):
  """skimage.color.rgb2hsv in jnp: hue in [0, 1); ties between channels as skimage breaks them."""
  r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
  value = rgb.max(-1)
  delta = value - rgb.min(-1)
  safe = jnp.where(delta == 0., 1., delta)
  saturation = jnp.where(delta == 0., 0., delta / jnp.where(value == 0., 1., value))
  hue = jnp.where(b == value, 4. + (r - g) / safe,
                  jnp.where(g == value, 2. + (b - r) / safe, (g - b) / safe))
  hue = jnp.where(delta == 0., 0., jnp.mod(hue / 6., 1.))
  return jnp.stack([hue, saturation, value], -1)


def hsv_to_rgb(hsv):
  """skimage.color.hsv2rgb in jnp."""
  h, s, v = hsv[..., 0], hsv[..., 1], hsv[..., 2]
  sector = jnp.floor(h * 6.)
  f = h * 6. - sector
  p, q, t = v * (1. - s), v * (1. - f * s), v * (1. - (1. - f) * s)
  sector = jnp.mod(sector, 6.).astype(jnp.int32)[..., None]
  choices = [jnp.stack(c, -1) for c in ((v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v),
                                        (v, p, q))]
  return jnp.select([sector == i for i in range(6)], choices)


def _gray(rgb):
  """OpenCV's COLOR_RGB2GRAY weights."""
  return rgb @ jnp.asarray([0.299, 0.587, 0.114], rgb.dtype)


# ---------------------------------------------------------------- families (one image each)
# Each takes (image (H, W, 3), severity index 0-4 (traced), key, static tables) and returns the
# corrupted image, unclipped where clipping is done once by `corrupt`.

def _gaussian_noise(image, s, key, t):
  return image + jax.random.normal(key, image.shape) * jnp.asarray(GAUSSIAN_NOISE)[s]


def poisson_by_inversion(key, rate, max_rate):
  """Poisson draws of the given rates (each at most max_rate, which may be traced) by inverting the
  CDF: one uniform per value, counted against the cumulative probabilities up to
  max_rate + 8 sqrt(max_rate) + 10 (beyond it the probability is below float32's resolution). A
  vectorised loop, run one row at a time so that its working set stays in the CPU's cache. The
  bound is traced on purpose: XLA:CPU runs the loop as a while loop then, 6x faster here than the
  scan a fixed count becomes; all in all about 20x faster than jax.random.poisson, whose two
  samplers both run over every value under vmap."""
  steps = jnp.floor(max_rate + 8. * jnp.sqrt(max_rate) + 10.).astype(jnp.int32)

  def row(args):
    rate, uniform = args

    def term(k, state):
      count, probability, cumulative = state
      count = count + (cumulative < uniform)
      probability = probability * rate / k
      return count, probability, cumulative + probability

    probability = jnp.exp(-rate)
    return jax.lax.fori_loop(1, steps + 1, term,
                             (jnp.zeros_like(rate), probability, probability))[0]

  return jax.lax.map(row, (rate, jax.random.uniform(key, rate.shape)))


def _shot_noise(image, s, key, t):
  rate = jnp.asarray(SHOT_NOISE, jnp.float32)[s]
  return poisson_by_inversion(key, image * rate, rate) / rate


def _impulse_noise(image, s, key, t):
  """skimage's random_noise(mode='s&p', amount=c): each value (pixel and channel) is replaced with
  probability c, by 0 or 1 with equal probability."""
  flip_key, salt_key = jax.random.split(key)
  flipped = jax.random.uniform(flip_key, image.shape) <= jnp.asarray(IMPULSE_NOISE)[s]
  salted = jax.random.uniform(salt_key, image.shape) <= 0.5
  return jnp.where(flipped, salted.astype(image.dtype), image)


def _speckle_noise(image, s, key, t):
  return image + image * jax.random.normal(key, image.shape) * jnp.asarray(SPECKLE_NOISE)[s]


def _contrast(image, s, key, t):
  means = image.mean(axis=(0, 1), keepdims=True)
  return (image - means) * jnp.asarray(CONTRAST)[s] + means


def _brightness(image, s, key, t):
  hsv = rgb_to_hsv(image)
  hsv = hsv.at[..., 2].set(jnp.clip(hsv[..., 2] + jnp.asarray(BRIGHTNESS)[s], 0., 1.))
  return hsv_to_rgb(hsv)


def _saturate(image, s, key, t):
  factor, offset = jnp.asarray(SATURATE, jnp.float32)[s]
  hsv = rgb_to_hsv(image)
  hsv = hsv.at[..., 1].set(jnp.clip(hsv[..., 1] * factor + offset, 0., 1.))
  return hsv_to_rgb(hsv)


def _gaussian_blur(image, s, key, t):
  """skimage.filters.gaussian (truncate 4, border 'nearest'), per channel."""
  return _apply_axes(image, t['rows'][s], t['cols'][s])


def _defocus_blur(image, s, key, t):
  """A disk (anti-aliased by a small Gaussian) correlated with each channel, OpenCV's reflect-101
  border (cv2.filter2D), as ImageNet-C; by FFT (XLA:CPU's convolution with one kernel per image
  was 30 times slower)."""
  kernel = t['kernel'][s]
  radius = kernel.shape[0] // 2
  height, width = image.shape[:2]
  padded = jnp.pad(image, ((radius, radius), (radius, radius), (0, 0)), mode='reflect')
  shape = padded.shape[:2]
  # Correlation = convolution with the flipped kernel; the valid part starts at 2 * radius.
  spectrum = (jnp.fft.rfft2(padded, shape, axes=(0, 1))
              * jnp.fft.rfft2(kernel[::-1, ::-1], shape)[..., None])
  out = jnp.fft.irfft2(spectrum, shape, axes=(0, 1))
  return out[2 * radius:2 * radius + height, 2 * radius:2 * radius + width]


def _motion_shifts(image, weights, angle):
  """ImageNet-C's _motion_blur: sum_i weights[i] * the image shifted by i pixels along `angle`
  (degrees), shifts rounded as the reference rounds them, borders repeated (edge pixels); a shift
  as long as the image stops the sum (the reference's `break`), without renormalising."""
  height, width = image.shape[:2]
  radians = jnp.deg2rad(angle)
  out = jnp.zeros_like(image)
  inside = jnp.bool_(True)
  for i in range(weights.shape[0]):
    dy = -jnp.ceil(i * jnp.sin(radians) - 0.5).astype(jnp.int32)
    dx = -jnp.ceil(i * jnp.cos(radians) - 0.5).astype(jnp.int32)
    inside = inside & (jnp.abs(dy) < height) & (jnp.abs(dx) < width)
    rows = jnp.clip(jnp.arange(height) - dy, 0, height - 1)
    cols = jnp.clip(jnp.arange(width) - dx, 0, width - 1)
    shifted = jnp.take(jnp.take(image, rows, axis=0), cols, axis=1)
    out = out + jnp.where(inside, weights[i], 0.) * shifted
  return out


def _motion_weights(radius, sigma, length):
  """ImageNet-C's one-sided Gaussian motion kernel (2*radius+1 taps), zero-padded to `length`."""
  taps = np.exp(-np.arange(2 * radius + 1) ** 2 / (2 * sigma ** 2))
  return np.pad(taps / taps.sum(), (0, length - taps.size)).astype(np.float32)


def _motion_blur(image, s, key, t):
  angle = jax.random.uniform(key, (), minval=-45., maxval=45.)
  return _motion_shifts(image, t['weights'][s], angle)


def _zoom_blur(image, s, key, t):
  """The mean of the image and its clipped zooms (bilinear, as scipy.ndimage.zoom order 1)."""
  weights = t['weights'][s]
  zoomed = jnp.einsum('f,fij,jkc,flk->ilc', weights, t['rows'][s], image, t['cols'][s],
                      precision=HIGHEST)
  return (image + zoomed) / (1. + t['count'][s])


def _pixelate(image, s, key, t):
  """PIL's BOX resize down by the severity's factor, then NEAREST back up, as one matrix per axis.
  PIL rounds to 8 bits after each of its two passes and the reference quantises; this is not
  quantised (within 1/255 of the reference's float value)."""
  return _apply_axes(image, t['rows'][s], t['cols'][s])


def _glass_blur(image, s, key, t):
  """ImageNet-C's glass blur with its sequential pixel swaps replaced by a parallel gather.

  The reference blurs (Gaussian, sigma), truncates to 8 bits, then for `iterations` sweeps from the
  bottom-right to the top-left swaps each interior pixel with one at a random offset in
  [-delta, delta) (a permutation; a pixel can travel several times), and blurs again. Here each
  interior pixel takes the value at an independent random offset in [-delta, delta), all at once
  (some values are copied twice, some dropped), in 2 such passes per sweep (1 where delta is 1: a
  sweep moves a value about twice when it can also move down-right; chosen by measuring the PSNR
  against the reference's), then the same blur. How close: tests/test_corruptions.py compares the
  per-pixel mean and PSNR to the clean image over many draws (docs/corruptions.md).
  """
  height, width = image.shape[:2]
  rows_blur, cols_blur = t['rows'][s], t['cols'][s]
  delta = t['delta'][s]
  x = jnp.floor(jnp.clip(_apply_axes(image, rows_blur, cols_blur), 0., 1.) * 255.) / 255.
  ys, xs = jnp.meshgrid(jnp.arange(height), jnp.arange(width), indexing='ij')
  interior = (ys > delta) & (ys <= height - delta) & (xs > delta) & (xs <= width - delta)
  for i, pass_key in enumerate(jax.random.split(key, t['most_passes'])):
    offsets = jax.random.randint(pass_key, (2, height, width), -delta, delta)
    source_y = jnp.where(interior, ys + offsets[0], ys)
    source_x = jnp.where(interior, xs + offsets[1], xs)
    moved = x[jnp.clip(source_y, 0, height - 1), jnp.clip(source_x, 0, width - 1)]
    x = jnp.where(i < t['passes'][s], moved, x)
  return _apply_axes(x, rows_blur, cols_blur)


def elastic_warp(image, dy, dx):
  """scipy.ndimage.map_coordinates(order=1, mode='reflect') at (row + dy, column + dx) per pixel."""
  height, width = image.shape[:2]
  ys, xs = jnp.meshgrid(jnp.arange(height, dtype=jnp.float32),
                        jnp.arange(width, dtype=jnp.float32), indexing='ij')

  def corners(coord, size):
    low = jnp.floor(coord)
    frac = coord - low
    low = low.astype(jnp.int32)
    reflect = lambda i: jnp.where(jnp.mod(i, 2 * size) >= size,
                                  2 * size - 1 - jnp.mod(i, 2 * size), jnp.mod(i, 2 * size))
    return reflect(low), reflect(low + 1), frac[..., None]

  y0, y1, fy = corners(ys + dy, height)
  x0, x1, fx = corners(xs + dx, width)
  top = image[y0, x0] * (1. - fx) + image[y0, x1] * fx
  bottom = image[y1, x0] * (1. - fx) + image[y1, x1] * fx
  return top * (1. - fy) + bottom * fy


def _elastic_transform(image, s, key, t):
  """imagecorruptions' elastic transform: uniform displacements in +-0.005*H, smoothed by a
  Gaussian of sigma 0.01*(H, W) (truncate 3, scipy's 'reflect' border), times alpha, then a
  bilinear warp. (This is the reference package's version; ImageNet-C's own code also applies a
  random affine first.)"""
  height = image.shape[0]
  limit = height * 0.005
  fields = jax.random.uniform(key, (2,) + image.shape[:2], minval=-limit, maxval=limit)
  fields = jnp.einsum('ij,njk,lk->nil', t['rows'], fields, t['cols'], precision=HIGHEST)
  fields = fields * jnp.asarray(ELASTIC, jnp.float32)[s]
  return elastic_warp(image, fields[1], fields[0])


def plasma_fractal(key, size: int, decay):
  """ImageNet-C's diamond-square height map (size a power of two) in [0, 1], in jnp.

  Level by level: from the corner values at spacing `step` (an n x n grid), the square centres,
  then the two sets of diamond points, each the mean of its four neighbours (wrapping around) plus
  a uniform displacement of +-wibble^2; the four interleave into the 2n x 2n grid of spacing
  step/2 (the reference writes them into strided slices of one array).
  """
  corners = jnp.zeros((1, 1), jnp.float32)
  wibble = jnp.float32(100.)
  for level_key in jax.random.split(key, max(1, int(math.log2(size)))):
    n = corners.shape[0]
    noise = wibble * wibble * jax.random.uniform(level_key, (3, n, n), minval=-1., maxval=1.)
    square = corners + jnp.roll(corners, -1, axis=0)
    centres = (square + jnp.roll(square, -1, axis=1)) / 4. + noise[0]
    left = (centres + jnp.roll(centres, 1, axis=0) + corners + jnp.roll(corners, -1, axis=1)
            ) / 4. + noise[1]
    top = (centres + jnp.roll(centres, 1, axis=1) + corners + jnp.roll(corners, -1, axis=0)
           ) / 4. + noise[2]
    corners = jnp.stack([jnp.stack([corners, left]), jnp.stack([top, centres])]
                        ).transpose(2, 0, 3, 1).reshape(2 * n, 2 * n)
    wibble = wibble / decay
  corners = corners - corners.min()
  return corners / corners.max()


def _fog(image, s, key, t):
  strength, decay = jnp.asarray(FOG, jnp.float32)[s]
  height, width = image.shape[:2]
  fractal = plasma_fractal(key, t['map_size'], decay)[:height, :width, None]
  peak = image.max()
  return (image + strength * fractal) * peak / (peak + strength)


def _snow(image, s, key, t):
  """ImageNet-C's snow: a zoomed, thresholded Gaussian layer, motion-blurred along a random angle in
  [-135, -45] degrees, rounded to 8 bits, added twice (once rotated by 180 degrees) to the image
  brightened towards 1.5 * gray + 0.5."""
  mean, std, _, threshold, _, _, weight = (jnp.asarray(SNOW, jnp.float32)[s, i] for i in range(7))
  noise_key, angle_key = jax.random.split(key)
  layer = mean + std * jax.random.normal(noise_key, image.shape[:2] + (1,))
  layer = _apply_axes(layer, t['rows'][s], t['cols'][s])
  layer = jnp.clip(jnp.where(layer < threshold, 0., layer), 0., 1.)
  angle = jax.random.uniform(angle_key, (), minval=-135., maxval=-45.)
  layer = _motion_shifts(layer, t['weights'][s], angle)
  layer = jnp.round(layer * 255.) / 255.
  image = weight * image + (1. - weight) * jnp.maximum(image, _gray(image)[..., None] * 1.5 + 0.5)
  return image + layer + layer[::-1, ::-1]


def _frost(image, s, key, t):
  """ImageNet-C's frost: one of its six frost photographs (read from the installed
  imagecorruptions package), enlarged to cover the image (1.1 times, times `scale`), a random crop
  added with the severity's weights. Enlarged here with PIL's bicubic filter (the reference: OpenCV's
  INTER_CUBIC), once per image size, outside the traced function."""
  textures, shapes = t['textures'], t['shapes']
  height, width = image.shape[:2]
  choice_key, y_key, x_key = jax.random.split(key, 3)
  index = jax.random.randint(choice_key, (), 0, textures.shape[0])
  top = jax.random.randint(y_key, (), 0, shapes[index, 0] - height)
  left = jax.random.randint(x_key, (), 0, shapes[index, 1] - width)
  crop = jax.lax.dynamic_slice(textures[index], (top, left, 0), (height, width, 3))
  image_weight, frost_weight = jnp.asarray(FROST, jnp.float32)[s]
  return image_weight * image + frost_weight * crop.astype(image.dtype) / 255.


# The quantisation tables of the JPEG standard (Annex K), as libjpeg scales them by quality.
_LUMA_TABLE = np.asarray([
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99]).reshape(8, 8)
_CHROMA_TABLE = np.full((8, 8), 99)
_CHROMA_TABLE[:4, :4] = [[17, 18, 24, 47], [18, 21, 26, 66], [24, 26, 56, 99], [47, 66, 99, 99]]


def jpeg_quant_table(base, quality):
  """libjpeg's jpeg_set_quality (baseline: entries in 1-255)."""
  percent = 5000 // quality if quality < 50 else 200 - 2 * quality
  return np.clip((base * percent + 50) // 100, 1, 255)


def _dct_matrix():
  k, n = np.meshgrid(np.arange(8), np.arange(8), indexing='ij')
  matrix = np.cos((2 * n + 1) * k * np.pi / 16) * np.sqrt(2. / 8)
  matrix[0] /= np.sqrt(2.)
  return matrix.astype(np.float32)


def _jpeg_plane(plane, table):
  """8x8 DCT, quantisation, dequantisation, inverse DCT of one level-shifted plane (H, W), H and W
  multiples of 8; samples rounded and clamped as a decoder does."""
  height, width = plane.shape
  dct = jnp.asarray(_dct_matrix())
  blocks = (plane - 128.).reshape(height // 8, 8, width // 8, 8)
  coefficients = jnp.einsum('ij,ajbk,lk->abil', dct, blocks, dct, precision=HIGHEST)
  coefficients = jnp.round(coefficients / table) * table
  blocks = jnp.einsum('ji,abjk,kl->aibl', dct, coefficients, dct, precision=HIGHEST)
  return jnp.clip(jnp.round(blocks.reshape(height, width) + 128.), 0., 255.)


def _fancy_upsample_matrix(size):
  """libjpeg's triangular ('fancy') 2x chroma upsampling along one axis, edges repeated."""
  matrix = np.zeros((2 * size, size))
  for i in range(size):
    matrix[2 * i, i] += 0.75
    matrix[2 * i, max(i - 1, 0)] += 0.25
    matrix[2 * i + 1, i] += 0.75
    matrix[2 * i + 1, min(i + 1, size - 1)] += 0.25
  return matrix.astype(np.float32)


def _jpeg_compression(image, s, key, t):
  """JPEG at the severity's quality as a JPEG codec computes it, in floating point on the device.

  Baseline JPEG as PIL (libjpeg-turbo) saves and reads it: 8-bit input, JFIF YCbCr, 4:2:0 chroma
  (2x2 means), 8x8 DCT, the standard tables scaled by quality, rounding to the quantisation steps,
  inverse DCT, triangular chroma upsampling, back to RGB, 8-bit output. Not bit-exact: libjpeg
  computes the DCTs in integers and rounds its downsampling and upsampling differently; sides that
  are not multiples of 16 are padded by repeating edge pixels (as libjpeg pads its blocks) and the
  chroma upsampling at that edge reads the padding. Measured against PIL: tests/test_corruptions.py.
  """
  height, width = image.shape[:2]
  padded_h, padded_w = -(-height // 16) * 16, -(-width // 16) * 16
  rgb = jnp.round(jnp.clip(image, 0., 1.) * 255.)
  rgb = jnp.pad(rgb, ((0, padded_h - height), (0, padded_w - width), (0, 0)), mode='edge')
  to_ycc = jnp.asarray([[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5],
                        [0.5, -0.418688, -0.081312]], jnp.float32)
  ycc = jnp.round(jnp.einsum('hwc,kc->hwk', rgb, to_ycc, precision=HIGHEST)
                  + jnp.asarray([0., 128., 128.]))
  luma = _jpeg_plane(ycc[..., 0], t['luma'][s])
  chroma = ycc[..., 1:].reshape(padded_h // 2, 2, padded_w // 2, 2, 2).mean(axis=(1, 3))
  chroma = jnp.stack([_jpeg_plane(jnp.round(chroma[..., c]), t['chroma'][s]) for c in range(2)],
                     -1)
  chroma = jnp.round(_apply_axes(chroma, t['rows'], t['cols'])) - 128.
  to_rgb = jnp.asarray([[1.402, 0.], [-0.714136, -0.344136], [0., 1.772]], jnp.float32)
  rgb = luma[..., None] + jnp.einsum('hwk,ck->hwc', chroma[..., ::-1], to_rgb, precision=HIGHEST)
  return jnp.round(jnp.clip(rgb, 0., 255.))[:height, :width] / 255.


SPATTER = ((0.65, 0.3, 4, 0.69, 0.6, 0),  # mean, std, sigma, threshold, strength/sigma, mud
           (0.65, 0.3, 3, 0.68, 0.6, 0),
           (0.65, 0.3, 2, 0.68, 0.5, 0),
           (0.65, 0.3, 1, 0.65, 1.5, 1),
           (0.67, 0.4, 1, 0.65, 1.5, 1))
_CHAMFER_MOVES = tuple((dy, dx, cost) for dy in range(-2, 3) for dx in range(-2, 3)
                       for cost in [{1: 1., 2: 1.4, 5: 2.1969}.get(dy * dy + dx * dx)]
                       if cost is not None)  # OpenCV's 5x5 mask for DIST_L2


def _shift(plane, dy, dx, fill):
  """plane[y + dy, x + dx], `fill` outside."""
  padded = jnp.pad(plane, 2, constant_values=fill)
  height, width = plane.shape
  return padded[2 + dy:2 + dy + height, 2 + dx:2 + dx + width]


def _box3(plane):
  """cv2.blur(plane, (3, 3)): the 3x3 mean, reflect-101 border."""
  padded = jnp.pad(plane, 1, mode='reflect')
  height, width = plane.shape
  return sum(padded[dy:dy + height, dx:dx + width] for dy in range(3) for dx in range(3)) / 9.


def canny(plane, low=50., high=150.):
  """cv2.Canny(uint8 plane, low, high) (3x3 Sobel with repeated borders, L1 magnitude, non-maximum
  suppression in four directions, hysteresis over 8-neighbours) as a boolean edge map."""
  padded = jnp.pad(plane, 1, mode='edge')
  height, width = plane.shape
  at = lambda dy, dx: padded[1 + dy:1 + dy + height, 1 + dx:1 + dx + width]
  gx = (at(-1, 1) + 2 * at(0, 1) + at(1, 1)) - (at(-1, -1) + 2 * at(0, -1) + at(1, -1))
  gy = (at(1, -1) + 2 * at(1, 0) + at(1, 1)) - (at(-1, -1) + 2 * at(-1, 0) + at(-1, 1))
  magnitude = jnp.abs(gx) + jnp.abs(gy)
  neighbour = lambda dy, dx: _shift(magnitude, dy, dx, 0.)
  ax, ay = jnp.abs(gx), jnp.abs(gy) * 32768.
  tan22 = ax * 13573.  # OpenCV's fixed-point tan(22.5 degrees) << 15
  tan67 = tan22 + ax * 65536.
  sign = jnp.where(gx * gy < 0, -1, 1)
  diagonal = jnp.where(sign < 0,
                       (magnitude > neighbour(-1, 1)) & (magnitude > neighbour(1, -1)),
                       (magnitude > neighbour(-1, -1)) & (magnitude > neighbour(1, 1)))
  maximum = jnp.where(
      ay < tan22, (magnitude > neighbour(0, -1)) & (magnitude >= neighbour(0, 1)),
      jnp.where(ay > tan67, (magnitude > neighbour(-1, 0)) & (magnitude >= neighbour(1, 0)),
                diagonal))
  candidate = maximum & (magnitude > low)
  strong = candidate & (magnitude > high)

  def grow(state):
    edges, _ = state
    near = functools.reduce(jnp.logical_or, [_shift(edges, dy, dx, False)
                                             for dy in (-1, 0, 1) for dx in (-1, 0, 1)])
    grown = edges | (candidate & near)
    return grown, jnp.any(grown != edges)

  return jax.lax.while_loop(lambda state: state[1], grow, (strong, jnp.bool_(True)))[0]


def chamfer_distance(zeros, limit=20.):
  """cv2.distanceTransform(DIST_L2, 5) (its 5x5 chamfer metric: 1, 1.4, 2.1969) to the nearest True
  pixel, truncated at `limit`, by parallel relaxation (the reference scans sequentially; the same
  minimum over paths)."""
  def relax(_, distance):
    return functools.reduce(jnp.minimum, [_shift(distance, dy, dx, jnp.inf) + cost
                                          for dy, dx, cost in _CHAMFER_MOVES], distance)

  # Every move costs at least 1: distances up to the limit settle within limit + 1 rounds.
  distance = jax.lax.fori_loop(0, int(limit) + 1, relax, jnp.where(zeros, 0., jnp.inf))
  return jnp.minimum(distance, limit)


def equalize_histogram(plane):
  """cv2.equalizeHist on integer values 0-255 (float array)."""
  counts = jnp.bincount(plane.astype(jnp.int32).ravel(), length=256)
  first = jnp.argmax(counts > 0)
  scale = 255. / jnp.maximum(plane.size - counts[first], 1)
  table = jnp.clip(jnp.round((jnp.cumsum(counts) - counts[first]) * scale), 0, 255)
  table = jnp.where(jnp.arange(256) <= first, 0., table)
  return jnp.where(counts[first] == plane.size, plane, table[plane.astype(jnp.int32)])


def _spatter(image, s, key, t):
  return spatter_from_noise(image, s, jax.random.normal(key, image.shape[:2]), t)


def spatter_from_noise(image, s, noise, t):
  """ImageNet-C's spatter from a standard normal field `noise` (H, W): a blurred, thresholded Gaussian layer; severities 1-3 water (edges of
  the layer, their distance map equalised and embossed, OpenCV's Canny, distanceTransform,
  equalizeHist and filter2D in jnp: canny, chamfer_distance, equalize_histogram), 4-5 mud (the
  layer's blurred mask darkens to brown)."""
  mean, std, _, threshold, strength, _ = (jnp.asarray(SPATTER, jnp.float32)[s, i]
                                          for i in range(6))
  layer = mean + std * noise[..., None]
  layer = _apply_axes(layer, t['rows'][s], t['cols'][s])[..., 0]
  layer = jnp.where(layer < threshold, 0., layer)

  # Water.
  layer8 = jnp.mod(jnp.floor(layer * 255.), 256.)  # numpy's astype(uint8)
  distance = chamfer_distance(canny(layer8))
  distance = equalize_histogram(jnp.floor(_box3(distance)))
  padded = jnp.pad(distance, 1, mode='reflect')
  height, width = distance.shape
  emboss = sum(w * padded[1 + dy:1 + dy + height, 1 + dx:1 + dx + width]
               for dy, dx, w in ((-1, -1, -2), (-1, 0, -1), (0, -1, -1), (0, 0, 1), (0, 1, 1),
                                 (1, 0, 1), (1, 1, 2)))
  emboss = jnp.round(_box3(jnp.clip(emboss, 0., 255.)))
  wet = layer8 * emboss
  wet = wet / jnp.maximum(wet.max(), 1e-12) * strength
  water = image + wet[..., None] * jnp.asarray([175., 238., 238.]) / 255.

  # Mud.
  mask = (layer > threshold).astype(jnp.float32)[..., None]
  mask = _apply_axes(mask, t['mud_rows'][s], t['mud_cols'][s])
  mask = jnp.where(mask < 0.8, 0., mask)
  mud = image * (1. - mask) + mask * jnp.asarray([63., 42., 20.]) / 255.
  return jnp.where(jnp.asarray(SPATTER)[s, 5] > 0, mud, water)


FAMILIES = {
    'gaussian_noise': _gaussian_noise, 'shot_noise': _shot_noise,
    'impulse_noise': _impulse_noise, 'defocus_blur': _defocus_blur, 'glass_blur': _glass_blur,
    'motion_blur': _motion_blur, 'zoom_blur': _zoom_blur, 'snow': _snow, 'frost': _frost,
    'fog': _fog, 'brightness': _brightness, 'contrast': _contrast,
    'elastic_transform': _elastic_transform, 'pixelate': _pixelate,
    'jpeg_compression': _jpeg_compression, 'speckle_noise': _speckle_noise, 'spatter': _spatter, 'gaussian_blur': _gaussian_blur, 'saturate': _saturate,
}


# ---------------------------------------------------------------- static tables per image size

def _disk(radius, alias_blur):
  """ImageNet-C's anti-aliased disk kernel (its `disk`), in numpy; radius may be fractional."""
  half = 8 if radius <= 8 else int(math.ceil(radius))
  grid = np.arange(-half, half + 1)
  xx, yy = np.meshgrid(grid, grid)
  disk = ((xx ** 2 + yy ** 2) <= radius ** 2).astype(np.float64)
  disk /= disk.sum()
  ksize = 3 if radius <= 8 else 5  # cv2.GaussianBlur(disk, (ksize, ksize), alias_blur)
  offsets = np.arange(ksize) - ksize // 2
  taps = np.exp(-offsets ** 2 / (2. * alias_blur ** 2))
  matrix = _filter_matrix(disk.shape[0], taps / taps.sum(), 'reflect101')
  return matrix @ disk @ matrix.T


def _pixelate_matrix(size, factor):
  """PIL: resize to int(size*factor) with BOX (its precompute_coeffs), then back with NEAREST."""
  small = int(size * factor)
  scale = size / small
  support = 0.5 * max(scale, 1.)
  down = np.zeros((small, size))
  for out in range(small):
    centre = (out + 0.5) * scale
    low = max(int(centre - support + 0.5), 0)
    high = min(int(centre + support + 0.5), size)
    x = (np.arange(low, high) - centre + 0.5) / max(scale, 1.)
    weights = ((x > -0.5) & (x <= 0.5)).astype(np.float64)
    down[out, low:high] = weights / weights.sum()
  # NEAREST: Pillow's ImagingScaleAffine adds the ratio up in floating point, pixel by pixel, and
  # truncates; the sum's rounding puts a source position that falls on a pixel boundary now and
  # then on the pixel before, so it is replayed here as Pillow computes it.
  sources, position = [], 0.5 * (small / size)
  for _ in range(size):
    sources.append(int(position))
    position += small / size
  up = np.zeros((size, small))
  up[np.arange(size), np.minimum(sources, small - 1)] = 1.
  return up @ down


@functools.lru_cache(maxsize=None)
def _frost_photographs():
  """The six frost photographs of the installed imagecorruptions package, RGB uint8. Found without
  importing the package (its code needs OpenCV, scikit-image and numba; the photographs do not):
  scripts/setup_env.sh installs it without its dependencies."""
  from PIL import Image
  spec = importlib.util.find_spec('imagecorruptions')
  if spec is None or not spec.submodule_search_locations:
    raise ModuleNotFoundError(
        "frost reads ImageNet-C's frost photographs from the imagecorruptions package: "
        'pip install --no-deps imagecorruptions-imaug==1.1.5 (scripts/setup_env.sh does)')
  folder = os.path.join(list(spec.submodule_search_locations)[0], 'frost')
  photographs = []
  for name in FROST_FILES:
    with Image.open(os.path.join(folder, name)) as photo:
      photographs.append(photo.convert('RGB'))
  return tuple(photographs)


@functools.lru_cache(maxsize=8)  # zoom blur: 5 x 16 matrices per axis, 160 MB at 500 px
def tables(family: str, height: int, width: int, scale: float):
  """Static per-size arrays of a family (filter matrices, kernels, textures), one per severity."""
  if family == 'gaussian_blur':
    sigmas = [_length(float(c), scale) for c in GAUSSIAN_BLUR]
    return {'rows': _gaussian_matrices(height, sigmas), 'cols': _gaussian_matrices(width, sigmas)}
  if family == 'glass_blur':
    sigmas = [_length(float(c[0]), scale) for c in GLASS_BLUR]
    deltas = [_length(c[1], scale) for c in GLASS_BLUR]
    # Gather passes per sweep of swaps: 1 where the offsets are {-1, 0}, 2 otherwise (measured:
    # a sweep of swaps moves a value about twice when it can also move down-right).
    passes = [c[2] * (1 if delta == 1 else 2) for c, delta in zip(GLASS_BLUR, deltas)]
    return {'rows': _gaussian_matrices(height, sigmas), 'cols': _gaussian_matrices(width, sigmas),
            'delta': np.asarray(deltas, np.int32), 'passes': np.asarray(passes, np.int32),
            'most_passes': max(passes)}
  if family == 'defocus_blur':
    kernels = [_disk(_length(float(r), scale), alias) for r, alias in DEFOCUS_BLUR]
    side = max(k.shape[0] for k in kernels)
    return {'kernel': np.stack([np.pad(k, (side - k.shape[0]) // 2) for k in kernels]
                               ).astype(np.float32)}
  if family in ('motion_blur', 'snow'):
    params = MOTION_BLUR if family == 'motion_blur' else [c[4:6] for c in SNOW]
    radii = [_length(int(r), scale) for r, _ in params]
    sigmas = [_length(float(g), scale) for _, g in params]
    length = 2 * max(radii) + 1
    out = {'weights': np.stack([_motion_weights(r, g, length) for r, g in zip(radii, sigmas)])}
    if family == 'snow':
      zooms = [max(1., _length(float(c[2]), scale)) for c in SNOW]
      out['rows'] = np.stack([_zoom_matrix(height, z) for z in zooms]).astype(np.float32)
      out['cols'] = np.stack([_zoom_matrix(width, z) for z in zooms]).astype(np.float32)
    return out
  if family == 'zoom_blur':
    most = max(len(f) for f in ZOOM_BLUR)
    pad = lambda m, n: np.concatenate([m, np.zeros((most - n,) + m.shape[1:])])
    rows = [pad(np.stack([_zoom_matrix(height, z) for z in f]), len(f)) for f in ZOOM_BLUR]
    cols = [pad(np.stack([_zoom_matrix(width, z) for z in f]), len(f)) for f in ZOOM_BLUR]
    weights = [np.pad(np.ones(len(f)), (0, most - len(f))) for f in ZOOM_BLUR]
    return {'rows': np.stack(rows).astype(np.float32), 'cols': np.stack(cols).astype(np.float32),
            'weights': np.stack(weights).astype(np.float32),
            'count': np.asarray([len(f) for f in ZOOM_BLUR], np.float32)}
  if family == 'pixelate':
    return {'rows': np.stack([_pixelate_matrix(height, f) for f in PIXELATE]).astype(np.float32),
            'cols': np.stack([_pixelate_matrix(width, f) for f in PIXELATE]).astype(np.float32)}
  if family == 'elastic_transform':
    sigma = np.asarray([height, width]) * 0.01
    return {'rows': _filter_matrix(height, _gaussian_taps(sigma[0], 3.), 'reflect'
                                   ).astype(np.float32),
            'cols': _filter_matrix(width, _gaussian_taps(sigma[1], 3.), 'reflect'
                                   ).astype(np.float32)}
  if family == 'spatter':
    sigmas = [_length(float(c[2]), scale) for c in SPATTER]
    mud_sigmas = [_length(float(c[4]), scale) if c[5] else 0. for c in SPATTER]
    return {'rows': _gaussian_matrices(height, sigmas), 'cols': _gaussian_matrices(width, sigmas),
            'mud_rows': _gaussian_matrices(height, mud_sigmas),
            'mud_cols': _gaussian_matrices(width, mud_sigmas)}
  if family == 'jpeg_compression':
    padded_h, padded_w = -(-height // 16) * 16, -(-width // 16) * 16
    return {'luma': np.stack([jpeg_quant_table(_LUMA_TABLE, q) for q in JPEG_QUALITY]
                             ).astype(np.float32),
            'chroma': np.stack([jpeg_quant_table(_CHROMA_TABLE, q) for q in JPEG_QUALITY]
                               ).astype(np.float32),
            'rows': _fancy_upsample_matrix(padded_h // 2),
            'cols': _fancy_upsample_matrix(padded_w // 2)}
  if family == 'fog':
    return {'map_size': 1 << (max(height, width, 3) - 1).bit_length()}
  if family == 'frost':
    from PIL import Image
    resized = []
    for photo in _frost_photographs():
      factor = 1.1 * max(scale, height / photo.height, width / photo.width)
      size = (int(np.ceil(photo.width * factor)), int(np.ceil(photo.height * factor)))
      resized.append(np.asarray(photo.resize(size, Image.BICUBIC)))
    shape = np.max([r.shape for r in resized], axis=0)
    textures = np.stack([np.pad(r, ((0, shape[0] - r.shape[0]), (0, shape[1] - r.shape[1]),
                                    (0, 0))) for r in resized])
    return {'textures': textures, 'shapes': np.asarray([r.shape[:2] for r in resized], np.int32)}
  return {}


# ---------------------------------------------------------------- entry point

def _image_keys(key, batch_size):
  """One key per image: a batch of keys as given, or one key split."""
  key_ndim = 0 if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key) else 1
  if key.ndim > key_ndim:
    return key
  return jax.random.split(key, batch_size)


def corrupt(images, family: str, severity, key, scale: Optional[float] = None):
  """One corruption family at a severity per image.

  Args:
    images: float NHWC RGB in [0, 1].
    family: a name in IMAGENET_C or HELD_OUT (static).
    severity: integer 1-5, a scalar or one per image (B,), may be traced (a traced value outside
      1-5 is clipped into it; a concrete one raises ValueError).
    key: PRNG key, or one per image (B keys); deterministic families ignore it.
    scale: static multiplier of ImageNet-C's pixel lengths; default min(H, W) / 224 (module doc).

  Returns:
    The corrupted images, same shape and dtype, in [0, 1].
  """
  if family not in FAMILIES:
    raise ValueError(f'unknown corruption family {family!r}; allowed: '
                     f'{", ".join(IMAGENET_C + HELD_OUT)}')
  batch_size, height, width = images.shape[:3]
  if not isinstance(severity, jax.core.Tracer):
    values = np.asarray(severity)
    if not np.all(np.isin(values, SEVERITIES)):
      raise ValueError(f'severity must be an integer in 1-5, got {values.tolist()}')
  index = jnp.broadcast_to(jnp.clip(jnp.asarray(severity, jnp.int32), 1, 5) - 1, (batch_size,))
  scale = default_scale(height, width) if scale is None else float(scale)
  table = {name: jnp.asarray(value) if isinstance(value, np.ndarray) else value
           for name, value in tables(family, height, width, scale).items()}
  keys = _image_keys(key, batch_size)
  one = functools.partial(FAMILIES[family], t=table)
  out = jax.vmap(lambda image, s, k: one(image, s, k))(images.astype(jnp.float32), index, keys)
  return jnp.clip(out, 0., 1.).astype(images.dtype)

