"""report.write_report on fabricated suites: every file, every cell, every average, every number."""
import csv
import json
import os
import pathlib
import re

import numpy as np
import pytest

from qrnet_jax import report
from qrnet_jax.report.tables import TABLE_TITLES

NOISE = [10, 20, 50, 100]  # 100 sorts before 20 as text: levels must sort by number
BLUR = [0.5, 1, 2, 4]
C, U = 'small_vgg', 'small_resnet'
PNG_MAGIC = b'\x89PNG\r\n\x1a\n'
ALL_RUNS = ['classifier_small_vgg', 'classifier_small_resnet', 'recnet_noise', 'recnet_blur',
            'recnet', 'qrnet', 'small_qrnet', 'finetuned_noise', 'finetuned_blur', 'finetuned',
            'end_to_end', 'mqrnet']


def fake_test(rng, types, classifiers, restored):
  """An evaluation dict as evaluate_by_level writes it, with random numbers."""
  levels = ['clean'] + [f'{t}/{s:g}' for t in types for s in (NOISE if t == 'noise' else BLUR)]
  stages = ['none', 'qrnet'] if restored else ['none']
  test = {}
  for level in levels:
    metrics = {}
    for stage in stages:
      metrics[f'{stage}/psnr'] = None if level == 'clean' else float(rng.uniform(10, 30))
      metrics[f'{stage}/ssim'] = float(rng.uniform(0.2, 1))
      for c in classifiers:
        metrics[f'{stage}/{c}/accuracy'] = float(rng.uniform(0, 1))
    test[level] = metrics
  return test


def fake_samples(path, rng, levels):
  shape = (2, 8, 8, 3)
  np.savez(path, levels=np.array(levels), clean=rng.integers(0, 256, shape, dtype=np.uint8),
           distorted=rng.integers(0, 256, (len(levels),) + shape, dtype=np.uint8),
           restored=rng.integers(0, 256, (len(levels),) + shape, dtype=np.uint8))
  return str(path)


def fake_runs(rng, names, samples=None):
  both, samples = ('noise', 'blur'), samples or {}
  specs = {  # run: (distortion types evaluated, classifiers evaluated, restored)
      'classifier_small_vgg': (both, [C], False), 'classifier_small_resnet': (both, [U], False),
      'recnet_noise': (('noise',), [C, U], True), 'recnet_blur': (('blur',), [C, U], True),
      'recnet': (both, [C, U], True), 'qrnet': (both, [C, U], True),
      'small_qrnet': (both, [C], True), 'finetuned_noise': (('noise',), [C], False),
      'finetuned_blur': (('blur',), [C], False), 'finetuned': (both, [C], False),
      'end_to_end': (both, [C], True), 'mqrnet': (both, [C, U], True)}
  return {name: {'test': fake_test(rng, *specs[name]), 'wall_s': float(rng.uniform(1, 5000)),
                 'samples': samples.get(name),
                 'images': {'train': 50000, 'val': 10000, 'test': 10000}, 'devices': 'cpu x2'}
          for name in names}


def fake_suite(tmp_path):
  """Two experiments: one with runs missing, one complete with the paper's Caltech101 numbers."""
  rng = np.random.default_rng(0)
  levels = ['clean', 'noise/20', 'blur/2']
  qrnet_samples = fake_samples(tmp_path / 'qrnet.npz', rng, levels)
  recnet_samples = fake_samples(tmp_path / 'recnet.npz', rng, levels)
  missing = {'recnet_blur', 'small_qrnet', 'end_to_end', 'mqrnet'}
  partial = fake_runs(rng, [r for r in ALL_RUNS if r not in missing], {'qrnet': qrnet_samples})
  partial['qrnet']['test']['noise/100']['qrnet/ssim'] = float('nan')
  full = fake_runs(rng, ALL_RUNS, {'qrnet': qrnet_samples, 'recnet': recnet_samples})
  experiments = [
      {'name': 'fashion_mnist', 'title': 'Fashion-MNIST, 32 px', 'classifier': C, 'unseen': U,
       'paper': None, 'runs': partial, 'latency': None,
       'parameters': {'qrnet': 1941139, 'small_qrnet': 1234}},
      {'name': 'caltech101', 'title': 'Caltech101, 64 px', 'classifier': C, 'unseen': U,
       'paper': 'caltech101', 'runs': full,
       'latency': {'image_size': 64, 'classifier': {'1': 1.5, '32': 0.25},
                   'qrnet+classifier': {'1': 3.125, '32': 0.5}},
       'parameters': {'qrnet': 1941139, 'small_qrnet': 1234}}]
  provenance = {'commit': 'abc123', 'dirty': False, 'when': '2026-12-01T00:00:00Z',
                'devices': 'cpu x2', 'configs': 'configs/suite'}
  return experiments, provenance


