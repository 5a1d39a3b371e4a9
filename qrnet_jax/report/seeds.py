"""Runs repeated over training seeds (a suite's `seeds` option): the spread of each method's
accuracy and of each finding across seeds, beside the single-seed intervals over test images.

A replicate of run R trained with seed + k is run `R_seed{k}` (configs/methods.py): the whole
pipeline, so the classifiers are trained again too and each replicate restorer reads its own
seed's classifiers. The seeds table gives, per method, the mean, standard deviation (n - 1) and
range over its runs R, R_seed1, ... of each accuracy column, and how many seeds it rests on; the
findings over seeds judge each of the paper's claims on every seed (findings.py's paired
difference and verdict) and count the seeds it holds on.
"""
import numpy as np

from qrnet_jax.report import findings as findings_lib
from qrnet_jax.report.methods import Method, end_to_end_methods, recovery_methods
from qrnet_jax.report.methods import small_qrnet_methods, unseen_methods
from qrnet_jax.run_names import replicate, replicate_number

COLUMNS = ('clean', 'noise', 'blur', 'average')
STATISTICS = ('mean', 'std', 'min', 'max')


def seed_count(tests: dict, run: str) -> int:
  """How many seeds `run` was trained with: itself and its replicates 1, 2, ... in order."""
  found = {replicate_number(name, run) for name in tests}
  count = 1 if run in tests else 0
  while count and count in found:
    count += 1
  return count


def as_replicate(method: Method, k: int) -> Method:
  """`method` with its numbers read from replicate k of each of its runs (k = 0: itself)."""
  if not k:
    return method
  return method._replace(sources={d: (replicate(run, k), metric)
                                  for d, (run, metric) in method.sources.items()})


def _seeds(tests: dict, *methods: Method) -> int:
  """How many seeds every run of `methods` was trained with."""
  return min(seed_count(tests, run) for m in methods for run, _ in m.sources.values())


def seeds_table(exp: dict, tests: dict, accuracy_values) -> dict:
  """{'columns', 'rows': [{'method', 'seeds', 'values': {'<column> <statistic>': x}}], 'notes'}
  for every method whose runs were repeated over seeds; None when none were."""
  c, u = exp['classifier'], exp.get('unseen')
  methods = (recovery_methods(c) + small_qrnet_methods(c)[1:]
             + end_to_end_methods(c, with_frozen=False)[1:] + (unseen_methods(u) if u else []))
  rows = []
  for m in methods:
    seeds = _seeds(tests, m)
    if seeds < 2:
      continue
    values = [accuracy_values(tests, as_replicate(m, k)) for k in range(seeds)]
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
                    'R_seed1, ...: the classifiers trained again with each seed), tested on '
                    'the same images: mean and standard deviation (n - 1) over the seeds, the '
                    "range in results.json. The single-seed tables' intervals are over test "
                    'images; this spread is over training seeds.']}


def findings_over_seeds(exp: dict, tests: dict, outcomes: dict) -> list:
  """Each of the paper's claims judged on every seed whose runs it has (2 or more): per seed
  the paired difference, its 95 % interval and verdict (findings.py), and over the seeds the
  differences' mean, standard deviation (n - 1), range and the number of seeds it holds on."""
  records = []
  for claim in findings_lib.claims(exp['classifier'], exp.get('unseen')):
    per_seed = []
    for k in range(_seeds(tests, claim.a, claim.b)):
      found = findings_lib.judge_claim(
          claim._replace(a=as_replicate(claim.a, k), b=as_replicate(claim.b, k)), tests, outcomes)
      if found is None:
        break
      per_seed.append(found)
    if len(per_seed) < 2:
      continue
    differences = np.array([p['difference'] for p in per_seed])
    records.append({
        'claim': claim.claim, 'margin': claim.margin, 'seeds': len(per_seed),
        'per_seed': per_seed, 'mean': float(differences.mean()),
        'std': float(differences.std(ddof=1)), 'min': float(differences.min()),
        'max': float(differences.max()),
        'holds_on': sum(p['verdict'] == 'holds' for p in per_seed)})
  return records
