"""The global grade (3D LUTs, exposure, frame gain) and the whole-photo inputs (thumbnail, metering,
coordinates): the same at train and predict."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from tests.helpers import PHOTO_SIZE as SIZE
from tests.helpers import photo, psnr, random_variables
from unet_jax import losses
from unet_jax.config import get_base_config
from unet_jax.data.transforms import AddWholePhoto, PairedAugment
from unet_jax.inference import grading, tiling
from unet_jax.models import UNet, create_model
from unet_jax.models import lut as lut_lib
from unet_jax.models.global_grade import (
  ColorHead,
  Exposure,
  FrameGain,
  frame_curvature,
  sample_frame_field,
)
from unet_jax.models.thumbnail import ENCODER_CHANNELS
from unet_jax.training import run_record, steps, train_state
from unet_jax.training.train_state import TrainState
from unet_jax.validation import ConfigError, validate_config
from unet_jax.whole_photo import WholePhotoInputs, make_thumbnail, photo_coords, photo_statistics

S = 9


def _affine_lut(size: int) -> tuple[jax.Array, np.ndarray, np.ndarray]:
  """A table sampled from an affine colour map, which trilinear interpolation reproduces."""
  matrix = np.array([[0.8, 0.1, 0.05], [0.05, 0.9, 0.0], [0.1, -0.1, 0.7]], np.float32)
  offset = np.array([0.05, 0.02, 0.1], np.float32)
  table = lut_lib.identity_lut(size) @ matrix.T + offset
  return table, matrix, offset


@pytest.mark.parametrize('method', ['gather', 'matmul'])
def test_lut_reproduces_an_affine_grade_between_lattice_points(method):
  table, matrix, offset = _affine_lut(S)
  colours = np.random.default_rng(0).random((2, 5, 7, 3), dtype=np.float32)
  out = lut_lib.apply_lut(table, jnp.asarray(colours), method)
  np.testing.assert_allclose(out, colours @ matrix.T + offset, atol=1e-5)
  same = lut_lib.apply_lut(lut_lib.identity_lut(S), jnp.asarray(colours), method)
  np.testing.assert_allclose(same, colours, atol=1e-6)


@pytest.mark.slow
def test_gather_and_matmul_agree_in_value_and_gradient():
  tables = jax.random.uniform(jax.random.key(0), (2, S, S, S, 3))
  colours = jax.random.uniform(jax.random.key(1), (2, 6, 6, 3))

  def loss(tables, colours, method):
    return jnp.sum(jnp.sin(3 * lut_lib.apply_lut(tables, colours, method)))

  grad = jax.jit(jax.grad(loss, argnums=(0, 1)), static_argnums=2)
  grads = {m: grad(tables, colours, m) for m in ('gather', 'matmul')}
  np.testing.assert_allclose(
    lut_lib.apply_lut(tables, colours, 'gather'),
    lut_lib.apply_lut(tables, colours, 'matmul'),
    atol=1e-5,
  )
  for a, b in zip(grads['gather'], grads['matmul'], strict=True):
    np.testing.assert_allclose(a, b, atol=1e-4)
  assert float(jnp.abs(grads['gather'][0]).sum()) > 0


def test_regularisers_are_zero_for_the_identity_and_punish_inversions():
  identity = np.asarray(lut_lib.identity_lut(S))
  inverted = identity.copy()
  inverted[..., 0] = 1.0 - identity[..., 0]
  noisy = identity + 0.05 * np.random.default_rng(0).standard_normal(identity.shape)
  both = jax.jit(lambda t: (lut_lib.smoothness(t), lut_lib.monotonicity(t)))
  assert [float(v) for v in both(identity)] == [0.0, 0.0]
  assert float(both(inverted)[1]) > 0.1
  assert float(both(noisy)[0]) > 0.01
  config = get_base_config().loss
  total, terms = jax.jit(lambda t: losses.sown_regularisers({'lut': [t]}, config))(inverted)
  assert set(terms) == {'lut_smoothness', 'lut_monotonicity'}
  expected = sum(config[name] * value for name, value in terms.items())
  np.testing.assert_allclose(total, expected, rtol=1e-6)


def test_curvature_leaves_affine_grades_alone_and_punishes_bends():
  identity = np.asarray(lut_lib.identity_lut(S))
  matrix = np.array([[1.06, 0.02, 0.0], [0.01, 0.97, 0.0], [0.0, 0.03, 0.9]], np.float32)
  affine = identity @ matrix.T + np.array([0.04, 0.0, -0.02], np.float32)
  bent = identity * identity * (3.0 - 2.0 * identity)  # an S-curve on every channel
  both = jax.jit(lambda t: (lut_lib.curvature(t), lut_lib.smoothness(t)))
  curvature, smoothness = (float(v) for v in both(affine))
  assert curvature < 1e-10 and smoothness > 1e-5
  assert float(both(bent)[0]) > 1e-4
  config = get_base_config().loss
  config.lut_curvature = 2.0
  total, terms = jax.jit(lambda t: losses.sown_regularisers({'lut': [t]}, config))(bent)
  np.testing.assert_allclose(terms['lut_curvature'], lut_lib.curvature(bent), rtol=1e-6)
  expected = sum(config[name] * value for name, value in terms.items())
  np.testing.assert_allclose(total, expected, rtol=1e-6)


def test_frame_curvature_leaves_even_and_graded_gains_alone():
  rows, cols = np.meshgrid(np.linspace(-1, 1, 9), np.linspace(-1, 1, 9), indexing='ij')
  graded = np.stack([0.1 * rows, -0.2 * cols + 0.05, 0.3 * rows + 0.1 * cols], -1)
  bowl = -0.45 * (rows**2 + cols**2)[..., None] / 2  # a vignette
  corner = np.zeros_like(graded)
  corner[0, -1] = 0.04  # one lattice point left behind
  curvature = jax.jit(jax.value_and_grad(frame_curvature))
  assert float(curvature(graded)[0]) < 1e-12
  assert float(curvature(bowl)[0]) > 1e-4
  # A lattice point left behind is pulled back towards the line through its neighbours.
  pull = np.asarray(curvature(corner)[1])
  assert np.unravel_index(np.argmax(pull[..., 0]), (9, 9)) == (0, 8)
  assert pull[0, -1, 0] > 0 and pull[0, -1, 0] >= np.abs(pull).max()


def _model(**overrides) -> UNet:
  config = get_base_config().model
  config.update(levels=2, base_channels=8, lut_size=S, **overrides)
  return create_model(config, task='enhance')


def _initial_variables(model: UNet) -> dict:
  """Variables as `model.init` makes them for the colour head (its own init, which is what is
  tested), the U-Net's head at zero as its init leaves it, the rest random. (Compiling the whole
  `model.init` takes minutes on this machine.)"""
  variables = random_variables(model, head_scale=0.0)
  head = ColorHead(model.color_head, model.lut_size, model.lut_bases)
  context = jnp.zeros((1, ENCODER_CHANNELS[-1]))
  head_variables = jax.jit(head.init)(jax.random.key(0), jnp.zeros((1, 4, 4, 3)), context)
  variables['params']['color_head'] = head_variables['params']
  return variables


@pytest.mark.parametrize('color_head', ['lut', 'adaptive_lut'])
def test_an_untrained_colour_head_model_is_the_identity(color_head):
  model = _model(color_head=color_head, coords=True)
  image = jnp.asarray(photo(32, 48))[None]
  variables = _initial_variables(model)
  np.testing.assert_allclose(jax.jit(model.apply)(variables, image), image, atol=1e-5)


def test_default_options_keep_the_parameter_tree():
  plain = UNet(levels=2, base_channels=8)
  configured = _model()
  shape = jnp.zeros((1, 32, 32, 3))
  a = jax.eval_shape(plain.init, jax.random.key(0), shape)
  b = jax.eval_shape(configured.init, jax.random.key(0), shape)
  assert jax.tree.structure(a) == jax.tree.structure(b)
  assert jax.tree.map(lambda x: x.shape, a) == jax.tree.map(lambda x: x.shape, b)


@functools.partial(jax.jit, static_argnums=0)
def _captured(model, variables, images, thumbnail):
  _, state = model.apply(
    variables,
    images,
    thumbnail=thumbnail,
    capture_intermediates=lambda m, _: m.name == 'thumbnail_encoder',
    mutable=['intermediates'],
  )
  return state['intermediates']


def _context_of(model, variables, images, thumbnail):
  """The thumbnail encoder's `[B, C]` vector and the table each image was graded with."""
  found = _captured(model, variables, jnp.asarray(images), jnp.asarray(thumbnail))
  return found['thumbnail_encoder']['__call__'][0], found['color_head']['lut'][0]


