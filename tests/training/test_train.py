"""The training engine end to end: train, resume exactly, stop on NaN, eval and predict."""

import json
import os
import pathlib

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from tests.helpers import saved_params, tiny_config
from unet_jax.config import get_base_config
from unet_jax.inference import restore
from unet_jax.training import loop, steps
from unet_jax.validation import ConfigError, validate_config


def read_json(*parts):
  return json.loads(pathlib.Path(*parts).read_text())


@pytest.fixture(scope='module')
def trained_workdir(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('run'))
  results = loop.train_and_evaluate(tiny_config(steps=6, eval_lpips=True), workdir)
  return workdir, results


@pytest.mark.slow
def test_training_writes_logs_checkpoints_and_eval(trained_workdir):
  workdir, results = trained_workdir
  assert read_json(workdir, 'config.json')['data']['crop_size'] == 32
  log = pathlib.Path(workdir, 'metrics.jsonl').read_text().splitlines()
  lines = [json.loads(line) for line in log]
  train_steps = [line['step'] for line in lines if 'train/loss' in line]
  assert train_steps == [2, 4, 6]
  assert all(np.isfinite(line['train/loss']) for line in lines if 'train/loss' in line)
  logged_keys = {key for line in lines for key in line}
  assert {'eval/psnr', 'eval/lpips', 'eval_identity/psnr'} <= logged_keys
  assert os.listdir(os.path.join(workdir, 'tensorboard'))
  assert saved_params(workdir)[1] == 6
  assert {'psnr', 'ssim', 'lpips', 'delta_e2000'} <= set(results['model'])
  eval_dir = os.path.join(workdir, 'eval', 'step_6')
  assert read_json(eval_dir, 'metrics.json')['num_images'] >= 1
  written = os.listdir(eval_dir)
  assert [f for f in written if f.endswith('_graded.png')]
  assert len([f for f in written if f.endswith('.png')]) == 2 * len(
    [f for f in written if f.endswith('_graded.png')]
  )


@pytest.mark.slow
def test_eval_mode_needs_only_the_workdir_and_keeps_earlier_evals(trained_workdir):
  workdir, train_results = trained_workdir
  final_eval = pathlib.Path(workdir, 'eval', 'step_6', 'metrics.json')
  before = final_eval.read_bytes()
  results = restore.run_eval(workdir)
  assert results['num_images'] == train_results['num_images']
  assert np.isfinite(results['model']['psnr']) and np.isfinite(results['identity']['psnr'])
  # The best checkpoint is step 6 (the only eval); its earlier eval folder is left as it was.
  assert final_eval.read_bytes() == before
  assert read_json(workdir, 'eval', 'step_6-1', 'metrics.json')['num_images'] >= 1


@pytest.mark.slow
def test_predict_mode_grades_a_folder_without_touching_it(trained_workdir, tmp_path):
  workdir, _ = trained_workdir
  photos = tmp_path / 'photos'
  photos.mkdir()
  rng = np.random.default_rng(0)
  Image.fromarray(rng.integers(0, 255, (45, 70, 3), dtype=np.uint8)).save(photos / 'a.png')
  before = (photos / 'a.png').read_bytes()
  summary = restore.run_predict(workdir, str(photos), str(tmp_path / 'graded'))
  assert summary['written']
  with Image.open(tmp_path / 'graded' / 'a.png') as graded:
    assert graded.size == (70, 45)
  assert (photos / 'a.png').read_bytes() == before
  with pytest.raises(ValueError, match='photos'):
    restore.run_predict(workdir, str(photos), str(photos))


@pytest.mark.slow
def test_resume_is_exact(tmp_path):
  straight = str(tmp_path / 'straight')
  loop.train_and_evaluate(tiny_config(steps=6), straight)
  interrupted = str(tmp_path / 'interrupted')
  loop.train_and_evaluate(tiny_config(steps=6), interrupted, stop_at_step=3)
  assert saved_params(interrupted)[1] == 3
  loop.train_and_evaluate(tiny_config(steps=6), interrupted)
  expected, step = saved_params(straight)
  resumed, resumed_step = saved_params(interrupted)
  assert step == resumed_step == 6
  jax.tree.map(np.testing.assert_array_equal, resumed, expected)


@pytest.mark.slow
def test_nan_loss_stops_with_the_step_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
  workdir = str(tmp_path / 'nan')
  loop.train_and_evaluate(tiny_config(steps=6), workdir, stop_at_step=2)
  good, _ = saved_params(workdir)

  real_loss = steps.compute_loss

  def poisoned(predictions, batch, config, loss_params):
    loss, terms = real_loss(predictions, batch, config, loss_params)
    return loss * np.nan, terms

  monkeypatch.setattr(steps, 'compute_loss', poisoned)
  with pytest.raises(FloatingPointError, match=r'step 3: the loss \(nan\)'):
    loop.train_and_evaluate(tiny_config(steps=6), workdir)
  after, step = saved_params(workdir)
  assert step == 2
  jax.tree.map(np.testing.assert_array_equal, after, good)


@pytest.mark.parametrize(
  'overrides, option',
  [
    ({'batch_size': 12}, 'config.batch_size'),
    ({'data.crop_size': 34}, 'config.data.crop_size'),
    ({'model.norm': 'instance'}, 'config.model.norm'),
    ({'loss.l1': 0.0, 'loss.ssim': 0.0}, 'loss weight'),
    ({'predict.tile_size': 30}, 'config.predict.tile_size'),
    ({'task': 'segment', 'best_metric': 'miou', 'model.num_classes': 1}, 'num_classes'),
    ({'best_metric': 'miou'}, 'config.best_metric'),
    ({'data.name': 'paired_folders', 'data.dir': '/nonexistent/pairs'}, '/nonexistent/pairs'),
  ],
)
def test_config_errors_name_the_option(overrides, option):
  with pytest.raises(ConfigError, match=option):
    validate_config(tiny_config(steps=6, **overrides))


def test_base_config_is_valid():
  config = get_base_config()
  config.batch_size = 8
  validate_config(config)


@pytest.mark.slow
def test_segmentation_trains_and_scores_miou(tmp_path):
  overrides = {
    'task': 'segment',
    'model.num_classes': 3,
    'data.name': 'oxford_iiit_pet',
    'data.eval_size': None,
    'best_metric': 'miou',
    'num_train_steps': 2,
    'eval_every_steps': 2,
  }
  with tfds.testing.mock_data(num_examples=6, policy=tfds.testing.MockPolicy.USE_CODE):
    results = loop.train_and_evaluate(tiny_config(steps=6, **overrides), str(tmp_path))
  assert 0.0 <= results['model']['miou'] <= 1.0
  assert 0.0 <= results['model']['pixel_accuracy'] <= 1.0
  eval_dir = tmp_path / 'eval' / 'step_2'
  assert read_json(eval_dir, 'metrics.json')['num_images'] == results['num_images'] > 0
  label_files = [f for f in os.listdir(eval_dir) if f.endswith('_labels.png')]
  assert len(label_files) == results['num_images']
  labels = np.asarray(Image.open(eval_dir / label_files[0]))
  assert labels.ndim == 2 and labels.max() < 3
