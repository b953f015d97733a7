"""The pixel limit in the training scan (issue 32, bug 3): a decompression bomb among the
training pairs is a named bad pair, refused from its header before any pixel is decoded."""

import pytest

from tests import helpers
from tests.photo_files import bomb_jpeg
from unet_jax.data import DataError, sources


def _pairs(root):
  helpers.write_pairs(root, 'train', ['a', 'b'])
  helpers.write_pairs(root, 'test', ['t'])
  for side in ('input', 'target'):
    (root / 'train' / side / 'bomb.jpg').write_bytes(bomb_jpeg())
  return root


def test_a_bomb_among_the_training_pairs_is_refused_naming_the_limit(tmp_path):
  root = _pairs(tmp_path / 'pairs')
  config = helpers.tiny_config(**{'data.name': 'paired_folders', 'data.dir': str(root)})
  with pytest.raises(
    DataError,
    match=r'bomb.jpg: its header says 65000x65000 \(4,225,000,000 pixels\), more '
    r'than config.data.max_pixels=200000000',
  ):
    sources.prepare(config, str(tmp_path / 'tfds'))
  # Skippable like any bad pair; the limit comes from the config.
  skip = helpers.tiny_config(
    **{'data.name': 'paired_folders', 'data.dir': str(root), 'data.bad_pair_policy': 'skip'}
  )
  prepared = sources.prepare(skip, str(tmp_path / 'tfds'))
  assert [row[0] for row in prepared.folders.records['train']] == ['a', 'b']
  strict = helpers.tiny_config(
    **{'data.name': 'paired_folders', 'data.dir': str(root), 'data.max_pixels': 1000}
  )
  with pytest.raises(
    DataError,
    match=r'.png: its header says 48x40 \(1,920 pixels\), more than config.data.max_pixels=1000',
  ):
    sources.prepare(strict, str(tmp_path / 'tfds'))
