"""`loss.whole_photo_grade`: the grade under the U-Net is also fitted to each whole photo at
thumbnail size, so its large-radius parts (local grid, frame gain) see the whole frame."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from tests.helpers import photo, tiny_config
from unet_jax.config import get_base_config
from unet_jax.data.transforms import AddWholePhoto, PairedAugment
from unet_jax.models import create_model
from unet_jax.training import steps
from unet_jax.training.train_state import TrainState
from unet_jax.validation import ConfigError, validate_config
from unet_jax.whole_photo import WholePhotoInputs, make_thumbnail, photo_coords


def _linear_look(image: np.ndarray) -> np.ndarray:
  """A look that commutes with the thumbnail's resize (linear), so its thumbnail is known."""
  return (0.5 * image + 0.1).astype(np.float32)


def test_the_target_thumbnail_and_its_coordinates_flip_with_the_thumbnail():
  image = photo(40, 64, seed=1)
  add = AddWholePhoto(WholePhotoInputs(thumbnail_size=16), target_thumbnail=True)
  example = add.map({'input': image, 'target': _linear_look(image)})
  coords = photo_coords(np.arange(16), np.arange(16), 16, 16)
  augment = PairedAugment(crop_size=32, hflip=True, vflip=True, rot90=True)
  seen = set()
  for seed in range(12):
    out = augment.random_map(dict(example), np.random.default_rng(seed))
    # Whatever the flips and turns, target thumbnail and coordinates went with the thumbnail.
    np.testing.assert_allclose(out['target_thumbnail'], _linear_look(out['thumbnail']), atol=1e-6)
    where = {tuple(c) for c in coords.reshape(-1, 2).round(4)}
    assert {tuple(c) for c in out['thumbnail_coords'].reshape(-1, 2).round(4)} == where
    # The thumbnail pixel at the photo's top-left corner carries that corner's coordinates.
    corner = np.argwhere(np.all(np.isclose(out['thumbnail_coords'], coords[0, 0]), axis=-1))[0]
    np.testing.assert_allclose(out['thumbnail'][tuple(corner)], make_thumbnail(image, 16)[0, 0])
    seen.add(tuple(corner))
  assert len(seen) > 1  # some draws moved the corner


def test_a_model_without_a_whole_photo_thumbnail_is_refused():
  config = tiny_config()
  config.model.thumbnail = 'crop'
  config.loss.whole_photo_grade = 1.0
  with pytest.raises(ConfigError, match=r"config.loss.whole_photo_grade=1.0 .*thumbnail='photo'"):
    validate_config(config, check_data_files=False)
  config.model.update(thumbnail='photo', exposure=True)  # the exposure reads the thumbnail
  validate_config(config, check_data_files=False)


@pytest.mark.slow
@pytest.mark.parametrize('extremes', [False, True])
def test_the_term_is_the_graded_thumbnails_l1_and_it_trains_the_grade(extremes):
  """With `local_grid_extremes` the thumbnail carries each pixel's extremes after its colours:
  the term grades the colours alone, against the target's colours."""
  config = get_base_config()
  config.model.update(
    levels=2,
    base_channels=8,
    thumbnail='photo',
    thumbnail_size=16,
    local_grid=4,
    local_grid_extremes=extremes,
    color_head='none',
    global_context='none',
  )
  config.loss.update(perceptual=0.0, ssim=0.0, whole_photo_grade=1.0)
  model = create_model(config.model, task=config.task)
  image = photo(48, 80, seed=2)
  # A darkening towards the right edge: a large-radius edit that a crop shows little of.
  ramp = np.linspace(1.0, 0.6, image.shape[1], dtype=np.float32)[None, :, None]
  inputs = WholePhotoInputs.from_model_config(model).in_training_batches()
  example = AddWholePhoto(inputs, target_thumbnail=True).map(
    {'input': image, 'target': image * ramp}
  )
  crop = PairedAugment(crop_size=32, hflip=False).random_map(example, np.random.default_rng(0))
  assert crop['thumbnail'].shape == (16, 16, 9 if extremes else 3)
  assert crop['target_thumbnail'].shape == (16, 16, 3)
  batch = {k: jnp.asarray(v)[None] for k, v in crop.items()}
  variables = jax.jit(model.init)(jax.random.key(0), batch['input'])
  optimizer = optax.adam(1e-2)
  params = variables['params']
  state = TrainState(
    jnp.zeros((), jnp.int32), params, variables['batch_stats'], optimizer.init(params), params
  )
  step = jax.jit(
    lambda s, b: steps.train_step(s, b, {}, model=model, optimizer=optimizer, config=config)
  )
  state, first = step(state, batch)
  # At init the grade is the identity: the term is the thumbnails' own difference.
  untouched = np.mean(np.abs(crop['thumbnail'][..., :3] - crop['target_thumbnail']))
  assert float(first['loss_whole_photo_grade']) == pytest.approx(untouched, rel=1e-5)
  for _ in range(60):
    state, metrics = step(state, batch)
  assert float(metrics['loss_whole_photo_grade']) < 0.5 * untouched
