"""A damaged workdir (issue 32): a checkpoint with a truncated array file or without its
`_METADATA` is skipped for the next intact one with a warning naming it, or refused naming
every one; a damaged config.json is refused naming the file. Never a TensorStore traceback."""

import logging
import pathlib
import shutil

import pytest

from tests.helpers import ROOT
from unet_jax.inference import restore
from unet_jax.training import checkpoint, run_record

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
