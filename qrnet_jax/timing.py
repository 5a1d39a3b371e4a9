"""Where a run's wall time goes, measured as it runs: every second is charged to exactly one part.

  setup        config checks, data, weights, models, the classifiers' set-up
  compile      lowering and XLA compilation of every jitted program (from jax.monitoring; tracing
               stays in the part that traced), wherever it happens
  train        train steps (QRNet's, and the classifiers' where a run trains them)
  validation   the validation passes after each epoch
  checkpoints  saving, waiting for and restoring checkpoints
  test         test evaluation at every level, and the samples of Figures 1/8
  write        the run's summary, outcomes and figure
  other        time inside the run outside every part above

Parts nest: time inside an inner part is the inner part's only. `with timing.stopwatch() as w:`
measures a block (a suite's run); `with timing.part('train'):` marks a part, a no-op outside a
stopwatch. The persistent compilation cache's hits and misses, and the images each part
processed (for images/s), are counted too.
"""
import collections
import contextlib
import threading
import time

import jax

PARTS = ('setup', 'compile', 'train', 'validation', 'checkpoints', 'test', 'write', 'other')
_COMPILE_EVENTS = ('/jax/core/compile/jaxpr_to_mlir_module_duration',
                   '/jax/core/compile/backend_compile_duration')
_CACHE_EVENTS = {'/jax/compilation_cache/cache_hits': 'cache_hits',
                 '/jax/compilation_cache/cache_misses': 'cache_misses'}

_active = None  # the Stopwatch of the block being measured, in this process
_lock = threading.Lock()
_listening = False


class Stopwatch:
  """Seconds per part and counters, for one measured block."""

  def __init__(self):
    self.seconds = collections.defaultdict(float)
    self.counts = collections.defaultdict(int)
    self._stack = []
    self._mark = time.perf_counter()
    self._compiled_since_mark = 0.

  def _charge(self):
    now = time.perf_counter()
    elapsed = now - self._mark - self._compiled_since_mark
    self.seconds[self._stack[-1] if self._stack else 'other'] += max(elapsed, 0.)
    self._mark, self._compiled_since_mark = now, 0.

  def enter(self, name):
    self._charge()
    self._stack.append(name)

  def leave(self):
    self._charge()
    self._stack.pop()

  def compiled(self, seconds):
    self.seconds['compile'] += seconds
    self._compiled_since_mark += seconds

  def record(self, wall_s) -> dict:
    """{'wall_s', 'parts': seconds of each part (they add up to wall_s), 'counts'}."""
    self._charge()
    return {'wall_s': round(wall_s, 3),
            'parts': {p: round(self.seconds.get(p, 0.), 3) for p in PARTS},
            'counts': dict(sorted(self.counts.items()))}


def _on_duration(event, duration, **_):
  with _lock:
    if _active is not None and event in _COMPILE_EVENTS:
      _active.compiled(duration)


def _on_event(event, **_):
  with _lock:
    if _active is not None and event in _CACHE_EVENTS:
      _active.counts[_CACHE_EVENTS[event]] += 1


@contextlib.contextmanager
def stopwatch():
  """Measures the block; yields the Stopwatch (its `record(wall_s)` after the block)."""
  global _active, _listening
  with _lock:
    if not _listening:
      jax.monitoring.register_event_duration_secs_listener(_on_duration)
      jax.monitoring.register_event_listener(_on_event)
      _listening = True
    outer, _active = _active, Stopwatch()
    watch = _active
  try:
    yield watch
  finally:
    watch._charge()  # pylint: disable=protected-access
    with _lock:
      _active = outer


@contextlib.contextmanager
def part(name: str):
  """Charges the block's time to `name` (one of PARTS), inside the active stopwatch."""
  watch = _active
  if watch is None:
    yield
    return
  with _lock:
    watch.enter(name)
  try:
    yield
  finally:
    with _lock:
      watch.leave()


def count(name: str, n: int):
  """Adds n to counter `name` of the active stopwatch (e.g. 'train_images')."""
  if _active is not None:
    _active.counts[name] += int(n)
