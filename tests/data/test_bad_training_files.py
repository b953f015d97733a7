"""Training files that cannot be read (issue 32): a photo without read permission and a file
name that is not UTF-8 are named bad pairs (DataError, status 4; skippable), not a traceback
from tfds."""

import builtins
import os

import pytest

from tests import helpers
from unet_jax.data import DataError, images, sources


def _config(root, **overrides):
  return helpers.tiny_config(**{'data.name': 'paired_folders', 'data.dir': str(root), **overrides})


def _pairs(root):
  helpers.write_pairs(root, 'train', ['a', 'b'])
  helpers.write_pairs(root, 'test', ['t'])
  return root


def test_a_file_name_that_is_not_utf8_is_a_named_bad_pair(tmp_path):
  root = _pairs(tmp_path / 'pairs')
  for side in ('input', 'target'):
    data = (root / 'train' / side / 'a.png').read_bytes()
    with open(os.path.join(os.fsencode(root / 'train' / side), b'caf\xe9.png'), 'wb') as f:
      f.write(data)
  with pytest.raises(DataError, match=r'train/\*/caf\ufffd\.\*: the file name is not valid UTF-8'):
    sources.prepare(_config(root), str(tmp_path / 'tfds'))
  prepared = sources.prepare(_config(root, **{'data.bad_pair_policy': 'skip'}), str(tmp_path / 't'))
  assert [row[0] for row in prepared.folders.records['train']] == ['a', 'b']


def test_a_photo_that_cannot_be_opened_is_a_named_bad_pair(tmp_path, monkeypatch):
  # Tests run as root, whom file permissions do not stop: the refusal is simulated.
  root = _pairs(tmp_path / 'pairs')
  locked = str(root / 'train' / 'target' / 'b.png')

  def open_unless_locked(path, *args, **kwargs):
    if os.fspath(path) == locked:
      raise PermissionError(13, 'Permission denied', locked)
    return builtins.open(path, *args, **kwargs)

  monkeypatch.setattr(images, 'open', open_unless_locked, raising=False)
  with pytest.raises(DataError, match=rf'{locked}: cannot be read \(Permission denied\)'):
    sources.prepare(_config(root), str(tmp_path / 'tfds'))
  prepared = sources.prepare(_config(root, **{'data.bad_pair_policy': 'skip'}), str(tmp_path / 't'))
  assert [row[0] for row in prepared.folders.records['train']] == ['a']
