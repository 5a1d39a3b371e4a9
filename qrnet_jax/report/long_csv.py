"""results.csv: every number of results.json in long format, one row per number."""
import csv
import io

from qrnet_jax.report.markdown import value_kind


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


