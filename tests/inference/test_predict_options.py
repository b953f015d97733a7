"""`--config.predict.*` given to predict, eval or export applies to that command and is recorded;
any other `--config.*` key is refused there (issue 32, bug 6: both were silently ignored)."""

import json
import shutil

import pytest

from tests.helpers import ROOT, run_main
from unet_jax.data import colour_spaces, load_photo
from unet_jax.inference import predict_options, restore
from unet_jax.validation import ConfigError

FIXTURE = ROOT / 'tests' / 'fixtures' / 'workdir_70e8f58'


@pytest.fixture
def workdir(tmp_path):
  return str(shutil.copytree(FIXTURE / 'workdir', tmp_path / 'run'))


@pytest.mark.slow
def test_predict_options_given_to_predict_apply_and_are_recorded(workdir, tmp_path):
  photos = str(FIXTURE / 'pairs' / 'test' / 'input')
  out = tmp_path / 'p3'
  overrides = {'predict.output_profile': 'display_p3', 'predict.lut_only': True}
  summary = restore.run_predict(workdir, photos, str(out), predict_overrides=overrides)
  assert summary['overrides'] == {
    'config.predict.output_profile': 'display_p3',
    'config.predict.lut_only': True,
  }
  written = json.loads((out / 'predict_summary.json').read_text())
  assert written['overrides'] == summary['overrides']
  assert load_photo(out / 'p0.png').profile == colour_spaces.profile_bytes('display_p3')
  # The workdir's own config is left as it was.
  saved = json.loads((tmp_path / 'run' / 'config.json').read_text())
  assert saved['predict']['output_profile'] == 'same' and not saved['predict']['lut_only']


@pytest.mark.slow
def test_predict_options_are_checked_against_the_model_and_others_refused(workdir, tmp_path):
  photos = str(FIXTURE / 'pairs' / 'test' / 'input')
  with pytest.raises(ConfigError, match='config.predict.tile_size=30 must be a positive multiple'):
    restore.run_predict(
      workdir, photos, str(tmp_path / 'o'), predict_overrides={'predict.tile_size': 30}
    )
  with pytest.raises(ValueError, match=r'^--config.model.levels: eval, predict and export use'):
    predict_options.apply(restore.run_record.load_config(workdir), {'model.levels': 3})


@pytest.mark.slow
def test_a_model_option_on_a_predict_command_exits_2(workdir, tmp_path):
  photos = str(FIXTURE / 'pairs' / 'test' / 'input')
  run = run_main(
    '--mode=predict',
    f'--workdir={workdir}',
    f'--input={photos}',
    f'--output={tmp_path / "out"}',
    '--config=configs/tiny.py',
    '--config.model.levels=3',
  )
  assert run.returncode == 2, run.stderr[-2000:]
  assert 'Error: --config.model.levels: --mode=predict uses the model and config' in run.stderr
  assert not (tmp_path / 'out').exists()
