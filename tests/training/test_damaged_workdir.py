"""A damaged workdir (issue 32): eval and predict skip a checkpoint with a truncated array file
or without its `_METADATA` (best/ included) for the next intact one with a warning naming it,
or refuse naming every one; resuming refuses a damaged latest step (arrays, `_METADATA`, the
data iterator's position) naming it and the step to resume from instead, as training on from an
older step silently would redo steps the user believes done; a damaged config.json is refused
naming the file. Never a TensorStore traceback."""

import logging
import os
import pathlib
import shutil

import pytest

from tests.helpers import ROOT, random_pixels, run_main, save, tiny_config
from unet_jax.inference import restore
from unet_jax.training import checkpoint, loop, run_record

FIXTURE = ROOT / 'tests' / 'fixtures' / 'workdir_70e8f58' / 'workdir'


@pytest.fixture
def workdir(tmp_path):
  return shutil.copytree(FIXTURE, tmp_path / 'run')


def _truncate_arrays(step_dir: pathlib.Path) -> None:
  for path in (step_dir / 'state').rglob('d/*'):
    path.write_bytes(path.read_bytes()[:7])


def test_a_damaged_best_checkpoint_falls_back_to_the_latest_with_a_warning(workdir, caplog):
  _truncate_arrays(workdir / 'best' / '4')
  with caplog.at_level(logging.WARNING):
    _, _, _, path = restore.load_trained_model(str(workdir))
  assert path == f'{workdir}/checkpoints/4'
  assert f'{workdir}/best/4 cannot be read' in caplog.text
  assert f'Using {workdir}/checkpoints/4' in caplog.text


def test_no_readable_checkpoint_is_refused_naming_each(workdir):
  _truncate_arrays(workdir / 'best' / '4')
  (workdir / 'checkpoints' / '4' / 'state' / '_METADATA').unlink()
  with pytest.raises(checkpoint.CheckpointError) as error:
    restore.load_trained_model(str(workdir))
  message = str(error.value)
  assert message.startswith(f'No checkpoint of {workdir} can be read: {workdir}/best/4 (')
  assert f'{workdir}/checkpoints/4 (' in message and 'Traceback' not in message
  assert len(message) < 1500


@pytest.mark.parametrize('damage', [b'{"seed": 0, "model": {', b'\xff\xfe\x00garbage'])
def test_a_damaged_config_json_is_refused_naming_the_file(workdir, damage):
  (workdir / run_record.CONFIG_FILE).write_bytes(damage)
  with pytest.raises(run_record.WorkdirError, match=rf'{workdir}/config.json is damaged'):
    restore.load_trained_model(str(workdir))


def test_init_from_an_export_folder_is_refused_saying_why(tmp_path):
  from unet_jax.training import finetune

  folder = tmp_path / 'exported'
  folder.mkdir()
  shutil.copy(FIXTURE / 'config.json', folder / 'config.json')
  (folder / 'model.safetensors').write_bytes(b'x')
  refused = 'is an export folder .*not the training weights'
  with pytest.raises(run_record.WorkdirError, match=refused):
    finetune.check_source(str(folder))


# ------------------------------------------------- through the command line, on a stopped run

# The run's command: configs/tiny.py trained for 6 steps (checkpoints every 2, eval every 4).
TRAIN = ('--config=configs/tiny.py', '--config.num_train_steps=6')


@pytest.fixture(scope='module')
def stopped_run(tmp_path_factory):
  """A run of TRAIN stopped at step 4: checkpoints/2, checkpoints/4 and best/4."""
  workdir = tmp_path_factory.mktemp('stopped') / 'run'
  loop.train_and_evaluate(tiny_config(num_train_steps=6), str(workdir), stop_at_step=4)
  assert sorted(os.listdir(workdir / 'checkpoints')) == ['2', '4']
  assert os.listdir(workdir / 'best') == ['4']
  return workdir


def _damage(step_dir: pathlib.Path, how: str) -> None:
  if how == 'truncated array file':
    _truncate_arrays(step_dir)
  elif how == 'deleted _METADATA':
    (step_dir / 'state' / '_METADATA').unlink()
  elif how == 'invalid data position':
    (step_dir / 'data' / 'process_0-of-1.json').write_text('{"next_index": ')
  else:
    (step_dir / 'data' / 'process_0-of-1.json').unlink()


def _errors(stderr: str) -> list[str]:
  return [line for line in stderr.splitlines() if line.startswith('Error:')]


@pytest.mark.slow
@pytest.mark.parametrize(
  'how',
  ['truncated array file', 'deleted _METADATA', 'invalid data position', 'no data position'],
)
def test_resuming_from_a_damaged_latest_step_is_refused_naming_it(stopped_run, tmp_path, how):
  workdir = shutil.copytree(stopped_run, tmp_path / 'run')
  _damage(workdir / 'checkpoints' / '4', how)
  run = run_main(*TRAIN, f'--workdir={workdir}')
  assert run.returncode == 5, run.stderr[-3000:]
  (error,) = _errors(run.stderr)
  assert error.startswith(f'Error: {workdir}/checkpoints/4 cannot be read (')
  assert error.endswith('it is damaged or incomplete; delete that folder to resume from step 2.')
  assert len(error) < 600 and 'Traceback' not in run.stderr
  # Nothing was trained or written over.
  assert sorted(os.listdir(workdir / 'checkpoints')) == ['2', '4']


@pytest.mark.slow
def test_eval_and_predict_skip_a_damaged_best_with_a_warning_and_training_resumes(
  stopped_run, tmp_path
):
  workdir, out = shutil.copytree(stopped_run, tmp_path / 'run'), tmp_path / 'out'
  _truncate_arrays(workdir / 'best' / '4')
  # The data position is for resuming only: eval and predict do not read it.
  position = workdir / 'checkpoints' / '4' / 'data' / 'process_0-of-1.json'
  intact = position.read_bytes()
  _damage(workdir / 'checkpoints' / '4', 'invalid data position')
  run = run_main('--mode=eval', f'--workdir={workdir}')
  assert run.returncode == 0, run.stderr[-3000:]
  assert f'{workdir}/best/4 cannot be read' in run.stderr
  assert f'Using {workdir}/checkpoints/4: the newer {workdir}/best/4 could not be read' in (
    run.stderr
  )
  assert 'Traceback' not in run.stderr and not _errors(run.stderr)
  photos = tmp_path / 'photos'
  save(photos / 'a.png', random_pixels(0, 40, 48))
  run = run_main('--mode=predict', f'--workdir={workdir}', f'--input={photos}', f'--output={out}')
  assert run.returncode == 0, run.stderr[-3000:]
  assert f'Using {workdir}/checkpoints/4: the newer {workdir}/best/4' in run.stderr
  assert sorted(os.listdir(out)) == ['a.png', 'predict_summary.json']
  # Training on reads only checkpoints/ (best/ is written, never read): it resumes.
  position.write_bytes(intact)
  run = run_main(*TRAIN, f'--workdir={workdir}')
  assert run.returncode == 0, run.stderr[-3000:]
  assert 'Resumed from step 4.' in run.stderr and 'Traceback' not in run.stderr
