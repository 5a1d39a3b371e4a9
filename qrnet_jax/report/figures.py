"""The paper's Figures 1/4-8 drawn from the report's data (matplotlib, Agg)."""
import io
import os

import numpy as np

from qrnet_jax import files
from qrnet_jax.corruptions import HELD_OUT
from qrnet_jax.report.methods import (DISTORTIONS, Method, end_to_end_methods, has_runs,
                                      level_order, levels_of, recovery_methods, unseen_methods)
from qrnet_jax.run_names import classifier_run


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
  lines = [(f'{c} (no restoration)', classifier_run(c), 'none'),
           (f'RecNet (multiple) + {c}', 'recnet', 'qrnet'), (f'QRNet + {c}', 'qrnet', 'qrnet')]
  lines = [line for line in lines
           if line[1] in tests and any(levels_of(tests[line[1]], d) for d in DISTORTIONS)]
  if not lines:
    return False
  fig, axes = _pyplot().subplots(len(DISTORTIONS), 2, figsize=(10, 8))
  for row, distortion in zip(axes, DISTORTIONS):
    for ax, quality in zip(row, ('psnr', 'ssim')):
      for label, run, stage in lines:
        points = [(tests[run][level].get(f'{stage}/{quality}'),
                   tests[run][level].get(f'{stage}/{c}/accuracy'))
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


def plot_corruption_heatmap(path, table: dict, title) -> bool:
  """A method's accuracy per corruption family (rows) and severity (columns), from its table in
  the report (report/corruptions.py): each cell printed, seen families marked in their label, a
  line above the held-out families."""
  columns = [c for c in table['columns'] if c.startswith('severity ')]
  rows = [r for r in table['rows'] if any(r['values'].get(c) is not None for c in columns)]
  if not rows or not columns:
    return False
  grid = np.asarray([[np.nan if r['values'].get(c) is None else r['values'][c] for c in columns]
                     for r in rows])
  plt = _pyplot()
  fig, ax = plt.subplots(figsize=(1.1 * len(columns) + 3, 0.32 * len(rows) + 1.5))
  image = ax.imshow(grid, vmin=0, vmax=1, cmap='viridis', aspect='auto')
  for (i, j), value in np.ndenumerate(grid):
    if np.isfinite(value):
      ax.text(j, i, f'{value:.2f}', ha='center', va='center', fontsize=7,
              color='black' if value > 0.6 else 'white')
  held_out = [i for i, r in enumerate(rows) if r['method'].split()[0] in HELD_OUT]
  if held_out:  # ImageNet-C's 15 above the line, the 4 held-out families below
    ax.axhline(held_out[0] - 0.5, color='white', linewidth=2)
  ax.set_xticks(range(len(columns)), [c.split()[1] for c in columns])
  ax.set_yticks(range(len(rows)), [r['method'] for r in rows], fontsize=8)
  ax.set(xlabel='severity', title=title)
  fig.colorbar(image, ax=ax, label='accuracy')
  return _save(fig, path)


def write_figures(out_dir: str, exp: dict, tests: dict, tables: dict = None) -> dict:
  """Draws the experiment's figures (and a corruption heatmap per method where `tables` has the
  corruption section); {file name: caption} of those drawn."""
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
  figures = [(f'fig{number}_{exp["name"]}.png', caption, draw)
             for number, caption, draw in figures]
  for name, table in (tables or {}).items():
    if name.startswith('corruptions_'):
      caption = f'{table["title"]}: accuracy per family and severity'
      figures.append((f'{name}_{exp["name"]}.png', caption,
                      lambda p, t=table, c=caption: plot_corruption_heatmap(p, t, c)))
  drawn = {}
  for file, caption, draw in figures:
    if draw(os.path.join(out_dir, file)):
      drawn[file] = caption
    elif files.exists(os.path.join(out_dir, file)):  # from an earlier report: now stale
      files.remove(os.path.join(out_dir, file))
  return drawn




def plot_run(path, test: dict, classifiers, title) -> bool:
  """One run's accuracy by level (its accuracy_by_level.png): a line per classifier, without and
  with the run's restorer, drawn as Figures 4-6 are."""
  stages = [s for s in ('none', 'qrnet') if any(f'{s}/{c}/accuracy' in m for c in classifiers
                                                 for m in test.values())]
  methods = [Method(f'{stage}/{c}', c if stage == 'none' else f'QRNet + {c}',
                           {d: ('run', f'{stage}/{c}/accuracy') for d in DISTORTIONS})
             for c in classifiers for stage in stages]
  return plot_accuracy_by_level(path, {'run': test}, methods, title)