@pytest.fixture
def suite(tmp_path):
  return fake_suite(tmp_path)


def read_bytes(out_dir, name) -> bytes:
  return pathlib.Path(out_dir, name).read_bytes()


def expected_cell(value, row, column):
  """The documented print format, written out independently of report.py."""
  if value is None:
    return '—'
  if column == 'parameters' or column.endswith(' images'):
    return f'{int(value):,}'
  if column == 'wall s':
    return f'{value:.1f}'
  if column.startswith('ms/') or 'psnr' in f'{row} {column}'.lower():
    return f'{value:.2f}'
  return f'{value:.3f}'


TABLE_KEYS = {title: key for key, title in TABLE_TITLES.items()}


def markdown_tables(text):
  """{(experiment, table key): [cells of each line, header first]} for every table in report.md."""
  tables, experiment, key = {}, None, None
  for line in text.splitlines():
    if line.startswith('## '):
      found = re.search(r'\(`(\w+)`\)$', line)
      experiment = found.group(1) if found else None
    elif line.startswith('### '):
      key = TABLE_KEYS.get(line[4:], 'runs' if line == '### Runs' else line)
    elif line.startswith('#### '):  # one per-level table per run
      key = ('levels', re.fullmatch(r'#### `(\w+)`', line).group(1))
    elif line.startswith('|') and not line.startswith('|---'):
      tables.setdefault((experiment, key), []).append(
          [cell.strip() for cell in line.strip().strip('|').split('|')])
  return tables


def level_mean(run, metric, distortion, top=None):
  """Independent reference: numpy mean over the levels of the input dict (None if not finite)."""
  levels = sorted((level for level in run['test'] if level.startswith(distortion + '/')),
                  key=lambda level: float(level.split('/')[1]))
  values = [run['test'][level][metric] for level in levels][-top if top else 0:]
  mean = np.mean(np.array(values, dtype=float))
  return float(mean) if np.isfinite(mean) else None


def assert_close(actual, expected):
  if expected is None:
    assert actual is None
  else:
    assert actual == pytest.approx(expected, rel=1e-12, abs=1e-12)


def table_rows(results, experiment, table):
  return {row['method']: row['values']
          for row in results['experiments'][experiment]['tables'][table]['rows']}


def check_markdown_matches_json(out_dir, results):
  text = read_bytes(out_dir, 'report.md').decode('utf-8')
  md = markdown_tables(text)
  expected = {}
  for name, exp in results['experiments'].items():
    for key, table in exp['tables'].items():
      expected[(name, key)] = [['method'] + table['columns']] + [
          [row['method']] + [expected_cell(row['values'][c], row['method'], c)
                             for c in table['columns']] for row in table['rows']]
    if exp['runs']:
      run_columns = ['wall s', 'train images', 'val images', 'test images']
      expected[(name, 'runs')] = [['run', 'devices'] + run_columns] + [
          [run, r['devices']] + [expected_cell(v, run, c) for c, v in zip(
              run_columns, [r['wall_s'], *(r['images'][s] for s in ('train', 'val', 'test'))])]
          for run, r in exp['runs'].items()]
      for run, r in exp['runs'].items():  # each run's table has that run's own metrics only
        header = md[(name, ('levels', run))][0]
        metrics = header[1:]
        assert header[0] == 'level'
        assert sorted(metrics) == sorted({m for v in r['test'].values() for m in v})
        expected[(name, ('levels', run))] = [header] + [
            [level] + [expected_cell(values.get(m), '', m) for m in metrics]
            for level, values in r['test'].items()]
  assert md == expected
  return text


