"""The command line ends with one message and the documented exit status (README, usage)."""

import asyncio
import gc
import logging
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from tests.helpers import ROOT, run_main, tiny_config
from unet_jax import cli_errors
from unet_jax.data import DataError
from unet_jax.training import guards
from unet_jax.training.run_record import WorkdirError
from unet_jax.validation import ConfigError


@pytest.mark.parametrize(
  'error, status',
  [
    (ConfigError('config.batch_size=12 ...'), cli_errors.EXIT_CONFIG),
    (DataError('a.png: truncated'), cli_errors.EXIT_DATA),
    (WorkdirError('runs/x/config.json was written by ...'), cli_errors.EXIT_WORKDIR),
    (guards.TrainingStopped('non-finite at step 3'), cli_errors.EXIT_STOPPED),
    (guards.Interrupted('Stopped at step 5'), cli_errors.EXIT_INTERRUPTED),
    (FileNotFoundError('--input x: no such file or folder.'), cli_errors.EXIT_USAGE),
    (cli_errors.UsageError('--mode=predict needs --input'), cli_errors.EXIT_USAGE),
  ],
)
def test_expected_errors_print_one_message_and_their_status(error, status, capsys):
  def body():
    raise error

  assert cli_errors.run(body, verbose=False) == status
  stderr = capsys.readouterr().err
  assert stderr == f'Error: {error}\n'
  assert cli_errors.run(body, verbose=True) == status
  assert 'Traceback' in capsys.readouterr().err
  assert len(set(cli_errors.EXIT_CODES)) == len(cli_errors.EXIT_CODES)


def test_a_bug_keeps_its_traceback():
  def body():
    raise RuntimeError('a bug')

  with pytest.raises(RuntimeError, match='a bug'):
    cli_errors.run(body, verbose=False)


def test_an_unknown_config_key_names_its_section():
  config = tiny_config(steps=6)
  message = cli_errors._unknown_key_message(['prog', '--config.model.levles=3'], config)
  assert message.startswith('config.model.levles: config.model has no option')
  assert 'did you mean levels' in message
  message = cli_errors._unknown_key_message(['prog', '--config.modle.levels=3'], config)
  assert "config has no section 'modle'" in message and 'did you mean model' in message
  assert cli_errors._unknown_key_message(['prog', '--config.model.levels=3'], config) is None
  # A key that follows from another is not an option, and the message says which one to set.
  message = cli_errors._unknown_key_message(['prog', '--config.model.head=image'], config)
  assert message.startswith('config.model.head is not an option: it follows config.task (segment:')
  assert message.endswith('set --config.task.')


@pytest.mark.slow
def test_cli_unknown_key_and_nan_value_exit_with_one_message(tmp_path):
  result = run_main('--config=configs/tiny.py', f'--workdir={tmp_path}', '--config.model.no_such=3')
  assert result.returncode == cli_errors.EXIT_USAGE, result.stderr
  assert "config.model has no option 'no_such'" in result.stderr
  assert 'Traceback' not in result.stderr
  result = run_main(
    '--config=configs/tiny.py', f'--workdir={tmp_path}', '--config.model.head=segmentation'
  )
  assert result.returncode == cli_errors.EXIT_USAGE, result.stderr
  assert 'config.model.head is not an option: it follows config.task' in result.stderr
  result = run_main(
    '--config=configs/tiny.py', f'--workdir={tmp_path}', '--config.optimizer.learning_rate=nan'
  )
  assert result.returncode == cli_errors.EXIT_CONFIG, result.stderr
  errors = [line for line in result.stderr.splitlines() if line.startswith('Error:')]
  assert errors == ['Error: config.optimizer.learning_rate=nan is not a finite number.']
  assert 'Traceback' not in result.stderr
  assert not os.path.exists(tmp_path / 'config.json')


@pytest.mark.slow
def test_sigterm_exits_75_after_saving_and_predict_exits_7_when_an_input_fails(tmp_path):
  workdir = tmp_path / 'run'
  process = subprocess.Popen(
    [
      sys.executable,
      '-m',
      'unet_jax.main',
      '--config=configs/tiny.py',
      f'--workdir={workdir}',
      '--config.num_train_steps=100000',
      '--config.checkpoint_every_steps=100000',
      '--config.eval_every_steps=100000',
    ],
    cwd=ROOT,
    stderr=subprocess.PIPE,
    text=True,
  )
  try:
    for line in process.stderr:
      if 'Training steps' in line:
        break
    time.sleep(1)
    process.send_signal(signal.SIGTERM)
    _, rest = process.communicate(timeout=300)
  finally:
    process.kill()
  assert process.returncode == cli_errors.EXIT_INTERRUPTED, rest
  assert 'rerun the same command to resume' in rest.lower()
  assert any(name.isdigit() for name in os.listdir(workdir / 'checkpoints'))

  photos = tmp_path / 'photos'
  photos.mkdir()
  Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(photos / 'good.png')
  (photos / 'broken.png').write_bytes(b'not a png')
  result = run_main(
    '--mode=predict', f'--workdir={workdir}', f'--input={photos}', f'--output={tmp_path / "out"}'
  )
  assert result.returncode == cli_errors.EXIT_PREDICT_FAILED, result.stderr
  assert 'good.png' in result.stdout and 'broken.png' in result.stdout
  assert (tmp_path / 'out' / 'good.png').exists()


def test_orbax_asyncio_leftovers_after_a_failed_read_stay_off_stderr(monkeypatch, caplog, capsys):
  """After one array of a damaged checkpoint fails to read, Orbax's other read tasks fail
  unretrieved and TensorStore's late results meet a closed loop: the command's own message is
  the one thing to print (tests/training/test_damaged_workdir.py runs the real case, whose
  timing varies)."""
  monkeypatch.setattr(sys, 'unraisablehook', sys.unraisablehook)
  monkeypatch.setattr(logging.getLogger('asyncio'), 'filters', [])

  def leave_noise() -> int:
    loop = asyncio.new_event_loop()

    async def read_array():
      raise OSError('OUT_OF_RANGE: truncated')

    task = loop.create_task(read_array())
    loop.run_until_complete(asyncio.sleep(0.01))
    loop.close()
    del task
    gc.collect()  # "Task exception was never retrieved", logged as asyncio collects the task
    _RaisesWhenCollected(RuntimeError('Event loop is closed'))
    _RaisesWhenCollected(ValueError('ours'))  # any other unraisable error is still printed
    return 0

  with caplog.at_level(logging.ERROR):
    assert cli_errors.run(leave_noise, verbose=False) == 0
  assert 'never retrieved' not in caplog.text
  printed = capsys.readouterr().err
  assert 'Event loop is closed' not in printed and 'ValueError: ours' in printed


class _RaisesWhenCollected:
  def __init__(self, error: BaseException):
    self.error = error

  def __del__(self):
    raise self.error
