"""results.csv: every number of results.json in long format, one row per number."""
import csv
import io

from qrnet_jax.report.markdown import value_kind


def numbers(results: dict):
  """(experiment, table, row, column, metric, value) for every number in results.json."""
  for name, exp in results['experiments'].items():
    for f in exp.get('findings') or []:
      for column in ('difference', 'low', 'high', 'images', 'paper_difference'):
        yield name, 'findings', f['claim'], column, 'difference', f.get(column)
    for run, record in exp['runs'].items():
      yield name, 'runs', run, 'wall s', 'seconds', record.get('wall_s')
      for part, seconds in (record.get('parts') or {}).items():
        yield name, 'runs', run, f'{part} s', 'seconds', seconds
      for counter, count in (record.get('counts') or {}).items():
        yield name, 'runs', run, counter, 'count', count
      for split, count in (record.get('images') or {}).items():
        yield name, 'runs', run, f'{split} images', 'count', count
      for level, metrics in record['test'].items():
        for metric, value in metrics.items():
          yield name, 'levels', run, level, metric, value
          for bound, x in zip(('low', 'high'), (record.get('intervals') or {}).get(level, {})
                              .get(metric) or ()):
            yield name, 'levels', run, level, f'{metric} {bound}', x
    for f in exp.get('findings_over_seeds') or []:
      for column in ('seeds', 'holds_on'):
        yield name, 'findings over seeds', f['claim'], column, 'count', f[column]
      for column in ('mean', 'std', 'min', 'max'):
        yield name, 'findings over seeds', f['claim'], column, 'difference', f[column]
      for k, p in enumerate(f['per_seed']):
        for column in ('difference', 'low', 'high'):
          yield (name, 'findings over seeds', f['claim'], f'seed {k} {column}', 'difference',
                 p[column])
    for row in (exp.get('seeds') or {}).get('rows', []):
      yield name, 'seeds', row['method'], 'seeds', 'count', row['seeds']
      for column, value in row['values'].items():
        yield name, 'seeds', row['method'], column, 'accuracy', value
    for table_name, table in exp['tables'].items():
      for row in table['rows']:
        for column, value in row['values'].items():
          kind = value_kind(row['method'], column)
          yield name, table_name, row['method'], column, kind, value
          for bound, x in zip(('low', 'high'), (row.get('intervals') or {}).get(column) or ()):
            yield name, table_name, row['method'], f'{column} {bound}', kind, x


def results_csv(results: dict) -> str:
  """Long format: experiment, table ('findings', 'runs', 'levels' or a table), row, column, metric,
  value; an interval's bounds are columns '<column> low' and '<column> high'."""
  out = io.StringIO()
  writer = csv.writer(out, lineterminator='\n')
  writer.writerow(['experiment', 'table', 'row', 'column', 'metric', 'value'])
  writer.writerows(n[:5] + (repr(n[5]),) for n in numbers(results) if n[5] is not None)
  return out.getvalue()


