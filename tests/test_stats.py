"""qrnet_jax.stats against scipy's implementations on fixed data."""
import numpy as np
import pytest
from scipy import stats as scipy_stats

from qrnet_jax import stats


@pytest.mark.parametrize('k, n', [(0, 10), (3, 10), (10, 10), (850, 1000), (1703, 2000), (1, 7)])
def test_wilson_interval_is_scipys(k, n):
  expected = scipy_stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method='wilson')
  low, high = stats.wilson_interval(k, n)
  assert low == pytest.approx(expected.low, abs=1e-12)
  assert high == pytest.approx(expected.high, abs=1e-12)


@pytest.mark.parametrize('kind', ['correct', 'paired difference', 'level mean'])
def test_bootstrap_interval_is_scipys_percentile_bootstrap(kind):
  """The same statistic on the same data; the two draw different resamples, so they agree to
  the Monte Carlo error of 10,000 resamples (about 5e-4 here), not to the digit."""
  rng = np.random.default_rng(42)
  n = 2000
  a = rng.random(n) < 0.83
  b = rng.random(n) < 0.80
  values = {'correct': a.astype(float), 'paired difference': a.astype(float) - b,
            'level mean': (rng.random((n, 5)) < 0.7).mean(axis=1)}[kind]
  expected = scipy_stats.bootstrap((values,), np.mean, confidence_level=0.95, n_resamples=10_000,
                                   method='percentile', random_state=1).confidence_interval
  low, high = stats.bootstrap_interval(values)
  assert low == pytest.approx(expected.low, abs=2e-3)
  assert high == pytest.approx(expected.high, abs=2e-3)
  # The width is the normal approximation's, 2 x 1.96 standard errors of the mean.
  se = values.std(ddof=1) / np.sqrt(n)
  assert high - low == pytest.approx(2 * 1.959964 * se, rel=0.05)
  assert low < values.mean() < high


def test_bootstrap_is_reproducible_and_checks_its_input():
  values = np.arange(10.)
  assert stats.bootstrap_interval(values) == stats.bootstrap_interval(values)
  assert stats.bootstrap_interval(np.ones(5)) == (1., 1.)
  with pytest.raises(ValueError, match='non-empty vector'):
    stats.bootstrap_interval(np.zeros((0,)))
  with pytest.raises(ValueError, match='0 <= k <= n'):
    stats.wilson_interval(11, 10)


@pytest.mark.parametrize('low, high, margin, verdict', [
    (0.01, 0.05, 0., 'holds'), (-0.05, -0.01, 0., 'reversed'), (-0.01, 0.02, 0., 'not resolved'),
    (-0.009, 0.004, 0.01, 'holds'), (-0.03, -0.011, 0.01, 'reversed'),
    (-0.012, 0.004, 0.01, 'not resolved'), (0., 0.01, 0., 'not resolved')])
def test_verdict_reads_the_interval(low, high, margin, verdict):
  assert stats.verdict(low, high, margin) == verdict


def test_column_means_resample_every_column_with_the_same_images():
  """One column: bootstrap_means' draws exactly; two columns: paired (a copy of a column has the
  same mean in every resample); the means of 0/1 columns are what numpy computes per resample."""
  rng = np.random.default_rng(3)
  values = (rng.random(301) < 0.6).astype(float)
  assert stats.bootstrap_column_means(values[:, None], resamples=500)[:, 0] == pytest.approx(
      stats.bootstrap_means(values, resamples=500), abs=1e-12)
  other = (rng.random(301) < 0.3).astype(float)
  means = stats.bootstrap_column_means(np.stack([values, other, values], axis=1), resamples=500)
  assert np.array_equal(means[:, 0], means[:, 2])
  assert not np.array_equal(means[:, 0], means[:, 1])
  picks = np.random.default_rng(stats.BOOTSTRAP_SEED).integers(0, 301, size=(500, 301))
  assert means[:, 1] == pytest.approx(other[picks].mean(axis=1), abs=1e-12)
  with pytest.raises(ValueError, match='matrix'):
    stats.bootstrap_column_means(values)


def test_percentile_interval_leaves_out_undefined_draws():
  draws = np.concatenate([np.linspace(0., 1., 1001), [np.nan] * 50])
  assert stats.percentile_interval(draws) == pytest.approx((0.025, 0.975))
  assert stats.percentile_interval([np.nan, np.nan]) is None
