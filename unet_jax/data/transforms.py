"""Per-record grain transforms: decode a pair, then one random geometry for input, target and mask.

Geometry is drawn once per record and applied to every array of the example, so a pair stays
aligned pixel for pixel: images are sampled bilinearly, masks by nearest neighbour. There is no
colour or brightness jitter: for grading, the colour mapping is what the model learns.
"""

import dataclasses
import math
import zlib
from typing import Any

import grain
import numpy as np
from PIL import Image

from unet_jax.data.images import DEFAULT_WORKING_SPACE, decode_image
from unet_jax.whole_photo import WholePhotoInputs, photo_coords, resize_image

_IMAGE_KEYS = ('input', 'target', 'coords')
# Arrays of the whole photo that are flipped with the crop but never cropped or resized.
_WHOLE_PHOTO_KEYS = ('thumbnail', 'target_thumbnail', 'thumbnail_coords')
# Figures of the whole photo that no geometry changes.
_PHOTO_FIGURE_KEYS = ('statistics',)
EVAL_NOISE_SEED = 20_240_601


def record_text(value: Any) -> str:
  """A text field of a tfds record as str: real records give bytes, mocked ones str."""
  return value.decode('utf-8') if isinstance(value, bytes) else str(value)


def resize_mask(mask: np.ndarray, height: int, width: int) -> np.ndarray:
  """int32 `[H, W]` -> `[height, width]` by nearest neighbour (labels are never blended)."""
  if mask.shape[:2] == (height, width):
    return mask
  resized = Image.fromarray(np.ascontiguousarray(mask, np.int32)).resize(
    (width, height), Image.Resampling.NEAREST
  )
  return np.asarray(resized, np.int32)


def _resize(example: dict[str, np.ndarray], height: int, width: int) -> dict[str, np.ndarray]:
  out = dict(example)
  for key, value in example.items():
    if key in _IMAGE_KEYS:
      out[key] = resize_image(value, height, width)
    elif key == 'mask':
      out[key] = resize_mask(value, height, width)
  return out


@dataclasses.dataclass(frozen=True)
class AddWholePhoto(grain.transforms.Map):
  """Adds what the crop cannot see of its photo, before the geometry is drawn: the
  `whole_photo` inputs of the whole input photo that `inputs` names.

  `'thumbnail'` `[T, T, 3]` is flipped and turned with the crop later, never cropped;
  `'statistics'` `[8]` no geometry changes; `'coords'` `[H, W, 2]`, each pixel's position in the
  photo, the crop, rotation and flips carry along like the image.

  With `target_thumbnail` (`loss.whole_photo_grade`), the whole target too: `'target_thumbnail'`
  `[T, T, 3]`, made as the input thumbnail's colours are, and `'thumbnail_coords'` `[T, T, 2]`,
  the position in the photo of each thumbnail pixel; both flipped and turned with the thumbnail.
  """

  inputs: WholePhotoInputs = WholePhotoInputs()
  target_thumbnail: bool = False

  def map(self, example: dict[str, Any]) -> dict[str, Any]:
    source = example['input'] if 'input' in example else example['target']
    example = {**example, **self.inputs.of_photo(source)}
    if self.target_thumbnail:
      size = self.inputs.thumbnail_size
      example['target_thumbnail'] = self.inputs.colour_thumbnail_of(example['target'])
      example['thumbnail_coords'] = photo_coords(np.arange(size), np.arange(size), size, size)
    return example


def fit_longer_side(example: dict[str, np.ndarray], size: int) -> dict[str, np.ndarray]:
  """Resizes every array so the longer side is `size`, keeping the aspect ratio."""
  height, width = _spatial(example)
  scale = size / max(height, width)
  return _resize(example, max(1, round(height * scale)), max(1, round(width * scale)))


def _spatial(example: dict[str, np.ndarray]) -> tuple[int, int]:
  key = next(k for k in ('target', 'input', 'mask') if k in example)
  return example[key].shape[:2]


