"""The report's tables as data: Tables 2-5 and Figure 6's numbers, from every run's test results.

A table is {'columns', 'rows': [{'method', 'values': {column: number}}], 'notes'}; renderers
(markdown.py, long_csv.py) and figures.py read these, never the runs' files. Tables average accuracy
over each distortion's levels, as the paper does, and give clean accuracy a column of its own. Where
an experiment names a Caltech dataset, the paper's numbers sit beside ours (the paper gives no clean
or per-level accuracies). A run that is missing drops the rows that need it.
"""
import math

import numpy as np

from qrnet_jax import metrics, stats
from qrnet_jax.report import intervals
from qrnet_jax.report import paper as paper_numbers
from qrnet_jax.report.methods import (DISTORTIONS, TOP_LEVELS, Method, end_to_end_methods,
                                      has_runs, levels_of, recovery_methods, small_qrnet_methods,
                                      level_order, unseen_methods)

ACCURACY_COLUMNS = ['clean', 'noise', 'blur', 'average']
PAPER_COLUMNS = ['paper noise', 'paper blur', 'paper average']
QUALITY_COLUMNS = ['noise distorted', 'noise recovered', 'blur distorted', 'blur recovered']
LATENCY_BATCHES = ('1', '32')  # Table 4's columns when nothing was timed

TABLE_TITLES = {
    'table2': 'Table 2: accuracy recovered for a classifier trained on clean images',
    'table3': 'Table 3: small QRNet',
    'table4': 'Table 4: end-to-end training against fine-tuned classifiers',
    'table5': 'Table 5: image quality of the distorted and the recovered images',
    'table6': "Figure 6's numbers: an unseen classifier (the paper draws them; it has no Table 6)",
}


def mean_or_none(values):
  """The mean, or None where there is nothing to average or any value is missing or not finite."""
  values = list(values)
  if not values or any(v is None or not math.isfinite(v) for v in values):
    return None
  return float(np.mean(values))


def level_mean(tests, run, metric, distortion, top=None):
  """`metric` averaged over `distortion`'s levels in `run` (its `top` strongest only if given)."""
  if run not in tests:
    return None
  levels = levels_of(tests[run], distortion)
  return mean_or_none(tests[run][level].get(metric) for level in levels[-top if top else 0:])


def accuracy_values(tests, method: Method) -> dict:
  """Clean, noise, blur and average accuracy; clean is the mean over the method's runs."""
  values = {d: level_mean(tests, *method.sources[d], d) for d in DISTORTIONS}
  values['clean'] = mean_or_none(tests[run].get('clean', {}).get(metric)
                                 for run, metric in dict.fromkeys(method.sources.values())
                                 if run in tests)
  values['average'] = mean_or_none([values['noise'], values['blur']])
  return {column: values[column] for column in ACCURACY_COLUMNS}


def make_table(columns, rows, notes):
  """{'columns', 'rows': [{'method', 'values', 'intervals'}], 'notes'}, or None when there are no
  rows. rows: (method, values) or (method, values, {column: [low, high]})."""
  if not rows:
    return None
  return {'columns': columns, 'notes': notes,
          'rows': [{'method': row[0], 'values': {c: row[1].get(c) for c in columns},
                    'intervals': {c: i for c, i in (row[2] if len(row) > 2 else {}).items()
                                  if i is not None}}
                   for row in rows]}


def row_intervals(tests, outcomes, method: Method, columns: dict) -> dict:
  """{column: [low, high]}: the 95 % interval of each accuracy cell of `method`'s row, from the
  runs' per-image outcomes (intervals.py); columns: {column: (clean|noise|blur|average, top)}."""
  return {column: intervals.accuracy_interval(
      intervals.cell_sources(method, kind, tests, top), outcomes)
          for column, (kind, top) in columns.items()}


_AVERAGED = ("Accuracy is averaged over each distortion's levels; average = the mean of the noise "
             "and blur columns. The paper gives no clean accuracies.")
_SINGLE = ("{0}: noise levels from the run trained on noise alone, blur levels from the one "
           "trained on blur alone; clean = the mean of the two runs' clean accuracy.")


def accuracy_table(exp, tests, outcomes, table, methods, before=(), after=(), extra=lambda m: {},
                   notes=(), interval_columns=()):
  """Rows of accuracy (Tables 2, 3, 4, 6) with their 95 % intervals, and the paper's numbers
  where it has the dataset."""
  paper = paper_numbers.ACCURACY.get(table, {}).get(exp.get('paper'))
  columns = {c: (c, None) for c in ACCURACY_COLUMNS} | dict(interval_columns)
  rows = [(m.label, {**accuracy_values(tests, m), **extra(m),
                     **(dict(zip(PAPER_COLUMNS, paper.get(m.key, ()))) if paper else {})},
           row_intervals(tests, outcomes, m, columns))
          for m in methods if has_runs(tests, m)]
  paper_note = [f"paper: the paper's numbers for {exp['paper']}."] if paper else []
  columns = [*before, *ACCURACY_COLUMNS, *(PAPER_COLUMNS if paper else []), *after]
  return make_table(columns, rows, [_AVERAGED, *notes, *paper_note])


def table2(exp, tests, outcomes):
  """Classifier C alone and after each restorer."""
  return accuracy_table(exp, tests, outcomes, 'table2', recovery_methods(exp['classifier']),
                        notes=[_SINGLE.format('RecNet (single)')])