@pytest.mark.slow
def test_tiles_whole_image_and_training_crop_get_the_same_context():
  model = _model(color_head='adaptive_lut', global_context='thumbnail', thumbnail='photo')
  variables = random_variables(model, head_scale=0.1)
  image = photo(*SIZE, seed=4)
  photo_thumbnail = grading.photo_inputs(model, image)['thumbnail']

  whole_vector, whole_table = _context_of(model, variables, image[None], photo_thumbnail)

  # The training pipeline's example for the same photo: a crop and its photo's thumbnail.
  whole_photo = AddWholePhoto(WholePhotoInputs(thumbnail_size=model.thumbnail_size))
  example = whole_photo.map({'input': image, 'target': image})
  augment = PairedAugment(crop_size=32, hflip=False)
  crop = augment.random_map(example, np.random.default_rng(0))
  assert crop['input'].shape == (32, 32, 3)
  crop_vector, crop_table = _context_of(
    model, variables, crop['input'][None], crop['thumbnail'][None]
  )
  np.testing.assert_array_equal(crop_vector, whole_vector)
  np.testing.assert_array_equal(crop_table, whole_table)

  tile = np.zeros((32, 32, 3), np.float32)
  for top, left in [(0, 0), (64, 96), (48, 32)]:
    tiling.extract_tile(image, top, left, 32, tile)
    tile_vector, _ = _context_of(model, variables, tile[None], photo_thumbnail)
    np.testing.assert_array_equal(tile_vector, whole_vector)


