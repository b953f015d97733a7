"""A synthetic photo for the speed and memory scripts: any size, compresses like a photo."""

import numpy as np
from PIL import Image


def synthetic_photo(height: int, width: int) -> Image.Image:
  """Smooth colour fields plus grain: compresses like a photo, unlike pure noise."""
  rng = np.random.default_rng(0)
  small = Image.fromarray(
    (rng.random((height // 64 + 2, width // 64 + 2, 3)) * 255).astype('uint8')
  )
  image = np.asarray(small.resize((width, height), Image.Resampling.BICUBIC), dtype=np.int16)
  image = image + rng.integers(-8, 9, size=image.shape, dtype=np.int16)
  return Image.fromarray(np.clip(image, 0, 255).astype(np.uint8))