def table3(exp, tests, outcomes):
  """The small QRNet (one 3x3 convolution per block) beside QRNet."""
  parameters = exp.get('parameters') or {}
  return accuracy_table(exp, tests, outcomes, 'table3', small_qrnet_methods(exp['classifier']),
                        before=['parameters'],
                        extra=lambda m: {'parameters': parameters.get(m.key)},
                        notes=["parameters: the restorer's parameter count."])


def table4(exp, tests, outcomes):
  """Fine-tuned classifiers, QRNet trained end-to-end with C, and the time per image."""
  c, latency = exp['classifier'], exp.get('latency') or {}
  timed = {kind: latency.get(kind) or {} for kind in ('classifier', 'qrnet+classifier')}
  batches = sorted({b for t in timed.values() for b in t} or LATENCY_BATCHES, key=float)
  ms_columns = [f'ms/image batch {b}' for b in batches]

  def ms_per_image(m):
    restored = m.sources['noise'][1].startswith('qrnet/')
    times = timed['qrnet+classifier' if restored else 'classifier']
    return dict(zip(ms_columns, (times.get(b) for b in batches)))

  timing = (f"ms/image: the time to classify one distorted image, the paper's Section IV-B1 "
            f"figures (it gives 5.51 ms for VGG16, 8.29 ms for QRNet + VGG16 on a GTX TITAN X), "
            f"here {c} alone for the classifier rows, QRNet + {c} for the QRNet rows"
            + (f"; {latency.get('image_size')} px images" if latency else ': not timed')
            + (f" on {latency['device']}." if latency.get('device') else '.'))
  return accuracy_table(
      exp, tests, outcomes, 'table4', end_to_end_methods(c), after=ms_columns, extra=ms_per_image,
      notes=[_SINGLE.format('Fine-tuned (single)'), timing,
             f'The frozen-{c} row is the QRNet of Table 2 (its paper numbers too).'])


def table5(exp, tests):
  """PSNR and SSIM of the distorted and the recovered images, averaged over levels."""
  paper = paper_numbers.QUALITY.get(exp.get('paper'))
  paper_columns = ['paper ' + q for q in QUALITY_COLUMNS] if paper else []
  rows = []
  for suffix, run in (('', 'qrnet'), (' (RecNet multiple)', 'recnet')):
    for metric in ('psnr', 'ssim') if run in tests else ():
      values = {f'{d} {name}': level_mean(tests, run, f'{stage}/{metric}', d)
                for d in DISTORTIONS for name, stage in (('distorted', 'none'),
                                                         ('recovered', 'qrnet'))}
      if paper and run == 'qrnet':
        values.update(zip(paper_columns, paper[metric]))
      rows.append((metric.upper() + suffix, values))
  notes = ["Averaged over each distortion's levels: distorted = the images as they are, "
           "recovered = after the run's restorer."]
  return make_table(QUALITY_COLUMNS + paper_columns, rows,
                    notes + ([f"paper: the paper's numbers for {exp['paper']}."] if paper else []))


def table6(exp, tests, outcomes):
  """The unseen classifier U after each restorer: Figure 6's numbers as a table."""
  if not exp.get('unseen'):
    return None
  top_columns = [f'{d} top-{TOP_LEVELS}' for d in DISTORTIONS]
  strongest = lambda m: {column: level_mean(tests, *m.sources[d], d, TOP_LEVELS)
                         for column, d in zip(top_columns, DISTORTIONS)}
  note = f"top-{TOP_LEVELS}: the mean over each distortion's {TOP_LEVELS} strongest levels."
  return accuracy_table(exp, tests, outcomes, 'table6', unseen_methods(exp['unseen']),
                        after=top_columns, extra=strongest, notes=[note],
                        interval_columns={c: (d, TOP_LEVELS) for c, d in zip(top_columns,
                                                                             DISTORTIONS)})


def experiment_tables(exp: dict, tests: dict, outcomes: dict) -> dict:
  """Tables 2-5 and Figure 6's numbers (key 'table6') of one experiment; a table whose runs are
  all missing is left out."""
  tables = {'table2': table2(exp, tests, outcomes), 'table3': table3(exp, tests, outcomes),
            'table4': table4(exp, tests, outcomes), 'table5': table5(exp, tests),
            'table6': table6(exp, tests, outcomes)}
  return {name: table for name, table in tables.items() if table is not None}


def run_record(run: dict, outcomes) -> dict:
  """A run as results.json holds it: levels in order, each accuracy's 95 % interval (Wilson's,
  from the run's outcomes), where its wall time went, NaN and inf as None, no file paths."""
  test = run.get('test') or {}
  levels = sorted(test, key=level_order)
  found = {(level, metric): outcomes.get(level, metric) if outcomes is not None else None
           for level in levels for metric in test[level] if metric.endswith('/accuracy')}
  return metrics.json_safe({
      'test': {level: test[level] for level in levels},
      'intervals': {level: {metric: list(stats.wilson_interval(int(v.sum()), v.size))
                            for (lv, metric), v in found.items() if lv == level and v is not None
                            and v.size}
                    for level in levels},
      'wall_s': run.get('wall_s'), 'parts': run.get('parts'), 'counts': run.get('counts'),
      'images': run.get('images'), 'devices': run.get('devices'),
      'trained_on': run.get('trained_on')})


