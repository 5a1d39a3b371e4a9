"""report.md: the results as markdown, every number printed by one format (format_value)."""
import json
import math

from qrnet_jax.report.tables import TABLE_TITLES

_DECIMALS = {'accuracy': 3, 'ssim': 3, 'psnr': 2, 'ms': 2, 'seconds': 1}


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
              "none = the images as they are; qrnet = after the run's restorer. One table per "
              "run, with the metrics that run reports.", '']
    for run, r in exp['runs'].items():
      lines += [f'#### `{run}`', '']
      lines += markdown_table(
          ['level'], level_metrics({run: r}, [exp['classifier'], exp.get('unseen')]),
          [([level], values) for level, values in r['test'].items()])
      lines.append('')
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
