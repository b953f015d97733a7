"""Output files a run can never half-write: atomic new files, and claims between runs.

A graded photo is written under a hidden temporary name (`.<name>.partial-<pid>`) and linked to
its real name only when complete, so a killed run never leaves a half photo under a real name;
a link never replaces a file. With `skip_existing`, each planned output is claimed first (a
hidden `.<name>.claim` made with O_EXCL, holding the pid) so two runs share a folder's photos.
Leftovers of dead processes are removed by the next run (`remove_stale_partials`).
"""

import contextlib
import errno
import os
import re

_PARTIAL = re.compile(r'^\..+\.partial-(\d+)$')
_CLAIM = re.compile(r'^\..+\.claim$')
MAX_SUFFIX = 10_000


class OutputWriteError(ValueError):
  """The output folder cannot take a file (full disk, read-only): names the path (status 2)."""

  def __init__(self, errno_: int | None, message: str):
    super().__init__(message)
    self.errno = errno_


@contextlib.contextmanager
def temporary_for(path: str, tmp: str):
  """Writing `tmp` on the way to `path`: an OSError removes `tmp` and becomes an
  OutputWriteError naming `path` (a full disk, a read-only folder)."""
  try:
    yield
  except OSError as error:
    with contextlib.suppress(OSError):
      os.remove(tmp)
    raise OutputWriteError(
      error.errno, f'--output: cannot write {path}: {error.strerror or error}'
    ) from None


def write_new_file(path: str, data: bytes, *, numbered: bool = True) -> str | None:
  """Writes `data` as `path`, or `stem-1.ext`, `stem-2.ext`... if taken; returns the name used.

  The bytes go to a hidden temporary file first, which is linked to the free name only once
  complete (link never replaces a file, not even one that appears meanwhile or a link to an
  input), so a crash never leaves a partial file under a real name. With `numbered=False` a
  taken `path` is left alone and None returned. A full disk raises OutputWriteError naming the
  path, with the temporary file removed.
  """
  folder, name = os.path.split(path)
  stem, ext = os.path.splitext(name)
  tmp = os.path.join(folder, f'.{name}.partial-{os.getpid()}')
  with temporary_for(path, tmp):
    os.makedirs(folder or '.', exist_ok=True)
    with open(tmp, 'wb') as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
  try:
    for attempt in range(MAX_SUFFIX if numbered else 1):
      candidate = os.path.join(folder, name if attempt == 0 else f'{stem}-{attempt}{ext}')
      if _claim(tmp, candidate):
        return candidate
    if not numbered:
      return None
    raise FileExistsError(f'{folder}: {name} and {MAX_SUFFIX} numbered variants all exist.')
  finally:
    with contextlib.suppress(FileNotFoundError):
      os.remove(tmp)


def _claim(tmp: str, candidate: str) -> bool:
  try:
    os.link(tmp, candidate)
    return True
  except FileExistsError:
    return False
  except OSError as error:
    if error.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
      raise
  # No hard links on this file system: an exclusive create, then the bytes.
  try:
    with open(candidate, 'xb') as f, open(tmp, 'rb') as src:
      f.write(src.read())
    return True
  except FileExistsError:
    return False


def remove_stale_partials(output_dir: str) -> int:
  """Removes temporary files and claims left by killed runs (their process is gone)."""
  removed = 0
  for folder, _, files in os.walk(output_dir):
    for name in files:
      match = _PARTIAL.match(name)
      stale = match and not _alive(int(match.group(1)))
      if not match and _CLAIM.match(name):
        stale = not _alive(_claim_owner(os.path.join(folder, name)))
      if stale:
        with contextlib.suppress(FileNotFoundError):
          os.remove(os.path.join(folder, name))
          removed += 1
  return removed


def _claim_path(planned: str) -> str:
  folder, name = os.path.split(planned)
  return os.path.join(folder, f'.{name}.claim')


def _claim_owner(path: str) -> int:
  try:
    with open(path) as f:
      return int(f.read().strip() or 0)
  except (OSError, ValueError):
    return 0


def claim_output(planned: str) -> str | None:
  """Claims the right to write `planned` (skip_existing runs): the claim file, or None when
  another live run holds it. A claim of a dead process is taken over."""
  path = _claim_path(planned)
  os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
  for _ in range(2):
    try:
      fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
      owner = _claim_owner(path)
      if owner and owner != os.getpid() and _alive(owner):
        return None
      with contextlib.suppress(FileNotFoundError):
        os.remove(path)
      continue
    with os.fdopen(fd, 'w') as f:
      f.write(str(os.getpid()))
    return path
  return None


def _alive(pid: int) -> bool:
  if pid == os.getpid():
    return False  # our own leftovers from an earlier call: no file of ours is open now
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True
