"""What a failed checkpoint write looks like: a full disk, a quota, a folder made read-only.

Orbax reports a write that failed in its background threads at the next save or wait, with
TensorStore's text, and logs a traceback per thread; `checkpoint.Checkpoints` turns it into one
`CheckpointWriteError` naming the step's folder (exit status 2).
"""

import errno
import logging
import os
import re

# What a full disk, a quota or a folder that became read-only or forbidden raise while writing.
WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)


class CheckpointWriteError(ValueError):
  """A checkpoint could not be written (a full disk, a read-only folder): the message starts
  with `--workdir` and names the step's folder (exit status 2)."""

  def __init__(self, errno_: int, message: str):
    super().__init__(message)
    self.errno = errno_


def write_errno(error: BaseException) -> int | None:
  """The errno of WRITE_ERRNOS behind `error`, or None.

  Orbax passes TensorStore's failures on as ValueErrors whose text carries
  `[os_error_code='28']`; Python's own writes raise OSError. Causes and contexts are followed.
  """
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    code = error.errno if isinstance(error, OSError) else None
    match = re.search(r"os_error_code='?(\d+)", str(error))
    code = code or (int(match.group(1)) if match else None)
    if code in WRITE_ERRNOS:
      return code
    error = error.__cause__ or error.__context__
  return None


class DropOrbaxWriteErrors(logging.Filter):
  """Drops Orbax's own log records of a failed write (a traceback per background thread):
  `CheckpointWriteError` reports the failure once."""

  def filter(self, record: logging.LogRecord) -> bool:
    if '/orbax/' not in record.pathname.replace(os.sep, '/') or not record.exc_info:
      return True
    return write_errno(record.exc_info[1]) is None
