"""Segmentation from a tfds dataset with masks, tested on `tfds.testing.mock_data`."""

import numpy as np
import pytest
import tensorflow_datasets as tfds

from tests.helpers import tiny_config
from unet_jax.data import (
  DataError,
  create_eval_iterator,
  create_train_iterator,
  dataset_summary,
  validate_data_config,
)
from unet_jax.data.segmentation import DecodeSegmentation, spec_for


def pets_config(**overrides):
  settings = {
    'task': 'segment',
    'model.num_classes': 3,
    'data.name': 'oxford_iiit_pet',
    'data.crop_size': 32,
    'data.eval_size': None,
    'data.rot90': True,
    'data.max_rotation_degrees': 10.0,
  }
  settings.update(overrides)
  return tiny_config(**settings)


@pytest.fixture
def mock_pets():
  with tfds.testing.mock_data(num_examples=6, policy=tfds.testing.MockPolicy.USE_CODE):
    yield


def test_pet_trimap_becomes_classes_0_to_2():
  trimap = np.array([[1, 2], [3, 0]], np.uint8)[..., None]
  record = {
    'image': np.zeros((2, 2, 3), np.uint8),
    'segmentation_mask': trimap,
    'file_name': b'x.jpg',
  }
  example = DecodeSegmentation(spec_for('oxford_iiit_pet'), 3, 255).map(record)
  np.testing.assert_array_equal(example['mask'], [[0, 1], [2, 255]])
  assert example['mask'].dtype == np.int32 and example['name'] == 'x'


def test_train_and_eval_batches(mock_pets):
  config = pets_config()
  validate_data_config(config)
  assert 'oxford_iiit_pet' in dataset_summary(config)
  batch = next(create_train_iterator(config, process_index=0, process_count=1))
  assert set(batch) == {'input', 'mask'}
  assert batch['input'].shape == (8, 32, 32, 3) and batch['input'].dtype == np.float32
  assert batch['mask'].shape == (8, 32, 32) and batch['mask'].dtype == np.int32
  assert set(np.unique(batch['mask'])) <= {0, 1, 2, 255}
  examples = list(create_eval_iterator(config))
  assert len(examples) == 6
  for example in examples:
    assert example['mask'].shape == example['input'].shape[:2]
    assert isinstance(example['name'], str) and example['name']


def test_segmentation_settings_are_checked():
  with pytest.raises(DataError, match='config.model.num_classes=2'):
    validate_data_config(pets_config(**{'model.num_classes': 2}))
  with pytest.raises(DataError, match="config.task='segment'"):
    validate_data_config(pets_config(**{'data.name': 'builtin'}))


def test_unprepared_or_unknown_dataset_is_a_clear_error(tmp_path, monkeypatch):
  real = tfds.data_source
  # Hide any copy in tfds' default folder: only the empty tmp_path is searched.
  monkeypatch.setattr(
    tfds, 'data_source', lambda name, **kw: real(name, **{**kw, 'data_dir': str(tmp_path)})
  )
  with pytest.raises(DataError, match='array_record'):
    create_eval_iterator(pets_config(), data_dir=str(tmp_path))
  with pytest.raises(DataError, match="'no_such_dataset' is not a tfds dataset"):
    create_eval_iterator(pets_config(**{'data.name': 'no_such_dataset'}), data_dir=str(tmp_path))
