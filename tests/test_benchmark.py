"""python -m qrnet_jax.benchmark: the contenders take turns and the table's figures follow from the
measured step times (speed itself is a printed figure, never asserted)."""
import subprocess
import sys


from qrnet_jax import benchmark
from qrnet_jax.ops import onednn


def test_report_gives_images_per_second_and_ratio_to_the_peer_of_the_same_dtype():
  found = [benchmark.Contender('onednn', 'float32', None, 3.0, [0.1, 0.3, 0.2]),
           benchmark.Contender('onednn', 'bfloat16', None, 3.0, [0.4]),
           benchmark.Contender('torch', 'float32', None, 0.5, [0.4, 0.4])]
  rows = benchmark.report(found, batch_size=8).splitlines()
  assert rows[0].split() == ['conv_impl', 'dtype', 'compile', 's', 'step', 'ms', 'q1-q3', 'ms',
                            'images/s', '/', 'torch']
  # 16 images per step: median 0.2 s -> 80 images/s, 2x PyTorch's 40; no bfloat16 peer, no ratio.
  assert rows[1].split()[-2:] == ['80.0', '2.00x']
  assert rows[2].split()[-1] == '40.0'
  assert rows[3].split()[-1] == '40.0'


def test_take_turns_interleaves_the_contenders():
  calls = []

  def timer(name):
    def run(n):
      calls.append(name)
      return [0.1] * n
    return run

  found = [benchmark.Contender(name, 'float32', timer(name), 0.0) for name in ('xla', 'onednn')]
  benchmark.take_turns(found, rounds=3, steps_per_round=2)
  assert calls == ['xla', 'onednn'] * 3
  assert [len(c.times) for c in found] == [6, 6]


def test_benchmark_runs_every_implementation_at_a_tiny_size():
  impls = 'xla,onednn' if onednn.available() else 'xla'
  result = subprocess.run(
      [sys.executable, '-m', 'qrnet_jax.benchmark', '--image_size=16', '--batch_size=4',
       '--classifiers=', '--dtypes=float32', f'--conv_impls={impls}', '--rounds=2', '--steps=1',
       '--notorch'], capture_output=True, text=True, timeout=300, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  rows = [line.split() for line in result.stdout.splitlines()
          if line.split()[:2] in (['xla', 'float32'], ['onednn', 'float32'])]
  assert [row[0] for row in rows] == impls.split(',')
  assert all(float(row[5]) > 0 for row in rows), result.stdout
  assert 'round 2/2 done' in result.stdout
