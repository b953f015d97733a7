"""256 px crops, base 32 channels, 4 levels (the seed's size table: 256 px -> base 32)."""

from unet_jax.config import get_base_config


def get_config():
  config = get_base_config()
  config.model.levels = 4
  config.model.base_channels = 32
  config.data.crop_size = 256
  config.batch_size = 16
  config.num_train_steps = 50_000
  return config
