"""A U-Net small enough for tests on two CPU cores: 2 levels, 8 channels, 32 px crops."""

from unet_jax.config import get_base_config


def get_config():
  config = get_base_config()
  config.model.levels = 2
  config.model.base_channels = 8
  config.data.crop_size = 32
  config.batch_size = 8
  config.num_train_steps = 4
  config.optimizer.warmup_steps = 1
  config.log_every_steps = 2
  config.eval_every_steps = 4
  config.checkpoint_every_steps = 2
  config.predict.tile_size = 32
  config.predict.tile_overlap = 8
  config.loss.perceptual = 0.0
  config.data.eval_size = 64
  # LPIPS (a VGG16 pass over every eval photo and its input) is most of a tiny run's eval:
  # `--config.eval_lpips=true` adds it.
  config.eval_lpips = False
  return config
