"""Every numeric option has a range, from one table, checked before anything compiles
(issue 32): a value outside it is refused naming the key (status 3), never trained on."""

import math

import ml_collections
import numpy as np
import pytest

from tests.helpers import ROOT, run_main, tiny_config
from unet_jax import option_ranges
from unet_jax.config import get_base_config
from unet_jax.inference import export, lut_export
from unet_jax.training.train_state import create_optimizer
from unet_jax.validation import ConfigError, validate_config


def _numeric_keys(tree: ml_collections.ConfigDict, prefix: str = ''):
  for key in tree:
    value = tree[key]
    if isinstance(value, ml_collections.ConfigDict):
      yield from _numeric_keys(value, f'{prefix}{key}.')
      continue
    kind = tree.get_type(key)
    if kind in (int, float) and not isinstance(value, bool):
      yield f'{prefix}{key}', kind


NUMERIC = sorted(_numeric_keys(get_base_config()))


def test_every_numeric_option_of_the_base_config_has_a_range():
  assert len(NUMERIC) > 50
  assert sorted(key for key, _ in NUMERIC) == sorted(option_ranges.RANGES)


def _cases():
  for key, kind in NUMERIC:
    values = (math.nan, math.inf, -1.0, 0.0) if kind is float else (-1, 0, 10**12)
    for value in values:
      yield pytest.param(key, value, id=f'{key}={value}')


@pytest.mark.parametrize(('key', 'value'), list(_cases()))
def test_each_value_is_valid_or_refused_naming_the_key(key, value):
  config = tiny_config(**{key: value})
  try:
    validate_config(config, check_data_files=False)
  except ConfigError as error:
    assert f'config.{key}' in str(error), str(error)
    return
  # Accepted: then it is inside the documented range.
  assert option_ranges.RANGES[key].contains(value)


@pytest.mark.parametrize(
  ('key', 'value', 'message'),
  [
    ('data.eval_size', 1, r'config.data.eval_size=1 is out of range: it must be \[11, 16384\]'),
    ('optimizer.grad_clip_norm', -1.0, r'grad_clip_norm=-1.0 is out of range: .*0 \(off\)'),
    ('model.frame_gain', 100000, r'config.model.frame_gain=100000 is out of range'),
    ('model.thumbnail_size', 100000, r'config.model.thumbnail_size=100000 is out of range'),
    ('model.lut_size', 1000, r'config.model.lut_size=1000'),
    ('optimizer.b2', 1.0, r'config.optimizer.b2=1.0 is out of range: it must be \[0, 1\)'),
    ('optimizer.weight_decay', -0.1, r'config.optimizer.weight_decay=-0.1'),
    ('loss.charbonnier_epsilon', 0.0, r'config.loss.charbonnier_epsilon=0.0'),
    ('optimizer.end_learning_rate_factor', 1.5, r'end_learning_rate_factor=1.5'),
  ],
)
def test_the_reported_values_are_refused(key, value, message):
  # eval_size=1 crashed the first eval after committing the workdir; grad_clip_norm=-1
  # trained uphill; frame_gain / thumbnail_size of 100000 overflowed or asked for terabytes.
  with pytest.raises(ConfigError, match=message):
    validate_config(tiny_config(**{key: value}), check_data_files=False)


def test_grad_clip_norm_zero_switches_clipping_off():
  # optax.clip_by_global_norm(0) would scale every gradient to 0: no training at all.
  validate_config(tiny_config(**{'optimizer.grad_clip_norm': 0.0}), check_data_files=False)
  config = tiny_config(**{'optimizer.grad_clip_norm': 0.0, 'optimizer.warmup_steps': 0})
  optimizer = create_optimizer(config)
  params = {'w': np.zeros((4,), np.float32)}
  gradient = {'w': np.full((4,), 100.0, np.float32)}
  updates, _ = optimizer.update(gradient, optimizer.init(params), params)
  assert np.all(np.isfinite(updates['w'])) and np.all(np.asarray(updates['w']) < 0)


def test_training_only_ranges_do_not_block_predict_on_an_old_workdir():
  config = tiny_config(**{'optimizer.b1': 1.5})
  validate_config(config, training=False, check_data_files=False)
  with pytest.raises(ConfigError, match='optimizer.b1'):
    validate_config(config, check_data_files=False)


@pytest.mark.parametrize('size', [1, 257, 1000])
def test_lut_size_is_bounded_before_the_model_is_loaded(tmp_path, size):
  # --lut_size=1000 took 24 GB before the kernel killed it; no workdir is needed to refuse it.
  with pytest.raises(
    ValueError, match=rf'--lut_size={size} is out of range: it must be \[2, 256\]'
  ):
    lut_export.export_lut(str(tmp_path / 'nowhere'), str(tmp_path / 'look.cube'), size=size)
  with pytest.raises(ValueError, match=rf'--lut_size={size}'):
    export.export_workdir(str(tmp_path / 'nowhere'), str(tmp_path / 'out'), lut_size=size)


@pytest.mark.slow
def test_a_bad_value_on_the_command_line_exits_3_naming_the_key(tmp_path):
  run = run_main(
    '--config=configs/tiny.py',
    f'--workdir={tmp_path / "run"}',
    '--config.optimizer.grad_clip_norm=-1',
  )
  assert run.returncode == 3, run.stderr[-2000:]
  assert 'Error: config.optimizer.grad_clip_norm=-1.0 is out of range' in run.stderr
  assert not (tmp_path / 'run' / 'checkpoints').exists()


def test_docs_options_md_lists_every_range_as_checked():
  text = (ROOT / 'docs' / 'options.md').read_text()
  for key, valid in option_ranges.RANGES.items():
    scope = 'training' if valid.training_only else 'every mode'
    assert f'| `{key}` | {valid.text()} | {scope} |' in text, key
  assert f'| `--lut_size` | {option_ranges.LUT_SIZE.text()} |' in text
