"""Paired folders through tfds: round trip, reuse, split lists, and every kind of bad pair."""

import os
import re

import numpy as np
import pytest
from PIL import Image

from tests.helpers import png16, random_pixels, save, tiny_config, write_pairs
from unet_jax.data import (
  DataError,
  create_eval_iterator,
  create_train_iterator,
  dataset_summary,
  folder_scan,
  load_image,
  validate_data_config,
)
from unet_jax.data import paired_folders as pf


def folder_config(root, **overrides):
  settings = {'data.name': 'paired_folders', 'data.dir': str(root), 'data.crop_size': 16}
  settings.update(overrides)
  return tiny_config(**settings)


def eval_examples(config, data_dir):
  return {e['name']: e for e in create_eval_iterator(config, data_dir=str(data_dir))}


def test_round_trip_keeps_every_pixel(tmp_path):
  root = tmp_path / 'pairs'
  write_pairs(root, 'train', ['a', 'b'])
  pairs = write_pairs(root, 'test', ['c', 'd', 'e'], seed=1)
  # Other formats store and decode as they are.
  save(root / 'test' / 'input' / 'f.tif', random_pixels(7, 40, 48))
  save(root / 'test' / 'target' / 'f.webp', random_pixels(8, 40, 48), lossless=True)
  config = folder_config(root, **{'data.eval_size': None})
  validate_data_config(config)
  examples = eval_examples(config, tmp_path / 'tfds')
  assert list(examples) == ['c', 'd', 'e', 'f']
  for name, (pixels, target) in pairs.items():
    np.testing.assert_array_equal(examples[name]['input'], pixels / np.float32(255))
    np.testing.assert_array_equal(examples[name]['target'], target / np.float32(255))
  np.testing.assert_array_equal(
    examples['f']['target'], load_image(root / 'test' / 'target' / 'f.webp')
  )


def test_second_run_reuses_files_and_a_change_prepares_anew(tmp_path, monkeypatch):
  root = tmp_path / 'pairs'
  write_pairs(root, 'train', ['a', 'b'])
  write_pairs(root, 'test', ['c'])
  first = pf.prepare(str(root), str(tmp_path / 'tfds'))

  def fail(*args, **kwargs):
    raise AssertionError('prepared twice')

  monkeypatch.setattr(pf.PairedFolders, '_generate_examples', fail)
  monkeypatch.setattr(pf, '_BUILDERS', {})  # as in a new process: only the files remain
  again = pf.prepare(str(root), str(tmp_path / 'tfds'))
  assert again.builder.data_path == first.builder.data_path
  monkeypatch.undo()
  write_pairs(root, 'train', ['z'], seed=3)
  changed = pf.prepare(str(root), str(tmp_path / 'tfds'))
  assert changed.builder.data_path != first.builder.data_path
  assert [r[0] for r in changed.records['train']] == ['a', 'b', 'z']


def test_flat_layout_with_split_lists(tmp_path):
  root = tmp_path / 'fivek'
  for index, name in enumerate(['a0001', 'a0002', 'a0003', 'a0004']):
    save(root / 'input' / f'{name}.jpg', random_pixels(index, 32, 40), quality=95)
    save(root / 'target' / f'{name}.tif', random_pixels(index + 10, 32, 40))
  (root / 'splits').mkdir()
  (root / 'splits' / 'train.txt').write_text('# expert C, first part\na0001\na0002.jpg\n\na0003\n')
  (root / 'splits' / 'test.txt').write_text('a0004\n')
  prepared = pf.prepare(str(root), str(tmp_path / 'tfds'))
  assert [r[0] for r in prepared.records['train']] == ['a0001', 'a0002', 'a0003']
  assert [r[0] for r in prepared.records['test']] == ['a0004']


def test_a_stem_in_two_lists_is_refused(tmp_path):
  root = tmp_path / 'fivek'
  write_pairs(root, '.', ['a', 'b'])
  (root / 'splits').mkdir()
  (root / 'splits' / 'train.txt').write_text('a\nb\n')
  (root / 'splits' / 'test.txt').write_text('b\n')
  with pytest.raises(DataError, match="'b' is listed in both"):
    folder_scan.scan_folder(str(root))


