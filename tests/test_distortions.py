"""Distortions against OpenCV (the independent reference) and statistical checks of the noise."""
import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qrnet_jax import corruptions, distortions

BLUR_LEVELS = distortions.PAPER_LEVELS['blur']


def cv2_blur(image, sigma):
  k = 4 * int(sigma) - 1
  return cv2.GaussianBlur(image, (k, k), sigma)  # default border: BORDER_REFLECT_101


@pytest.mark.parametrize('shape', [(32, 32), (33, 47), (40, 29), (64, 48)])
@pytest.mark.parametrize('sigma', BLUR_LEVELS)
def test_gaussian_blur_matches_opencv(shape, sigma):
  rng = np.random.default_rng(int(sigma) * 100 + shape[0])
  images = rng.random((2,) + shape + (3,), dtype=np.float32)
  ours = np.asarray(distortions.gaussian_blur(jnp.asarray(images), float(sigma)))
  reference = np.stack([cv2_blur(image, sigma) for image in images])
  np.testing.assert_allclose(ours, reference, atol=1e-5, rtol=0)


def test_gaussian_blur_per_image_sigma_under_jit():
  rng = np.random.default_rng(0)
  images = rng.random((len(BLUR_LEVELS), 37, 52, 3), dtype=np.float32)
  sigmas = jnp.asarray(BLUR_LEVELS, jnp.float32)
  max_k = distortions.max_blur_kernel_size(BLUR_LEVELS)
  blur = jax.jit(lambda x, s: distortions.gaussian_blur(x, s, max_kernel_size=max_k))
  ours = np.asarray(blur(jnp.asarray(images), sigmas))
  reference = np.stack([cv2_blur(image, s) for image, s in zip(images, BLUR_LEVELS)])
  np.testing.assert_allclose(ours, reference, atol=1e-5, rtol=0)


def test_gaussian_blur_traced_sigma_needs_static_kernel_size():
  with pytest.raises(ValueError, match='max_kernel_size'):
    jax.jit(distortions.gaussian_blur)(jnp.zeros((1, 8, 8, 3)), jnp.ones(1))


def test_blur_kernel_size_rule():
  assert [int(distortions.blur_kernel_size(s)) for s in BLUR_LEVELS] == [7, 15, 23, 31, 39]
  # Non-integer sigma: nearest odd size, at least 3.
  assert int(distortions.blur_kernel_size(0.3)) == 3
  assert int(distortions.blur_kernel_size(2.6)) == 9  # 4*2.6-1 = 9.4
  assert int(distortions.blur_kernel_size(2.4)) == 9  # 8.6 -> 9


def test_gaussian_noise_statistics_and_reproducibility():
  images = jnp.full((8, 64, 64, 3), 0.5, jnp.float32)
  key = jax.random.key(3)
  for sigma in (20., 40.):  # small enough that clipping at 0 and 1 is negligible around 0.5
    noisy = distortions.gaussian_noise(images, sigma, key)
    delta = np.asarray(noisy - images)
    assert abs(delta.mean()) < 2e-3
    assert abs(delta.std() - sigma / 255.) < 2e-3
  np.testing.assert_array_equal(distortions.gaussian_noise(images, 40., key),
                                distortions.gaussian_noise(images, 40., key))
  assert not np.array_equal(distortions.gaussian_noise(images, 40., key),
                            distortions.gaussian_noise(images, 40., jax.random.key(4)))


def test_gaussian_noise_per_image_sigma_and_clipping():
  images = jnp.full((2, 64, 64, 3), 0.5, jnp.float32)
  noisy = distortions.gaussian_noise(images, jnp.asarray([10., 100.]), jax.random.key(0))
  std = np.asarray(noisy - images).reshape(2, -1).std(axis=1)
  assert std[0] == pytest.approx(10. / 255., rel=0.05)
  assert std[1] > 3 * std[0]
  assert float(noisy.min()) >= 0. and float(noisy.max()) <= 1.


