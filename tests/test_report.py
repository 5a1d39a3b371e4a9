"""report.write_report on fabricated suites: every file, every cell, every average, every number."""
import csv
import json
import os
import pathlib
import re

import numpy as np
import pytest

from qrnet_jax import corruptions, report, stats, timing
from qrnet_jax import outcomes as outcomes_lib
from qrnet_jax.report.tables import TABLE_TITLES

NOISE = [10, 20, 50, 100]  # 100 sorts before 20 as text: levels must sort by number
BLUR = [0.5, 1, 2, 4]
C, U = 'small_vgg', 'small_resnet'
PNG_MAGIC = b'\x89PNG\r\n\x1a\n'
ALL_RUNS = ['classifier_small_vgg', 'classifier_small_resnet', 'recnet_noise', 'recnet_blur',
            'recnet', 'qrnet', 'small_qrnet', 'finetuned_noise', 'finetuned_blur', 'finetuned',
            'end_to_end', 'mqrnet']


IMAGES = 200  # test images of the fabricated runs


def fake_test(rng, types, classifiers, restored):
  """An evaluation as evaluate_by_level returns it: (means, per-image outcomes), random; each
  accuracy is the mean of its outcomes."""
  levels = ['clean'] + [f'{t}/{s:g}' for t in types for s in (NOISE if t == 'noise' else BLUR)]
  stages = ['none', 'qrnet'] if restored else ['none']
  test, per_level = {}, {}
  for level in levels:
    metrics, correct = {}, {}
    for stage in stages:
      metrics[f'{stage}/psnr'] = None if level == 'clean' else float(rng.uniform(10, 30))
      metrics[f'{stage}/ssim'] = float(rng.uniform(0.2, 1))
      for c in classifiers:
        correct[f'{stage}/{c}/accuracy'] = rng.random(IMAGES) < rng.uniform(0.1, 0.9)
        metrics[f'{stage}/{c}/accuracy'] = float(correct[f'{stage}/{c}/accuracy'].mean())
    test[level], per_level[level] = metrics, correct
  return test, outcomes_lib.from_per_image(rng.permutation(IMAGES), per_level)


def fake_samples(path, rng, levels):
  shape = (2, 8, 8, 3)
  np.savez(path, levels=np.array(levels), clean=rng.integers(0, 256, shape, dtype=np.uint8),
           distorted=rng.integers(0, 256, (len(levels),) + shape, dtype=np.uint8),
           restored=rng.integers(0, 256, (len(levels),) + shape, dtype=np.uint8))
  return str(path)


def fake_runs(rng, names, samples=None, out_dir=None):
  both, samples = ('noise', 'blur'), samples or {}
  specs = {  # run: (distortion types evaluated, classifiers evaluated, restored)
      'classifier_small_vgg': (both, [C], False), 'classifier_small_resnet': (both, [U], False),
      'recnet_noise': (('noise',), [C, U], True), 'recnet_blur': (('blur',), [C, U], True),
      'recnet': (both, [C, U], True), 'qrnet': (both, [C, U], True),
      'small_qrnet': (both, [C], True), 'finetuned_noise': (('noise',), [C], False),
      'finetuned_blur': (('blur',), [C], False), 'finetuned': (both, [C], False),
      'end_to_end': (both, [C], True), 'mqrnet': (both, [C, U], True)}
  runs = {}
  for name in names:
    test, outcomes = fake_test(rng, *specs[name])
    path = None
    if out_dir is not None:
      path = os.path.join(out_dir, f'{name}.outcomes.npz')
      outcomes_lib.write(path, outcomes)
    parts = dict(zip(timing.PARTS, rng.uniform(0, 500, len(timing.PARTS)).round(3)))
    runs[name] = {'test': test, 'outcomes': path, 'wall_s': sum(parts.values()), 'parts': parts,
                  'counts': {'train_images': 6400, 'test_images': IMAGES * len(test),
                             'cache_hits': 2, 'cache_misses': 5},
                  'samples': samples.get(name),
                  'images': {'train': 50000, 'val': 10000, 'test': 10000}, 'devices': 'cpu x2'}
  return runs


