"""Uncertainty of accuracies and of paired differences, from each test image's outcome.

Every method of a suite is tested on the same test images with the same distortions (evaluation
noise comes from each image's index), so two methods can be compared image by image. Two intervals:

  wilson_interval(k, n)          a 95 % score interval of one accuracy (k of n images correct);
  bootstrap_interval(per_image)  a 95 % percentile interval of the mean of per-image values, from
                                 resampling the test images with replacement: used for accuracies
                                 averaged over levels and for paired differences, where a per-image
                                 value is the image's mean over the levels of (A correct - B correct).

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


def bootstrap_means(per_image, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED):
  """The means of `resamples` resamples (with replacement) of the per-image values."""
  values = np.asarray(per_image, np.float64)
  if values.ndim != 1 or values.size == 0:
    raise ValueError(f'need a non-empty vector of per-image values, got shape {values.shape}')
  n = values.size
  rng = np.random.default_rng(seed)
  means = np.empty(resamples)
  chunk = max(1, 2_000_000 // n)  # resamples drawn at once: bounded memory for any n
  for start in range(0, resamples, chunk):
    stop = min(resamples, start + chunk)
    picks = rng.integers(0, n, size=(stop - start, n))
    means[start:stop] = values[picks].mean(axis=1)
  return means


def bootstrap_interval(per_image, confidence: float = CONFIDENCE,
                       resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED) -> tuple:
  """The percentile bootstrap interval of the mean of `per_image` (Efron 1979)."""
  means = bootstrap_means(per_image, resamples, seed)
  tail = (1 - confidence) / 2
  low, high = np.quantile(means, [tail, 1 - tail])
  return float(low), float(high)


def verdict(low: float, high: float, margin: float = 0.) -> str:
  """A claim that some difference is above -margin, judged from its interval (low, high):
  'holds' when the whole interval is above -margin, 'reversed' when it is all below, else
  'not resolved' (the interval holds values on both sides)."""
  if low > -margin:
    return 'holds'
  if high < -margin:
    return 'reversed'
  return 'not resolved'
