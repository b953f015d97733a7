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