def test_flipped_crop_comes_with_the_flipped_thumbnail():
  image = photo(32, 32, seed=5)  # the crop is the whole photo, flipped or not
  example = AddWholePhoto(WholePhotoInputs(thumbnail_size=16)).map(
    {'input': image, 'target': image}
  )
  thumbnail = make_thumbnail(image, 16)
  augment = PairedAugment(crop_size=32, hflip=True)
  flips = []
  for seed in range(8):
    out = augment.random_map(dict(example), np.random.default_rng(seed))
    flipped = np.array_equal(out['input'], image[:, ::-1])
    assert flipped or np.array_equal(out['input'], image)
    np.testing.assert_array_equal(out['thumbnail'], thumbnail[:, ::-1] if flipped else thumbnail)
    flips.append(flipped)
  assert any(flips) and not all(flips)


def test_training_crop_coordinates_are_its_place_in_the_photo():
  image = photo(50, 70, seed=6)
  example = AddWholePhoto(WholePhotoInputs(coords=True)).map({'input': image, 'target': image})
  out = PairedAugment(crop_size=32, hflip=False).random_map(example, np.random.default_rng(3))
  ys, xs = out['coords'][:, 0, 0], out['coords'][0, :, 1]
  top = int(round((ys[0] + 1) / 2 * 50 - 0.5))
  left = int(round((xs[0] + 1) / 2 * 70 - 0.5))
  np.testing.assert_array_equal(out['input'], image[top : top + 32, left : left + 32])
  np.testing.assert_allclose(
    out['coords'], photo_coords(range(top, top + 32), range(left, left + 32), 50, 70), atol=1e-6
  )


@pytest.mark.parametrize(
  'overrides',
  [
    pytest.param(
      dict(color_head='adaptive_lut', global_context='thumbnail', thumbnail='photo', coords=True),
      marks=pytest.mark.slow,
    ),
    dict(color_head='lut', coords=True, unet_input='lut'),
    pytest.param(
      dict(color_head='adaptive_lut', thumbnail='photo', thumbnail_stats=True, frame_gain=5),
      marks=pytest.mark.slow,
    ),
    pytest.param(
      dict(color_head='adaptive_lut', thumbnail='photo', exposure=True), marks=pytest.mark.slow
    ),
    pytest.param(
      dict(
        color_head='lut',
        thumbnail='photo',
        auto_levels=True,
        curves=8,
        local_grid=8,
        thumbnail_size=32,
      ),
      marks=pytest.mark.slow,
    ),
  ],
)
def test_tiled_predict_with_colour_head_and_coords_is_seam_free(overrides):
  model = _model(**overrides)
  variables = random_variables(model)
  image = photo(*SIZE, seed=7)
  side = grading.photo_inputs(model, image)
  whole = np.asarray(jax.jit(model.apply)(variables, image[None], **side))[0]
  assert np.std(whole - image) > 0.02
  tiled = grading.grade_image(model, variables, image, tile_size=48, tile_overlap=16)
  print(f'tiled vs whole: {psnr(tiled, whole):.1f} dB')
  assert psnr(tiled, whole) >= 50.0