def fake_suite(tmp_path):
  """Two experiments: one with runs missing, one complete with the paper's Caltech101 numbers."""
  rng = np.random.default_rng(0)
  levels = ['clean', 'noise/20', 'blur/2']
  qrnet_samples = fake_samples(tmp_path / 'qrnet.npz', rng, levels)
  recnet_samples = fake_samples(tmp_path / 'recnet.npz', rng, levels)
  missing = {'recnet_blur', 'small_qrnet', 'end_to_end', 'mqrnet'}
  partial = fake_runs(rng, [r for r in ALL_RUNS if r not in missing], {'qrnet': qrnet_samples},
                      tmp_path)
  partial['qrnet']['test']['noise/100']['qrnet/ssim'] = float('nan')
  full = fake_runs(rng, ALL_RUNS, {'qrnet': qrnet_samples, 'recnet': recnet_samples}, tmp_path)
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


def expected_cell(value, row, column, interval=None):
  """The documented print format, written out independently of report.py."""
  if value is None:
    return '—'
  if isinstance(value, str):
    return value
  if interval is not None:
    low, high = (expected_cell(x, row, column) for x in interval)
    return f'{expected_cell(value, row, column)} ({low}–{high})'
  if column == 'parameters' or column.endswith(' images'):
    return f'{int(value):,}'
  if column.endswith(' s'):
    return f'{value:.1f}'
  if column.endswith('img/s'):
    return f'{value:.0f}'
  if column.startswith('ms/') or 'psnr' in f'{row} {column}'.lower():
    return f'{value:.2f}'
  return f'{value:.3f}'


TABLE_KEYS = {title: key for key, title in TABLE_TITLES.items()}


