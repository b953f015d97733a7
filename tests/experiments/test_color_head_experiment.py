"""The colour-head ablation script: every row is a config that trains, and its LUT fits are exact.

`experiments.color_head` defines absl flags that `experiments.ablate` defines too, so it is
imported in a process of its own (run from the repository root) rather than beside the other
tests.
"""

import json
import pathlib

import pytest

from tests.helpers import run_python

ROOT = pathlib.Path(__file__).resolve().parents[2]

_PROBE = r"""
import json, sys
import numpy as np
from experiments import color_head
from unet_jax import validation
from unet_jax.models import lut as lut_lib

report = {'unknown_keys': [], 'invalid': {}, 'schedules': {}}
for row in color_head.ROWS:
  try:
    config = color_head.make_config('vignette', row, 3, 7, 48)
  except KeyError as error:
    report['unknown_keys'].append(f'{row}: {error}')
    continue
  try:
    validation.validate_config(config, check_data_files=False)
  except validation.ConfigError as error:
    report['invalid'][row] = str(error)
  report['schedules'][row] = [config.num_train_steps, config.data.crop_size, config.seed,
                              config.data.look, config.eval_every_steps]

# An affine colour grade lies in the span of trilinear lookups: the fit must reproduce it.
rng = np.random.default_rng(0)
photos = [rng.random((40, 50, 3), dtype=np.float32) for _ in range(2)]
matrix = np.array([[0.8, 0.1, 0.05], [0.05, 0.9, 0.0], [0.0, 0.15, 0.7]], np.float32)
offset = np.array([0.05, 0.0, 0.1], np.float32)
graded = [p @ matrix.T + offset for p in photos]
held_out = rng.random((1, 30, 30, 3), dtype=np.float32)
for curvature in (0.0, 1.0):
  table = color_head.fit_lut(photos, graded, size=9, curvature=curvature)
  output = np.asarray(lut_lib.apply_lut(table, held_out, 'gather'))
  report[f'fit_error_{curvature}'] = float(np.abs(output - (held_out @ matrix.T + offset)).max())
for row in ('recipe', 'default_config'):
  config = color_head.make_config('im_auto_level', row, 0, 7, 48, pairs_root='looks')
  report[f'pairs_{row}'] = [config.data.name, config.data.dir, config.data.tfds_data_dir]
  validation.validate_config(config, check_data_files=False)
color_head.ROWS['misspelt'] = ('a row with a typo', {'model.colr_head': 'lut'})
try:
  color_head.make_config('vignette', 'misspelt', 0, 7, 48)
except KeyError as error:
  report['misspelt'] = str(error)
print('RESULT' + json.dumps(report))
"""


def _probe() -> dict:
  done = run_python('-c', _PROBE)
  assert done.returncode == 0, done.stderr[-3000:]
  line = next(x for x in done.stdout.splitlines() if x.startswith('RESULT'))
  return json.loads(line.removeprefix('RESULT'))


@pytest.mark.slow
def test_rows_configs_and_lut_fits():
  report = _probe()
  # A typo in a row's option would add a new key silently and train the recipe unchanged:
  # make_config refuses it, naming the key, and no row of the table has one.
  assert 'colr_head' in report.get('misspelt', '')
  assert report['unknown_keys'] == []
  assert report['invalid'] == {}
  # Rows of configs/photo.py take the script's --steps and --crop_size ...
  assert report['schedules']['recipe'] == [7, 48, 3, 'vignette', 7]
  assert report['schedules']['recipe_crop_context'] == [7, 48, 3, 'vignette', 7]
  # ... and the default config keeps its own, as a user who points it at their pairs gets it.
  assert report['schedules']['default_config'] == [800, 96, 3, 'vignette', 800]
  # Least squares through the trilinear lookup reproduces an affine grade on photos it was not
  # fitted to: exactly under the curvature prior (an affine table has no second differences),
  # and within the weak identity pull's bias (cells few pixels reach lean to the identity).
  # With --pairs_root a look is the paired folder of that name (editor_looks.py), for every
  # row, and its prepared files are shared by the runs beside the looks.
  for row in ('recipe', 'default_config'):
    name, folder, tfds_dir = report[f'pairs_{row}']
    assert name == 'paired_folders'
    assert folder == str(ROOT / 'looks' / 'im_auto_level')
    assert tfds_dir == str(ROOT / 'looks' / '_tfds')
  assert report['fit_error_1.0'] < 1e-5
  assert report['fit_error_0.0'] < 2e-2
