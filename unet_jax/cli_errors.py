"""How the command line ends: one message and a documented exit status per kind of problem.

Expected problems (a bad flag or config value, bad data files, a workdir that refuses the
rerun, a run stopped by its guards) print one `Error: ...` message on stderr, no traceback
unless `--verbose`; real bugs keep their traceback (status 1). The statuses are listed in
docs/options.md.
"""

import difflib
import errno
import importlib.util
import logging
import re
import sys
import traceback
from collections.abc import Callable

from absl import flags

from unet_jax import options
from unet_jax.data.errors import DataError
from unet_jax.pretrained import WeightsError
from unet_jax.training.guards import Interrupted, TrainingStopped
from unet_jax.training.run_record import WorkdirError
from unet_jax.validation import ConfigError

EXIT_OK = 0
EXIT_BUG = 1  # an unexpected error: a traceback follows
EXIT_USAGE = 2  # command line: unknown flag or config key, bad value, missing --input, ...
EXIT_CONFIG = 3  # a config value that cannot work, or a weights file it names
EXIT_DATA = 4  # data files or data settings
EXIT_WORKDIR = 5  # the workdir refuses: config or data changed, bad checkpoint, --init_from
EXIT_STOPPED = 6  # training stopped by its guards: non-finite state, divergence (action=stop)
EXIT_PREDICT_FAILED = 7  # predict: some inputs could not be graded (the others were written)
EXIT_INTERRUPTED = 75  # SIGTERM / Ctrl-C: checkpoint saved, rerun to resume (EX_TEMPFAIL)

EXIT_CODES = {
  EXIT_OK: 'success',
  EXIT_BUG: 'unexpected error (a bug; the traceback is printed)',
  EXIT_USAGE: 'command-line error (unknown flag or config key, missing or bad path)',
  EXIT_CONFIG: 'config value that cannot work (ConfigError, weights file)',
  EXIT_DATA: 'data error (DataError: a bad file or data setting)',
  EXIT_WORKDIR: 'the workdir refuses (config or training data changed, bad checkpoint)',
  EXIT_STOPPED: 'training stopped (non-finite loss or weights, divergence with action=stop)',
  EXIT_PREDICT_FAILED: 'predict: some inputs failed (the summary lists what was written)',
  EXIT_INTERRUPTED: 'interrupted by SIGTERM/SIGINT after saving; rerun to resume',
}

_EXPECTED = (
  (Interrupted, EXIT_INTERRUPTED),
  (TrainingStopped, EXIT_STOPPED),
  (WorkdirError, EXIT_WORKDIR),
  (DataError, EXIT_DATA),
  (ConfigError, EXIT_CONFIG),
  (WeightsError, EXIT_CONFIG),
)


class UsageError(ValueError):
  """A command-line problem found by main.py (a missing flag for the chosen mode)."""


def exit_code(error: BaseException) -> int | None:
  """The exit status of an expected error, or None for a bug."""
  for kind, code in _EXPECTED:
    if isinstance(error, kind):
      return code
  if isinstance(error, UsageError):
    return EXIT_USAGE
  # Paths given on the command line (--input, --output, --workdir) that do not work: their
  # messages start with the flag.
  if isinstance(error, (FileNotFoundError, ValueError)) and str(error).startswith('--'):
    return EXIT_USAGE
  # A full disk while writing a log or an eval photo: the message names the file.
  if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
    return EXIT_USAGE
  return None


def _print_error(message: str) -> None:
  print(f'Error: {message}', file=sys.stderr, flush=True)


def _drop_closed_event_loop_noise(unraisable) -> None:
  """`sys.unraisablehook` that drops one library's noise and passes on everything else.

  When Orbax fails to read one array of a damaged checkpoint, TensorStore's reads of the others
  finish later on its own threads and hand their results to an asyncio loop Orbax has already
  closed: each prints "RuntimeError: Event loop is closed" as an unraisable exception, a
  screenful of tracebacks around the one `Error:` line of a refused resume. Nothing is lost by
  dropping them: the failed read itself is the error reported."""
  error = unraisable.exc_value
  if isinstance(error, RuntimeError) and str(error) == 'Event loop is closed':
    return
  sys.__unraisablehook__(unraisable)


class _UnretrievedTaskErrors(logging.Filter):
  """Drops asyncio's "Task exception was never retrieved" records (with their tracebacks).

  The same failed read leaves Orbax's sibling read tasks failed and never awaited; asyncio logs
  each when it is collected. The package itself runs no asyncio code: the read that failed is
  the error the command reports (or the checkpoint it skips, with a warning)."""

  def filter(self, record: logging.LogRecord) -> bool:
    return 'exception was never retrieved' not in str(record.msg)