@pytest.mark.slow
def test_frame_gain_is_one_at_init_without_a_uniform_part_and_bilinear_over_the_frame():
  coords = jnp.asarray(photo_coords(range(40), range(60), 40, 60))[None]
  colours = jnp.full((1, 40, 60, 3), 0.5)
  gain = FrameGain(5)
  variables = jax.jit(gain.init)(jax.random.key(0), colours, coords)
  apply = jax.jit(gain.apply)
  np.testing.assert_array_equal(apply(variables, colours, coords), colours)
  # The same gain everywhere is the colour head's to make: the frame gain leaves it out.
  uniform = {'params': {'gain': jnp.full((5, 5, 3), 0.2)}}
  np.testing.assert_allclose(apply(uniform, colours, coords), colours, atol=1e-6)
  # A field that is affine in (y, x) at the lattice points is affine everywhere between them.
  axis = np.linspace(-1, 1, 5, dtype=np.float32)
  ys, xs = np.meshgrid(axis, axis, indexing='ij')
  ramp = np.stack([0.3 * ys, -0.2 * xs, 0.1 * ys + 0.1 * xs], axis=-1)
  sampled = np.asarray(sample_frame_field(jnp.asarray(ramp), coords))[0]
  y, x = np.asarray(coords[0, ..., 0]), np.asarray(coords[0, ..., 1])
  np.testing.assert_allclose(sampled[..., 0], 0.3 * y, atol=1e-6)
  np.testing.assert_allclose(sampled[..., 1], -0.2 * x, atol=1e-6)
  np.testing.assert_allclose(sampled[..., 2], 0.1 * y + 0.1 * x, atol=1e-6)
  # The corner lattice points are the frame's corners.
  corners = jnp.asarray([[[-1.0, -1.0], [1.0, 1.0]]])
  at_corners = sample_frame_field(jnp.asarray(ramp), corners)[0]
  np.testing.assert_allclose(at_corners, ramp[[0, 4], [0, 4]])


@pytest.mark.slow
def test_exposure_is_the_identity_at_init_and_a_stop_gain_with_roll_off():
  rng = np.random.default_rng(11)
  # A dark photo and a normal one: keys well away from middle grey and from each other.
  colours = rng.uniform(0.0, 1.0, (2, 8, 8, 3)) * np.array([0.8, 1.0])[:, None, None, None]
  colours = jnp.asarray(colours.astype(np.float32))
  statistics = photo_statistics(colours)
  exposure = Exposure(range_ev=2.0)
  variables = jax.jit(exposure.init)(jax.random.key(0), colours, statistics)
  same = jax.jit(exposure.apply)(variables, colours, statistics)
  np.testing.assert_allclose(same, colours, atol=2e-6)
  # Stops in proportion to each photo's key (1.5 stops up for the first photo), white point 2:
  # each photo is brightened in linear light and its highlights come back under 1 instead of
  # clipping.
  key = np.asarray(statistics[:, 0])
  assert abs(key[0]) > 0.05 and not np.isclose(key[0], key[1])
  variables = {'params': {'stops': {'kernel': jnp.full((1, 1), 1.5 / key[0])}}}
  variables['params']['white'] = jnp.sqrt(jnp.log(4.0))
  out = np.asarray(jax.jit(exposure.apply)(variables, colours, statistics))
  linear = 2.0 ** (1.5 * key / key[0])[:, None, None, None] * np.asarray(colours) ** 2.2
  expected = np.clip(linear * (1 + linear / 4.0) / (1 + linear), 0, 1) ** (1 / 2.2)
  np.testing.assert_allclose(out, expected, atol=1e-5)
  assert out.max() < 1.0 and (linear > 1.0).any()
  # The white point cannot go under 1 (where the curve would clip the highlights).
  variables['params']['white'] = jnp.asarray(-np.sqrt(np.log(4.0)))
  np.testing.assert_allclose(jax.jit(exposure.apply)(variables, colours, statistics), out)
  # The stops stop at +-range_ev.
  variables['params']['stops']['kernel'] = jnp.full((1, 1), 3.0 / np.abs(key).min())
  brightest = jax.jit(exposure.apply)(variables, colours, statistics)
  variables['params']['stops']['kernel'] = jnp.full((1, 1), 30.0 / np.abs(key).min())
  np.testing.assert_array_equal(brightest, jax.jit(exposure.apply)(variables, colours, statistics))
  # A kernel of -1 / ln 2 brings every photo's key to middle grey, whatever its other figures.
  variables['params']['stops'] = {'kernel': jnp.full((1, 1), -1 / np.log(2))}
  _, sown = exposure.apply(variables, colours, statistics, mutable='intermediates')
  expected_ev = np.clip(-key / np.log(2), -2, 2)
  np.testing.assert_allclose(sown['intermediates']['exposure_ev'][0], expected_ev, rtol=1e-5)
  # Gradients are finite even at black pixels (where x ** (1 / 2.2) has an infinite slope).
  black = jnp.zeros((1, 8, 8, 3))
  grads = jax.grad(lambda v: exposure.apply(v, black + 0.0, statistics[:1]).sum())(variables)
  assert all(bool(jnp.isfinite(g).all()) for g in jax.tree.leaves(grads))


