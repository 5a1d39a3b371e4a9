"""The corruption suite (configs/suites/corruptions.py:quick) end to end: four methods evaluated on
all 19 families, the report's corruption section equal to the runs' own numbers."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from configs.suites import corruptions as corruption_suite
from qrnet_jax import corruptions

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPERIMENT = 'corruptions'
RUNS = ('classifier_small_vgg', 'finetuned_seen', 'qrnet_paper', 'qrnet_seen')
FAMILIES = corruptions.IMAGENET_C + corruptions.HELD_OUT


def summary(workdir, run):
  return json.loads((workdir / EXPERIMENT / run / 'summary.json').read_text())


@pytest.fixture(scope='module')
def quick_suite(tmp_path_factory):
  """The quick variant run once for this module: generated 16 px images, one epoch."""
  workdir = tmp_path_factory.mktemp('corruption_suite')
  flags = os.environ.get('XLA_FLAGS', '').replace('--xla_force_host_platform_device_count=4', '')
  result = subprocess.run(
      [sys.executable, '-m', 'qrnet_jax.main', '--config', 'configs/suites/corruptions.py:quick',
       '--workdir', str(workdir)], cwd=ROOT, capture_output=True, text=True, timeout=1500,
      env=dict(os.environ, PYTHONPATH=ROOT,  # -O0: as tests/test_suite.py, to compile faster
               XLA_FLAGS=f'{flags} --xla_backend_optimization_level=0'.strip()))
  assert result.returncode == 0, result.stderr[-4000:]
  return workdir


def test_every_method_is_evaluated_on_every_family_and_severity(quick_suite):
  levels = {'clean'} | {f'{f}/{s}' for f in FAMILIES for s in corruptions.SEVERITIES}
  for run in RUNS:
    found = summary(quick_suite, run)
    assert set(found['test']) == levels, run
    expected = {'classifier_small_vgg': [], 'qrnet_paper': ['noise', 'blur']}.get(
        run, list(corruption_suite.SEEN))
    assert found['trained_on'] == expected, run


def test_corruption_report_numbers_are_the_runs_numbers(quick_suite):
  """Each family's accuracy and CE recomputed from the runs' summary.json; every table cell of
  report.md is results.json's number as printed."""
  results = json.loads((quick_suite / 'results.json').read_text())['experiments'][EXPERIMENT]
  tables = results['tables']
  assert list(tables) == ['corruptions'] + [f'corruptions_{r}' for r in RUNS]  # no paper tables
  assert sorted(results['figures']) == sorted(f'corruptions_{r}_{EXPERIMENT}.png' for r in RUNS)
  tests = {r: summary(quick_suite, r)['test'] for r in RUNS}
  base = [tests['classifier_small_vgg'][f'{f}/{s}']['none/small_vgg/accuracy']
          for f in FAMILIES for s in corruptions.SEVERITIES]
  base = dict(zip(FAMILIES, np.reshape(base, (len(FAMILIES), -1))))
  for run in RUNS:
    stage = 'qrnet' if run.startswith('qrnet') else 'none'
    rows = {r['method'].removesuffix(' (seen)'): r for r in tables[f'corruptions_{run}']['rows']}
    for family in FAMILIES:
      accuracy = np.array([tests[run][f'{family}/{s}'][f'{stage}/small_vgg/accuracy']
                           for s in corruptions.SEVERITIES])
      assert rows[family]['values']['accuracy'] == pytest.approx(accuracy.mean(), abs=1e-12)
      assert rows[family]['values']['CE'] == pytest.approx(
          (1 - accuracy).sum() / (1 - base[family]).sum(), abs=1e-12)
      seen = run.endswith('_seen') and family in corruption_suite.SEEN
      assert rows[family]['method'].endswith(' (seen)') == seen
  report = open(quick_suite / 'report.md').read()
  checked = 0
  for table in tables.values():
    lines = report.split(f'### {table["title"]}\n\n', 1)[1].split('\n\n', 1)[0].splitlines()
    header = [c.strip() for c in lines[0].strip('|').split('|')]
    assert header == [table['row_header'] if 'row_header' in table else 'method'] + table['columns']
    for line, row in zip(lines[2:], table['rows'], strict=True):
      cells = [c.strip() for c in line.strip('|').split('|')]
      assert cells[0] == row['method']
      for cell, column in zip(cells[1:], table['columns']):
        value, interval = row['values'][column], row['intervals'].get(column)
        expected = '—' if value is None else f'{value:.3f}'
        if interval is not None:
          expected += f' ({interval[0]:.3f}–{interval[1]:.3f})'
        assert cell == expected
        checked += value is not None
  assert checked > 4 * 19 * 7
  # The findings: each method against C alone, its clean and mean differences as the runs' own.
  findings = {f['claim']: f for f in results['findings']}
  assert len(findings) == 3 * 3 + 2  # 15, held-out 4, clean; unseen where it saw families
  alone = tests['classifier_small_vgg']
  for run in RUNS[1:]:
    stage = 'qrnet' if run.startswith('qrnet') else 'none'
    label = f'{run}: QRNet + small_vgg' if stage == 'qrnet' else f'{run}: small_vgg'
    mean = lambda test, metric, families: np.mean(
        [test[f'{f}/{s}'][metric] for f in families for s in corruptions.SEVERITIES])
    f = findings[f'{label} is at most 1 point below small_vgg alone on clean images']
    assert f['difference'] == pytest.approx(
        tests[run]['clean'][f'{stage}/small_vgg/accuracy']
        - alone['clean']['none/small_vgg/accuracy'], abs=1e-9)
    f = findings[f"{label} beats small_vgg alone (ImageNet-C's 15 families)"]
    assert f['difference'] == pytest.approx(
        mean(tests[run], f'{stage}/small_vgg/accuracy', corruptions.IMAGENET_C)
        - mean(alone, 'none/small_vgg/accuracy', corruptions.IMAGENET_C), abs=1e-9)
    assert f['low'] <= f['difference'] <= f['high']
