"""One training per workdir (issue 32, bug 5): a second train, eval, export or predict of a
workdir a training holds refuses naming the holder (status 5); a dead holder's lock is
taken over with a warning."""

import json
import logging
import os
import subprocess
import sys
import time

import pytest

from tests.helpers import ROOT, run_main, tiny_config
from unet_jax.training import loop, train_state, workdir_lock


@pytest.mark.slow
def test_a_second_training_and_any_reader_refuse_while_a_training_holds_the_workdir(tmp_path):
  workdir = str(tmp_path / 'run')
  with workdir_lock.hold(workdir, exclusive=True, purpose='training'):
    holder = json.loads((tmp_path / 'run' / workdir_lock.LOCK_FILE).read_text())
    assert holder['pid'] == os.getpid() and holder['host'] and holder['started']
    # Another learning rate, started while the first runs: refused before anything is built.
    other = tiny_config(**{'optimizer.learning_rate': 1e-3})
    with pytest.raises(workdir_lock.WorkdirLockedError, match=rf'in use by pid {os.getpid()} on'):
      loop.train_and_evaluate(other, workdir)
    assert not (tmp_path / 'run' / 'checkpoints').exists()
    with (
      pytest.raises(workdir_lock.WorkdirLockedError, match='--mode=predict waits'),
      workdir_lock.hold(workdir, exclusive=False, purpose='--mode=predict'),
    ):
      pass
  # Released: readers share it, and a training waits for them.
  with (
    workdir_lock.hold(workdir, exclusive=False, purpose='--mode=eval'),
    workdir_lock.hold(workdir, exclusive=False, purpose='--mode=predict'),
    pytest.raises(workdir_lock.WorkdirLockedError, match='an eval, export or predict'),
    workdir_lock.hold(workdir, exclusive=True, purpose='training'),
  ):
    pass
  assert (tmp_path / 'run' / workdir_lock.LOCK_FILE).read_text() == ''


@pytest.mark.slow
def test_eval_from_the_command_line_exits_5_naming_the_training(tmp_path):
  workdir = str(tmp_path / 'run')
  with workdir_lock.hold(workdir, exclusive=True, purpose='training'):
    run = subprocess.run(
      [sys.executable, '-m', 'unet_jax.main', '--mode=eval', f'--workdir={workdir}'],
      capture_output=True,
      text=True,
      timeout=300,
      cwd=ROOT,
      env={**os.environ, 'PYTHONPATH': str(ROOT)},
    )
  assert run.returncode == 5, run.stderr[-2000:]
  assert f'is in use by pid {os.getpid()}' in run.stderr


def test_a_lock_left_by_a_dead_training_is_taken_over_with_a_warning(tmp_path, caplog):
  workdir = tmp_path / 'run'
  workdir.mkdir()
  dead = {'pid': 999999999, 'host': 'h', 'started': '2026-12-06T00:00:00Z', 'command': 'x'}
  (workdir / workdir_lock.LOCK_FILE).write_text(json.dumps(dead))
  with (
    caplog.at_level(logging.WARNING),
    workdir_lock.hold(str(workdir), exclusive=True, purpose='training'),
  ):
    now = json.loads((workdir / workdir_lock.LOCK_FILE).read_text())
  assert now['pid'] == os.getpid()
  assert 'Taking over the lock' in caplog.text and 'pid 999999999 on h' in caplog.text


@pytest.mark.slow
def test_a_workdir_that_is_a_file_is_a_usage_error(tmp_path):
  path = tmp_path / 'notes.txt'
  path.write_text('x')
  with pytest.raises(ValueError, match=r'^--workdir .*notes.txt exists and is not a folder'):
    loop.train_and_evaluate(tiny_config(), str(path))


@pytest.mark.slow
def test_two_trainings_started_apart_in_one_workdir_the_second_refuses(tmp_path):
  # Two real `python -m unet_jax.main` trainings, the second with another learning rate,
  # started ~2 s after the first holds the workdir.
  workdir = tmp_path / 'run'
  flags = ['--config=configs/tiny.py', f'--workdir={workdir}', '--config.num_train_steps=6']
  first = subprocess.Popen(
    [sys.executable, '-m', 'unet_jax.main', *flags],
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
    cwd=ROOT,
    env={**os.environ, 'PYTHONPATH': str(ROOT)},
  )
  try:
    lock = workdir / workdir_lock.LOCK_FILE
    deadline = time.monotonic() + 120
    while not (lock.exists() and f'"pid": {first.pid}' in lock.read_text()):
      assert first.poll() is None and time.monotonic() < deadline, 'the first never held it'
      time.sleep(0.2)
    time.sleep(2)
    second = run_main(*flags, '--config.optimizer.learning_rate=0.003')
    assert first.poll() is None, 'the first training ended before the second was refused'
    _, first_stderr = first.communicate(timeout=300)
  finally:
    first.kill()
  assert second.returncode == 5, second.stderr[-3000:]
  errors = [line for line in second.stderr.splitlines() if line.startswith('Error:')]
  assert len(errors) == 1 and f'is in use by pid {first.pid} on' in errors[0], errors
  assert 'training waits for it to finish' in errors[0]
  assert first.returncode == 0, first_stderr[-3000:]
  # metrics.jsonl is the first run's alone: each step's train row once, at its learning rate.
  rows = [json.loads(line) for line in (workdir / 'metrics.jsonl').read_text().splitlines()]
  train = [row for row in rows if 'train/loss' in row]
  assert [row['step'] for row in train] == [2, 4, 6]
  config = tiny_config(num_train_steps=6)
  schedule = train_state.learning_rate_schedule(config)
  for row in train:
    assert row['train/learning_rate'] == pytest.approx(float(schedule(row['step'] - 1)))
  assert json.loads((workdir / 'config.json').read_text())['optimizer']['learning_rate'] == (
    config.optimizer.learning_rate
  )