def test_photo_statistics_meter_the_key_and_colour_cast():
  rng = np.random.default_rng(10)
  dark = rng.uniform(0.05, 0.4, (16, 16, 3)).astype(np.float32)
  bright = np.clip(dark * 2.0, 0, 1)
  figures = np.asarray(jax.jit(photo_statistics)(jnp.asarray(np.stack([dark, bright]))))
  assert figures.shape == (2, 8)
  luma = (dark**2.2) @ np.array([0.2126, 0.7152, 0.0722], np.float32)
  log_luma = np.log(1e-4 + luma) - np.log(0.18)  # relative to middle grey
  np.testing.assert_allclose(figures[0, 0], log_luma.mean(), rtol=1e-5)
  np.testing.assert_allclose(figures[0, 1], log_luma.std(), rtol=1e-4)
  np.testing.assert_allclose(figures[0, 2:5], np.percentile(log_luma, [10, 50, 90]), rtol=1e-4)
  cast = np.log(1e-4 + (dark**2.2).mean(axis=(0, 1))) - np.log(0.18)
  np.testing.assert_allclose(figures[0, 5:], cast, rtol=1e-5)
  # Twice as bright in the encoded values is about 2**2.2 in linear light: the key follows.
  assert figures[1, 0] - figures[0, 0] == pytest.approx(2.2 * np.log(2.0), abs=0.1)
  # One photo's figures do not depend on what it is batched with.
  alone = np.asarray(jax.jit(photo_statistics)(jnp.asarray(dark[None])))
  np.testing.assert_allclose(alone[0], figures[0], rtol=1e-6)
  # The data pipeline meters with numpy, the model's fallback with jax: the same figures.
  np.testing.assert_allclose(photo_statistics(dark, np), figures[0], rtol=1e-5, atol=1e-6)


def test_photo_statistics_do_not_depend_on_the_photos_size():
  # One colour at 20 x 30 px and at 6 MP: float32 sums over the big one's pixels read its
  # colour cast up to 0.07 off in log units (0.25 at 24 MP), so predict on full-size photos
  # metered other figures than training on small ones.
  colour = np.array([0.5, 0.3, 0.8], np.float32)
  small = photo_statistics(np.broadcast_to(colour, (20, 30, 3)), np)
  large = photo_statistics(np.broadcast_to(colour, (2000, 3000, 3)), np)
  np.testing.assert_allclose(large, small, rtol=1e-5, atol=1e-6)
  cast = np.log(1e-4 + colour.astype(np.float64) ** 2.2) - np.log(0.18)
  np.testing.assert_allclose(small[5:], cast, rtol=1e-5)


def test_training_crops_and_predict_get_the_whole_photos_metering():
  image = photo(96, 128, seed=12)
  example = AddWholePhoto(WholePhotoInputs(thumbnail_size=16, statistics=True)).map(
    {'input': image, 'target': image}
  )
  augment = PairedAugment(crop_size=32, hflip=True, rot90=True)
  crop = augment.random_map(example, np.random.default_rng(4))
  model = _model(color_head='adaptive_lut', thumbnail='photo', exposure=True)
  np.testing.assert_array_equal(crop['statistics'], photo_statistics(image, np))
  np.testing.assert_array_equal(
    grading.photo_inputs(model, image)['statistics'][0], crop['statistics']
  )


