"""The files of an export folder: their names, the weights file's flat variable names, its
SHA-256 check, and whether a folder is a (complete) export. Light: `unet_jax.load` reads an
export folder through this module without the program exporters."""

import os
from typing import Any

import flax.traverse_util
import jax
import numpy as np
import safetensors.numpy

from unet_jax.paths import sha256_file

WEIGHTS_FILE = 'model.safetensors'
CONFIG_FILE = 'config.json'
STABLEHLO_FILE = 'grade_tile.jax'
ONNX_FILE = 'model.onnx'
LUT_FILE = 'look.cube'
CARD_FILE = 'MODEL.md'
CHECKSUM_FILE = 'model.sha256'
# Files only an export folder holds (a training workdir has config.json too).
_EXPORT_MARKERS = (WEIGHTS_FILE, STABLEHLO_FILE, CARD_FILE, CHECKSUM_FILE)
PLATFORMS = ('cpu', 'cuda', 'tpu')
_SEPARATOR = '/'


def flatten_variables(variables: dict[str, Any]) -> dict[str, np.ndarray]:
  """`{'params': {...}, 'batch_stats': {...}}` -> `{'params/encoder_0/conv_0/kernel': array}`."""
  flat = flax.traverse_util.flatten_dict(jax.device_get(variables), sep=_SEPARATOR)
  return {name: np.ascontiguousarray(value) for name, value in flat.items()}


def unflatten_variables(flat: dict[str, np.ndarray]) -> dict[str, Any]:
  return flax.traverse_util.unflatten_dict(flat, sep=_SEPARATOR)


def load_weights(path: str) -> dict[str, Any]:
  """The variables a `model.safetensors` file holds, nested as `model.apply` wants them.

  When the folder has `model.sha256` (exports since it was added), the file's SHA-256 must
  match: a same-size damaged or altered file would otherwise grade garbage. ValueError names it.
  """
  recorded = os.path.join(os.path.dirname(path), CHECKSUM_FILE)
  if os.path.isfile(recorded):
    with open(recorded) as f:
      expected = (f.read().split() or [''])[0].lower()
    actual = sha256_file(path)
    if actual != expected:
      raise ValueError(
        f'{path}: its SHA-256 is {actual}, not the {expected} recorded in {recorded} at export: '
        'the file was damaged or changed. Export the run again.'
      )
  return unflatten_variables(safetensors.numpy.load_file(path))


def check_export_folder(path: str) -> bool:
  """True for a complete export folder, False for a folder that is not an export; ValueError
  'incomplete export: missing X' for one that has some export files but lacks what loads it."""
  if not os.path.isdir(path) or not any(
    os.path.isfile(os.path.join(path, name)) for name in _EXPORT_MARKERS
  ):
    return False
  missing = [n for n in (WEIGHTS_FILE, CONFIG_FILE) if not os.path.isfile(os.path.join(path, n))]
  if missing:
    raise ValueError(
      f'{path}: incomplete export: missing {" and ".join(missing)}. Export the run again '
      '(--mode=export).'
    )
  return True