def quiet_library_noise() -> None:
  """Keeps Orbax's asyncio leftovers after a failed checkpoint read off stderr (not with
  `--verbose`): see `_drop_closed_event_loop_noise` and `_UnretrievedTaskErrors`."""
  sys.unraisablehook = _drop_closed_event_loop_noise
  asyncio_logger = logging.getLogger('asyncio')
  if not any(isinstance(f, _UnretrievedTaskErrors) for f in asyncio_logger.filters):
    asyncio_logger.addFilter(_UnretrievedTaskErrors())


def run(body: Callable[[], int | None], *, verbose: bool) -> int:
  """Calls `body` and turns expected errors into one message and their exit status."""
  if not verbose:
    quiet_library_noise()
  try:
    return body() or EXIT_OK
  except (Exception, KeyboardInterrupt) as error:  # noqa: BLE001 - re-raised when unexpected
    code = EXIT_INTERRUPTED if isinstance(error, KeyboardInterrupt) else exit_code(error)
    if code is None:
      raise
    if verbose:
      traceback.print_exc()
    _print_error(str(error) or type(error).__name__)
    return code


def _unknown_key_message(argv: list[str], config) -> str | None:
  """'--config.model.no_such=3: config.model has no option no_such (...)', or None."""
  for arg in argv[1:]:
    match = re.match(r'^--(config\.[A-Za-z0-9_.]+)(=|$)', arg)
    key = match and match.group(1).removeprefix('config.')
    if key in options.DERIVED:
      why, source = options.derivation(key), options.DERIVED[key][0]
      return f'{match.group(1)} is not an option: it {why}; set --config.{source}.'
    if not match or config is None:
      continue
    parts = key.split('.')
    node, section = config, 'config'
    for index, part in enumerate(parts):
      keys = list(node.keys()) if hasattr(node, 'keys') else []
      if part in keys:
        node, section = node[part], f'{section}.{part}'
        continue
      kind = 'option' if index == len(parts) - 1 else 'section'
      close = difflib.get_close_matches(part, keys, n=3)
      hint = f'did you mean {", ".join(close)}? ' if close else ''
      return (
        f'{match.group(1)}: {section} has no {kind} {part!r} ({hint}its keys: '
        f'{", ".join(sorted(keys))}).'
      )
  return None


def _config_for_message(argv: list[str]):
  """The --config file's config, loaded again to name an unknown key's section (or None).

  absl leaves the config flag unset when one of its overrides fails, so the file is read here.
  """
  if 'config' in flags.FLAGS and flags.FLAGS['config'].value is not None:
    return flags.FLAGS['config'].value
  for arg in argv[1:]:
    if arg.startswith('--config='):
      path, _, variant = arg.removeprefix('--config=').partition(':')
      try:
        spec = importlib.util.spec_from_file_location('_config_for_message', path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module.get_config(variant) if variant else module.get_config()
      except Exception:  # noqa: BLE001 - only for a better message; the original error stands
        return None
  return None


def _override_without_config_file(argv: list[str]) -> str | None:
  """For `--config.KEY=...` given without `--config=FILE`: absl knows the overrides only as parts
  of that flag, so it calls them unknown flags."""
  if any(arg.startswith('--config=') for arg in argv[1:]):
    return None
  for arg in argv[1:]:
    if arg.startswith('--config.'):
      name = arg.split('=', 1)[0]
      return (
        f'{name} needs --config=FILE on the command line: overrides apply to a config file '
        '(beside --workdir, any one, e.g. --config=configs/tiny.py; its predict.* keys apply to '
        'that command, docs/options.md).'
      )
  return None


def _unquoted(message: str) -> str:
  """absl's message without the quotes around the whole of it (a quote it closes stays)."""
  if len(message) > 1 and message[0] == message[-1] and message[0] in '"\'':
    return message[1:-1]
  return message


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with one message and EXIT_USAGE for a bad flag or config key."""
  try:
    return flags.FLAGS(argv)
  except (flags.Error, AttributeError, KeyError, TypeError, ValueError) as error:
    if '--verbose' in argv:
      raise
    message = (
      _unknown_key_message(argv, _config_for_message(argv))
      or _override_without_config_file(argv)
      or _unquoted(str(error))
    )
    _print_error(message)
    sys.exit(EXIT_USAGE)
