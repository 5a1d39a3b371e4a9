"""The corruption section of the report (issue 21): every method on ImageNet-C's 19 families.

Each run evaluated on corruption families (levels 'FAMILY/SEVERITY') is a method: the classifier C
on its own images, or on its restorer's output. Its numbers, with the classifier alone as the
baseline (Hendrycks & Dietterich, ICLR 2019, Section 3, where the baseline is AlexNet):

  E(m, f, s)   = 1 - accuracy of method m on family f at severity s;  E(m, clean) likewise
  CE(m, f)     = sum_s E(m, f, s) / sum_s E(base, f, s)
  rCE(m, f)    = sum_s (E(m, f, s) - E(m, clean)) / sum_s (E(base, f, s) - E(base, clean))
  mCE, relative mCE: the means of CE and rCE over the 15 families of ImageNet-C, and over the 4
  held-out ones.

A family's accuracy is the mean over its severities. rCE is undefined where the baseline loses no
accuracy to the family (a denominator <= 0); the relative mCE averages the families where it is
defined. Tables are data as tables.py lays them out, rendered by markdown.py and long_csv.py; the
heatmaps (figures.py) read the per-method tables' severity columns.

Uncertainty, over the test images (every method sees the same corrupted images): each accuracy has
its 95 % interval (intervals.py); each method's mCE and relative mCE the percentile-bootstrap
interval of the ratio, the method and the baseline resampled on the same images
(stats.bootstrap_column_means); and the findings compare each method with the classifier alone
image by image (paired differences of the mean accuracies, as the paper's findings, findings.py).
"""
from typing import NamedTuple

import numpy as np

from qrnet_jax import stats
from qrnet_jax.corruptions import HELD_OUT, IMAGENET_C
from qrnet_jax.report import intervals
from qrnet_jax.report.findings import CLEAN_MARGIN, judged
from qrnet_jax.report.methods import levels_of
from qrnet_jax.report.tables import make_table, mean_or_none
from qrnet_jax.run_names import classifier_run

FAMILIES = IMAGENET_C + HELD_OUT
GROUPS = (('15', IMAGENET_C), ('held-out 4', HELD_OUT))
SUMMARY_COLUMNS = ['clean', 'mean 15', 'mean held-out 4', 'mean unseen', 'mCE 15',
                   'mCE held-out 4', 'relative mCE 15', 'relative mCE held-out 4']
SEEN = ' (seen)'  # marks a family the method trained on


class CorruptionMethod(NamedTuple):
  run: str
  label: str
  metric: str  # '{none|qrnet}/C/accuracy'
  trained_on: tuple  # the distortions its training saw
  seen: tuple  # those of them that are corruption families


def corruption_methods(exp: dict, runs: dict) -> list:
  """The runs evaluated on any corruption family, the classifier alone first (the baseline)."""
  c = exp['classifier']
  methods = []
  for run, record in runs.items():
    test = record['test']
    if not any(level.split('/')[0] in FAMILIES for level in test):
      continue
    restored = f'qrnet/{c}/accuracy' in test.get('clean', {})
    label = f'{run}: QRNet + {c}' if restored else f'{run}: {c}'
    trained_on = tuple(record.get('trained_on') or ())
    methods.append(CorruptionMethod(run, label, f'{"qrnet" if restored else "none"}/{c}/accuracy',
                                    trained_on, tuple(t for t in trained_on if t in FAMILIES)))
  return sorted(methods, key=lambda m: m.run != classifier_run(c))


def _accuracies(test, metric, family) -> list:
  return [test[level].get(metric) for level in levels_of(test, family)]


def corruption_error(test, metric, base_test, base_metric, family, relative=False):
  """CE (or, relative, rCE) of one family: the method's errors summed over severities over the
  baseline's; None where a severity is missing from either, or the denominator is <= 0."""
  if levels_of(test, family) != levels_of(base_test, family) or not levels_of(test, family):
    return None
  sums = []
  for t, m in ((test, metric), (base_test, base_metric)):
    accuracies = _accuracies(t, m, family)
    clean = t.get('clean', {}).get(m)
    if any(a is None for a in accuracies) or (relative and clean is None):
      return None
    sums.append(sum((1. - a) - ((1. - clean) if relative else 0.) for a in accuracies))
  return sums[0] / sums[1] if sums[1] > 0 else None


def _defined_mean(values):
  values = [v for v in values if v is not None]
  return float(sum(values) / len(values)) if values else None


