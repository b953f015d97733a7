"""A CPU recipe for a user's own photo pairs: the U-Net's local edits over a global grade (an
exposure, one 33^3 LUT, a gain over the frame) that gets global looks right by construction.
About 8 minutes on 2 CPU cores. Why each setting: experiments/results/color_head_notes.md.

  python -m unet_jax.main --config=configs/photo.py --workdir=runs/photo \
    --config.data.name=paired_folders --config.data.dir=/path/to/pairs
"""

from unet_jax.config import get_base_config


def get_config():
  config = get_base_config()
  config.model.levels = 3
  config.model.base_channels = 16
  config.data.crop_size = 64
  config.batch_size = 8
  config.optimizer.learning_rate = 1e-3
  config.optimizer.warmup_steps = 50
  config.optimizer.ema_decay = 0.99
  # The grade's few numbers travel far from the identity: 10x steps, the exposure's 100x.
  config.optimizer.global_grade_lr_factor = 10.0
  config.optimizer.exposure_lr_factor = 10.0
  config.loss.perceptual = 0.0  # costs more than the U-Net at this size
  config.loss.global_grade = 0.1  # the grade's own L1 term; at 1.0 it holds local edits back
  # Carries the grade's trend into LUT cells the training photos never reach.
  config.loss.lut_smoothness = 0.0
  config.loss.lut_curvature = 10.0
  # ... and the frame's edges, which random crops seldom reach, follow its middle.
  config.loss.frame_gain_curvature = 0.1
  config.data.photo_cache_mb = 4096  # 128 pairs of 1 MP photos take 2.8 GB
  config.log_every_steps = 50
  config.predict.tile_size = 256
  config.predict.tile_overlap = 32
  # One LUT: per-photo mixing weights fit a dozen training photos, not held-out ones.
  config.model.color_head = 'lut'
  config.model.lut_size = 33
  config.model.thumbnail = 'photo'
  config.model.global_context = 'thumbnail'
  config.model.thumbnail_stats = True
  config.model.coords = False  # the frame gain reads them; the U-Net does not
  config.model.frame_gain = 9
  config.model.exposure = True
  config.num_train_steps = 1300
  config.eval_every_steps = 500
  config.checkpoint_every_steps = 500
  return config
