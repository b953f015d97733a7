"""The README's first command: learn the built-in grading look on two CPU cores in ~10 minutes.

Trains on the 9 built-in training photos (scikit-image's sample photos, graded offline with
the 'local_contrast' look: a spatially varying tone curve plus a colour shift), then grades the
3 held-out photos at full resolution into `<workdir>/eval/step_N/` and prints their PSNR next to
the identity baseline (doing nothing). Small on purpose: 3 levels, 16 base channels, 96 px crops.
"""

from unet_jax.config import get_base_config


def get_config():
  config = get_base_config()
  config.model.levels = 3
  config.model.base_channels = 16
  config.data.crop_size = 96
  config.batch_size = 8
  config.num_train_steps = 800
  config.optimizer.learning_rate = 1e-3
  config.optimizer.warmup_steps = 50
  config.optimizer.ema_decay = 0.99
  # The VGG perceptual term costs more than the U-Net itself at this size; L1 + SSIM only.
  config.loss.perceptual = 0.0
  config.log_every_steps = 50
  config.eval_every_steps = 400
  config.checkpoint_every_steps = 200
  config.predict.tile_size = 256
  config.predict.tile_overlap = 32
  return config
