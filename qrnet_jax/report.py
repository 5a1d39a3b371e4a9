"""An experiment suite's results laid out as the paper's Tables 2-5 and Figures 1/4-8.

write_report(out_dir, experiments, provenance) writes into out_dir:
  results.json     every run's per-level metrics and every table: the one source of report.md;
  results.csv      the same numbers in long format, one row per number;
  report.md        provenance, Tables 2-6 and a per-level table per experiment, figures embedded;
  fig4_<name>.png .. fig8_<name>.png.
Tables average accuracy over each distortion's levels, as the paper does, and give clean accuracy a
column of its own. Where an experiment names a Caltech dataset, the paper's numbers sit beside ours
(the paper gives no clean or per-level accuracies). A run that is missing drops the rows and lines
that need it.
"""
import csv
import io
import json
import math
import os
from typing import NamedTuple

import numpy as np

from qrnet_jax import files

DISTORTIONS = ('noise', 'blur')
ACCURACY_COLUMNS = ['clean', 'noise', 'blur', 'average']
PAPER_COLUMNS = ['paper noise', 'paper blur', 'paper average']
QUALITY_COLUMNS = ['noise distorted', 'noise recovered', 'blur distorted', 'blur recovered']
LATENCY_BATCHES = ('1', '32')  # Table 4's columns when nothing was timed
TOP_LEVELS = 3  # Table 6: the strongest levels, where Figure 6's lines part

# The paper's accuracy as (noise, blur, average), keyed by table, dataset and row.
_PAPER_TABLE2 = {
    'caltech101': {'C': (0.642, 0.259, 0.450), 'recnet_single': (0.828, 0.684, 0.756),
                   'recnet_multiple': (0.819, 0.571, 0.694), 'qrnet': (0.832, 0.705, 0.768)},
    'caltech256': {'C': (0.346, 0.098, 0.222), 'recnet_single': (0.496, 0.328, 0.412),
                   'recnet_multiple': (0.473, 0.242, 0.357), 'qrnet': (0.521, 0.346, 0.434)},
}
PAPER_ACCURACY = {
    'table2': _PAPER_TABLE2,
    'table3': {'caltech101': {'qrnet': _PAPER_TABLE2['caltech101']['qrnet'],
                              'small_qrnet': (0.828, 0.694, 0.761)}},
    'table4': {  # 'qrnet' (frozen classifier) is Table 2's QRNet row.
        'caltech101': {'C': (0.642, 0.259, 0.450), 'ft_single': (0.831, 0.741, 0.786),
                       'ft_multiple': (0.842, 0.745, 0.793), 'end_to_end': (0.861, 0.807, 0.834),
                       'qrnet': _PAPER_TABLE2['caltech101']['qrnet']},
        'caltech256': {'C': (0.346, 0.098, 0.222), 'ft_single': (0.545, 0.402, 0.474),
                       'ft_multiple': (0.533, 0.414, 0.473), 'end_to_end': (0.582, 0.497, 0.539),
                       'qrnet': _PAPER_TABLE2['caltech256']['qrnet']}},
}
# Table 5 (Caltech101, QRNet): QUALITY_COLUMNS' values.
PAPER_QUALITY = {'caltech101': {'psnr': (15.29, 23.30, 19.77, 20.85),
                                'ssim': (0.330, 0.823, 0.656, 0.700)}}

TABLE_TITLES = {
    'table2': 'Table 2: accuracy recovered for a classifier trained on clean images',
    'table3': 'Table 3: small QRNet',
    'table4': 'Table 4: end-to-end training against fine-tuned classifiers',
    'table5': 'Table 5: image quality of the distorted and the recovered images',
    'table6': "Table 6: an unseen classifier (Figure 6's numbers)",
}
_DECIMALS = {'accuracy': 3, 'ssim': 3, 'psnr': 2, 'ms': 2, 'seconds': 1}


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
  return [_method('C', c, (f'classifier_{c}', _accuracy('none', c))),
          _method('recnet_single', f'RecNet (single) + {c}', ('recnet_noise', restored),
                  ('recnet_blur', restored)),
          _method('recnet_multiple', f'RecNet (multiple) + {c}', ('recnet', restored)),
          _method('qrnet', f'QRNet + {c}', ('qrnet', restored))]