def method_values(m: CorruptionMethod, tests: dict, base) -> dict:
  """{family: {accuracy, CE, relative CE, severity s}} and the means, clean accuracy, for one
  method; the CE columns None without a baseline."""
  test = tests[m.run]
  by_family = {}
  for family in FAMILIES:
    levels = levels_of(test, family)
    if not levels:
      continue
    errors = {}
    for column, relative in (('CE', False), ('relative CE', True)):
      errors[column] = (corruption_error(test, m.metric, tests[base.run], base.metric, family,
                                         relative) if base else None)
    by_family[family] = {'accuracy': mean_or_none(_accuracies(test, m.metric, family)), **errors,
                         **{f'severity {level.split("/")[1]}': test[level].get(m.metric)
                            for level in levels}}
  summary = {'clean': test.get('clean', {}).get(m.metric)}
  for name, group in GROUPS:
    rows = [by_family.get(f) for f in group]
    complete = all(rows)
    summary[f'mean {name}'] = mean_or_none(r['accuracy'] for r in rows) if complete else None
    summary[f'mCE {name}'] = mean_or_none(r['CE'] for r in rows) if complete else None
    summary[f'relative mCE {name}'] = (_defined_mean(r['relative CE'] for r in rows)
                                       if complete else None)
  unseen = [by_family[f]['accuracy'] for f in FAMILIES if f in by_family and f not in m.seen]
  summary['mean unseen'] = mean_or_none(unseen) if len(by_family) == len(FAMILIES) else None
  return {'families': by_family, 'summary': summary}


def _trained_on(m: CorruptionMethod) -> str:
  return ', '.join(m.trained_on) or 'clean images only'


def _sources(m: CorruptionMethod, tests, families) -> list:
  return [(m.run, m.metric, level) for f in families for level in levels_of(tests[m.run], f)]


def _unseen(m: CorruptionMethod):
  return [f for f in FAMILIES if f not in m.seen]


def summary_intervals(m: CorruptionMethod, tests, outcomes) -> dict:
  """95 % intervals of the summary's accuracies (bootstrap over test images; clean: Wilson's)."""
  groups = {'clean': None, 'mean 15': IMAGENET_C, 'mean held-out 4': HELD_OUT,
            'mean unseen': _unseen(m)}
  return {column: intervals.accuracy_interval(
      [(m.run, m.metric, 'clean')] if families is None else _sources(m, tests, families), outcomes)
          for column, families in groups.items()}


def _ratio(numerator, denominator):
  """numerator / denominator, NaN where the denominator is <= 0 (CE undefined)."""
  with np.errstate(divide='ignore', invalid='ignore'):
    return np.where(denominator > 0, numerator / np.where(denominator > 0, denominator, 1.), np.nan)


def ce_intervals(m: CorruptionMethod, base, tests, outcomes) -> dict:
  """{'mCE 15', 'relative mCE 15', ...: [low, high]}: the 95 % percentile-bootstrap intervals of
  the method's mCE and relative mCE, the method and the baseline resampled on the same test
  images; a resample where a mean is undefined is left out. {} for the baseline itself (1 by
  definition) or without per-image outcomes."""
  if base is None or m.run == base.run:
    return {}
  sources = [(m.run, m.metric, 'clean'), (base.run, base.metric, 'clean')]
  columns = {}  # family: (the method's severities, the baseline's) as columns of `sources`
  for family in FAMILIES:
    levels = levels_of(tests[m.run], family)
    if not levels or levels != levels_of(tests[base.run], family):
      continue
    start = len(sources)
    sources += [(run, metric, level) for run, metric in ((m.run, m.metric),
                                                          (base.run, base.metric))
                for level in levels]
    columns[family] = (slice(start, start + len(levels)),
                       slice(start + len(levels), start + 2 * len(levels)))
  found = intervals.per_image_columns(sources, outcomes)
  if found is None or not found[0].size:
    return {}
  errors = 1. - stats.bootstrap_column_means(found[1])  # (resamples, columns)
  ce = {f: _ratio(errors[:, a].sum(1), errors[:, b].sum(1)) for f, (a, b) in columns.items()}
  rce = {f: _ratio((errors[:, a] - errors[:, :1]).sum(1), (errors[:, b] - errors[:, 1:2]).sum(1))
         for f, (a, b) in columns.items()}
  found = {}
  for name, group in GROUPS:
    if all(f in columns for f in group):
      relative = np.array([rce[f] for f in group])
      defined = np.isfinite(relative).sum(0)
      with np.errstate(invalid='ignore', divide='ignore'):
        relative_mean = np.where(defined > 0, np.nansum(relative, 0) / defined, np.nan)
      found[f'mCE {name}'] = stats.percentile_interval(np.mean([ce[f] for f in group], axis=0))
      found[f'relative mCE {name}'] = stats.percentile_interval(relative_mean)
  return {column: list(interval) for column, interval in found.items() if interval is not None}


