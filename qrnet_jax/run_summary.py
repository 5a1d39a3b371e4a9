"""A finished run's summary: one typed record, written by the run (run.py) as WORKDIR/summary.json
and read back by the suite, the report's inputs and restore through `read`."""
import dataclasses
import os
from typing import Optional

from qrnet_jax import files, metrics

SUMMARY_FILE = 'summary.json'  # written last: a run with one has finished


@dataclasses.dataclass(frozen=True)
class RunSummary:
  workdir: str
  final_step: int  # 0 where nothing trained after the classifiers (Table 4's baselines)
  epochs: int
  best_epoch: Optional[int]
  best_val_loss: Optional[float]
  stopped_early: bool
  history: list  # the loop's epochs: {'epoch', 'phase', 'step', 'train', 'val'}
  test: dict  # {level name: {metric: value}}, evaluate.evaluate_by_level's means
  data: dict  # the dataset's info (data.Dataset.info): class names, split sizes, ...
  devices: int
  device_kind: str = '?'  # absent from summaries written before it was recorded
  # The distortion types its training saw (run.trained_distortions); None: written before recorded
  trained_on: Optional[list] = None

  @property
  def images(self) -> Optional[dict]:
    """The images each split used: the subsets where the config takes some, else the splits."""
    return self.data.get('used_sizes') or self.data.get('split_sizes')

  @property
  def class_names(self) -> Optional[tuple]:
    names = self.data.get('class_names')
    return tuple(names) if names else None


def path(workdir: str) -> str:
  return os.path.join(workdir, SUMMARY_FILE)


def write(workdir: str, summary: RunSummary) -> None:
  metrics.write_json(path(workdir), dataclasses.asdict(summary))


def exists(workdir: str) -> bool:
  return files.is_file(path(workdir))


def read(workdir: str) -> Optional[RunSummary]:
  """The run's summary, or None where it has not finished (or the file is unreadable)."""
  saved = files.read_json(path(workdir))
  if saved is None:
    return None
  known = {f.name for f in dataclasses.fields(RunSummary)}
  return RunSummary(**{k: v for k, v in saved.items() if k in known})
