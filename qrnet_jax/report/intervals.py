"""95 % intervals of the report's accuracies and paired differences, from the runs' outcomes.

A table cell is the mean over a set of (run, metric, level) of accuracy: one level (a per-level
cell), a distortion's levels (noise, blur, their strongest TOP_LEVELS), both (average), or clean in
one or two runs (RecNet and fine-tuned (single) read two). Per image, the cell's value is the mean
of its outcomes over that set; the cell is the mean over images. One level: Wilson's interval;
several: the bootstrap over test images (qrnet_jax.stats). Two cells are compared image by image:
the per-image difference of their values, its mean and its bootstrap interval.
"""
import functools

import numpy as np

from qrnet_jax import stats
from qrnet_jax.report.methods import Method, levels_of


def cell_sources(method: Method, column: str, tests: dict, top=None) -> list:
  """The (run, metric, level) a cell of `method` averages: column clean, noise, blur or average
  (`top`: only each distortion's strongest levels). Empty where a run is missing."""
  if column == 'clean':
    return [(run, metric, 'clean') for run, metric in dict.fromkeys(method.sources.values())
            if run in tests]
  if column == 'average':
    noise, blur = (cell_sources(method, d, tests, top) for d in ('noise', 'blur'))
    return noise + blur if noise and blur else []
  run, metric = method.sources[column]
  if run not in tests:
    return []
  levels = levels_of(tests[run], column)
  return [(run, metric, level) for level in levels[-top if top else 0:]]


def per_image_columns(sources: list, outcomes: dict):
  """(index, values (N, K)): each source's outcome (1 correct, 0 not) on the N test images every
  source has, a column per source; None where a source has no outcomes."""
  vectors = []
  for run, metric, level in sources:
    found = outcomes.get(run)
    correct = found.get(level, metric) if found is not None else None
    if correct is None:
      return None
    vectors.append((found.index, correct))
  if not vectors:
    return None
  common = functools.reduce(np.intersect1d, [index for index, _ in vectors])
  return common, np.stack([correct[np.searchsorted(index, common)] for index, correct in vectors],
                          axis=1).astype(np.float64)


def per_image(sources: list, outcomes: dict):
  """(index, values): each test image's mean outcome over `sources`, on the images every source
  has; None where a source has no outcomes."""
  found = per_image_columns(sources, outcomes)
  return None if found is None else (found[0], found[1].mean(axis=1))


def accuracy_interval(sources: list, outcomes: dict):
  """[low, high] of the cell's accuracy, or None without outcomes."""
  found = per_image(sources, outcomes)
  if found is None or not found[0].size:
    return None
  values = found[1]
  if len(sources) == 1:
    return list(stats.wilson_interval(int(values.sum()), values.size))
  return list(stats.bootstrap_interval(values))


def paired_difference(sources_a: list, sources_b: list, outcomes: dict):
  """{'difference', 'low', 'high', 'images'}: A's cell minus B's on the images both have, with
  the bootstrap interval of the per-image differences; None without outcomes."""
  a, b = per_image(sources_a, outcomes), per_image(sources_b, outcomes)
  if a is None or b is None:
    return None
  common = np.intersect1d(a[0], b[0])
  if not common.size:
    return None
  differences = (a[1][np.searchsorted(a[0], common)] - b[1][np.searchsorted(b[0], common)])
  low, high = stats.bootstrap_interval(differences)
  return {'difference': float(differences.mean()), 'low': low, 'high': high,
          'images': int(common.size)}
