"""512 px crops, base 64 channels, 4 levels (seed: 512 px -> base 64, 4-5 levels)."""

from unet_jax.config import get_base_config


def get_config():
  config = get_base_config()
  config.model.levels = 4
  config.model.base_channels = 64
  config.data.crop_size = 512
  config.batch_size = 8
  config.num_train_steps = 100_000
  config.model.dtype = 'bfloat16'
  return config
