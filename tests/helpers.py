"""Helpers shared by the data tests (no tests here): tiny image files and pair folders."""

import pathlib
import struct
import sys
import zlib
from collections.abc import Callable

import numpy as np
from PIL import Image

ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
  sys.path.insert(0, str(ROOT))
from configs import tiny  # noqa: E402


def tiny_config(**overrides):
  """configs/tiny.py with dotted overrides, e.g. `tiny_config(**{'data.look': 'warm_film'})`."""
  config = tiny.get_config()
  config.update_from_flattened_dict(overrides)
  return config


def random_pixels(seed: int, height: int, width: int) -> np.ndarray:
  """uint8 `[H, W, 3]` noise: every pixel differs, so any misalignment shows."""
  return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def save(path: pathlib.Path, pixels: np.ndarray, **kwargs) -> pathlib.Path:
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(pixels).save(path, **kwargs)
  return path


def png16(pixels: np.ndarray) -> bytes:
  """A 16-bit RGB PNG (Pillow cannot write one): `pixels` uint16 `[H, W, 3]`."""
  height, width, _ = pixels.shape
  raw = b''.join(b'\x00' + pixels[y].astype('>u2').tobytes() for y in range(height))

  def chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', crc)

  header = struct.pack('>IIBBBBB', width, height, 16, 2, 0, 0, 0)
  return (
    b'\x89PNG\r\n\x1a\n'
    + chunk(b'IHDR', header)
    + chunk(b'IDAT', zlib.compress(raw))
    + chunk(b'IEND', b'')
  )


def write_pairs(
  root: pathlib.Path,
  split: str,
  names: list[str],
  *,
  size: tuple[int, int] = (40, 48),
  look: Callable[[np.ndarray], np.ndarray] | None = None,
  seed: int = 0,
  input_ext: str = 'png',
  target_ext: str = 'png',
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """Writes `root/split/{input,target}/<name>.<ext>`; target = look(input) rounded to 8 bits."""
  pairs = {}
  for index, name in enumerate(names):
    pixels = random_pixels(seed * 1000 + index, *size)
    target = pixels
    if look is not None:
      graded = look(pixels.astype(np.float32) / 255.0)
      target = np.round(np.clip(graded, 0, 1) * 255).astype(np.uint8)
    save(root / split / 'input' / f'{name}.{input_ext}', pixels, quality=100)
    save(root / split / 'target' / f'{name}.{target_ext}', target, quality=100)
    pairs[name] = (pixels, target)
  return pairs


def uniform_pairs(root: pathlib.Path, split: str, count: int, size: int = 40) -> None:
  """Pairs whose pixels all equal the record number (/255): a batch row says which record."""
  for index in range(count):
    pixels = np.full((size, size, 3), 10 * (index + 1), np.uint8)
    save(root / split / 'input' / f'r{index:02d}.png', pixels)
    save(root / split / 'target' / f'r{index:02d}.png', pixels)


def record_ids(batch: np.ndarray) -> list[int]:
  """Inverse of `uniform_pairs`: the record number of each row of a batch."""
  return [round(float(row.mean()) * 255 / 10) - 1 for row in batch]