def test_report_files_cells_and_averages(suite, tmp_path):
  experiments, provenance = suite
  out_dir = str(tmp_path / 'report')
  results = report.write_report(out_dir, experiments, provenance)
  on_disk = json.loads(read_bytes(out_dir, 'results.json'))
  assert on_disk == results

  names = ['results.json', 'results.csv', 'report.md'] + [
      f'fig{n}_{e}.png' for n in (4, 5, 6, 7, 8) for e in ('fashion_mnist', 'caltech101')]
  assert sorted(os.listdir(out_dir)) == sorted(names)  # and no .tmp left behind
  for name in names[3:]:
    assert read_bytes(out_dir, name)[:8] == PNG_MAGIC
  width = lambda name: int.from_bytes(read_bytes(out_dir, name)[16:20], 'big')  # PNG IHDR
  # Figure 8: clean, distorted, QRNet (no RecNet samples) beside clean, distorted, RecNet, QRNet.
  assert width('fig8_fashion_mnist.png') * 4 == width('fig8_caltech101.png') * 3

  text = check_markdown_matches_json(out_dir, results)
  for name in names[3:]:
    assert f']({name})' in text
  for value in provenance.values():
    assert str(value) in text

  # Averages against numpy over the input's levels.
  for exp in experiments:
    name, runs = exp['name'], exp['runs']
    t2, t4, t5, t6 = (table_rows(results, name, t) for t in ('table2', 'table4', 'table5',
                                                            'table6'))
    qrnet = t2[f'QRNet + {C}']
    for d in ('noise', 'blur'):
      assert_close(t2[C][d], level_mean(runs[f'classifier_{C}'], f'none/{C}/accuracy', d))
      assert_close(qrnet[d], level_mean(runs['qrnet'], f'qrnet/{C}/accuracy', d))
      assert_close(t4[f'Fine-tuned {C} (single)'][d],
                   level_mean(runs[f'finetuned_{d}'], f'none/{C}/accuracy', d))
      assert_close(t6[f'QRNet + {U}'][f'{d} top-3'],
                   level_mean(runs['qrnet'], f'qrnet/{U}/accuracy', d, top=3))
      for metric in ('psnr', 'ssim'):
        assert_close(t5[metric.upper()][f'{d} distorted'],
                     level_mean(runs['qrnet'], f'none/{metric}', d))
        assert_close(t5[metric.upper()][f'{d} recovered'],
                     level_mean(runs['qrnet'], f'qrnet/{metric}', d))
    assert_close(qrnet['average'], np.mean([
        level_mean(runs['qrnet'], f'qrnet/{C}/accuracy', d) for d in ('noise', 'blur')]))
    assert_close(qrnet['clean'], runs['qrnet']['test']['clean'][f'qrnet/{C}/accuracy'])
    single = t2[f'RecNet (single) + {C}']
    assert_close(single['noise'], level_mean(runs['recnet_noise'], f'qrnet/{C}/accuracy', 'noise'))
    cleans = [runs[r]['test']['clean'][f'qrnet/{C}/accuracy'] for r in ('recnet_noise',
                                                                        'recnet_blur') if r in runs]
    assert_close(single['clean'], np.mean(cleans))

  # Missing runs: their rows are absent, a half-present pair leaves a blank; NaN prints blank.
  partial = results['experiments']['fashion_mnist']
  assert set(partial['tables']) == {'table2', 'table3', 'table4', 'table5', 'table6'}
  assert list(table_rows(results, 'fashion_mnist', 'table3')) == [f'QRNet + {C}']
  assert f'QRNet + {C} (end-to-end)' not in table_rows(results, 'fashion_mnist', 'table4')
  assert f'MQRNet + {U}' not in table_rows(results, 'fashion_mnist', 'table6')
  assert table_rows(results, 'fashion_mnist', 'table2')[f'RecNet (single) + {C}']['blur'] is None
  assert table_rows(results, 'fashion_mnist', 'table5')['SSIM']['noise recovered'] is None
  assert partial['runs']['qrnet']['test']['noise/100']['qrnet/ssim'] is None
  assert list(partial['runs']['qrnet']['test'])[:3] == ['clean', 'noise/10', 'noise/20']
  assert 'paper noise' not in partial['tables']['table2']['columns']
  assert table_rows(results, 'fashion_mnist', 'table4')[C]['ms/image batch 1'] is None

  # Paper numbers, latency and parameters where given.
  full = results['experiments']['caltech101']
  assert len(full['tables']['table2']['rows']) == 4 and len(full['tables']['table4']['rows']) == 5
  assert table_rows(results, 'caltech101', 'table2')[f'QRNet + {C}']['paper blur'] == 0.705
  assert table_rows(results, 'caltech101', 'table3')[f'small QRNet + {C}']['paper average'] == 0.761
  assert table_rows(results, 'caltech101', 'table3')[f'small QRNet + {C}']['parameters'] == 1234
  assert table_rows(results, 'caltech101', 'table5')['PSNR']['paper noise distorted'] == 15.29
  t4 = table_rows(results, 'caltech101', 'table4')
  assert t4[f'QRNet + {C} (end-to-end)']['paper noise'] == 0.861
  assert (t4[C]['ms/image batch 1'], t4[f'QRNet + {C} (end-to-end)']['ms/image batch 32']) == (
      1.5, 0.5)
  assert '| 1,941,139 |' in text and '| 3.12 |' in text

  # results.csv: exactly one row per number of results.json.
  with open(os.path.join(out_dir, 'results.csv'), newline='') as f:
    rows = list(csv.DictReader(f))
  from_csv = {(r['experiment'], r['table'], r['row'], r['column'], r['metric']): float(r['value'])
              for r in rows}
  assert len(from_csv) == len(rows)
  wanted = {}
  for name, exp in results['experiments'].items():
    for run, r in exp['runs'].items():
      wanted[(name, 'runs', run, 'wall s', 'seconds')] = r['wall_s']
      for split, count in r['images'].items():
        wanted[(name, 'runs', run, f'{split} images', 'count')] = count
      for level, metrics in r['test'].items():
        for metric, value in metrics.items():
          wanted[(name, 'levels', run, level, metric)] = value
    for table_name, table in exp['tables'].items():
      for row in table['rows']:
        for column, value in row['values'].items():
          wanted[(name, table_name, row['method'], column)] = value
  wanted = {k: v for k, v in wanted.items() if v is not None}
  assert {k[:4] if k[1] not in ('runs', 'levels') else k for k in from_csv} == set(wanted)
  for key, value in from_csv.items():
    assert value == wanted[key[:4] if key[1] not in ('runs', 'levels') else key]

  # Deterministic: a second call rewrites the same bytes.
  first = {n: read_bytes(out_dir, n) for n in ('report.md', 'results.json')}
  report.write_report(out_dir, experiments, provenance)
  for n, content in first.items():
    assert read_bytes(out_dir, n) == content


@pytest.mark.parametrize('runs, tables, figures', [
    ([], [], []),
    (['classifier_small_vgg'], ['table2', 'table4'], [4, 5, 7]),
    (['recnet_blur'], ['table2'], [4]),
    (['mqrnet'], [], []),  # MQRNet shows only with an unseen classifier
    (['finetuned_noise', 'small_qrnet'], ['table3', 'table4'], [5]),
])
def test_report_with_few_runs(runs, tables, figures, tmp_path):
  experiment = {'name': 'tiny', 'title': 'Tiny', 'classifier': C, 'unseen': None,
                'paper': 'caltech256', 'runs': fake_runs(np.random.default_rng(1), runs),
                'latency': None, 'parameters': {}}
  results = report.write_report(str(tmp_path), [experiment], {'commit': 'x'})
  check_markdown_matches_json(str(tmp_path), results)
  written = results['experiments']['tiny']
  assert list(written['tables']) == tables
  assert all(len(table['rows']) == 1 for table in written['tables'].values())
  pngs = sorted(n for n in os.listdir(tmp_path) if n.endswith('.png'))
  assert pngs == sorted(written['figures']) == [f'fig{n}_tiny.png' for n in figures]
