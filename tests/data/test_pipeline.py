"""grain pipelines: aligned paired augmentation, exact resume, host sharding, eval, denoising."""

import grain
import numpy as np
import orbax.checkpoint as ocp
import pytest

from tests.helpers import record_ids, tiny_config, uniform_pairs, write_pairs
from unet_jax.data import DataError, create_eval_iterator, create_train_iterator
from unet_jax.data.looks import warm_film
from unet_jax.data.photo_cache import CachedPhotos

QUANTUM = 1 / 255 + 1e-6


def _train(config, data_dir=None, index=0, count=1):
  return create_train_iterator(config, process_index=index, process_count=count, data_dir=data_dir)


@pytest.fixture(scope='module')
def uniform_root(tmp_path_factory):
  root = tmp_path_factory.mktemp('uniform')
  uniform_pairs(root, 'train', 8)
  uniform_pairs(root, 'test', 3)
  return root


def uniform_config(root, **overrides):
  settings = {
    'data.name': 'paired_folders',
    'data.dir': str(root),
    'data.crop_size': 16,
    'batch_size': 4,
  }
  settings.update(overrides)
  return tiny_config(**settings)


@pytest.mark.parametrize('seed', range(6))
def test_augmented_pairs_stay_aligned_with_a_pixelwise_look(seed):
  config = tiny_config(
    seed=seed,
    **{'data.look': 'warm_film', 'data.vflip': True, 'data.rot90': True, 'data.crop_size': 48},
  )
  iterator = _train(config)
  for _ in range(2):
    batch = next(iterator)
    assert batch['input'].shape == batch['target'].shape == (8, 48, 48, 3)
    assert batch['input'].dtype == np.float32
    # Misalignment by one pixel would be off by far more than a quantisation step.
    assert np.abs(warm_film(batch['input']) - batch['target']).max() <= QUANTUM


@pytest.mark.parametrize('sampling', ['crop', 'resize', 'mixed'])
def test_rotation_and_resize_keep_pairs_aligned(tmp_path, sampling):
  # An affine look commutes with bilinear sampling, so f(aug(x)) = aug(f(x)) exactly.
  write_pairs(tmp_path, 'train', ['a', 'b', 'c'], size=(60, 70), look=lambda x: 1 - x)
  write_pairs(tmp_path, 'test', ['d'], look=lambda x: 1 - x)
  config = uniform_config(
    tmp_path,
    **{
      'data.sampling': sampling,
      'data.max_rotation_degrees': 10.0,
      'data.rot90': True,
      'data.crop_size': 32,
    },
  )
  for seed in range(3):
    config.seed = seed
    batch = next(_train(config, str(tmp_path / 'tfds')))
    assert batch['input'].shape == (4, 32, 32, 3)
    np.testing.assert_allclose(1 - batch['input'], batch['target'], atol=QUANTUM)


def test_resume_from_saved_state_gives_the_same_next_batches():
  config = tiny_config()
  iterator = _train(config)
  for _ in range(3):
    next(iterator)
  state = iterator.get_state()
  expected = [next(iterator) for _ in range(2)]
  fresh = _train(config)
  fresh.set_state(state)
  for batch in expected:
    got = next(fresh)
    for key in batch:
      np.testing.assert_array_equal(got[key], batch[key])


def test_orbax_checkpoint_round_trip_of_the_iterator(tmp_path):
  config = tiny_config()
  iterator = _train(config)
  for _ in range(2):
    next(iterator)
  manager = ocp.CheckpointManager(tmp_path / 'ckpt', item_names=('data',))
  manager.save(2, args=ocp.args.Composite(data=grain.checkpoint.CheckpointSave(iterator)))
  manager.wait_until_finished()
  expected = next(iterator)
  fresh = _train(config)
  manager.restore(2, args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(fresh)))
  manager.close()
  np.testing.assert_array_equal(next(fresh)['input'], expected['input'])


def test_two_hosts_see_disjoint_records_that_make_the_single_host_batch(uniform_root):
  config = uniform_config(uniform_root)
  data_dir = str(uniform_root / 'tfds')
  single = _train(config, data_dir)
  hosts = [_train(config, data_dir, index, 2) for index in range(2)]
  seen = [[], []]
  for _ in range(2):  # 2 global batches of 4 = one epoch of 8 records
    whole = next(single)
    parts = [next(host) for host in hosts]
    assert all(part['input'].shape == (2, 16, 16, 3) for part in parts)
    joined = np.concatenate([part['input'] for part in parts])
    np.testing.assert_array_equal(joined, whole['input'])
    for index, part in enumerate(parts):
      seen[index] += record_ids(part['input'])
  assert not set(seen[0]) & set(seen[1])
  assert sorted(seen[0] + seen[1]) == list(range(8))