def end_to_end_methods(c: str, with_frozen=True) -> list:
  """Table 4 and (without the frozen-classifier row) Figure 5."""
  plain, restored = _accuracy('none', c), _accuracy('qrnet', c)
  methods = [_method('C', c, (f'classifier_{c}', plain)),
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
  return [_method('U', u, (f'classifier_{u}', _accuracy('none', u))),
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
  paper = PAPER_ACCURACY.get(table, {}).get(exp.get('paper'))
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

  timing = (f"ms/image: {c} alone for the classifier rows, QRNet + {c} for the QRNet rows"
            + (f"; {latency.get('image_size')} px images" if latency else ': not timed')
            + (f" on {latency['device']}." if latency.get('device') else '.'))
  return accuracy_table(
      exp, tests, 'table4', end_to_end_methods(c), after=ms_columns, extra=ms_per_image,
      notes=[_SINGLE.format('Fine-tuned (single)'), timing,
             f'The frozen-{c} row is the QRNet of Table 2 (its paper numbers too).'])


def table5(exp, tests):
  """PSNR and SSIM of the distorted and the recovered images, averaged over levels."""
  paper = PAPER_QUALITY.get(exp.get('paper'))
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
  """The unseen classifier U after each restorer (Figure 6 as a table)."""
  if not exp.get('unseen'):
    return None
  top_columns = [f'{d} top-{TOP_LEVELS}' for d in DISTORTIONS]
  strongest = lambda m: {column: level_mean(tests, *m.sources[d], d, TOP_LEVELS)
                         for column, d in zip(top_columns, DISTORTIONS)}
  note = f"top-{TOP_LEVELS}: the mean over each distortion's {TOP_LEVELS} strongest levels."
  return accuracy_table(exp, tests, 'table6', unseen_methods(exp['unseen']), after=top_columns,
                        extra=strongest, notes=[note])


def experiment_tables(exp: dict, tests: dict) -> dict:
  """Tables 2-6 of one experiment; a table whose runs are all missing is left out."""
  tables = {'table2': table2(exp, tests), 'table3': table3(exp, tests),
            'table4': table4(exp, tests), 'table5': table5(exp, tests),
            'table6': table6(exp, tests)}
  return {name: table for name, table in tables.items() if table is not None}


def json_safe(value):
  """Plain JSON data: numpy scalars and arrays as Python values, NaN and inf as None."""
  if isinstance(value, dict):
    return {str(k): json_safe(v) for k, v in value.items()}
  if isinstance(value, (list, tuple, np.ndarray)):
    return [json_safe(v) for v in value]
  if isinstance(value, (bool, np.bool_)):
    return bool(value)
  if isinstance(value, (int, np.integer)):
    return int(value)
  if isinstance(value, (float, np.floating)):
    return float(value) if math.isfinite(value) else None
  return value


def value_kind(row: str, column: str) -> str:
  """What a cell holds, which sets how it is printed: accuracy, ssim, psnr, ms, seconds, count."""
  if column == 'parameters' or column.endswith(' images'):
    return 'count'
  if column.startswith('ms/'):
    return 'ms'
  if column == 'wall s':
    return 'seconds'
  text = f'{row} {column}'.lower()
  return 'psnr' if 'psnr' in text else 'ssim' if 'ssim' in text else 'accuracy'


def format_value(value, kind: str) -> str:
  """The one number format of report.md; '—' for a missing or non-finite value."""
  if value is None or not math.isfinite(value):
    return '—'
  if kind == 'count':
    return f'{int(round(value)):,}'
  return f'{value:.{_DECIMALS[kind]}f}'


def level_metrics(runs: dict, classifiers) -> list:
  """Every metric any run reports: accuracy by classifier (`classifiers` first), PSNR, SSIM."""
  metrics = {m for run in runs.values() for level in run['test'].values() for m in level}
  first = [c for c in classifiers if c]

  def order(metric):
    stage, *rest = metric.split('/')
    if len(rest) == 1:  # psnr, ssim
      return (1, rest[0], '', stage)
    return (0, first.index(rest[0]) if rest[0] in first else len(first), rest[0], stage)

  return sorted(metrics, key=order)


def numbers(results: dict):
  """(experiment, table, row, column, metric, value) for every number in results.json."""
  for name, exp in results['experiments'].items():
    for run, record in exp['runs'].items():
      yield name, 'runs', run, 'wall s', 'seconds', record.get('wall_s')
      for split, count in (record.get('images') or {}).items():
        yield name, 'runs', run, f'{split} images', 'count', count
      for level, metrics in record['test'].items():
        for metric, value in metrics.items():
          yield name, 'levels', run, level, metric, value
    for table_name, table in exp['tables'].items():
      for row in table['rows']:
        for column, value in row['values'].items():
          yield name, table_name, row['method'], column, value_kind(row['method'], column), value


def results_csv(results: dict) -> str:
  """Long format: experiment, table ('runs', 'levels' or a table), row, column, metric, value."""
  out = io.StringIO()
  writer = csv.writer(out, lineterminator='\n')
  writer.writerow(['experiment', 'table', 'row', 'column', 'metric', 'value'])
  writer.writerows(n[:5] + (repr(n[5]),) for n in numbers(results) if n[5] is not None)
  return out.getvalue()


def markdown_table(label_columns, value_columns, rows) -> list:
  """rows: (labels, {column: value}); each number printed by format_value."""
  line = lambda cells: '| ' + ' | '.join(cell.replace('|', r'\|') for cell in cells) + ' |'
  lines = [line(label_columns + value_columns),
           '|' + '|'.join(['---'] * len(label_columns) + ['---:'] * len(value_columns)) + '|']
  for labels, values in rows:
    kind = lambda column: value_kind(' '.join(labels), column)
    lines.append(line(labels + [format_value(values.get(c), kind(c)) for c in value_columns]))
  return lines


def experiment_markdown(name: str, exp: dict) -> list:
  lines = [f'## {exp["title"]} (`{name}`)', '',
           f'Classifier C = `{exp["classifier"]}`; unseen classifier U = '
           f'`{exp.get("unseen") or "none"}`; paper numbers: {exp.get("paper") or "none"}.']
  splits = list(dict.fromkeys(s for r in exp['runs'].values() for s in r.get('images') or {}))
  if exp['runs']:
    lines += ['', '### Runs', ''] + markdown_table(
        ['run', 'devices'], ['wall s'] + [f'{s} images' for s in splits],
        [([run, str(r.get('devices'))],
          {'wall s': r.get('wall_s'), **{f'{s} images': (r.get('images') or {}).get(s)
                                         for s in splits}}) for run, r in exp['runs'].items()])
  for table_name, table in exp['tables'].items():
    lines += ['', f'### {TABLE_TITLES[table_name]}', '']
    lines += markdown_table(['method'], table['columns'],
                            [([row['method']], row['values']) for row in table['rows']])
    lines += [''] + [f'- {note}' for note in table['notes']]
  if exp['runs']:
    lines += ['', '### Every run at every level', '',
              "none = the images as they are; qrnet = after the run's restorer.", '']
    lines += markdown_table(['run', 'level'],
                            level_metrics(exp['runs'], [exp['classifier'], exp.get('unseen')]),
                            [([run, level], values) for run, r in exp['runs'].items()
                             for level, values in r['test'].items()])
  for figure, caption in exp['figures'].items():
    lines += ['', f'![{caption}]({figure})', '', f'*{caption}*']
  return lines + ['']


def report_markdown(results: dict) -> str:
  lines = ['# Quality Recovery for Image Recognition: reproduction results', '', '## Provenance',
           '']
  for key, value in results['provenance'].items():
    shown = json.dumps(value, sort_keys=True) if isinstance(value, (dict, list)) else value
    lines.append(f'- **{key}**: {shown}')
  lines.append('')
  for name, exp in results['experiments'].items():
    lines += experiment_markdown(name, exp)
  return '\n'.join(lines)


def _pyplot():
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def _label_axes(ax, title, xlabel, ylabel='accuracy'):
  ax.set(title=title, xlabel=xlabel, ylabel=ylabel, ylim=(0, 1))
  ax.grid(alpha=0.3)
  if ax.lines:
    ax.legend(fontsize=8)


def _save(fig, path: str) -> bool:
  fig.tight_layout()
  files.write_figure(fig, path)
  _pyplot().close(fig)
  return True


def plot_accuracy_by_level(path, tests, methods, title) -> bool:
  """Figures 4-6: accuracy against sigma (clean at 0), a panel per distortion, a line per method."""
  methods = [m for m in methods if has_runs(tests, m)]
  if not methods:
    return False
  fig, axes = _pyplot().subplots(1, len(DISTORTIONS), figsize=(10, 4))
  for ax, distortion in zip(axes, DISTORTIONS):
    for m in methods:
      run, metric = m.sources[distortion]
      if run in tests:
        levels = ['clean'] + levels_of(tests[run], distortion)
        accuracy = [tests[run].get(level, {}).get(metric) for level in levels]
        ax.plot([level_order(level)[2] for level in levels],  # clean at sigma 0
                [np.nan if a is None else a for a in accuracy], marker='o', label=m.label)
    _label_axes(ax, f'{title}: Gaussian {distortion}',
                'sigma (0-255)' if distortion == 'noise' else 'sigma (pixels)')
  return _save(fig, path)


def plot_quality_vs_accuracy(path, tests, c, title) -> bool:
  """Figure 7: accuracy against PSNR and SSIM, one point per level; rows noise and blur."""
  lines = [(f'{c} (no restoration)', f'classifier_{c}', 'none'),
           (f'RecNet (multiple) + {c}', 'recnet', 'qrnet'), (f'QRNet + {c}', 'qrnet', 'qrnet')]
  lines = [line for line in lines if line[1] in tests]
  if not lines:
    return False
  fig, axes = _pyplot().subplots(len(DISTORTIONS), 2, figsize=(10, 8))
  for row, distortion in zip(axes, DISTORTIONS):
    for ax, quality in zip(row, ('psnr', 'ssim')):
      for label, run, stage in lines:
        points = [(tests[run][level].get(f'{stage}/{quality}'),
                   tests[run][level].get(_accuracy(stage, c)))
                  for level in levels_of(tests[run], distortion)]
        points = [(x, y) for x, y in points if x is not None and y is not None]
        if points:
          ax.plot(*zip(*points), marker='o', label=label)
      _label_axes(ax, f'{title}: Gaussian {distortion}', quality.upper())
  return _save(fig, path)


def plot_samples(path, sample_files: dict) -> bool:
  """Figures 1/8: one row per level; clean, distorted, then each restorer's output (first image)."""
  samples = {}
  for label, file in sample_files.items():
    if file and files.exists(file):
      with np.load(io.BytesIO(files.read_bytes(file))) as arrays:
        samples[label] = {k: arrays[k] for k in ('levels', 'clean', 'distorted', 'restored')}
  if not samples:
    return False
  first = next(iter(samples.values()))
  levels = [str(level) for level in first['levels']]
  columns = ['clean', 'distorted'] + list(samples)
  fig, axes = _pyplot().subplots(len(levels), len(columns), squeeze=False,
                                 figsize=(2 * len(columns), 2 * len(levels)))
  for i, level in enumerate(levels):
    for ax, column in zip(axes[i], columns):
      ax.set(xticks=[], yticks=[], title=column if i == 0 else '')
      own_levels = [str(x) for x in samples.get(column, first)['levels']]
      if column == 'clean':
        ax.imshow(first['clean'][0])
      elif column == 'distorted':
        ax.imshow(first['distorted'][i][0])
      elif level in own_levels:
        ax.imshow(samples[column]['restored'][own_levels.index(level)][0])
    axes[i][0].set_ylabel(level)
  return _save(fig, path)


def write_figures(out_dir: str, exp: dict, tests: dict) -> dict:
  """Draws the experiment's figures; {file name: caption} of those drawn."""
  c, u, title = exp['classifier'], exp.get('unseen'), exp['title']
  samples = {label: (exp['runs'].get(run) or {}).get('samples')
             for label, run in (('RecNet', 'recnet'), ('QRNet', 'qrnet'))}
  figures = [
      (4, 'Figure 4: accuracy at each level, with and without restoration',
       lambda p: plot_accuracy_by_level(p, tests, recovery_methods(c), title)),
      (5, 'Figure 5: end-to-end training against fine-tuned classifiers',
       lambda p: plot_accuracy_by_level(p, tests, end_to_end_methods(c, False), title)),
      (6, 'Figure 6: a classifier the restorers were not trained against',
       lambda p: bool(u) and plot_accuracy_by_level(p, tests, unseen_methods(u), title)),
      (7, 'Figure 7: image quality against accuracy, one point per level',
       lambda p: plot_quality_vs_accuracy(p, tests, c, title)),
      (8, 'Figures 1/8: the first test image at each level, distorted and restored',
       lambda p: plot_samples(p, samples))]
  drawn = {}
  for number, caption, draw in figures:
    file = f'fig{number}_{exp["name"]}.png'
    if draw(os.path.join(out_dir, file)):
      drawn[file] = caption
    elif files.exists(os.path.join(out_dir, file)):  # from an earlier report: now stale
      files.remove(os.path.join(out_dir, file))
  return drawn


def run_record(run: dict) -> dict:
  """A run as results.json holds it: levels in order, NaN and inf as None, no samples path."""
  test = run.get('test') or {}
  return json_safe({'test': {level: test[level] for level in sorted(test, key=level_order)},
                    'wall_s': run.get('wall_s'), 'images': run.get('images'),
                    'devices': run.get('devices')})


def write_report(out_dir: str, experiments: list, provenance: dict) -> dict:
  """Writes results.json, results.csv, report.md and the figures; returns results.json's dict."""
  files.make_dirs(out_dir)
  results = {'provenance': json_safe(provenance), 'experiments': {}}
  for exp in experiments:
    runs = {run: run_record(r) for run, r in exp['runs'].items()}
    tests = {run: r['test'] for run, r in runs.items()}
    results['experiments'][exp['name']] = {
        'title': exp['title'], 'classifier': exp['classifier'], 'unseen': exp.get('unseen'),
        'paper': exp.get('paper'), 'runs': runs, 'latency': json_safe(exp.get('latency')),
        'parameters': json_safe(exp.get('parameters')),
        'tables': experiment_tables(exp, tests), 'figures': write_figures(out_dir, exp, tests)}
  files.write_text(os.path.join(out_dir, 'results.json'),
                   json.dumps(results, indent=2, allow_nan=False) + '\n')
  files.write_text(os.path.join(out_dir, 'results.csv'), results_csv(results))
  files.write_text(os.path.join(out_dir, 'report.md'), report_markdown(results))
  return results
