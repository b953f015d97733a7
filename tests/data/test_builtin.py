"""The built-in dataset: offline build, split by photo, targets = look(input); the looks."""

import os
import pathlib

import numpy as np
import pytest

from tests.helpers import random_pixels, run_python, tiny_config
from unet_jax.data import (
  LOOKS,
  DataError,
  build_default_dataset,
  builtin,
  load_image,
  validate_data_config,
)

ONE_LINER = 'from unet_jax.data import build_default_dataset; build_default_dataset()'


@pytest.mark.slow
def test_readme_one_liner_builds_and_prints_the_summary(tmp_path):
  env = dict(os.environ, UNET_JAX_CACHE=str(tmp_path))
  result = run_python('-c', ONE_LINER, cwd=tmp_path, env=env)
  assert result.returncode == 0, result.stderr[-2000:]
  assert "look 'local_contrast'" in result.stdout
  assert 'train: 9 photos' in result.stdout and 'test: 3 photos' in result.stdout
  assert 'chelsea (451x300)' in result.stdout


@pytest.mark.parametrize(
  'look', ['local_contrast', pytest.param('vignette', marks=pytest.mark.slow)]
)
def test_split_is_by_photo_and_targets_are_the_look_of_the_inputs(look, capsys):
  info = build_default_dataset(look)
  assert 'photos' in capsys.readouterr().out
  train, test = set(info['photos']['train']), set(info['photos']['test'])
  assert test == set(builtin.TEST_PHOTOS) and not train & test
  assert train | test == set(builtin.photo_files())
  root = pathlib.Path(info['folder'])
  for split, names in info['photos'].items():
    for name in names:
      stored = load_image(root / split / 'input' / f'{name}.png')
      target = load_image(root / split / 'target' / f'{name}.png')
      assert max(stored.shape[:2]) <= builtin.MAX_SIDE
      np.testing.assert_allclose(target, LOOKS[look](stored), atol=0.5 / 255 + 1e-6)


def test_looks_depend_on_what_they_say():
  image = random_pixels(0, 40, 48).astype(np.float32) / 255
  for look in LOOKS.values():
    out = look(image)
    assert out.shape == image.shape and out.dtype == np.float32
    assert out.min() >= 0 and out.max() <= 1
    np.testing.assert_array_equal(out, look(image.copy()))
  # warm_film is per pixel: it commutes with shuffling the pixels.
  shuffled = np.random.default_rng(0).permutation(image.reshape(-1, 3)).reshape(image.shape)
  flat = LOOKS['warm_film'](image).reshape(-1, 3)
  assert np.allclose(np.sort(flat, 0), np.sort(LOOKS['warm_film'](shuffled).reshape(-1, 3), 0))
  # auto_exposure depends on the whole image: darkening the rest changes an untouched pixel.
  darker = image.copy()
  darker[:, 24:] *= 0.2
  assert not np.allclose(LOOKS['auto_exposure'](image)[0, 0], LOOKS['auto_exposure'](darker)[0, 0])
  # local_contrast is local: a change far away (beyond the 4-sigma blur) leaves a pixel alone,
  # a change nearby does not.
  far = image.copy()
  far[:, 40:] *= 0.2
  np.testing.assert_array_equal(
    LOOKS['local_contrast'](image)[:, :10], LOOKS['local_contrast'](far)[:, :10]
  )
  assert not np.allclose(
    LOOKS['local_contrast'](image)[:, 20], LOOKS['local_contrast'](darker)[:, 20]
  )
  # vignette depends on the position: a flat grey frame comes out darker at the corners.
  grey = LOOKS['vignette'](np.full((40, 48, 3), 0.5, np.float32))
  assert grey[0, 0, 0] < grey[20, 24, 0]


def test_builtin_settings_are_checked():
  validate_data_config(tiny_config())
  with pytest.raises(DataError, match='config.data.look'):
    validate_data_config(tiny_config(**{'data.look': 'sepia'}))
  # A crop bigger than some photos is no error: those photos are built enlarged to it.
  bigger = tiny_config(**{'data.crop_size': 320, 'data.train_split': 'test'})
  validate_data_config(bigger)
  assert builtin.min_side(bigger.data) == 320
  assert builtin.min_side(tiny_config().data) is None  # the default build serves 32 px crops
  with pytest.raises(DataError, match='config.data.eval_split'):
    validate_data_config(tiny_config(**{'data.eval_split': 'val'}))
  resized = tiny_config(**{'data.crop_size': 320, 'data.sampling': 'resize'})
  validate_data_config(resized)
  assert builtin.min_side(resized.data) is None


def test_stored_sizes_shrink_long_photos_and_enlarge_short_ones():
  assert builtin.stored_size(300, 451) == (300, 451)  # chelsea: as it is
  assert builtin.stored_size(1000, 1500) == (341, 512)  # longer side to MAX_SIDE
  assert builtin.stored_size(1000, 1500, min_side=512) == (512, 768)  # shorter side to the crop
  assert builtin.stored_size(300, 451, min_side=1024) == (1024, 1539)
  assert builtin.stored_size(512, 512, min_side=512) == (512, 512)
