"""The report's tables as data: Tables 2-5 and Figure 6's numbers, from every run's test results.

A table is {'columns', 'rows': [{'method', 'values': {column: number}}], 'notes'}; renderers
(markdown.py, long_csv.py) and figures.py read these, never the runs' files. Tables average accuracy
over each distortion's levels, as the paper does, and give clean accuracy a column of its own. Where
an experiment names a Caltech dataset, the paper's numbers sit beside ours (the paper gives no clean
or per-level accuracies). A run that is missing drops the rows that need it.
"""
import math
from typing import NamedTuple

import numpy as np

from qrnet_jax import metrics
from qrnet_jax.report import paper as paper_numbers
from qrnet_jax.run_names import classifier_run

DISTORTIONS = ('noise', 'blur')
ACCURACY_COLUMNS = ['clean', 'noise', 'blur', 'average']
PAPER_COLUMNS = ['paper noise', 'paper blur', 'paper average']
QUALITY_COLUMNS = ['noise distorted', 'noise recovered', 'blur distorted', 'blur recovered']
LATENCY_BATCHES = ('1', '32')  # Table 4's columns when nothing was timed
TOP_LEVELS = 3  # Figure 6's numbers: the strongest levels, where its lines part

TABLE_TITLES = {
    'table2': 'Table 2: accuracy recovered for a classifier trained on clean images',
    'table3': 'Table 3: small QRNet',
    'table4': 'Table 4: end-to-end training against fine-tuned classifiers',
    'table5': 'Table 5: image quality of the distorted and the recovered images',
    'table6': "Figure 6's numbers: an unseen classifier (the paper draws them; it has no Table 6)",
}


class Method(NamedTuple):
  """A table row and a figure line: each distortion's numbers come from one (run, metric)."""
  key: str  # the paper's row it matches
  label: str
  sources: dict  # {'noise': (run, metric), 'blur': (run, metric)}


def _method(key, label, noise_source, blur_source=None):
  return Method(key, label, {'noise': noise_source, 'blur': blur_source or noise_source})


def _accuracy(stage: str, classifier: str) -> str:
  return f'{stage}/{classifier}/accuracy'


def recovery_methods(c: str) -> list:
  """Table 2 and Figure 4: classifier C on distorted images, and after each restorer."""
  restored = _accuracy('qrnet', c)
  return [_method('C', c, (classifier_run(c), _accuracy('none', c))),
          _method('recnet_single', f'RecNet (single) + {c}', ('recnet_noise', restored),
                  ('recnet_blur', restored)),
          _method('recnet_multiple', f'RecNet (multiple) + {c}', ('recnet', restored)),
          _method('qrnet', f'QRNet + {c}', ('qrnet', restored))]


def end_to_end_methods(c: str, with_frozen=True) -> list:
  """Table 4 and (without the frozen-classifier row) Figure 5."""
  plain, restored = _accuracy('none', c), _accuracy('qrnet', c)
  methods = [_method('C', c, (classifier_run(c), plain)),
             _method('ft_single', f'Fine-tuned {c} (single)', ('finetuned_noise', plain),
                     ('finetuned_blur', plain)),
             _method('ft_multiple', f'Fine-tuned {c} (multiple)', ('finetuned', plain)),
             _method('end_to_end', f'QRNet + {c} (end-to-end)', ('end_to_end', restored))]
  if with_frozen:
    methods.append(_method('qrnet', f'QRNet + {c} (frozen {c})', ('qrnet', restored)))
  return methods


def unseen_methods(u: str) -> list:
  """Table 6 and Figure 6: a classifier no restorer was trained against."""
  restored = _accuracy('qrnet', u)
  return [_method('U', u, (classifier_run(u), _accuracy('none', u))),
          _method('recnet_multiple', f'RecNet (multiple) + {u}', ('recnet', restored)),
          _method('qrnet', f'QRNet + {u}', ('qrnet', restored)),
          _method('mqrnet', f'MQRNet + {u}', ('mqrnet', restored))]


def level_order(level: str):
  """Sort key: 'clean', then noise and blur levels by their sigma."""
  if level == 'clean':
    return (0, '', 0.)
  distortion, sigma = level.split('/', 1)
  return ({'noise': 1, 'blur': 2}.get(distortion, 3), distortion, float(sigma))


