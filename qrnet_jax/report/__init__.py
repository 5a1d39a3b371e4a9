"""An experiment suite's results laid out as the paper's Tables 2-5 and Figures 1/4-8.

The report is data plus renderers: tables.py builds every table as data from the runs' test results,
markdown.py and long_csv.py render them, figures.py draws the figures, paper.py holds the paper's
numbers, findings.py judges the paper's claims on the runs' per-image outcomes (each run's
outcomes.npz) with paired intervals. write_report(out_dir, experiments, provenance) writes into
out_dir:
  results.json     the findings, every run's per-level metrics, time and every table, with 95 %
                   intervals: the one source of report.md;
  results.csv      the same numbers in long format, one row per number;
  report.md        the findings first, then provenance, the tables and a per-level table per
                   run, figures embedded;
  fig4_<name>.png .. fig8_<name>.png, corruptions_<run>_<name>.png.
Runs evaluated on ImageNet-C's corruption families add the corruption section (corruptions.py):
a summary table, a table and a heatmap per method.
"""
import json
import os

from qrnet_jax import files, metrics
from qrnet_jax import outcomes as outcomes_lib
from qrnet_jax.report import corruptions, figures, findings, long_csv, markdown, seeds, tables


def write_report(out_dir: str, experiments: list, provenance: dict) -> dict:
  """Writes results.json, results.csv, report.md and the figures; returns results.json's dict."""
  files.make_dirs(out_dir)
  results = {'provenance': metrics.json_safe(provenance), 'experiments': {}}
  for exp in experiments:
    outcomes = {run: outcomes_lib.read(r.get('outcomes')) for run, r in exp['runs'].items()}
    outcomes = {run: o for run, o in outcomes.items() if o is not None}
    runs = {run: tables.run_record(r, outcomes.get(run)) for run, r in exp['runs'].items()}
    tests = {run: r['test'] for run, r in runs.items()}
    tables_ = {**tables.experiment_tables(exp, tests, outcomes),
               **corruptions.corruption_tables(exp, runs, outcomes)}
    results['experiments'][exp['name']] = {
        'title': exp['title'], 'classifier': exp['classifier'], 'unseen': exp.get('unseen'),
        'paper': exp.get('paper'), 'runs': runs, 'latency': metrics.json_safe(exp.get('latency')),
        'parameters': metrics.json_safe(exp.get('parameters')),
        'findings': (findings.experiment_findings(exp, tests, outcomes)
                     + corruptions.corruption_findings(exp, runs, outcomes)),
        'tables': tables_, 'seeds': seeds.seeds_table(exp, tests, tables.accuracy_values),
        'findings_over_seeds': seeds.findings_over_seeds(exp, tests, outcomes),
        'figures': figures.write_figures(out_dir, exp, tests, tables_)}
  files.write_text(os.path.join(out_dir, 'results.json'),
                   json.dumps(results, indent=2, allow_nan=False) + '\n')
  files.write_text(os.path.join(out_dir, 'results.csv'), long_csv.results_csv(results))
  files.write_text(os.path.join(out_dir, 'report.md'), markdown.report_markdown(results))
  return results
