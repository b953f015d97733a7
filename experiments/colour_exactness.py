"""How exact are colour conversions, and what do they do to pairs at the top of the PSNR scale?

1. Conversions between the working spaces (sRGB, Display P3, Adobe RGB, ProPhoto), every
   ordered pair, on random 16-bit codes, against colour-science's `RGB_to_RGB` (Bradford):
   CIEDE2000 worst and mean over the colours inside the target gamut, for LittleCMS's 16-bit
   transform (what the decoder used before, through libvips) and for the float matrix/TRC
   conversion (`unet_jax/data/matrix_shaper.py`, what it uses now).
2. Pairs both ways: the built-in photos and targets (8-bit sRGB PNGs, look warm_film, both
   splits) exported as 16-bit Display P3 TIFFs, then read back into the sRGB working space;
   PSNR of what comes back against the PNG's own values, per conversion path. A model trained
   on P3 files cannot score above what its data's round trip keeps: this PSNR is the ceiling
   the colour path puts on a 58 dB grade.

  python -m experiments.colour_exactness --result=experiments/results/colour_exactness.json
"""

import itertools
import json
import pathlib

import numpy as np
import pyvips
from absl import app, flags

from tests import photo_files as pf
from unet_jax.data import builtin, colour_spaces, load_image, matrix_shaper

_RESULT = flags.DEFINE_string('result', None, 'Also write the numbers to this JSON file.')
_SIZE = flags.DEFINE_integer('size', 256, 'Random codes per side for part 1.')
SPACES = tuple(colour_spaces.WORKING_SPACES)


def _littlecms(codes: np.ndarray, source: str, target: str) -> np.ndarray:
  """16-bit codes -> float codes of `target`, through libvips' LittleCMS at 16 bits."""
  image = pyvips.Image.new_from_array(np.ascontiguousarray(codes)).copy(interpretation='rgb16')
  out = image.icc_transform(
    colour_spaces.profile_path(target),
    input_profile=colour_spaces.profile_path(source),
    intent='relative',
    depth=16,
  )
  return out.numpy().astype(np.float64) / 65535


def _exact(codes: np.ndarray, source: str, target: str) -> np.ndarray:
  converted, _ = matrix_shaper.convert(
    codes, matrix_shaper.working_shaper(source), matrix_shaper.working_shaper(target)
  )
  return converted.astype(np.float64)


def conversions(size: int) -> dict:
  codes = pf.colourful(size, size, 16, seed=0)
  rows = {}
  for source, target in itertools.permutations(SPACES, 2):
    expected = pf.reference(codes / 65535, source, target)
    inside = np.all((expected > 0) & (expected < 1), axis=-1)
    row = {}
    for label, convert in (('littlecms16', _littlecms), ('exact', _exact)):
      de = pf.delta_e(convert(codes, source, target)[inside], expected[inside], target)
      row[label] = {'worst': float(de.max()), 'mean': float(de.mean())}
    rows[f'{source}->{target}'] = row
  summary = {
    label: {
      'worst': max(r[label]['worst'] for r in rows.values()),
      'mean': float(np.mean([r[label]['mean'] for r in rows.values()])),
    }
    for label in ('littlecms16', 'exact')
  }
  return {'pairs': rows, 'all': summary}


def round_trips() -> dict:
  """sRGB PNG -> 16-bit P3 TIFF -> sRGB working space, by each path; PSNR vs the PNG."""
  root = builtin.build_folder('warm_film')
  srgb, p3 = matrix_shaper.working_shaper('srgb'), matrix_shaper.working_shaper('display_p3')
  errors = {'littlecms16': [], 'exact': []}
  for path in sorted(root.glob('*/*/*.png')):
    png = load_image(path).astype(np.float64)
    codes = np.round(png * 255).astype(np.uint8)
    # Export: 8-bit sRGB -> 16-bit Display P3 (as an editor would write the TIFF) ...
    lcms_tiff = np.round(_littlecms(codes.astype(np.uint16) * 257, 'srgb', 'display_p3') * 65535)
    exact_tiff = np.round(matrix_shaper.convert(codes, srgb, p3)[0] * 65535)
    # ... and read back into the sRGB working space by the same path.
    back_lcms = _littlecms(lcms_tiff.astype(np.uint16), 'display_p3', 'srgb')
    back_exact = _exact(exact_tiff.astype(np.uint16), 'display_p3', 'srgb')
    errors['littlecms16'].append((back_lcms - png) ** 2)
    errors['exact'].append((back_exact - png) ** 2)
  return {
    label: {
      'psnr_db': float(10 * np.log10(1.0 / np.mean(np.concatenate([e.ravel() for e in sq])))),
      'worst_code_error_8bit': float(np.sqrt(max(e.max() for e in sq)) * 255),
    }
    for label, sq in errors.items()
  }


def main(argv):
  del argv
  result = {
    'conversions_vs_colour_science_de2000': conversions(_SIZE.value),
    'p3_tiff_round_trip_of_srgb_pairs': round_trips(),
    'command': 'python -m experiments.colour_exactness',
  }
  print(json.dumps(result['conversions_vs_colour_science_de2000']['all'], indent=1))
  print(json.dumps(result['p3_tiff_round_trip_of_srgb_pairs'], indent=1))
  if _RESULT.value:
    pathlib.Path(_RESULT.value).write_text(json.dumps(result, indent=1) + '\n')


if __name__ == '__main__':
  app.run(main)
