"""Shared test set-up: 8 fake CPU devices, a session-wide XLA compilation cache, and a private
data/weights cache so tests never touch ~/.cache."""

import atexit
import os
import shutil
import tempfile

# Must happen before jax is imported anywhere in the test session: 8 fake CPU devices and the
# suite's compile-time flags (tests/xla_flags.py), which the processes the tests start inherit
# (the device-check dry run, the card command and the 2-process test set their own device
# counts with the same flags).
from tests import xla_flags  # imports nothing but itself

os.environ['XLA_FLAGS'] = f'{os.environ.get("XLA_FLAGS", "")} {xla_flags.with_devices(8)}'.strip()
os.environ.setdefault('JAX_PLATFORMS', 'cpu')

# The CLI tests start many processes that compile the same tiny programs (the tiny config's
# train step alone takes ~9 s to compile here). JAX's persistent compilation cache, set through the
# environment so those processes inherit it, compiles each program once per session; it starts
# empty, so every program is still compiled in this run, and it is removed at exit.
if 'JAX_COMPILATION_CACHE_DIR' not in os.environ:
  _xla_cache = tempfile.mkdtemp(prefix='unet_jax_test_xla_cache_')
  atexit.register(shutil.rmtree, _xla_cache, ignore_errors=True)
  os.environ['JAX_COMPILATION_CACHE_DIR'] = _xla_cache
  os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0.5')

import pytest  # noqa: E402


@pytest.fixture(scope='session', autouse=True)
def _private_cache(tmp_path_factory):
  """Points UNET_JAX_CACHE at a per-session folder (weights and built-in data are built there)."""
  previous = os.environ.get('UNET_JAX_CACHE')
  os.environ['UNET_JAX_CACHE'] = str(tmp_path_factory.mktemp('unet_jax_cache'))
  yield
  if previous is None:
    os.environ.pop('UNET_JAX_CACHE', None)
  else:
    os.environ['UNET_JAX_CACHE'] = previous


# The files of the longest single tests (end-to-end runs of 40-90 s on 2 cores; `--durations`
# lists them), longest first. pytest-xdist hands out whole files (`--dist loadfile`, in the
# order given here with `--no-loadscope-reorder`): starting these first and ending with the
# files of short tests keeps both workers busy to the end, instead of one waiting while the
# other runs a 90 s test it was handed last.
LONGEST_FIRST = (
  'tests/experiments/test_device_check.py',
  'tests/training/test_card_command.py',
  'tests/experiments/test_ablate.py',
  'tests/training/test_distributed.py',
  'tests/test_reliability.py',
)


def pytest_collection_modifyitems(config, items):
  """Orders the files: LONGEST_FIRST, then the other files with slow tests, then the rest (each
  file's tests in their own order)."""
  root = config.rootpath
  slow_files = {item.path for item in items if item.get_closest_marker('slow')}

  def rank(item) -> tuple[int, int]:
    name = item.path.relative_to(root).as_posix()
    if name in LONGEST_FIRST:
      return (0, LONGEST_FIRST.index(name))
    return (1 if item.path in slow_files else 2, 0)

  items.sort(key=rank)