@pytest.mark.slow
def test_train_step_learns_through_the_head_with_its_regularisers():
  config = get_base_config()
  config.model.update(
    levels=2,
    base_channels=8,
    lut_size=S,
    color_head='adaptive_lut',
    thumbnail='photo',
    frame_gain=3,
  )
  config.loss.update(
    perceptual=0.0, ssim=0.0, global_grade=0.5, lut_curvature=1.0, frame_gain_curvature=1.0
  )
  model = create_model(config.model, task=config.task)
  optimizer = optax.adam(2e-3)
  image = photo(32, 32, seed=9)
  batch = {
    'input': jnp.asarray(image)[None],
    'target': jnp.asarray(np.clip(image * 0.8 + 0.1, 0, 1))[None],
    'thumbnail': grading.photo_inputs(model, image)['thumbnail'],
  }
  variables = _initial_variables(model)
  params = variables['params']
  # A frame gain a little off 1 (its init is 1 everywhere), so its curvature term is not 0.
  offset = 0.05 * np.random.default_rng(3).standard_normal((3, 3, 3)).astype(np.float32)
  params['frame_gain'] = {'gain': jnp.asarray(offset)}
  state = TrainState(
    jnp.zeros((), jnp.int32), params, variables['batch_stats'], optimizer.init(params), params
  )
  step = jax.jit(
    lambda s, b: steps.train_step(s, b, {}, model=model, optimizer=optimizer, config=config)
  )
  first = None
  for _ in range(10):
    state, metrics = step(state, batch)
    if first is None:
      first = {k: float(v) for k, v in metrics.items() if k != 'finite_parts'}
      # At init the grade is the identity and the U-Net's edit zero: both terms are equal.
      assert first['loss_global_grade'] == pytest.approx(first['loss_l1'], rel=1e-5)
      expected = frame_curvature(params['frame_gain']['gain'])
      assert first['loss_frame_gain_curvature'] == pytest.approx(float(expected), rel=1e-5)
  terms = {'smoothness', 'curvature', 'monotonicity'}
  assert {f'loss_lut_{name}' for name in terms} | {'loss_global_grade'} <= set(metrics)
  assert float(metrics['loss_l1']) < 0.4 * first['loss_l1']
  assert float(metrics['loss_global_grade']) < 0.4 * first['loss_global_grade']
  assert float(jnp.abs(state.params['color_head']['basis']).max()) > 0


def test_bad_colour_head_options_are_named():
  config = get_base_config()
  config.model.color_head = 'curve'
  with pytest.raises(ConfigError, match='config.model.color_head'):
    validate_config(config, training=False, check_data_files=False)
  config.model.color_head = 'none'
  config.model.thumbnail = 'photo'
  with pytest.raises(ConfigError, match="config.model.thumbnail='photo'"):
    validate_config(config, training=False, check_data_files=False)
  config.model.thumbnail = 'crop'
  config.predict.lut_only = True
  with pytest.raises(ConfigError, match='config.predict.lut_only'):
    validate_config(config, training=False, check_data_files=False)
  config.predict.lut_only = False
  config.model.thumbnail_stats = True
  with pytest.raises(ConfigError, match='config.model.thumbnail_stats'):
    validate_config(config, training=False, check_data_files=False)
  config.model.thumbnail_stats = False
  config.model.frame_gain = 1
  with pytest.raises(ConfigError, match='config.model.frame_gain'):
    validate_config(config, training=False, check_data_files=False)
  config.model.update(frame_gain=9, residual=False)
  with pytest.raises(ConfigError, match='config.model.frame_gain.*residual=True'):
    validate_config(config, training=False, check_data_files=False)
  config.model.update(frame_gain=9, residual=True)
  config.loss.global_grade = -1.0
  with pytest.raises(ConfigError, match='config.loss.global_grade'):
    validate_config(config, training=True, check_data_files=False)
  config.loss.global_grade = 1.0
  config.optimizer.global_grade_lr_factor = 0.0
  with pytest.raises(ConfigError, match='config.optimizer.global_grade_lr_factor'):
    validate_config(config, training=True, check_data_files=False)
  config.optimizer.update(global_grade_lr_factor=1.0, exposure_lr_factor=-1.0)
  with pytest.raises(ConfigError, match='config.optimizer.exposure_lr_factor'):
    validate_config(config, training=True, check_data_files=False)
  config.optimizer.update(exposure_lr_factor=1.0, grade_first_steps=-1)
  with pytest.raises(ConfigError, match='config.optimizer.grade_first_steps'):
    validate_config(config, training=True, check_data_files=False)
  config.optimizer.grade_first_steps = 0
  config.model.exposure = True
  with pytest.raises(ConfigError, match="config.model.exposure.*thumbnail='photo'"):
    validate_config(config, training=False, check_data_files=False)
  config.model.update(thumbnail='photo', global_context='thumbnail', exposure_range_ev=0.0)
  with pytest.raises(ConfigError, match='config.model.exposure_range_ev'):
    validate_config(config, training=False, check_data_files=False)
  # The exposure alone may read the whole photo (its metering), without the global context.
  config.model.update(global_context='none', exposure_range_ev=2.0, color_head='lut')
  validate_config(config, training=False, check_data_files=False)
  config.model.exposure = False
  with pytest.raises(ConfigError, match="config.model.thumbnail='photo' feeds"):
    validate_config(config, training=False, check_data_files=False)


