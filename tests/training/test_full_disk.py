"""A full disk while a checkpoint is written (issue 32): one `Error:` line naming the step's
folder, status 2 (docs/options.md), no partial step left behind, and the same command run again
resumes from the last complete checkpoint."""

import errno
import os

import pytest

from tests.helpers import run_main, run_main_patched
from unet_jax import cli_errors
from unet_jax.training import write_errors

# `python -m unet_jax.main`, with the data position of step 4's checkpoint failing as a full
# disk fails: a file cut short, then ENOSPC.
FULL_AT_STEP_4 = """
import errno
import grain.checkpoint

real = grain.checkpoint.CheckpointHandler.save

def save(self, directory, item=None, args=None):
  if directory.parent.name.split('.')[0] == '4' and directory.parent.parent.name == 'checkpoints':
    path = directory / 'process_0-of-1.json'
    path.write_text('{"half')
    raise OSError(errno.ENOSPC, 'No space left on device', str(path))
  return real(self, directory, item, args)

grain.checkpoint.CheckpointHandler.save = save
"""

# The message TensorStore gives Orbax for a full disk (from a run on a 900 KB tmpfs).
TENSORSTORE_FULL = (
  'RESOURCE_EXHAUSTED: Error writing local file "/w/checkpoints/4.orbax-checkpoint-tmp/state.'
  'orbax-checkpoint-tmp/_sharding": Failed writing: "/w/.../_sharding.__lock": Failed to write '
  "41452 bytes to file 11: No space left on device [os_error_code='28']"
)


def test_write_errors_are_recognised_from_tensorstore_and_python():
  assert write_errors.write_errno(ValueError(TENSORSTORE_FULL)) == errno.ENOSPC
  try:
    try:
      raise OSError(errno.EROFS, 'Read-only file system')
    except OSError as inner:
      raise RuntimeError('save failed') from inner
  except RuntimeError as outer:
    assert write_errors.write_errno(outer) == errno.EROFS
  assert write_errors.write_errno(ValueError("[os_error_code='2'] not found")) is None
  error = write_errors.CheckpointWriteError(errno.ENOSPC, '--workdir: cannot write ...')
  assert cli_errors.exit_code(error) == cli_errors.EXIT_USAGE
  # A full disk under a log file too.
  disk = OSError(errno.ENOSPC, 'No space left on device', '/w/metrics.jsonl')
  assert cli_errors.exit_code(disk) == cli_errors.EXIT_USAGE


@pytest.mark.slow
def test_a_full_disk_during_a_save_names_the_step_and_a_rerun_resumes(tmp_path):
  workdir = tmp_path / 'run'
  flags = ['--config=configs/tiny.py', f'--workdir={workdir}']
  run = run_main_patched(FULL_AT_STEP_4, *flags)
  assert run.returncode == cli_errors.EXIT_USAGE, run.stderr[-3000:]
  errors = [line for line in run.stderr.splitlines() if line.startswith('Error:')]
  assert errors == [
    f'Error: --workdir: cannot write the checkpoint {workdir}/checkpoints/4: No space left on '
    'device. Its partial files were removed; free space, then rerun the same command to resume '
    f'from step 2 ({workdir}/checkpoints/2).'
  ]
  assert 'Traceback' not in run.stderr
  # No partial step: only the complete one, nothing a resume could mistake for step 4.
  assert os.listdir(workdir / 'checkpoints') == ['2']

  rerun = run_main(*flags)
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  assert 'Resumed from step 2.' in rerun.stderr
  assert sorted(os.listdir(workdir / 'checkpoints')) == ['2', '4']
