"""A workdir written by the code of commit 70e8f58 (tests/fixtures/workdir_70e8f58/README.md)
still evaluates, predicts, exports its LUT and resumes training on today's code, with the
outputs that code produced: the parameter names and the checkpoint layout are a promise to
users with trained runs.

Its config.json names the pairs where they were when it was trained (/tmp/fx/pairs). Training
accepts a moved `data.dir` on resume (run_record.RESUMABLE_CHANGES: the files are compared by
their fingerprint instead), but eval and export_lut read the data from the saved config, so the
copy here rewrites `data.dir` in its config.json to the copied pairs, as a user who moved their
photos would.
"""

import json
import pathlib
import shutil

import numpy as np
import pytest
from PIL import Image

from unet_jax.inference import lut_export, restore
from unet_jax.training import loop, run_record

FIXTURE = pathlib.Path(__file__).parent.parent / 'fixtures' / 'workdir_70e8f58'
EXPECTED = FIXTURE / 'expected'

pytestmark = pytest.mark.slow


@pytest.fixture
def copied_run(tmp_path):
  """A copy of the fixture's workdir and pairs, as trained (config.json names /tmp/fx/pairs)."""
  shutil.copytree(FIXTURE / 'pairs', tmp_path / 'pairs')
  workdir = tmp_path / 'workdir'
  shutil.copytree(FIXTURE / 'workdir', workdir)
  return workdir


@pytest.fixture
def old_run(copied_run, tmp_path):
  """The copied workdir with its config.json pointing at the copied pairs."""
  workdir = copied_run
  config_path = workdir / run_record.CONFIG_FILE
  config = json.loads(config_path.read_text())
  assert config['data']['dir'] == '/tmp/fx/pairs'
  config['data']['dir'] = str(tmp_path / 'pairs')
  config_path.write_text(json.dumps(config, indent=2))
  return workdir


def _cube_values(path: pathlib.Path) -> np.ndarray:
  rows = [line.split() for line in path.read_text().splitlines()]
  return np.array(
    [[float(v) for v in row] for row in rows if len(row) == 3 and row[0][0] in '0123456789.-']
  )


@pytest.mark.slow
def test_evaluates_with_the_old_scores(old_run):
  results = restore.run_eval(str(old_run))
  expected = json.loads((EXPECTED / 'eval_metrics.json').read_text())
  assert results['num_images'] == expected['num_images']
  for side in ('model', 'identity'):
    for name, value in expected[side].items():
      assert results[side][name] == pytest.approx(value, abs=1e-5), (side, name)


@pytest.mark.slow
def test_predicts_the_old_photos(old_run, tmp_path):
  output = tmp_path / 'graded'
  summary = restore.run_predict(str(old_run), str(tmp_path / 'pairs/test/input'), str(output))
  assert not summary['failed']
  for name in ('p0.png', 'p1.png'):
    written = np.asarray(Image.open(output / name))
    np.testing.assert_array_equal(written, np.asarray(Image.open(EXPECTED / name)), err_msg=name)


def test_exports_the_old_lut(old_run, tmp_path):
  cube = tmp_path / 'look9.cube'
  lut_export.export_lut(str(old_run), str(cube), size=9)
  expected = _cube_values(EXPECTED / 'look9.cube')
  assert expected.shape == (9**3, 3)
  np.testing.assert_allclose(_cube_values(cube), expected, atol=1e-5)


@pytest.mark.slow
def test_resumes_training_for_two_more_steps_from_moved_data(copied_run, tmp_path):
  config = run_record.load_config(str(copied_run))
  config.data.dir = str(tmp_path / 'pairs')
  config.num_train_steps = 6
  loop.train_and_evaluate(config, str(copied_run))
  rows = [json.loads(line) for line in (copied_run / 'metrics.jsonl').read_text().splitlines()]
  losses = [row['train/loss'] for row in rows if row['step'] == 6 and 'train/loss' in row]
  assert len(losses) == 1 and np.isfinite(losses[0])
  history = (copied_run / run_record.HISTORY_FILE).read_text().splitlines()
  resumed = json.loads(history[-1])
  assert resumed['event'] == 'resume' and resumed['step'] == 4
  assert set(resumed['changes']) == {'data.dir', 'num_train_steps'}