def test_a_workdir_written_before_these_options_loads_and_resumes(tmp_path):
  config = get_base_config()
  plain = config.to_dict()
  for key in ('color_head', 'lut_size', 'coords', 'thumbnail', 'frame_gain'):
    del plain['model'][key]
  del plain['loss']['lut_smoothness']
  old = run_record.ml_collections.ConfigDict(plain)
  run_record.Run(old, str(tmp_path), resuming=False).commit(0)
  loaded = run_record.load_config(str(tmp_path))
  assert loaded.model.color_head == 'none' and loaded.model.coords is False
  assert loaded.model.frame_gain == 0
  run_record.Run(config, str(tmp_path), resuming=True)  # the resume check accepts today's config


@pytest.mark.slow
def test_lr_factors_scale_only_the_global_grade_and_on_top_the_exposure_steps():
  params = {
    'color_head': {'basis': jnp.ones((2, 3))},
    'frame_gain': {'gain': jnp.ones((2, 2, 3))},
    'exposure': {'stops': {'kernel': jnp.ones((1, 1))}, 'white': jnp.ones(())},
    'encoder_0': {'kernel': jnp.ones((3, 3))},
  }
  grads = jax.tree.map(lambda p: 0.5 * p, params)
  config = get_base_config()
  config.optimizer.update(warmup_steps=0, grad_clip_norm=1e9)
  plain = train_state.create_optimizer(config)
  config.optimizer.update(global_grade_lr_factor=10.0, exposure_lr_factor=3.0)
  faster = train_state.create_optimizer(config)
  step = {}
  for name, optimizer in (('plain', plain), ('faster', faster)):
    updates, _ = jax.jit(optimizer.update)(grads, optimizer.init(params), params)
    step[name] = updates
  faster, plain = step['faster'], step['plain']
  for module, factor in (('color_head', 10.0), ('frame_gain', 10.0), ('exposure', 30.0)):
    for a, b in zip(jax.tree.leaves(faster[module]), jax.tree.leaves(plain[module]), strict=True):
      np.testing.assert_allclose(a, factor * b, rtol=1e-6)
      assert float(jnp.abs(b).max()) > 0
  np.testing.assert_allclose(faster['encoder_0']['kernel'], plain['encoder_0']['kernel'])


def test_grade_first_steps_hold_the_unet_still_while_the_global_branch_learns():
  params = {
    'color_head': {'basis': jnp.ones((2, 3))},
    'thumbnail_encoder': {'conv_0': {'kernel': jnp.ones((3, 3))}},
    'exposure': {'white': jnp.ones(())},
    'encoder_0': {'kernel': jnp.ones((3, 3))},
  }
  grads = jax.tree.map(lambda p: 0.5 * p, params)
  config = get_base_config()
  config.optimizer.update(warmup_steps=0, grad_clip_norm=1e9, grade_first_steps=2)
  optimizer = train_state.create_optimizer(config)
  update = jax.jit(optimizer.update)
  opt_state = optimizer.init(params)
  moved = []
  for _ in range(3):
    updates, opt_state = update(grads, opt_state, params)
    moved.append({name: float(optax.global_norm(tree)) for name, tree in updates.items()})
  for step in moved:
    for name in ('color_head', 'thumbnail_encoder', 'exposure'):
      assert step[name] > 0
  assert moved[0]['encoder_0'] == 0 and moved[1]['encoder_0'] == 0
  assert moved[2]['encoder_0'] > 0
