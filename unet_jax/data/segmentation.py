"""Segmentation from a tfds dataset with an image and a mask, prepared by the user as ArrayRecord.

`oxford_iiit_pet`: the trimap's 1 (pet), 2 (background), 3 (border) become classes 0, 1, 2
(so `config.model.num_classes = 3`). Other datasets default to the keys 'image' and
'segmentation_mask' with labels as stored. Labels outside [0, num_classes) become
`config.loss.ignore_label`; a mask stored at another size than its image is resized to it
(nearest), which only mocked data does.
"""

import dataclasses
import os
from typing import Any

import grain
import numpy as np
import tensorflow_datasets as tfds

from unet_jax.data.errors import DataError
from unet_jax.data.transforms import record_text, resize_mask


@dataclasses.dataclass(frozen=True)
class SegmentationSpec:
  image_key: str = 'image'
  mask_key: str = 'segmentation_mask'
  name_key: str | None = 'file_name'
  label_offset: int = 0  # subtracted from stored labels
  num_classes: int | None = None  # None: whatever config.model.num_classes says


KNOWN_DATASETS = {
  'oxford_iiit_pet': SegmentationSpec(label_offset=1, num_classes=3),
}


def spec_for(name: str) -> SegmentationSpec:
  return KNOWN_DATASETS.get(name, SegmentationSpec())


def open_split(name: str, split: str, data_dir: str | None) -> Any:
  """`tfds.data_source` of a prepared split, trying `data_dir` then tfds' default folder."""
  tried, errors = [], []
  for directory in dict.fromkeys([data_dir, None]):
    try:
      return tfds.data_source(name, split=split, data_dir=directory, download=False)
    except tfds.core.registered.DatasetNotFoundError:
      raise DataError(f'config.data.name={name!r} is not a tfds dataset.') from None
    except Exception as error:  # tfds raises several types for "not prepared here".
      tried.append(directory or 'the tfds default data dir')
      errors.append(f'{type(error).__name__}: {str(error).splitlines()[0]}')
  raise DataError(
    f'config.data.name={name!r}, split {split!r}: no ArrayRecord copy in {" or ".join(tried)} '
    f'({errors[0]}). Prepare it once with tfds and file_format="array_record" (for example '
    f'`tfds build {name} --file_format=array_record`), then set config.data.tfds_data_dir to '
    'its data dir.'
  )


@dataclasses.dataclass(frozen=True)
class DecodeSegmentation(grain.transforms.Map):
  """A tfds record -> `{'input': float32 [H, W, 3], 'mask': int32 [H, W], 'name': str}`."""

  spec: SegmentationSpec
  num_classes: int
  ignore_label: int = 255

  def map(self, record: dict[str, Any]) -> dict[str, Any]:
    image = np.asarray(record[self.spec.image_key])
    if image.ndim == 2:
      image = image[..., None]
    if image.shape[-1] == 1:
      image = np.repeat(image, 3, axis=-1)
    image = image[..., :3].astype(np.float32) / np.float32(np.iinfo(image.dtype).max)
    mask = np.asarray(record[self.spec.mask_key]).astype(np.int32)
    if mask.ndim == 3:
      mask = mask[..., 0]
    mask = resize_mask(mask, *image.shape[:2]) - self.spec.label_offset
    mask = np.where((mask >= 0) & (mask < self.num_classes), mask, self.ignore_label)
    name_key = self.spec.name_key
    name = record_text(record[name_key]) if name_key and name_key in record else ''
    name = os.path.splitext(os.path.basename(name))[0]
    return {'input': image, 'mask': mask.astype(np.int32), 'name': name}
