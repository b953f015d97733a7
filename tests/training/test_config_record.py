"""The config's record in a workdir: old `config.json` files load through the rename table and
without the keys now derived, the resume rule follows the marks in config.py, and every choice
key has its list in options.py."""

import json
import pathlib

import jax.numpy as jnp
import ml_collections
import pytest

from unet_jax import config as config_lib
from unet_jax import options
from unet_jax.data import colour_spaces
from unet_jax.models import layers, vgg
from unet_jax.training import run_record
from unet_jax.validation import ConfigError, validate_config

FIXTURE = pathlib.Path(__file__).parents[1] / 'fixtures' / 'workdir_70e8f58' / 'workdir'


def _flat_keys(tree: dict, prefix: str = '') -> set[str]:
  keys = set()
  for key, value in tree.items():
    keys.add(prefix + key)
    if isinstance(value, dict):
      keys |= _flat_keys(value, f'{prefix}{key}.')
  return keys


@pytest.mark.parametrize(
  'global_context, thumbnail_context, context, thumbnail',
  [
    (False, False, 'none', 'crop'),
    (True, False, 'pooled', 'crop'),
    (False, True, 'none', 'photo'),
    (True, True, 'thumbnail', 'photo'),
  ],
)
def test_an_old_config_json_loads_under_the_new_keys(
  tmp_path, global_context, thumbnail_context, context, thumbnail
):
  saved = json.loads(config_lib.get_base_config().to_json_best_effort())
  del saved['model']['thumbnail']
  saved['model'].update(global_context=global_context, thumbnail_context=thumbnail_context)
  (tmp_path / run_record.CONFIG_FILE).write_text(json.dumps(saved))
  loaded = run_record.load_config(str(tmp_path))
  assert (loaded.model.global_context, loaded.model.thumbnail) == (context, thumbnail)
  assert 'thumbnail_context' not in loaded.model


def test_a_config_from_before_both_keys_gets_their_defaults(tmp_path):
  saved = json.loads(config_lib.get_base_config().to_json_best_effort())
  del saved['model']['thumbnail'], saved['model']['global_context']
  (tmp_path / run_record.CONFIG_FILE).write_text(json.dumps(saved))
  loaded = run_record.load_config(str(tmp_path))
  assert (loaded.model.global_context, loaded.model.thumbnail) == ('none', 'crop')


@pytest.mark.parametrize('task, head', [('enhance', 'image'), ('segment', 'segmentation')])
def test_a_saved_model_head_is_dropped_when_it_agrees_with_the_task(tmp_path, task, head):
  saved = json.loads(config_lib.get_base_config().to_json_best_effort())
  saved['task'], saved['model']['head'] = task, head
  (tmp_path / run_record.CONFIG_FILE).write_text(json.dumps(saved))
  loaded = run_record.load_config(str(tmp_path))
  assert 'head' not in loaded.model and loaded.task == task
  saved['model']['head'] = 'segmentation' if head == 'image' else 'image'
  (tmp_path / run_record.CONFIG_FILE).write_text(json.dumps(saved))
  with pytest.raises(run_record.WorkdirError, match=f"config.model.head=.*gives '{head}'"):
    run_record.load_config(str(tmp_path))


def test_a_config_file_that_still_sets_model_head_is_refused_naming_the_task():
  config = config_lib.get_base_config()
  config.model.head = 'image'  # a config file of before: the section is not locked there
  refused = 'config.model.head is no longer set: it follows config.task.*set config.task'
  with pytest.raises(ConfigError, match=refused):
    validate_config(config, training=False, check_data_files=False)


def test_the_70e8f58_workdir_config_loads_validates_and_accepts_its_own_resume():
  loaded = run_record.load_config(str(FIXTURE))
  assert (loaded.model.global_context, loaded.model.thumbnail) == ('thumbnail', 'photo')
  validate_config(loaded, training=False, check_data_files=False)
  # Today's spelling of the same run is no change at all, so the resume check passes.
  run = run_record.Run(loaded, str(FIXTURE), resuming=True)
  assert run.changes == {}
  changed = ml_collections.ConfigDict(loaded.to_dict())
  changed.model.global_context = 'pooled'
  with pytest.raises(run_record.WorkdirError, match='config.model.global_context'):
    run_record.Run(changed, str(FIXTURE), resuming=True)


def test_the_resume_rule_follows_the_marks_in_config_py(tmp_path):
  base = config_lib.get_base_config()
  run_record.Run(base, str(tmp_path), resuming=False).commit(0)
  resumed = ml_collections.ConfigDict(base.to_dict())
  resumed.model.lut_method = 'matmul'  # same function, another way to compute it
  resumed.predict.tile_size = 128  # a whole marked section
  resumed.num_train_steps += 1  # extendable
  run = run_record.Run(resumed, str(tmp_path), resuming=True)
  assert set(run.changes) == {'model.lut_method', 'predict.tile_size', 'num_train_steps'}
  resumed.model.lut_size = 33
  with pytest.raises(run_record.WorkdirError, match='config.model.lut_size: 17 -> 33'):
    run_record.Run(resumed, str(tmp_path), resuming=True)


def test_every_resume_mark_and_choice_names_a_key_of_the_base_config():
  keys = _flat_keys(config_lib.get_base_config().to_dict())
  assert keys >= config_lib.RESUMABLE
  assert keys >= config_lib.EXTENDABLE
  assert set(options.CHOICES) <= keys
  assert not set(options.DERIVED) & keys
  assert {source for source, _ in options.DERIVED.values()} <= keys


def test_each_default_is_one_of_its_choices_and_a_bad_choice_is_named():
  base = config_lib.get_base_config()
  options.check_choices(base)
  base.model.global_context = 'whole'
  with pytest.raises(
    ConfigError, match=r"config.model.global_context='whole' is not one of \['none'"
  ):
    validate_config(base, training=False, check_data_files=False)
  # The old spelling is refused where it is set, naming the key (the config is type-safe).
  with pytest.raises(TypeError, match='global_context'):
    base.model.global_context = True


def test_the_tables_keyed_by_a_choice_have_a_row_for_each_choice():
  tables = {
    'model.activation': layers.ACTIVATIONS,
    'loss.perceptual_network': vgg.BLOCK_DEPTHS,
    'data.working_space': colour_spaces.WORKING_SPACES,
  }
  assert {key: set(table) for key, table in tables.items()} == {
    key: set(options.CHOICES[key]) for key in tables
  }
  # create_model reads the compute dtype by name.
  assert all(jnp.dtype(name).name == name for name in options.CHOICES['model.dtype'])
