"""Shared test set-up: 8 fake CPU devices, and a private cache so tests never touch ~/.cache."""

import os

# Must happen before jax is imported anywhere in the test session.
os.environ['XLA_FLAGS'] = (
  os.environ.get('XLA_FLAGS', '') + ' --xla_force_host_platform_device_count=8'
).strip()
os.environ.setdefault('JAX_PLATFORMS', 'cpu')

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