def test_random_distortion_draws_types_and_levels():
  images = jnp.full((2, 16, 16, 3), 0.5, jnp.float32)
  draw = jax.jit(lambda k: distortions.random_distortion(
      images, k, ('noise', 'blur'), distortions.PAPER_LEVELS)[1:])
  drawn = {tuple(int(i) for i in draw(jax.random.key(s))) for s in range(200)}
  assert drawn == {(t, l) for t in range(2) for l in range(5)}
  single = jax.jit(lambda k: distortions.random_distortion(
      images, k, ('blur',), distortions.PAPER_LEVELS))
  out, type_index, _ = single(jax.random.key(0))
  assert int(type_index) == 0
  # A blur of a constant image is the same constant; noise would not be.
  np.testing.assert_allclose(out, images, atol=1e-6)


def test_random_distortion_applies_the_level_it_reports():
  images = jax.random.uniform(jax.random.key(0), (2, 32, 32, 3))
  types = ('noise', 'blur')
  for seed in range(12):
    key = jax.random.key(seed)
    out, type_index, level_index = distortions.random_distortion(
        images, key, types, distortions.PAPER_LEVELS)
    name = types[int(type_index)]
    sigma = distortions.PAPER_LEVELS[name][int(level_index)]
    noise_key = jax.random.split(key, 3)[2]  # the sampler's third key draws the noise
    expected = distortions.distort(images, noise_key, name, sigma)
    np.testing.assert_allclose(out, expected, atol=1e-6)


def test_gaussian_noise_with_one_key_per_image_does_not_depend_on_the_batch():
  images = jnp.full((4, 8, 8, 3), 0.5, jnp.float32)
  keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(jax.random.PRNGKey(0), jnp.arange(4))
  whole = distortions.gaussian_noise(images, 60., keys)
  halves = jnp.concatenate([distortions.gaussian_noise(images[:2], 60., keys[:2]),
                            distortions.gaussian_noise(images[2:], 60., keys[2:])])
  np.testing.assert_array_equal(whole, halves)
  assert not np.array_equal(whole[0], whole[1])


def test_distort_applies_a_corruption_family_at_a_severity():
  images = jax.random.uniform(jax.random.key(0), (3, 16, 16, 3))
  keys = jax.random.split(jax.random.key(1), 3)
  for family in ('fog', 'pixelate', 'saturate'):
    np.testing.assert_array_equal(distortions.distort(images, keys, family, 3.),
                                  corruptions.corrupt(images, family, 3, keys))
  with pytest.raises(ValueError, match="unknown distortion type 'fogg'; allowed: noise, blur, "
                                       'gaussian_noise'):
    distortions.distort(images, keys, 'fogg', 3)


def test_random_distortion_draws_corruption_families_and_severities():
  """Algorithm 1 over families: a family and a severity per batch, applied to all of it as
  corruptions.corrupt does with the sampler's third key (checked eagerly, then the draws under
  jit cover every family and severity)."""
  images = jax.random.uniform(jax.random.key(0), (2, 16, 16, 3))
  types = ('noise', 'contrast', 'pixelate')
  levels = {'noise': (20.,), 'contrast': (1, 5), 'pixelate': (2, 4)}
  for seed in range(8):
    key = jax.random.key(seed)
    out, type_index, level_index = distortions.random_distortion(images, key, types, levels)
    name = types[int(type_index)]
    level = levels[name][int(level_index)]
    noise_key = jax.random.split(key, 3)[2]
    expected = (distortions.gaussian_noise(images, level, noise_key) if name == 'noise'
                else corruptions.corrupt(images, name, level, noise_key))
    np.testing.assert_allclose(out, expected, atol=1e-6)
  draw = jax.jit(lambda k: distortions.random_distortion(images, k, types, levels)[1:])
  drawn = {tuple(int(i) for i in draw(jax.random.key(s))) for s in range(100)}
  assert drawn == {(0, 0), (1, 0), (1, 1), (2, 0), (2, 1)}
