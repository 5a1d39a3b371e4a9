"""Milliseconds per image of the classifier and of QRNet + classifier (Section IV-B1)."""
import math
import time
import types

from qrnet_jax import latency

SIZE = 16


class _CountingModule:
  """Stands in for a Linen module; its apply runs once per trace when called under jit."""

  def __init__(self, module):
    self.module = module
    self.traces = 0
    self.input_shapes = []

  def apply(self, variables, images, **kwargs):
    self.traces += 1
    self.input_shapes.append(images.shape)
    return self.module.apply(variables, images, **kwargs)


def test_latency_for_reports_every_batch_size_in_positive_milliseconds():
  result = latency.latency_for('small_vgg', 3, SIZE, small=True, batch_sizes=(1, 4), repeats=3)
  assert set(result) >= {'classifier', 'qrnet+classifier', 'device', 'repeats'}
  for name in ('classifier', 'qrnet+classifier'):
    assert set(result[name]) == {'1', '4'}
    for ms in result[name].values():
      assert math.isfinite(ms) and ms > 0, (name, ms)
  assert result['device'].startswith('cpu ') and result['repeats'] == 3
  assert (result['arch'], result['small'], result['dtype']) == ('small_vgg', True, 'float32')


def test_every_timed_run_was_compiled_before_its_clock_started(monkeypatch):
  qrnet, qrnet_params, classifier, classifier_variables, _ = latency.random_models(
      'small_vgg', 3, SIZE, small=True)
  qrnet, classifier = _CountingModule(qrnet), _CountingModule(classifier)
  traces_at_clock = []

  def clock():
    traces_at_clock.append(qrnet.traces + classifier.traces)
    return time.perf_counter()

  monkeypatch.setattr(latency, 'time', types.SimpleNamespace(perf_counter=clock))
  repeats = 3
  latency.measure_latency(qrnet, qrnet_params, classifier, classifier_variables, image_size=SIZE,
                          input_size=2 * SIZE, batch_sizes=(1, 4), repeats=repeats)
  # Per batch size: QRNet traced once; the classifier once alone and once after QRNet.
  assert (qrnet.traces, classifier.traces) == (2, 4)
  # Two functions x two batch sizes x `repeats` timed runs, each between a start and an end.
  assert len(traces_at_clock) == 2 * 2 * repeats * 2
  starts, ends = traces_at_clock[0::2], traces_at_clock[1::2]
  assert starts == ends, 'a timed run traced (compiled) inside its timing'
  # The classifier saw its own input size: the resize of steps.classifier_logits.
  assert set(classifier.input_shapes) == {(1, 2 * SIZE, 2 * SIZE, 3), (4, 2 * SIZE, 2 * SIZE, 3)}
  assert set(qrnet.input_shapes) == {(1, SIZE, SIZE, 3), (4, SIZE, SIZE, 3)}
