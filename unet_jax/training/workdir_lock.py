"""One training per workdir at a time, and no eval, export or predict of it meanwhile.

Training holds an exclusive `fcntl.flock` on `<workdir>/.lock` and writes who it is there (pid,
host, start time, command); eval, export, export_lut and predict hold a shared lock while they
read (and, for eval, write) the workdir. A second command refuses at once, naming the holder
(`WorkdirLockedError`, exit status 5), instead of interleaving `metrics.jsonl` and checkpoints.

The kernel drops a flock when its process dies, so a lock left by a killed run is free: the
next training takes it over and warns, naming the dead holder its file still records.
"""

import contextlib
import errno
import fcntl
import json
import logging
import os
import socket
import sys
import time
from collections.abc import Iterator

import jax

from unet_jax.training.run_record import WorkdirError

LOCK_FILE = '.lock'


class WorkdirLockedError(WorkdirError):
  """Another process holds the workdir; the message names it."""


def _holder(text: str) -> str:
  try:
    info = json.loads(text)
    return f'pid {info["pid"]} on {info["host"]} (started {info["started"]}: {info["command"]})'
  except (ValueError, KeyError, TypeError):
    return 'another process (an eval, export or predict reading it)'


def _read(fd: int) -> str:
  os.lseek(fd, 0, os.SEEK_SET)
  return os.read(fd, 65536).decode('utf-8', 'replace').strip()


def check_workdir_path(workdir: str) -> None:
  """ValueError (exit status 2) when `--workdir` names something that is not a folder."""
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise ValueError(f'--workdir {workdir} exists and is not a folder.')


@contextlib.contextmanager
def hold(workdir: str, *, exclusive: bool, purpose: str) -> Iterator[None]:
  """Holds the workdir's lock: `exclusive` for training, shared for reading commands.

  Raises WorkdirLockedError naming the holder when another process holds it the other way
  (or also exclusively). Only process 0 of a multi-host run locks (they share the workdir).
  A reading command on a workdir that does not exist locks nothing (its own check refuses).
  """
  check_workdir_path(workdir)
  if jax.process_index() != 0 or (not exclusive and not os.path.isdir(workdir)):
    yield
    return
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, LOCK_FILE)
  try:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  except OSError as error:
    if error.errno in (errno.EACCES, errno.EROFS) and not exclusive:
      yield  # a read-only copy of a run: nobody can train in it either
      return
    raise
  try:
    try:
      fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
    except BlockingIOError:
      raise WorkdirLockedError(
        f'{workdir} is in use by {_holder(_read(fd))}: {purpose} waits for it to finish '
        f'(or stop it). The lock is {path}.'
      ) from None
    if exclusive:
      stale = _read(fd)
      if stale:
        logging.warning(
          'Taking over the lock of %s left by %s, which is no longer running.',
          workdir,
          _holder(stale),
        )
      info = {
        'pid': os.getpid(),
        'host': socket.gethostname(),
        'started': time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()),
        'command': ' '.join(sys.argv[:1] + [a for a in sys.argv[1:] if a.startswith('--')])
        or purpose,
      }
      os.ftruncate(fd, 0)
      os.pwrite(fd, json.dumps(info).encode(), 0)
    try:
      yield
    finally:
      if exclusive:
        os.ftruncate(fd, 0)  # a clean exit leaves no holder behind
  finally:
    os.close(fd)  # closing drops the flock
