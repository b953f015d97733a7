"""A CPU recipe for a user's own photo pairs: the U-Net beside a global colour head.

The colour head is an image-adaptive 3D LUT (3 bases of 17^3, mixed per photo from a 64 px
thumbnail of the whole photo) that gets global grades (tone curve, white balance, split toning)
right by construction; the U-Net adds local edits on top. The thumbnail also drives the U-Net's
global context, and the pixel coordinates in the whole photo join its input, so exposure- and
frame-dependent edits (vignettes, graduated filters) are learnable from crops and come out the
same when predict grades the full photo in tiles. The default config's size otherwise (3 levels,
16 base channels, 96 px crops), trained longer. Figures: experiments/results/color_head.md.

  python -m unet_jax.main --config=configs/photo.py --workdir=runs/photo \
    --config.data.name=paired_folders --config.data.dir=/path/to/pairs
"""

from unet_jax.config import get_base_config


def get_config():
  config = get_base_config()
  config.model.levels = 3
  config.model.base_channels = 16
  config.data.crop_size = 96
  config.batch_size = 8
  config.optimizer.learning_rate = 1e-3
  config.optimizer.warmup_steps = 50
  config.optimizer.ema_decay = 0.99
  config.optimizer.global_grade_lr_factor = 10.0
  config.loss.perceptual = 0.0  # costs more than the U-Net at this size
  config.loss.global_grade = 1.0
  config.log_every_steps = 50
  config.predict.tile_size = 256
  config.predict.tile_overlap = 32
  config.model.color_head = 'adaptive_lut'
  config.model.lut_size = 17
  config.model.lut_bases = 3
  config.model.thumbnail_context = True
  config.model.global_context = True
  config.model.thumbnail_stats = True
  config.model.coords = True
  config.model.frame_gain = 9
  config.num_train_steps = 2000
  config.eval_every_steps = 1000
  config.checkpoint_every_steps = 500
  return config
