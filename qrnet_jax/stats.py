"""Uncertainty of accuracies and of paired differences, from each test image's outcome.

Every method of a suite is tested on the same test images with the same distortions (evaluation
noise comes from each image's index), so two methods can be compared image by image. Two intervals:

  wilson_interval(k, n)          a 95 % score interval of one accuracy (k of n images correct);
  bootstrap_interval(per_image)  a 95 % percentile interval of the mean of per-image values, from
                                 resampling the test images with replacement: used for accuracies
                                 averaged over levels and for paired differences, where a per-image
                                 value is the image's mean over the levels of (A correct - B correct).

A statistic of several columns of per-image values (mCE: a ratio of error sums of two methods)
resamples the images once for all columns (bootstrap_column_means), so the columns stay paired,
and takes its interval from the statistic's values over the resamples (percentile_interval).

numpy on the host; the bootstrap draws from a fixed seed, so a report's numbers are reproducible.
"""
import math

import numpy as np
from scipy import special

CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0


def wilson_interval(k: int, n: int, confidence: float = CONFIDENCE) -> tuple:
  """Wilson's score interval for a proportion k / n (Wilson 1927)."""
  if n <= 0 or not 0 <= k <= n:
    raise ValueError(f'need 0 <= k <= n and n > 0, got k={k}, n={n}')
  z = float(special.ndtri(0.5 + confidence / 2))
  p = k / n
  centre = (p + z * z / (2 * n)) / (1 + z * z / n)
  half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
  return max(0., centre - half), min(1., centre + half)


def _resamples(n: int, resamples: int, seed: int):
  """(start, stop, picks): the resamples in chunks, picks (stop - start, n) image positions drawn
  with replacement; the same draws for a given (n, resamples, seed)."""
  rng = np.random.default_rng(seed)
  chunk = max(1, 2_000_000 // n)  # resamples drawn at once: bounded memory for any n
  for start in range(0, resamples, chunk):
    stop = min(resamples, start + chunk)
    yield start, stop, rng.integers(0, n, size=(stop - start, n))


def bootstrap_means(per_image, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED):
  """The means of `resamples` resamples (with replacement) of the per-image values."""
  values = np.asarray(per_image, np.float64)
  if values.ndim != 1 or values.size == 0:
    raise ValueError(f'need a non-empty vector of per-image values, got shape {values.shape}')
  means = np.empty(resamples)
  for start, stop, picks in _resamples(values.size, resamples, seed):
    means[start:stop] = values[picks].mean(axis=1)
  return means


def bootstrap_column_means(per_image, resamples: int = BOOTSTRAP_RESAMPLES,
                           seed: int = BOOTSTRAP_SEED):
  """(resamples, K): each column's mean in each resample of the rows (images) of `per_image`
  (N, K); every column is resampled with the same images, so columns of two methods stay paired.
  The resamples are bootstrap_means' draws."""
  values = np.asarray(per_image, np.float64)
  if values.ndim != 2 or values.shape[0] == 0:
    raise ValueError(f'need an (images, columns) matrix with images, got shape {values.shape}')
  n = values.shape[0]
  means = np.empty((resamples, values.shape[1]))
  for start, stop, picks in _resamples(n, resamples, seed):
    rows = np.arange(stop - start)[:, None] * n  # each resample's own block of counts
    counts = np.bincount((rows + picks).ravel(), minlength=(stop - start) * n)
    means[start:stop] = counts.reshape(stop - start, n) @ values / n
  return means


def percentile_interval(draws, confidence: float = CONFIDENCE):
  """The percentile interval of a statistic's bootstrap draws, leaving out the draws where it is
  undefined (NaN); None when it is undefined in every draw."""
  draws = np.asarray(draws, np.float64)
  if not np.isfinite(draws).any():
    return None
  tail = (1 - confidence) / 2
  low, high = np.nanquantile(draws, [tail, 1 - tail])
  return float(low), float(high)


def bootstrap_interval(per_image, confidence: float = CONFIDENCE,
                       resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED) -> tuple:
  """The percentile bootstrap interval of the mean of `per_image` (Efron 1979)."""
  return percentile_interval(bootstrap_means(per_image, resamples, seed), confidence)


def verdict(low: float, high: float, margin: float = 0.) -> str:
  """A claim that some difference is above -margin, judged from its interval (low, high):
  'holds' when the whole interval is above -margin, 'reversed' when it is all below, else
  'not resolved' (the interval holds values on both sides)."""
  if low > -margin:
    return 'holds'
  if high < -margin:
    return 'reversed'
  return 'not resolved'
