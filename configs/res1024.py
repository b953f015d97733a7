"""1024 px crops, base 64 channels, 5 levels: one more level than res512 (the seed's size table)."""

from unet_jax.config import get_base_config


def get_config():
  config = get_base_config()
  config.model.levels = 5
  config.model.base_channels = 64
  config.model.dtype = 'bfloat16'
  # Recompute each conv block in the backward pass: the U-Net's saved activations at batch 4
  # drop from 18.5 to 7.1 GiB (BENCHMARKS.md, memory per config).
  config.model.remat = True
  config.data.crop_size = 1024
  config.batch_size = 4
  config.num_train_steps = 100_000
  config.predict.tile_size = 1024
  config.predict.tile_overlap = 128
  return config