def _bad_folder(root):
  """One good pair per split plus one pair of each kind of problem in 'train'."""
  write_pairs(root, 'train', ['good', 'good2'])
  write_pairs(root, 'test', ['good'])
  train = root / 'train'
  save(train / 'input' / 'lonely_input.png', random_pixels(1, 40, 48))
  save(train / 'target' / 'lonely_target.png', random_pixels(2, 40, 48))
  save(train / 'input' / 'sizes.png', random_pixels(3, 40, 48))
  save(train / 'target' / 'sizes.png', random_pixels(3, 48, 40))
  save(train / 'input' / 'zero.png', random_pixels(4, 40, 48))
  (train / 'target' / 'zero.png').write_bytes(b'')
  save(train / 'input' / 'text.png', random_pixels(5, 40, 48))
  (train / 'target' / 'text.jpg').write_text('this is not a photo')
  good = save(train / 'input' / 'cut.png', random_pixels(6, 40, 48)).read_bytes()
  (train / 'input' / 'cut.png').write_bytes(good[: len(good) // 3])
  save(train / 'target' / 'cut.png', random_pixels(6, 40, 48))
  save(train / 'input' / 'tiny.png', random_pixels(7, 8, 8))
  save(train / 'target' / 'tiny.png', random_pixels(7, 8, 8))
  (train / 'input' / 'notes.txt').write_text('ignored')
  return {
    'lonely_input': 'input without a target',
    'lonely_target': 'target without an input',
    'zero': 'empty file (0 bytes)',
    'sizes': 'is 48x40 but .* is 40x48',
    'text': 'not an image',
    'cut': 'truncated or corrupt',
    'tiny': 'smaller than config.data.crop_size=16',
  }


def _remove(folder, *stems):
  for stem in stems:
    for path in folder.glob(f'*/{stem}.*'):
      os.remove(path)


def test_every_bad_pair_is_named_under_the_error_policy(tmp_path):
  root = tmp_path / 'pairs'
  expected = _bad_folder(root)
  config = folder_config(root)
  train = root / 'train'
  # Listing problems are reported before anything is decoded, by validation already.
  with pytest.raises(DataError) as error:
    validate_data_config(config)
  message = str(error.value)
  assert "bad_pair_policy='error'" in message
  assert str(train / 'input' / 'lonely_input.png') in message
  assert str(train / 'target' / 'lonely_target.png') in message
  assert str(train / 'target' / 'zero.png') in message
  _remove(train, 'lonely_input', 'lonely_target', 'zero')
  # Decoding problems are reported after one pass over the files, before any training.
  with pytest.raises(DataError) as error:
    dataset_summary(config, data_dir=str(tmp_path / 'tfds'))
  lines = str(error.value).splitlines()
  for name in ('sizes', 'text', 'cut'):
    assert any(name in line and re.search(expected[name], line) for line in lines), name
  _remove(train, 'sizes', 'text', 'cut')
  with pytest.raises(DataError, match=expected['tiny']) as error:
    dataset_summary(config, data_dir=str(tmp_path / 'tfds'))
  assert 'tiny' in str(error.value)


def test_skip_policy_trains_on_the_good_pairs_and_counts_the_rest(tmp_path):
  root = tmp_path / 'pairs'
  _bad_folder(root)
  config = folder_config(root, **{'data.bad_pair_policy': 'skip', 'batch_size': 2})
  validate_data_config(config)
  summary = dataset_summary(config, data_dir=str(tmp_path / 'tfds'))
  assert 'skipped 7 bad pair(s)' in summary
  assert 'ignored 1 non-image file(s)' in summary
  assert 'train: 2 records for training' in summary
  batch = next(
    create_train_iterator(config, process_index=0, process_count=1, data_dir=str(tmp_path / 'tfds'))
  )
  assert batch['input'].shape == (2, 16, 16, 3)
  # The same prepared files under the error policy still refuse the bad pairs.
  with pytest.raises(DataError, match='bad pair'):
    dataset_summary(folder_config(root), data_dir=str(tmp_path / 'tfds'))


def test_converted_modes_and_exif_pairs_line_up(tmp_path):
  root = tmp_path / 'pairs'
  write_pairs(root, 'test', ['good'])
  pixels = random_pixels(0, 30, 40)
  exif = Image.Exif()
  exif[0x0112] = 8  # stored sideways, displayed rotated 90 degrees counter-clockwise
  save(root / 'train' / 'input' / 'phone.jpg', pixels, exif=exif, quality=100)
  upright = np.asarray(
    Image.open(root / 'train' / 'input' / 'phone.jpg').transpose(Image.Transpose.ROTATE_90)
  )
  save(root / 'train' / 'target' / 'phone.png', upright)
  gray = np.asarray(Image.fromarray(pixels).convert('L'))
  save(root / 'train' / 'input' / 'gray.png', gray)
  (root / 'train' / 'target' / 'gray.png').write_bytes(png16(pixels.astype(np.uint16) * 257))
  config = folder_config(root, **{'data.eval_split': 'train', 'data.eval_size': None})
  examples = eval_examples(config, tmp_path / 'tfds')
  phone, gray_pair = examples['phone'], examples['gray']
  assert phone['input'].shape == phone['target'].shape == (40, 30, 3)
  np.testing.assert_array_equal(phone['input'], upright / np.float32(255))
  np.testing.assert_allclose(gray_pair['input'][..., 1], gray / 255, atol=1e-6)
  np.testing.assert_allclose(gray_pair['target'], pixels / 255, atol=1e-6)


def test_empty_or_missing_split_is_an_error(tmp_path):
  root = tmp_path / 'pairs'
  write_pairs(root, 'train', ['a'])
  (root / 'test' / 'input').mkdir(parents=True)
  (root / 'test' / 'target').mkdir(parents=True)
  with pytest.raises(DataError, match="Split 'test' of .* is empty"):
    validate_data_config(folder_config(root))
  with pytest.raises(DataError, match="config.data.eval_split='val' is not a split"):
    validate_data_config(folder_config(root, **{'data.eval_split': 'val'}))


@pytest.mark.parametrize(
  'overrides, option',
  [
    ({'data.dir': None}, 'config.data.dir'),
    ({'data.dir': '/nonexistent/pairs'}, '/nonexistent/pairs'),
    ({'data.sampling': 'tiles'}, 'config.data.sampling'),
    ({'data.bad_pair_policy': 'ignore'}, 'config.data.bad_pair_policy'),
    ({'data.max_rotation_degrees': 90.0}, 'config.data.max_rotation_degrees'),
    ({'data.name': 'oxford_iiit_pet'}, 'config.data.name'),
  ],
)
def test_settings_errors_name_the_option(tmp_path, overrides, option):
  with pytest.raises(DataError, match=option):
    validate_data_config(folder_config(tmp_path, **overrides))
