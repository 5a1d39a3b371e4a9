"""report.md: the results as markdown, every number printed by one format (format_value)."""
import json
import math

from qrnet_jax.report.tables import TABLE_TITLES

_DECIMALS = {'accuracy': 3, 'ssim': 3, 'psnr': 2, 'ms': 2, 'seconds': 1, 'rate': 0,
             'difference': 3}


def value_kind(row: str, column: str) -> str:
  """What a cell holds, which sets how it is printed: accuracy, ssim, psnr, ms, seconds, rate,
  count."""
  if column == 'parameters' or column.endswith(' images'):
    return 'count'
  if column.startswith('ms/'):
    return 'ms'
  if column == 'wall s' or column.endswith(' s'):
    return 'seconds'
  if column.endswith('img/s'):
    return 'rate'
  text = f'{row} {column}'.lower()
  return 'psnr' if 'psnr' in text else 'ssim' if 'ssim' in text else 'accuracy'


def format_value(value, kind: str) -> str:
  """The one number format of report.md; '—' for a missing or non-finite value; text as it is."""
  if isinstance(value, str):
    return value
  if value is None or not math.isfinite(value):
    return '—'
  if kind == 'count':
    return f'{int(round(value)):,}'
  if kind == 'difference':
    return f'{value:+.{_DECIMALS[kind]}f}'
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


def format_cell(value, kind: str, interval=None) -> str:
  """A number, followed by its 95 % interval in parentheses where it has one."""
  if interval is None or value is None:
    return format_value(value, kind)
  low, high = (format_value(x, kind) for x in interval)
  return f'{format_value(value, kind)} ({low}–{high})'


def markdown_row(cells) -> str:
  return '| ' + ' | '.join(cell.replace('|', r'\|') for cell in cells) + ' |'


def markdown_table(label_columns, value_columns, rows) -> list:
  """rows: (labels, {column: value}) or (labels, {column: value}, {column: [low, high]}); each
  number printed by format_value, with its interval where given."""
  lines = [markdown_row(label_columns + value_columns),
           '|' + '|'.join(['---'] * len(label_columns) + ['---:'] * len(value_columns)) + '|']
  for labels, values, *found in rows:
    kind = lambda column: value_kind(' '.join(labels), column)
    cell_intervals = found[0] if found else {}
    lines.append(markdown_row(labels + [format_cell(values.get(c), kind(c),
                                                    cell_intervals.get(c))
                                        for c in value_columns]))
  return lines


def run_time_columns(runs: dict) -> list:
  """The runs table's time columns: the wall time, then each part it was spent in (timing.py),
  then the images per second of training and of test evaluation."""
  parts = list(dict.fromkeys(p for r in runs.values() for p in r.get('parts') or {}))
  return ['wall s'] + [f'{p} s' for p in parts] + ['train img/s', 'test img/s', 'jit cache hits']


def run_time_values(r: dict) -> dict:
  parts, counts = r.get('parts') or {}, r.get('counts') or {}
  rate = lambda images, part: (images / parts[part] if images and parts.get(part) else None)
  return {'wall s': r.get('wall_s'), **{f'{p} s': v for p, v in parts.items()},
          'train img/s': rate(counts.get('train_images'), 'train'),
          'test img/s': rate(counts.get('test_images'), 'test'),
          'jit cache hits': (f"{counts.get('cache_hits', 0)}/"
                             f"{counts.get('cache_hits', 0) + counts.get('cache_misses', 0)}")}


FINDINGS_NOTE = (
    "Each row: method A's accuracy minus method B's on the same test images (every method sees "
    "the same distorted images), with the 95 % percentile-bootstrap interval over those images "
    "(10,000 resamples). holds = the whole interval is on the claim's side (above minus the "
    "margin: 0, or 1 point for 'at most 1 point'), reversed = the whole interval on the other "
    "side, not resolved = it holds values on both sides. Intervals are per claim, without a "
    "correction for the number of claims.")


def findings_markdown(results: dict) -> list:
  lines = ['## Findings', '']
  for name, exp in results['experiments'].items():
    rows = exp.get('findings') or []
    lines += [f'### {exp["title"]} (`{name}`)', '']
    if not rows:
      lines += ['No claim can be judged: its runs, or their per-image outcomes, are missing.', '']
      continue
    paper = any(f.get('paper_difference') is not None for f in rows)
    header = ['claim', 'A − B', '95 % interval', 'images', 'verdict'] + (['paper A − B']
                                                                         if paper else [])
    lines.append(markdown_row(header))
    lines.append('|---|---:|---:|---:|---|' + ('---:|' if paper else ''))
    for f in rows:
      cells = [f['claim'], format_value(f['difference'], 'difference'),
               f"{format_value(f['low'], 'difference')} to {format_value(f['high'], 'difference')}",
               format_value(f['images'], 'count'), f['verdict']]
      if paper:
        cells.append(format_value(f.get('paper_difference'), 'difference'))
      lines.append(markdown_row(cells))
    lines.append('')
  return lines + [f'- {FINDINGS_NOTE}', '']