def markdown_tables(text):
  """{(experiment, table key): [cells of each line, header first]} for every table in report.md."""
  tables, experiment, key, in_findings = {}, None, None, False
  for line in text.splitlines():
    if line.startswith('## '):
      found = re.search(r'\(`(\w+)`\)$', line)
      experiment = found.group(1) if found else None
      in_findings = line == '## Findings'
    elif line.startswith('### ') and in_findings:
      experiment, key = re.search(r'\(`(\w+)`\)$', line).group(1), 'findings'
    elif line.startswith('### '):
      key = TABLE_KEYS.get(line[4:], 'runs' if line == '### Runs' else line[4:])
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
    paper = any(f['paper_difference'] is not None for f in exp['findings'])
    sign = lambda x: '—' if x is None else f'{x:+.3f}'
    if exp['findings']:
      expected[(name, 'findings')] = [
          ['claim', 'A − B', '95 % interval', 'images', 'verdict'] + ['paper A − B'] * paper] + [
              [f['claim'], sign(f['difference']), f"{sign(f['low'])} to {sign(f['high'])}",
               f"{f['images']:,}", f['verdict']] + [sign(f['paper_difference'])] * paper
              for f in exp['findings']]
    for key, table in exp['tables'].items():
      expected[(name, table.get('title', key))] = [
          [table.get('row_header', 'method')] + table['columns']] + [
          [row['method']] + [expected_cell(row['values'][c], row['method'], c,
                                           row['intervals'].get(c))
                             for c in table['columns']] for row in table['rows']]
    if exp['runs']:
      parts = [f'{p} s' for p in timing.PARTS]
      run_columns = (['wall s'] + parts + ['train img/s', 'test img/s', 'jit cache hits']
                     + ['train images', 'val images', 'test images'])
      expected[(name, 'runs')] = [['run', 'devices'] + run_columns] + [
          [run, r['devices']] + [expected_cell(v, run, c) for c, v in zip(
              run_columns, [r['wall_s'], *r['parts'].values(),
                            r['counts']['train_images'] / r['parts']['train'],
                            r['counts']['test_images'] / r['parts']['test'],
                            f"{r['counts']['cache_hits']}/"
                            f"{r['counts']['cache_hits'] + r['counts']['cache_misses']}",
                            *(r['images'][s] for s in ('train', 'val', 'test'))])]
          for run, r in exp['runs'].items()]
      for run, r in exp['runs'].items():  # each run's table has that run's own metrics only
        header = md[(name, ('levels', run))][0]
        metrics = header[1:]
        assert header[0] == 'level'
        assert sorted(metrics) == sorted({m for v in r['test'].values() for m in v})
        expected[(name, ('levels', run))] = [header] + [
            [level] + [expected_cell(values.get(m), '', m, r['intervals'][level].get(m))
                       for m in metrics]
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
    for f in exp['findings']:
      for column in ('difference', 'low', 'high', 'images', 'paper_difference'):
        wanted[(name, 'findings', f['claim'], column)] = f[column]
    for run, r in exp['runs'].items():
      wanted[(name, 'runs', run, 'wall s', 'seconds')] = r['wall_s']
      for part, seconds in r['parts'].items():
        wanted[(name, 'runs', run, f'{part} s', 'seconds')] = seconds
      for counter, count in r['counts'].items():
        wanted[(name, 'runs', run, counter, 'count')] = count
      for split, count in r['images'].items():
        wanted[(name, 'runs', run, f'{split} images', 'count')] = count
      for level, metrics in r['test'].items():
        for metric, value in metrics.items():
          wanted[(name, 'levels', run, level, metric)] = value
          for bound, x in zip(('low', 'high'), r['intervals'][level].get(metric, ())):
            wanted[(name, 'levels', run, level, f'{metric} {bound}')] = x
    for table_name, table in exp['tables'].items():
      for row in table['rows']:
        for column, value in row['values'].items():
          wanted[(name, table_name, row['method'], column)] = value
          for bound, x in zip(('low', 'high'), row['intervals'].get(column, ())):
            wanted[(name, table_name, row['method'], f'{column} {bound}')] = x
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


def per_image(path, metric, levels):
  """Independently of report: each image's mean outcome over `levels`, images in index order."""
  with np.load(path) as f:
    order = np.argsort(f['index'])
    level_names, metric_names = list(f['levels']), list(f['metrics'])
    rows = [f['correct'][level_names.index(level), metric_names.index(metric)][order]
            for level in levels]
  return np.mean(rows, axis=0)


def scipy_percentile_interval(values):
  from scipy import stats as scipy_stats  # pylint: disable=g-import-not-at-top
  found = scipy_stats.bootstrap((values,), np.mean, n_resamples=10_000, method='percentile',
                                random_state=0).confidence_interval
  return found.low, found.high


def test_findings_and_intervals_against_scipy(suite, tmp_path):
  """Each claim is A - B on the same images, with scipy's bootstrap interval; cells' intervals are
  Wilson's (one level) and the bootstrap's (several), as scipy computes them."""
  experiments, provenance = suite
  results = report.write_report(str(tmp_path / 'report'), experiments, provenance)
  exp = results['experiments']['caltech101']
  runs = experiments[1]['runs']
  noise = [f'noise/{s:g}' for s in NOISE]
  blur = [f'blur/{s:g}' for s in BLUR]
  path = lambda run: runs[run]['outcomes']
  findings = {f['claim']: f for f in exp['findings']}
  cases = {  # claim: (A's [(run, metric, levels)], B's, margin)
      f'QRNet + {C} beats {C} alone (noise)': (
          [('qrnet', f'qrnet/{C}/accuracy', noise)],
          [(f'classifier_{C}', f'none/{C}/accuracy', noise)], 0.),
      f'QRNet + {C} beats {C} alone (blur, 3 strongest levels)': (
          [('qrnet', f'qrnet/{C}/accuracy', blur[-3:])],
          [(f'classifier_{C}', f'none/{C}/accuracy', blur[-3:])], 0.),
      f'QRNet costs {C} at most 1 point on clean images': (
          [('qrnet', f'qrnet/{C}/accuracy', ['clean'])],
          [(f'classifier_{C}', f'none/{C}/accuracy', ['clean'])], 0.01),
      'QRNet beats RecNet (single) (blur)': (
          [('qrnet', f'qrnet/{C}/accuracy', blur)], [('recnet_blur', f'qrnet/{C}/accuracy', blur)],
          0.),
      f'QRNet + {C} (end-to-end) beats Fine-tuned {C} (single) (average)': (
          [('end_to_end', f'qrnet/{C}/accuracy', noise + blur)],
          [('finetuned_noise', f'none/{C}/accuracy', noise),
           ('finetuned_blur', f'none/{C}/accuracy', blur)], 0.),
      f'MQRNet + {U} beats QRNet + {U} (noise)': (
          [('mqrnet', f'qrnet/{U}/accuracy', noise)], [('qrnet', f'qrnet/{U}/accuracy', noise)],
          0.),
  }
  assert len(exp['findings']) == 20  # every claim (Table 2: 9, 3: 1, 4: 4, Figure 6: 6)
  for claim, (a, b, margin) in cases.items():
    side = lambda parts: (sum(per_image(path(r), m, lv) * len(lv) for r, m, lv in parts)
                          / sum(len(lv) for _, _, lv in parts))
    differences = side(a) - side(b)
    f = findings[claim]
    assert f['images'] == IMAGES and f['margin'] == margin
    assert f['difference'] == pytest.approx(differences.mean(), abs=1e-12)
    low, high = scipy_percentile_interval(differences)
    assert (f['low'], f['high']) == pytest.approx((low, high), abs=0.006)
    assert f['verdict'] == ('holds' if f['low'] > -margin else
                            'reversed' if f['high'] < -margin else 'not resolved')
  assert findings[f'QRNet + {C} beats {C} alone (noise)']['paper_difference'] == pytest.approx(
      0.832 - 0.642)
  assert findings[f'QRNet + {C} beats {C} alone (noise, 3 strongest levels)'][
      'paper_difference'] is None

  # Cells: a table's average over levels (bootstrap) and a per-level accuracy (Wilson).
  from scipy import stats as scipy_stats  # pylint: disable=g-import-not-at-top
  row = table_rows(results, 'caltech101', 'table2')
  [qrnet_row] = [r for r in exp['tables']['table2']['rows'] if r['method'] == f'QRNet + {C}']
  values = per_image(path('qrnet'), f'qrnet/{C}/accuracy', noise)
  assert row[f'QRNet + {C}']['noise'] == pytest.approx(values.mean(), abs=1e-12)
  assert qrnet_row['intervals']['noise'] == pytest.approx(scipy_percentile_interval(values),
                                                          abs=0.006)
  correct = per_image(path('qrnet'), f'qrnet/{C}/accuracy', ['noise/100'])
  wilson = scipy_stats.binomtest(int(correct.sum()), IMAGES).proportion_ci(method='wilson')
  assert exp['runs']['qrnet']['intervals']['noise/100'][f'qrnet/{C}/accuracy'] == pytest.approx(
      [wilson.low, wilson.high], abs=1e-12)
  clean = per_image(path('qrnet'), f'qrnet/{C}/accuracy', ['clean'])
  wilson = scipy_stats.binomtest(int(clean.sum()), IMAGES).proportion_ci(method='wilson')
  assert qrnet_row['intervals']['clean'] == pytest.approx([wilson.low, wilson.high], abs=1e-12)


def test_seeds_table_is_the_spread_over_replicate_runs(tmp_path):
  """Runs R, R_seed1, R_seed2: per method the mean and std (n - 1) over seeds of the table's
  columns, against numpy on the fabricated per-level numbers; a method with one seed has no row."""
  rng = np.random.default_rng(3)
  runs = fake_runs(rng, ['classifier_small_vgg', 'qrnet', 'recnet_noise', 'recnet_blur'])
  for k in (1, 2):
    for name in ('qrnet', 'recnet_noise'):  # recnet_blur has no replicates: no single row
      runs[f'{name}_seed{k}'] = fake_runs(rng, [name])[name]
  experiment = {'name': 'seeded', 'title': 'Seeds', 'classifier': C, 'unseen': None,
                'paper': None, 'runs': runs, 'latency': None, 'parameters': {}}
  results = report.write_report(str(tmp_path), [experiment], {'commit': 'x'})
  table = results['experiments']['seeded']['seeds']
  assert [(r['method'], r['seeds']) for r in table['rows']] == [(f'QRNet + {C}', 3)]
  values = table['rows'][0]['values']
  for column in ('noise', 'blur'):
    per_seed = [level_mean(runs[r], f'qrnet/{C}/accuracy', column)
                for r in ('qrnet', 'qrnet_seed1', 'qrnet_seed2')]
    assert values[f'{column} mean'] == pytest.approx(np.mean(per_seed), abs=1e-12)
    assert values[f'{column} std'] == pytest.approx(np.std(per_seed, ddof=1), abs=1e-12)
    assert values[f'{column} max'] == pytest.approx(max(per_seed), abs=1e-12)
  text = read_bytes(str(tmp_path), 'report.md').decode()
  assert '### Seeds: the spread over training seeds' in text
  assert f"| QRNet + {C} | 3 | " in text


def test_suite_seeds_option_repeats_the_whole_experiment(tmp_path):
  """Every run again with seed + k, the classifiers included; each replicate reads its own
  seed's classifiers; the suite plans it (each replicate after the classifiers it reads)."""
  from configs.suites import default as default_suite  # pylint: disable=g-import-not-at-top
  from qrnet_jax import suite  # pylint: disable=g-import-not-at-top
  config = default_suite.get_config('quick,seeds=3')
  runs = config.experiments.fashion_mnist.runs
  assert len(runs) == 13 * 3
  for k in (1, 2):
    assert (runs[f'classifier_small_vgg_seed{k}'].config.seed
            == runs.classifier_small_vgg.config.seed + k)
    assert runs[f'qrnet_seed{k}'].config.seed == runs.qrnet.config.seed + k
    assert runs[f'qrnet_seed{k}'].classifiers_from.to_dict() == {
        'small_vgg': f'classifier_small_vgg_seed{k}',
        'small_resnet': f'classifier_small_resnet_seed{k}'}
    assert runs[f'finetuned_seed{k}'].classifiers_from.to_dict() == {
        'small_vgg': f'classifier_small_vgg_seed{k}'}
  order = [r.name for r in suite.plan(config, str(tmp_path))]
  assert order.index('classifier_small_vgg_seed2') < order.index('mqrnet_seed2')
  with pytest.raises(ValueError, match=r"unknown variant 'seeds=0'"):
    default_suite.get_config('seeds=0')


def test_findings_over_seeds_judge_each_claim_on_each_seed(tmp_path):
  """Runs R, R_seed1, R_seed2 of C alone and QRNet: each claim's paired difference per seed
  recomputed with numpy from the outcomes, its verdict, and the spread over seeds; a claim whose
  runs have one seed (RecNet) has no record; markdown and CSV carry them."""
  rng = np.random.default_rng(4)
  names = ['classifier_small_vgg', 'qrnet', 'recnet']
  runs = fake_runs(rng, names, out_dir=str(tmp_path))
  for k in (1, 2):
    (tmp_path / f'seed{k}').mkdir()
    for name in names[:2]:
      runs[f'{name}_seed{k}'] = fake_runs(rng, [name], out_dir=str(tmp_path / f'seed{k}'))[name]
  experiment = {'name': 'seeded', 'title': 'Seeds', 'classifier': C, 'unseen': None,
                'paper': None, 'runs': runs, 'latency': None, 'parameters': {}}
  results = report.write_report(str(tmp_path / 'report'), [experiment], {'commit': 'x'})
  records = {f['claim']: f for f in results['experiments']['seeded']['findings_over_seeds']}
  noise = [f'noise/{s:g}' for s in NOISE]
  assert sorted(records) == sorted([
      f'QRNet + {C} beats {C} alone (noise)', f'QRNet + {C} beats {C} alone (blur)',
      f'QRNet + {C} beats {C} alone (noise, 3 strongest levels)',
      f'QRNet + {C} beats {C} alone (blur, 3 strongest levels)',
      f'QRNet costs {C} at most 1 point on clean images'])
  f = records[f'QRNet + {C} beats {C} alone (noise)']
  differences = []
  for k, suffix in enumerate(['', '_seed1', '_seed2']):
    per_seed = (per_image(runs['qrnet' + suffix]['outcomes'], f'qrnet/{C}/accuracy', noise)
                - per_image(runs['classifier_small_vgg' + suffix]['outcomes'],
                            f'none/{C}/accuracy', noise))
    differences.append(per_seed.mean())
    p = f['per_seed'][k]
    assert p['difference'] == pytest.approx(per_seed.mean(), abs=1e-12)
    assert (p['low'], p['high']) == pytest.approx(scipy_percentile_interval(per_seed), abs=0.006)
    assert p['verdict'] == ('holds' if p['low'] > 0 else 'reversed' if p['high'] < 0
                            else 'not resolved')
  assert f['seeds'] == 3 and f['margin'] == 0.
  assert f['mean'] == pytest.approx(np.mean(differences), abs=1e-12)
  assert f['std'] == pytest.approx(np.std(differences, ddof=1), abs=1e-12)
  assert (f['min'], f['max']) == pytest.approx((min(differences), max(differences)), abs=1e-12)
  assert f['holds_on'] == sum(p['verdict'] == 'holds' for p in f['per_seed'])
  # Seed 0 is the Findings' own comparison.
  [first] = [x for x in results['experiments']['seeded']['findings'] if x['claim'] == f['claim']]
  assert first['difference'] == f['per_seed'][0]['difference']
  text = read_bytes(str(tmp_path / 'report'), 'report.md').decode()
  each = ', '.join(f'{d:+.3f}' for d in differences)
  assert (f"| QRNet + {C} beats {C} alone (noise) | 3 | {each} | {np.mean(differences):+.3f} | "
          f"{np.std(differences, ddof=1):.3f} | {min(differences):+.3f} | " in text)
  with open(tmp_path / 'report' / 'results.csv', newline='') as handle:
    rows = {(r['table'], r['row'], r['column']): r['value'] for r in csv.DictReader(handle)}
  assert float(rows[('findings over seeds', f['claim'], 'seed 2 difference')]) == pytest.approx(
      differences[2], abs=1e-12)
  assert rows[('findings over seeds', f['claim'], 'holds_on')] == str(f['holds_on'])


FAMILIES = corruptions.IMAGENET_C + corruptions.HELD_OUT
CORRUPTION_RUNS = {  # run: (restored, trained on)
    'classifier_small_vgg': (False, []), 'finetuned_seen': (False, ['fog', 'pixelate']),
    'qrnet_paper': (True, ['noise', 'blur']), 'qrnet_seen': (True, ['fog', 'pixelate'])}


def fake_corruption_runs(rng, out_dir):
  """Runs evaluated on clean images and every family at severities 1-5. The classifier alone
  loses nothing to brightness (each severity as accurate as clean): its relative CE there is
  undefined."""
  runs = {}
  for run, (restored, trained_on) in CORRUPTION_RUNS.items():
    stages = ['none', 'qrnet'] if restored else ['none']
    test, per_level = {}, {}
    for level in ['clean'] + [f'{f}/{s}' for f in FAMILIES for s in range(1, 6)]:
      correct = {f'{stage}/{C}/accuracy': rng.random(IMAGES) < rng.uniform(0.1, 0.9)
                 for stage in stages}
      if run == 'classifier_small_vgg' and level.startswith('brightness/'):
        correct = {m: per_level['clean'][m].copy() for m in correct}
      per_level[level] = correct
      test[level] = {m: float(v.mean()) for m, v in correct.items()}
    path = os.path.join(out_dir, f'{run}.outcomes.npz')
    outcomes_lib.write(path, outcomes_lib.from_per_image(np.arange(IMAGES), per_level))
    parts = dict(zip(timing.PARTS, rng.uniform(1, 500, len(timing.PARTS)).round(3)))
    runs[run] = {'test': test, 'outcomes': path, 'wall_s': sum(parts.values()), 'parts': parts,
                 'counts': {'train_images': 6400, 'test_images': IMAGES * len(test),
                            'cache_hits': 2, 'cache_misses': 5},
                 'images': {'train': 50000, 'val': 10000, 'test': IMAGES}, 'devices': 'cpu x2',
                 'trained_on': trained_on}
  return runs


def test_corruption_section_numbers_against_independent_sums(tmp_path):
  """Every corruption number recomputed from the runs' per-level accuracies with numpy: family
  means, CE and relative CE against the classifier alone, mCE over the 15 and the held-out 4,
  unseen means; the paper's tables and figures absent; markdown and CSV equal results.json."""
  rng = np.random.default_rng(1)
  runs = fake_corruption_runs(rng, str(tmp_path))
  exp = {'name': 'corruptions', 'title': 'Corruptions', 'classifier': C, 'unseen': None,
         'paper': None, 'runs': runs, 'latency': None, 'parameters': None}
  out_dir = str(tmp_path / 'report')
  results = report.write_report(out_dir, [exp], {'commit': 'abc'})
  tables = results['experiments']['corruptions']['tables']
  assert list(tables) == ['corruptions'] + [f'corruptions_{r}' for r in CORRUPTION_RUNS]
  heatmaps = [f'corruptions_{r}_corruptions.png' for r in CORRUPTION_RUNS]
  assert sorted(os.listdir(out_dir)) == sorted(['results.json', 'results.csv', 'report.md']
                                               + heatmaps)
  for name in heatmaps:
    assert read_bytes(out_dir, name)[:8] == PNG_MAGIC
  check_markdown_matches_json(out_dir, results)

  accuracy = lambda run, metric, family: np.array(
      [runs[run]['test'][f'{family}/{s}'][metric] for s in range(1, 6)])
  base = ('classifier_small_vgg', f'none/{C}/accuracy')
  base_clean = runs[base[0]]['test']['clean'][base[1]]
  summary = table_rows(results, 'corruptions', 'corruptions')
  for run, (restored, trained_on) in CORRUPTION_RUNS.items():
    metric = f'{"qrnet" if restored else "none"}/{C}/accuracy'
    clean = runs[run]['test']['clean'][metric]
    rows = table_rows(results, 'corruptions', f'corruptions_{run}')
    ce, rce = {}, {}
    for family in FAMILIES:
      row = rows[family + (' (seen)' if family in trained_on else '')]
      acc, base_acc = accuracy(run, metric, family), accuracy(*base, family)
      assert_close(row['accuracy'], acc.mean())
      for s in range(1, 6):
        assert row[f'severity {s}'] == acc[s - 1]
      ce[family] = (1 - acc).sum() / (1 - base_acc).sum()
      denominator = ((1 - base_acc) - (1 - base_clean)).sum()
      rce[family] = ((1 - acc) - (1 - clean)).sum() / denominator if denominator > 0 else None
      assert_close(row['CE'], ce[family])
      assert_close(row['relative CE'], rce[family])
    assert rce['brightness'] is None
    label = next(m for m in summary if m.startswith(f'{run}: '))
    assert label == f'{run}: QRNet + {C}' if restored else f'{run}: {C}'
    for name, group in (('15', corruptions.IMAGENET_C), ('held-out 4', corruptions.HELD_OUT)):
      for values in (summary[label], {'mean ' + name: rows[f'mean {name}']['accuracy'],
                                      'mCE ' + name: rows[f'mean {name}']['CE'],
                                      'relative mCE ' + name: rows[f'mean {name}']['relative CE']}):
        assert_close(values[f'mean {name}'],
                     np.mean([accuracy(run, metric, f).mean() for f in group]))
        assert_close(values[f'mCE {name}'], np.mean([ce[f] for f in group]))
        assert_close(values[f'relative mCE {name}'],
                     np.mean([rce[f] for f in group if rce[f] is not None]))
    assert_close(summary[label]['mean unseen'], np.mean(
        [accuracy(run, metric, f).mean() for f in FAMILIES if f not in trained_on]))
    assert summary[label]['clean'] == rows['clean']['accuracy'] == clean
    if run == base[0]:
      assert all(ce[f] == 1. for f in FAMILIES)
  # An interval recomputed: a family's accuracy is the per-image mean over its severities.
  found = results['experiments']['corruptions']['tables']['corruptions_qrnet_seen']['rows']
  fog = next(r for r in found if r['method'] == 'fog (seen)')
  per_image = np.mean([outcomes_lib.read(runs['qrnet_seen']['outcomes']).get(
      f'fog/{s}', f'qrnet/{C}/accuracy') for s in range(1, 6)], axis=0)
  assert fog['intervals']['accuracy'] == list(stats.bootstrap_interval(per_image))
  with open(os.path.join(out_dir, 'results.csv'), newline='') as f:
    from_csv = {(r['table'], r['row'], r['column']): float(r['value'])
                for r in csv.DictReader(f)}
  for name, table in tables.items():
    for row in table['rows']:
      for column, value in row['values'].items():
        if value is not None:
          assert from_csv[(name, row['method'], column)] == value


def test_corruption_findings_and_mce_intervals_against_scipy(tmp_path):
  """Each method against the classifier alone, on the same images: its findings are the paired
  differences of per-image means with scipy's percentile-bootstrap interval; its mCE and
  relative mCE intervals are scipy's percentile bootstrap of the same ratios (numpy here), the
  two runs resampled on the same images."""
  from scipy import stats as scipy_stats  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(2)
  runs = fake_corruption_runs(rng, str(tmp_path))
  exp = {'name': 'corruptions', 'title': 'Corruptions', 'classifier': C, 'unseen': None,
         'paper': None, 'runs': runs, 'latency': None, 'parameters': None}
  results = report.write_report(str(tmp_path / 'report'), [exp], {'commit': 'abc'})
  found = results['experiments']['corruptions']
  findings = {f['claim']: f for f in found['findings']}
  summary = {r['method']: r for r in found['tables']['corruptions']['rows']}
  base, base_metric = 'classifier_small_vgg', f'none/{C}/accuracy'
  levels = lambda families: [f'{f}/{s}' for f in families for s in range(1, 6)]
  claims = 0
  for run, (restored, trained_on) in CORRUPTION_RUNS.items():
    metric = f'{"qrnet" if restored else "none"}/{C}/accuracy'
    label = f'{run}: QRNet + {C}' if restored else f'{run}: {C}'
    if run == base:
      assert not any(c.startswith(label) for c in findings)
      assert not any('mCE' in column for column in summary[label]['intervals'])
      continue
    seen = [f for f in trained_on if f in FAMILIES]
    cases = {f"{label} beats {C} alone (ImageNet-C's 15 families)": (
                 levels(corruptions.IMAGENET_C), 0.),
             f'{label} beats {C} alone (the 4 held-out families)': (
                 levels(corruptions.HELD_OUT), 0.),
             f'{label} is at most 1 point below {C} alone on clean images': (['clean'], 0.01)}
    if seen:
      cases[f'{label} beats {C} alone (the families it never trained on)'] = (
          levels([f for f in FAMILIES if f not in seen]), 0.)
    for claim, (claim_levels, margin) in cases.items():
      f = findings[claim]
      differences = (per_image(runs[run]['outcomes'], metric, claim_levels)
                     - per_image(runs[base]['outcomes'], base_metric, claim_levels))
      assert f['images'] == IMAGES and f['margin'] == margin and f['b'] == f'{base}: {C}'
      assert f['difference'] == pytest.approx(differences.mean(), abs=1e-12)
      assert (f['low'], f['high']) == pytest.approx(scipy_percentile_interval(differences),
                                                    abs=0.006)
      assert f['verdict'] == ('holds' if f['low'] > -margin else
                              'reversed' if f['high'] < -margin else 'not resolved')
      claims += 1

    # (images, 2 + 10 per family): clean of the method and the baseline, then per family the
    # method's 5 severities and the baseline's.
    columns = [per_image(runs[run]['outcomes'], metric, ['clean']),
               per_image(runs[base]['outcomes'], base_metric, ['clean'])]
    for family in FAMILIES:
      columns += [per_image(runs[r]['outcomes'], m, [f'{family}/{s}'])
                  for r, m in ((run, metric), (base, base_metric)) for s in range(1, 6)]
    matrix = np.stack(columns, axis=1)

    def mce(group, relative):
      def statistic(index, axis=-1):
        error = 1 - matrix[index].mean(axis=-2)  # (..., columns)
        ratios = []
        for family in group:
          j = 2 + 10 * FAMILIES.index(family)
          method, baseline = error[..., j:j + 5].sum(-1), error[..., j + 5:j + 10].sum(-1)
          if relative:
            method, baseline = method - 5 * error[..., 0], baseline - 5 * error[..., 1]
          ratios.append(np.where(baseline > 0, method / np.where(baseline > 0, baseline, 1),
                                 np.nan))
        return np.nanmean(ratios, axis=0) if relative else np.mean(ratios, axis=0)
      return scipy_stats.bootstrap((np.arange(IMAGES),), statistic, vectorized=True,
                                   n_resamples=10_000, batch=250, method='percentile',
                                   random_state=0).confidence_interval

    for name, group in (('15', corruptions.IMAGENET_C), ('held-out 4', corruptions.HELD_OUT)):
      for column, relative in ((f'mCE {name}', False), (f'relative mCE {name}', True)):
        low, high = summary[label]['intervals'][column]
        expected = mce(group, relative)
        # Different resamples: equal to the Monte Carlo error of 10,000 resamples.
        assert (low, high) == pytest.approx((expected.low, expected.high),
                                            abs=0.03 * (expected.high - expected.low))
        assert low < summary[label]['values'][column] < high
  assert claims == len(found['findings']) == 3 * 3 + 2  # 3 methods, 2 of them saw families
