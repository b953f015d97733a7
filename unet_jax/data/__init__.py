"""Data for unet_jax: sources (built-in dataset, paired folders, tfds masks) -> grain batches.

Public API (what the trainer, evaluation and predict call):
- `validate_data_config(config)`: cheap checks before anything compiles.
- `dataset_summary(config, data_dir=None)`: prepares the data if needed and describes it.
- `create_train_iterator(config, *, process_index, process_count, data_dir=None)`.
- `create_eval_iterator(config, *, data_dir=None, process_index=0, process_count=1)`.
- `load_image(path)`: one photo as float32 `[H, W, 3]` in [0, 1].
- `build_default_dataset(look=...)`: builds the built-in dataset offline and prints its summary.
- `tfds_dir(config, workdir)`: where prepared tfds files live (the one place that decides).
Every bad file or setting raises `DataError` (a ValueError) naming the file or the option.
"""

from unet_jax.data.errors import DataError
from unet_jax.data.images import decode_image, load_image
from unet_jax.data.looks import DEFAULT_LOOK, LOOKS, apply_look
from unet_jax.data.pipeline import create_eval_iterator, create_train_iterator
from unet_jax.data.sources import build_default_dataset, dataset_summary, tfds_dir
from unet_jax.data.validation import validate_data_config

__all__ = [
  'DEFAULT_LOOK',
  'LOOKS',
  'DataError',
  'apply_look',
  'build_default_dataset',
  'create_eval_iterator',
  'create_train_iterator',
  'dataset_summary',
  'decode_image',
  'load_image',
  'tfds_dir',
  'validate_data_config',
]