def test_epochs_cover_every_record_and_reshuffle(uniform_root):
  iterator = _train(uniform_config(uniform_root), str(uniform_root / 'tfds'))
  epochs = [sum((record_ids(next(iterator)['input']) for _ in range(2)), []) for _ in range(2)]
  assert sorted(epochs[0]) == sorted(epochs[1]) == list(range(8))
  assert epochs[0] != epochs[1]


@pytest.mark.slow
def test_worker_processes_give_the_same_batches(uniform_root):
  config = uniform_config(uniform_root)
  data_dir = str(uniform_root / 'tfds')
  expected = [next(_train(config, data_dir))['input']]
  config.data.num_workers = 2
  iterator = _train(config, data_dir)
  np.testing.assert_array_equal(next(iterator)['input'], expected[0])
  state = iterator.get_state()
  following = next(iterator)['input']
  fresh = _train(config, data_dir)
  fresh.set_state(state)
  np.testing.assert_array_equal(next(fresh)['input'], following)
  iterator.close()
  fresh.close()


def test_global_batch_must_split_over_hosts(uniform_root):
  with pytest.raises(DataError, match='config.batch_size=4'):
    _train(uniform_config(uniform_root), str(uniform_root / 'tfds'), 0, 3)


def test_eval_covers_every_image_once_in_a_fixed_order():
  config = tiny_config(**{'data.eval_size': None})
  first = list(create_eval_iterator(config))
  assert [e['name'] for e in first] == ['chelsea', 'china', 'coffee']
  assert first[0]['input'].shape == (300, 451, 3) and first[0]['target'].dtype == np.float32
  parts = [create_eval_iterator(config, process_index=i, process_count=2) for i in range(2)]
  names = sorted(e['name'] for part in parts for e in part)
  assert names == ['chelsea', 'china', 'coffee']
  small = list(create_eval_iterator(tiny_config(**{'data.eval_size': 64})))
  assert all(max(e['input'].shape[:2]) == 64 for e in small)


def test_denoising_makes_noisy_inputs_and_fixed_eval_noise():
  sigma = 0.1
  config = tiny_config(task='denoise', **{'data.noise_sigma': sigma, 'data.crop_size': 64})
  batch = next(_train(config))
  residual = batch['input'] - batch['target']
  inside = (batch['input'] > 0) & (batch['input'] < 1)
  assert abs(residual[inside].std() - sigma) < 0.02
  runs = [list(create_eval_iterator(tiny_config(seed=s, task='denoise'))) for s in (0, 1)]
  for a, b in zip(*runs, strict=True):
    np.testing.assert_array_equal(a['input'], b['input'])
    assert not np.array_equal(a['input'], a['target'])


def test_cached_photos_give_the_same_stream_and_resume_exactly(uniform_root):
  """`data.photo_cache_mb` decodes each photo once: batches, whole-photo figures and the
  iterator's saved position are those of the uncached stream."""
  data_dir = str(uniform_root / 'tfds')
  overrides = {
    'model.exposure': True,
    'model.thumbnail': 'photo',
    'model.curves': 4,
    'model.auto_levels': True,
    'model.thumbnail_size': 16,
  }
  cache = {'data.photo_cache_mb': 64}
  plain = _train(uniform_config(uniform_root, **overrides), data_dir)
  cached = _train(uniform_config(uniform_root, **overrides, **cache), data_dir)
  for _ in range(5):  # more than two epochs of 8 records in batches of 4
    expected, got = next(plain), next(cached)
    assert expected.keys() == got.keys()
    for key in expected:
      np.testing.assert_array_equal(got[key], expected[key], err_msg=key)
  state = cached.get_state()
  following = next(cached)
  fresh = _train(uniform_config(uniform_root, **overrides, **cache), data_dir)
  fresh.set_state(state)
  np.testing.assert_array_equal(next(fresh)['input'], following['input'])


def test_photo_cache_keeps_records_only_within_its_budget():
  records = [{'input': np.full((256, 256, 3), i, np.float32)} for i in range(4)]  # 0.75 MB each
  source = grain.MapDataset.source(records).map(lambda r: {'input': r['input'].copy()})
  cache = CachedPhotos(source, budget_mb=2)
  assert [float(cache[i]['input'][0, 0, 0]) for i in range(6)] == [0, 1, 2, 3, 0, 1]
  assert cache.kept_bytes == 2 * records[0]['input'].nbytes
  assert cache[0] is cache[4] and cache[3] is not cache[3]  # kept, and read again
  with pytest.raises(ValueError, match='read-only'):
    cache[1]['input'][0, 0, 0] = 9.0