def levels_of(test: dict, distortion: str) -> list:
  return sorted((level for level in test if level.split('/')[0] == distortion), key=level_order)


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


def has_runs(tests, method: Method) -> bool:
  return any(run in tests for run, _ in method.sources.values())


def make_table(columns, rows, notes):
  """{'columns', 'rows': [{'method', 'values'}], 'notes'}, or None when there are no rows."""
  if not rows:
    return None
  return {'columns': columns, 'notes': notes,
          'rows': [{'method': method, 'values': {c: values.get(c) for c in columns}}
                   for method, values in rows]}


_AVERAGED = ("Accuracy is averaged over each distortion's levels; average = the mean of the noise "
             "and blur columns. The paper gives no clean accuracies.")
_SINGLE = ("{0}: noise levels from the run trained on noise alone, blur levels from the one "
           "trained on blur alone; clean = the mean of the two runs' clean accuracy.")


def accuracy_table(exp, tests, table, methods, before=(), after=(), extra=lambda m: {}, notes=()):
  """Rows of accuracy (Tables 2, 3, 4, 6), with the paper's numbers where it has the dataset."""
  paper = paper_numbers.ACCURACY.get(table, {}).get(exp.get('paper'))
  rows = [(m.label, {**accuracy_values(tests, m), **extra(m),
                     **(dict(zip(PAPER_COLUMNS, paper.get(m.key, ()))) if paper else {})})
          for m in methods if has_runs(tests, m)]
  paper_note = [f"paper: the paper's numbers for {exp['paper']}."] if paper else []
  columns = [*before, *ACCURACY_COLUMNS, *(PAPER_COLUMNS if paper else []), *after]
  return make_table(columns, rows, [_AVERAGED, *notes, *paper_note])


def table2(exp, tests):
  """Classifier C alone and after each restorer."""
  return accuracy_table(exp, tests, 'table2', recovery_methods(exp['classifier']),
                        notes=[_SINGLE.format('RecNet (single)')])


def table3(exp, tests):
  """The small QRNet (one 3x3 convolution per block) beside QRNet."""
  c, parameters = exp['classifier'], exp.get('parameters') or {}
  methods = [_method('qrnet', f'QRNet + {c}', ('qrnet', _accuracy('qrnet', c))),
             _method('small_qrnet', f'small QRNet + {c}', ('small_qrnet', _accuracy('qrnet', c)))]
  return accuracy_table(exp, tests, 'table3', methods,
                        before=['parameters'],
                        extra=lambda m: {'parameters': parameters.get(m.key)},
                        notes=["parameters: the restorer's parameter count."])


def table4(exp, tests):
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
      exp, tests, 'table4', end_to_end_methods(c), after=ms_columns, extra=ms_per_image,
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


def table6(exp, tests):
  """The unseen classifier U after each restorer: Figure 6's numbers as a table."""
  if not exp.get('unseen'):
    return None
  top_columns = [f'{d} top-{TOP_LEVELS}' for d in DISTORTIONS]
  strongest = lambda m: {column: level_mean(tests, *m.sources[d], d, TOP_LEVELS)
                         for column, d in zip(top_columns, DISTORTIONS)}
  note = f"top-{TOP_LEVELS}: the mean over each distortion's {TOP_LEVELS} strongest levels."
  return accuracy_table(exp, tests, 'table6', unseen_methods(exp['unseen']), after=top_columns,
                        extra=strongest, notes=[note])


def experiment_tables(exp: dict, tests: dict) -> dict:
  """Tables 2-5 and Figure 6's numbers (key 'table6') of one experiment; a table whose runs are
  all missing is left out."""
  tables = {'table2': table2(exp, tests), 'table3': table3(exp, tests),
            'table4': table4(exp, tests), 'table5': table5(exp, tests),
            'table6': table6(exp, tests)}
  return {name: table for name, table in tables.items() if table is not None}


def run_record(run: dict) -> dict:
  """A run as results.json holds it: levels in order, NaN and inf as None, no samples path."""
  test = run.get('test') or {}
  return metrics.json_safe({
      'test': {level: test[level] for level in sorted(test, key=level_order)},
      'wall_s': run.get('wall_s'), 'images': run.get('images'), 'devices': run.get('devices')})


