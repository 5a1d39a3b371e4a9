"""Restorer runs repeated over seeds (a suite's `seeds` option): the spread of each method's
accuracy across training seeds, beside the single-seed intervals over test images.

A replicate of run R trained with seed + k is run `R_seed{k}` (configs/methods.py); the seeds
table gives, per method, the mean, standard deviation (n - 1) and range over its runs R,
R_seed1, ... of each accuracy column, and how many seeds it rests on.
"""
import re

import numpy as np

from qrnet_jax.report.methods import Method, end_to_end_methods, recovery_methods
from qrnet_jax.report.methods import small_qrnet_methods, unseen_methods

COLUMNS = ('clean', 'noise', 'blur', 'average')
STATISTICS = ('mean', 'std', 'min', 'max')


def replicate(run: str, k: int) -> str:
  """The name of run `run` trained with seed + k (k >= 1)."""
  return f'{run}_seed{k}'


def seed_count(tests: dict, run: str) -> int:
  """How many seeds `run` was trained with: itself and its replicates 1, 2, ... in order."""
  found = {int(m.group(1)) for name in tests
           if (m := re.fullmatch(re.escape(run) + r'_seed(\d+)', name))}
  count = 1 if run in tests else 0
  while count and count in found:
    count += 1
  return count


def _as_replicate(method: Method, k: int) -> Method:
  if not k:
    return method
  return method._replace(sources={d: (replicate(run, k), metric)
                                  for d, (run, metric) in method.sources.items()})


def seeds_table(exp: dict, tests: dict, accuracy_values) -> dict:
  """{'columns', 'rows': [{'method', 'seeds', 'values': {'<column> <statistic>': x}}], 'notes'}
  for every method whose runs were repeated over seeds; None when none were."""
  c, u = exp['classifier'], exp.get('unseen')
  methods = (recovery_methods(c)[1:] + small_qrnet_methods(c)[1:] + end_to_end_methods(c)[3:4]
             + (unseen_methods(u)[1:] if u else []))
  rows = []
  for m in methods:
    counts = [seed_count(tests, run) for run, _ in dict.fromkeys(m.sources.values())]
    seeds = min(counts)
    if seeds < 2:
      continue
    values = [accuracy_values(tests, _as_replicate(m, k)) for k in range(seeds)]
    row = {}
    for column in COLUMNS:
      xs = np.array([v[column] for v in values if v[column] is not None], np.float64)
      if xs.size == seeds:
        row.update({f'{column} mean': float(xs.mean()), f'{column} std': float(xs.std(ddof=1)),
                    f'{column} min': float(xs.min()), f'{column} max': float(xs.max())})
    rows.append({'method': m.label, 'seeds': seeds, 'values': row})
  if not rows:
    return None
  return {'columns': [f'{c} {s}' for c in COLUMNS for s in ('mean', 'std')], 'rows': rows,
          'notes': ['Each method trained with the suite seed and each further seed (runs '
                    'R_seed1, ...), tested on the same images: mean and standard deviation '
                    '(n - 1) over the seeds, the range in results.json. The single-seed '
                    "tables' intervals are over test images; this spread is over training "
                    'seeds.']}