def findings_over_seeds_markdown(records: list) -> list:
  lines = [markdown_row(['claim', 'seeds', 'A − B on each seed', 'mean', 'std', 'min', 'max',
                         'holds on']),
           '|---|---:|---:|---:|---:|---:|---:|---:|']
  for f in records:
    each = ', '.join(format_value(p['difference'], 'difference') for p in f['per_seed'])
    lines.append(markdown_row(
        [f['claim'], str(f['seeds']), each]
        + [format_value(f[k], 'accuracy' if k == 'std' else 'difference')
           for k in ('mean', 'std', 'min', 'max')]
        + [f"{f['holds_on']} of {f['seeds']}"]))
  return lines + ['', "- Each claim of the Findings judged again on every seed the suite trained "
                  '(the whole pipeline: classifiers, restorers and fine-tuned classifiers '
                  "trained again with each seed; runs R_seedK), on the same test images: A − B "
                  'per seed, their mean, standard deviation (n - 1) and range, and on how many '
                  "seeds the claim holds (its own 95 % interval over the test images). The "
                  "spread over seeds is training randomness, which the Findings' intervals do "
                  'not cover.']


def experiment_markdown(name: str, exp: dict) -> list:
  lines = [f'## {exp["title"]} (`{name}`)', '',
           f'Classifier C = `{exp["classifier"]}`; unseen classifier U = '
           f'`{exp.get("unseen") or "none"}`; paper numbers: {exp.get("paper") or "none"}.']
  splits = list(dict.fromkeys(s for r in exp['runs'].values() for s in r.get('images') or {}))
  if exp['runs']:
    lines += ['', '### Runs', ''] + markdown_table(
        ['run', 'devices'], run_time_columns(exp['runs']) + [f'{s} images' for s in splits],
        [([run, str(r.get('devices'))],
          {**run_time_values(r), **{f'{s} images': (r.get('images') or {}).get(s)
                                    for s in splits}}) for run, r in exp['runs'].items()])
    lines += ['', "- Where each run's wall time went (seconds, summed over its attempts): set-up "
              "and data, compilation, train steps, validation, checkpoints, test evaluation, "
              "writing its files, and the rest; they add up to the wall time. img/s: images per "
              "second of the train steps, and image-levels per second of test evaluation. jit "
              "cache hits: programs read from the persistent compilation cache / programs "
              "compiled or read."]
  for table_name, table in exp['tables'].items():
    lines += ['', f'### {table.get("title") or TABLE_TITLES[table_name]}', '']
    lines += markdown_table([table.get('row_header', 'method')], table['columns'],
                            [([row['method']], row['values'], row.get('intervals') or {})
                             for row in table['rows']])
    lines += [''] + [f'- {note}' for note in table['notes']]
  if exp.get('seeds'):
    table = exp['seeds']
    lines += ['', '### Seeds: the spread over training seeds', '']
    lines += markdown_table(['method', 'seeds'], table['columns'],
                            [([row['method'], str(row['seeds'])], row['values'])
                             for row in table['rows']])
    lines += [''] + [f'- {note}' for note in table['notes']]
  if exp.get('findings_over_seeds'):
    lines += ['', '### Seeds: the findings on each seed', ''] + findings_over_seeds_markdown(
        exp['findings_over_seeds'])
  if exp['runs']:
    lines += ['', '### Every run at every level', '',
              "none = the images as they are; qrnet = after the run's restorer. One table per "
              "run, with the metrics that run reports; accuracies with their 95 % Wilson "
              "interval over the test images.", '']
    for run, r in exp['runs'].items():
      lines += [f'#### `{run}`', '']
      lines += markdown_table(
          ['level'], level_metrics({run: r}, [exp['classifier'], exp.get('unseen')]),
          [([level], values, (r.get('intervals') or {}).get(level) or {})
           for level, values in r['test'].items()])
      lines.append('')
  for figure, caption in exp['figures'].items():
    lines += ['', f'![{caption}]({figure})', '', f'*{caption}*']
  return lines + ['']


def report_markdown(results: dict) -> str:
  lines = ['# Quality Recovery for Image Recognition: reproduction results', '']
  lines += findings_markdown(results) + ['## Provenance', '']
  for key, value in results['provenance'].items():
    shown = json.dumps(value, sort_keys=True) if isinstance(value, (dict, list)) else value
    lines.append(f'- **{key}**: {shown}')
  lines.append('')
  for name, exp in results['experiments'].items():
    lines += experiment_markdown(name, exp)
  return '\n'.join(lines)
