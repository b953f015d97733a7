"""The exit statuses of docs/options.md, one command-line run per row (issue 32).

Rows checked elsewhere through the command line: 0 (tests/training/test_card_command.py and
every rerun that resumes, e.g. tests/training/test_full_disk.py), 2 for a model key on predict
(tests/inference/test_predict_options.py) and for a full disk under a checkpoint
(tests/training/test_full_disk.py), 3 (tests/test_option_ranges.py, tests/test_cli.py), 5
(tests/training/test_workdir_lock.py, tests/training/test_damaged_workdir.py), 75 (SIGTERM,
tests/test_cli.py).
"""

import os
import re
import shutil

import jax
import numpy as np
import pytest

from tests import helpers
from tests.helpers import ROOT, run_main, run_main_patched

FIXTURE = ROOT / 'tests' / 'fixtures' / 'workdir_70e8f58'


@pytest.mark.slow
def test_status_2_a_missing_workdir_flag():
  # Training defaults to runs/<config name>; a reading mode with neither flag has no run to read.
  run = run_main('--mode=eval')
  assert run.returncode == 2, run.stderr[-2000:]
  assert '--workdir' in run.stderr and 'Traceback' not in run.stderr


@pytest.mark.slow
def test_status_2_a_bare_config_file_beside_the_workdir(tmp_path):
  run = run_main('--mode=eval', f'--workdir={tmp_path}', '--config=configs/tiny.py')
  assert run.returncode == 2, run.stderr[-2000:]
  assert '--config is for --mode=train' in run.stderr and 'Traceback' not in run.stderr


@pytest.mark.slow
def test_status_2_an_override_without_its_config_file_or_an_unknown_flag_is_named(tmp_path):
  run = run_main('--mode=eval', f'--workdir={tmp_path}', '--config.predict.lut_only=True')
  assert run.returncode == 2, run.stderr[-2000:]
  assert (
    run.stderr.strip()
    .splitlines()[-1]
    .startswith('Error: --config.predict.lut_only needs --config=FILE on the command line')
  )
  run = run_main('--mode=eval', f'--workdir={tmp_path}', '--no_such_flag=3')
  assert run.returncode == 2, run.stderr[-2000:]
  assert run.stderr.strip().splitlines()[-1] == "Error: Unknown command line flag 'no_such_flag'"


@pytest.mark.slow
def test_status_2_a_workdir_that_is_a_file(tmp_path):
  path = tmp_path / 'notes.txt'
  path.write_text('mine')
  run = run_main('--config=configs/tiny.py', f'--workdir={path}')
  assert run.returncode == 2, run.stderr[-2000:]
  assert f'Error: --workdir {path} exists and is not a folder.' in run.stderr
  assert path.read_text() == 'mine'


@pytest.mark.slow
def test_status_2_export_lut_into_a_missing_folder(tmp_path):
  workdir = shutil.copytree(FIXTURE / 'workdir', tmp_path / 'run')
  run = run_main('--mode=export_lut', f'--workdir={workdir}', f'--output={tmp_path}/no/look.cube')
  assert run.returncode == 2, run.stderr[-2000:]
  assert f'folder {tmp_path}/no does not exist' in run.stderr


@pytest.mark.slow
def test_status_4_an_empty_file_and_an_input_without_target(tmp_path):
  root = tmp_path / 'pairs'
  helpers.write_pairs(root, 'train', ['a', 'b'])
  helpers.write_pairs(root, 'test', ['t'])
  (root / 'train' / 'input' / 'empty.png').write_bytes(b'')
  (root / 'train' / 'target' / 'empty.png').write_bytes(b'')
  helpers.save(root / 'train' / 'input' / 'alone.png', helpers.random_pixels(1, 40, 48))
  run = run_main(
    '--config=configs/tiny.py',
    f'--workdir={tmp_path / "run"}',
    '--config.data.name=paired_folders',
    f'--config.data.dir={root}',
  )
  assert run.returncode == 4, run.stderr[-2000:]
  assert 'empty.png: empty file (0 bytes)' in run.stderr
  assert 'alone.png: input without a target' in run.stderr
  assert not (tmp_path / 'run' / 'checkpoints').exists()


@pytest.mark.slow
@pytest.mark.parametrize('broken', ['bomb', 'truncated'])
def test_status_7_predict_with_a_photo_that_cannot_be_graded(tmp_path, broken):
  from tests.photo_files import bomb_jpeg

  workdir = shutil.copytree(FIXTURE / 'workdir', tmp_path / 'run')
  photos = shutil.copytree(FIXTURE / 'pairs' / 'test' / 'input', tmp_path / 'in')
  data = bomb_jpeg() if broken == 'bomb' else (photos / 'p0.png').read_bytes()[:200]
  (photos / 'a_broken.jpg').write_bytes(data)
  run = run_main(
    '--mode=predict', f'--workdir={workdir}', f'--input={photos}', f'--output={tmp_path}/out'
  )
  assert run.returncode == 7, run.stderr[-2000:]
  assert sorted(os.listdir(tmp_path / 'out')) == ['p0.png', 'p1.png', 'predict_summary.json']


@pytest.mark.slow
def test_status_1_an_unexpected_error_keeps_its_traceback(tmp_path):
  workdir = shutil.copytree(FIXTURE / 'workdir', tmp_path / 'run')
  bug = (
    'from unet_jax.inference import restore\n'
    'def run_eval(*args, **kwargs):\n'
    "  raise RuntimeError('a bug in eval')\n"
    'restore.run_eval = run_eval\n'
  )
  run = run_main_patched(bug, '--mode=eval', f'--workdir={workdir}')
  assert run.returncode == 1, run.stderr[-2000:]
  assert 'Traceback (most recent call last)' in run.stderr
  assert run.stderr.rstrip().endswith('RuntimeError: a bug in eval')
  assert not [line for line in run.stderr.splitlines() if line.startswith('Error:')]


@pytest.mark.slow
def test_status_6_training_that_goes_nonfinite_stops_naming_what(tmp_path):
  # A learning rate of 10 with a weight decay of 10 scales the kernels by about -99 a step:
  # within a few steps something overflows, with no patch at all.
  workdir = tmp_path / 'run'
  run = run_main(
    '--config=configs/tiny.py',
    f'--workdir={workdir}',
    '--config.num_train_steps=40',
    '--config.eval_every_steps=1000',
    '--config.optimizer.learning_rate=10',
    '--config.optimizer.weight_decay=10',
  )
  assert run.returncode == 6, run.stderr[-3000:]
  (error,) = [line for line in run.stderr.splitlines() if line.startswith('Error:')]
  match = re.match(r'Error: Training went non-finite at step (\d+): (.*)', error)
  assert match, error
  parts = ('the loss', 'the gradients', 'the parameters of', 'BatchNorm', 'optimiser', 'EMA')
  assert any(part in match.group(2) for part in parts), error
  assert 'Likely causes: ' in error and 'config.optimizer.' in error
  assert 'Traceback' not in run.stderr
  # Every checkpoint kept is from before that step and finite.
  params, step = helpers.saved_params(str(workdir))
  assert step < int(match.group(1))
  assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(params))