def method_table(m: CorruptionMethod, values: dict, tests, outcomes) -> dict:
  """A family per row: accuracy (mean over severities), CE, relative CE and each severity's
  accuracy; then the means and clean accuracy. Families the method trained on are marked."""
  severities = sorted({c for v in values['families'].values() for c in v if c.startswith('sev')},
                      key=lambda c: float(c.split()[1]))
  rows = []
  for family, row in values['families'].items():
    found = {'accuracy': intervals.accuracy_interval(_sources(m, tests, [family]), outcomes)}
    found.update({c: intervals.accuracy_interval(
        [(m.run, m.metric, f'{family}/{c.split()[1]}')], outcomes) for c in severities})
    rows.append((family + (SEEN if family in m.seen else ''), row, found))
  summary, found = values['summary'], summary_intervals(m, tests, outcomes)
  for name, _ in GROUPS:
    rows.append((f'mean {name}', {'accuracy': summary[f'mean {name}'],
                                  'CE': summary[f'mCE {name}'],
                                  'relative CE': summary[f'relative mCE {name}']},
                 {'accuracy': found[f'mean {name}']}))
  rows.append(('mean unseen', {'accuracy': summary['mean unseen']},
               {'accuracy': found['mean unseen']}))
  rows.append(('clean', {'accuracy': summary['clean']}, {'accuracy': found['clean']}))
  table = make_table(['accuracy', 'CE', 'relative CE'] + severities, rows, [
      f'Trained on: {_trained_on(m)}. Families marked{SEEN} are among them; the others are '
      'unseen.',
      'accuracy: the mean over the severities, with its 95 % interval over the test images; CE '
      'and relative CE against the classifier alone (this module\'s definitions in '
      'qrnet_jax/report/corruptions.py); the mean rows hold mCE and relative mCE.'])
  return {**table, 'title': f'Corruptions: {m.label}', 'row_header': 'family'}


def corruption_tables(exp: dict, runs: dict, outcomes: dict) -> dict:
  """{'corruptions': the summary, one row per method; 'corruptions_RUN': each method's families},
  or {} where no run was evaluated on a corruption family."""
  methods = corruption_methods(exp, runs)
  if not methods:
    return {}
  tests = {run: r['test'] for run, r in runs.items()}
  base = next((m for m in methods if m.run == classifier_run(exp['classifier'])), None)
  values = {m.run: method_values(m, tests, base) for m in methods}
  summary = make_table(SUMMARY_COLUMNS, [
      (m.label, values[m.run]['summary'],
       {**summary_intervals(m, tests, outcomes), **ce_intervals(m, base, tests, outcomes)})
      for m in methods], [
          'mean: accuracy averaged over the families\' severities, then over the 15 families of '
          'ImageNet-C, the 4 held-out ones, or those the method never trained on (unseen).',
          f'mCE and relative mCE against {base.label if base else "the classifier alone (no run)"}'
          ' (1 = as the classifier alone; lower is better); relative: the error added over '
          'clean error. Families undefined for relative CE (the baseline loses nothing to '
          'them) are left out of its mean. Their 95 % intervals: the bootstrap over the test '
          'images, the method and the baseline resampled together; an interval wholly below 1 '
          'is fewer errors than the classifier alone, resolved.',
          'Trained on: ' + '; '.join(f'{m.run}: {_trained_on(m)}' for m in methods) + '.'])
  tables = {'corruptions': {**summary, 'title': 'Corruptions: every method on ImageNet-C\'s 15 '
                                                'families and the 4 held-out ones'}}
  for m in methods:
    tables[f'corruptions_{m.run}'] = method_table(m, values[m.run], tests, outcomes)
  return tables


def corruption_findings(exp: dict, runs: dict, outcomes: dict) -> list:
  """Each method against the classifier alone, image by image on the same corrupted test images:
  its mean accuracy over the 15 families, the 4 held-out ones and (where it trained on some) the
  families it never saw, and its cost on clean images; records as findings.experiment_findings'
  (paired difference, 95 % bootstrap interval, verdict), [] without a baseline run."""
  methods = corruption_methods(exp, runs)
  base = next((m for m in methods if m.run == classifier_run(exp['classifier'])), None)
  if base is None:
    return []
  tests = {run: r['test'] for run, r in runs.items()}
  records = []
  for m in methods:
    if m is base:
      continue
    groups = [('mean 15', "ImageNet-C's 15 families", IMAGENET_C),
              ('mean held-out 4', 'the 4 held-out families', HELD_OUT)]
    if m.seen:
      groups.append(('mean unseen', 'the families it never trained on', _unseen(m)))
    c = exp['classifier']
    cells = [(f'{m.label} beats {c} alone ({what})', column, 0., _sources(m, tests, families),
              _sources(base, tests, families)) for column, what, families in groups]
    cells.append((f'{m.label} is at most 1 point below {c} alone on clean images', 'clean',
                  CLEAN_MARGIN, [(m.run, m.metric, 'clean')], [(base.run, base.metric, 'clean')]))
    for claim, column, margin, a, b in cells:
      found = judged(a, b, outcomes, margin)
      if found is None:
        continue
      records.append({
          'claim': claim, 'source': 'corruption suite', 'a': m.label, 'b': base.label,
          'column': column, 'top_levels': None, 'margin': margin, **found,
          'paper_difference': None})
  return records
