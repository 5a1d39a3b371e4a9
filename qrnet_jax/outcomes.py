"""Each test image's outcome in a run: correct or not, per level and classifier (outcomes.npz).

The evaluator (evaluate.evaluate_by_level) keeps them beside the run's means, so that a report can
compare two methods on the same images (paired intervals, qrnet_jax.stats). The file holds
  index    (N,)       every test image's position in the test split, ascending;
  levels   (L,)       'clean', 'noise/20', ... (evaluate.level_name);
  metrics  (M,)       'none/small_vgg/accuracy', 'qrnet/small_vgg/accuracy', ...;
  correct  (L, M, N)  whether that classifier got that image right at that level.
"""
import dataclasses
import io

import numpy as np

from qrnet_jax import files

OUTCOMES_FILE = 'outcomes.npz'


@dataclasses.dataclass(frozen=True)
class Outcomes:
  index: np.ndarray
  levels: tuple
  metrics: tuple
  correct: np.ndarray

  def __post_init__(self):
    expected = (len(self.levels), len(self.metrics), len(self.index))
    if self.correct.shape != expected:
      raise ValueError(f'outcomes: correct has shape {self.correct.shape}, expected {expected} '
                       '(levels, metrics, images)')

  def get(self, level: str, metric: str):
    """The (N,) outcomes of `metric` at `level`, or None where the run has none."""
    if level not in self.levels or metric not in self.metrics:
      return None
    return self.correct[self.levels.index(level), self.metrics.index(metric)]


def from_per_image(index, per_level: dict) -> Outcomes:
  """Outcomes from {level: {metric: (N,) values}} (the accuracy metrics are kept) and the
  images' indices, sorted by index."""
  order = np.argsort(index, kind='stable')
  levels = tuple(per_level)
  metrics = tuple(m for m in next(iter(per_level.values())) if m.endswith('/accuracy'))
  correct = np.array([[np.asarray(per_level[level][m])[order] > 0.5 for m in metrics]
                      for level in levels], dtype=bool).reshape(len(levels), len(metrics), -1)
  return Outcomes(np.asarray(index)[order].astype(np.int64), levels, metrics, correct)


def write(path: str, outcomes: Outcomes):
  buffer = io.BytesIO()
  np.savez_compressed(buffer, index=outcomes.index, levels=np.array(outcomes.levels),
                      metrics=np.array(outcomes.metrics), correct=outcomes.correct)
  files.write_bytes(path, buffer.getvalue())


def read(path: str):
  """The Outcomes in `path`, or None where there is no such file (a run from before they were
  kept)."""
  if not path or not files.exists(path):
    return None
  with np.load(io.BytesIO(files.read_bytes(path))) as f:
    return Outcomes(f['index'], tuple(str(x) for x in f['levels']),
                    tuple(str(x) for x in f['metrics']), f['correct'])