def add_noise(clean: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
  """Additive Gaussian noise of std `sigma`, clipped to [0, 1] like a saved noisy photo."""
  noise = rng.standard_normal(clean.shape, dtype=np.float32) * np.float32(sigma)
  return np.clip(clean + noise, 0.0, 1.0)


def _sample(array: np.ndarray, ys: np.ndarray, xs: np.ndarray, nearest: bool) -> np.ndarray:
  height, width = array.shape[:2]
  if nearest:
    return array[
      np.clip(np.rint(ys), 0, height - 1).astype(int),
      np.clip(np.rint(xs), 0, width - 1).astype(int),
    ]
  y0 = np.clip(np.floor(ys).astype(int), 0, height - 1)
  x0 = np.clip(np.floor(xs).astype(int), 0, width - 1)
  y1, x1 = np.minimum(y0 + 1, height - 1), np.minimum(x0 + 1, width - 1)
  wy = (ys - y0).astype(np.float32)[..., None]
  wx = (xs - x0).astype(np.float32)[..., None]
  top = array[y0, x0] * (1 - wx) + array[y0, x1] * wx
  bottom = array[y1, x0] * (1 - wx) + array[y1, x1] * wx
  return top * (1 - wy) + bottom * wy


@dataclasses.dataclass(frozen=True)
class DecodePair(grain.transforms.Map):
  """A record of encoded bytes -> `{'input', 'target', 'name'}` float32 `[H, W, 3]`.

  Both sides are converted to `working_space` from their own ICC profiles, so a pair whose
  input and target were exported in different spaces lines up in colour too. With `clean_key`
  (denoising) only that side is kept, as `'target'`: the noisy input is made later, after the
  geometry, so that noise is never interpolated.
  """

  clean_key: str | None = None
  working_space: str = DEFAULT_WORKING_SPACE

  def map(self, record: dict[str, Any]) -> dict[str, Any]:
    name = record_text(record['name'])
    space = self.working_space
    if self.clean_key is not None:
      return {'target': decode_image(record[self.clean_key], name, space), 'name': name}
    return {
      'input': decode_image(record['input'], f'{name} (input)', space),
      'target': decode_image(record['target'], f'{name} (target)', space),
      'name': name,
    }


@dataclasses.dataclass(frozen=True)
class PairedAugment(grain.transforms.RandomMap):
  """One random crop (or whole-image resize), rotation, flips and rot90 for all of an example.

  `sampling`: 'crop' takes a `crop_size` square at a random place; 'resize' squeezes the whole
  image to `crop_size` x `crop_size` (aspect not kept, so nothing of the frame is lost); 'mixed'
  picks one of the two per record. Rotation by up to `max_rotation_degrees` applies to crops
  only, and the crop is taken inside the rotated frame so no border ever shows; when an image is
  too small for that, the crop is not rotated. An image smaller than the crop (segmentation
  datasets; paired folders reject those up front) is first enlarged to fit. With `noise_sigma`
  the input is made as `target + N(0, sigma)`, after the geometry. The name is dropped.
  """

  crop_size: int
  sampling: str = 'crop'
  hflip: bool = True
  vflip: bool = False
  rot90: bool = False
  max_rotation_degrees: float = 0.0
  noise_sigma: float | None = None

  def random_map(self, example: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    example = {k: v for k, v in example.items() if k != 'name'}
    whole = {k: example.pop(k) for k in _WHOLE_PHOTO_KEYS if k in example}
    figures = {k: example.pop(k) for k in _PHOTO_FIGURE_KEYS if k in example}
    # Every draw happens whatever the branch, so a record's geometry depends on its rng only.
    use_resize = self.sampling == 'resize' or (self.sampling == 'mixed' and rng.random() < 0.5)
    angle = math.radians(rng.uniform(-1.0, 1.0) * self.max_rotation_degrees)
    position = rng.random(2)
    flips = rng.random(2) < 0.5
    quarter_turns = int(rng.integers(4))
    if use_resize:
      example = _resize(example, self.crop_size, self.crop_size)
    else:
      example = self._crop(example, angle, position)
    # The small rotation is left out of the thumbnail: it shows the frame as shot.
    example.update(whole)
    for key, value in example.items():
      if self.hflip and flips[0]:
        value = value[:, ::-1]
      if self.vflip and flips[1]:
        value = value[::-1]
      if self.rot90 and quarter_turns:
        value = np.rot90(value, quarter_turns, axes=(0, 1))
      example[key] = np.ascontiguousarray(value)
    if self.noise_sigma is not None:
      example['input'] = add_noise(example['target'], self.noise_sigma, rng)
    example.update(figures)
    return example

  def _crop(self, example: dict[str, Any], angle: float, position: np.ndarray) -> dict[str, Any]:
    size = self.crop_size
    height, width = _spatial(example)
    if min(height, width) < size:
      scale = size / min(height, width)
      example = _resize(example, math.ceil(height * scale), math.ceil(width * scale))
      height, width = _spatial(example)
    # Half the extent of the rotated square, measured between pixel centres.
    reach = (size - 1) / 2 * (abs(math.cos(angle)) + abs(math.sin(angle)))
    if angle == 0.0 or 2 * reach > min(height, width) - 1:
      top = int(position[0] * (height - size + 1))
      left = int(position[1] * (width - size + 1))
      return {k: v[top : top + size, left : left + size] for k, v in example.items()}
    cy = reach + position[0] * (height - 1 - 2 * reach)
    cx = reach + position[1] * (width - 1 - 2 * reach)
    offsets = np.arange(size, dtype=np.float64) - (size - 1) / 2
    u, v = np.meshgrid(offsets, offsets, indexing='ij')
    cos, sin = math.cos(angle), math.sin(angle)
    ys, xs = cy + u * cos - v * sin, cx + u * sin + v * cos
    return {
      k: _sample(value, ys, xs, nearest=(k == 'mask')).astype(value.dtype)
      for k, value in example.items()
    }


@dataclasses.dataclass(frozen=True)
class EvalExample(grain.transforms.Map):
  """A decoded example -> its eval form: optional resize, deterministic noise for denoising.

  The noise of an image is seeded by its name, so every eval sees the same noisy inputs
  whatever the run's seed, the process count or the order.
  """

  eval_size: int | None = None
  noise_sigma: float | None = None

  def map(self, example: dict[str, Any]) -> dict[str, Any]:
    name = example['name']
    if self.eval_size is not None:
      example = fit_longer_side(example, self.eval_size)
    if self.noise_sigma is not None:
      rng = np.random.default_rng([EVAL_NOISE_SEED, zlib.crc32(name.encode('utf-8'))])
      example = dict(example, input=add_noise(example['target'], self.noise_sigma, rng))
    return example
