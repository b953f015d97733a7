"""A CPU recipe for a user's own photo pairs: the U-Net beside a global grade.

The global grade, under the U-Net's edit: an exposure in linear light (stops in proportion to the
whole photo's key, with a highlight roll-off), one learned 3D LUT (33^3) and a learned gain over
the frame. It gets global looks right by construction; the U-Net adds local edits on top.

The LUT is held to the training photos' grade by a curvature prior (second differences, weight
10), not total variation: cells the training photos never reach follow the grade's trend rather
than flatten towards the identity. On the built-in warm_film look, a least-squares LUT fitted to
the 9 training photos grades the held-out ones at 56.11 dB (17^3, weak pull to the identity),
58.28 dB (17^3, curvature prior) and 59.16 dB (33^3, curvature prior); learned in 600 steps
(seed 0, no frame gain), 33^3 under curvature 10 reached 58.32 dB against 56.85 dB for 17^3 and
56.78 dB under curvature 100. The frame gain's lattice has its mean taken out (a uniform gain is
the LUT's job) and a curvature term of its own (0.1), so the frame's edges, which random crops
seldom reach, follow its middle.

The exposure's two numbers take a 100x step (10x for the rest of the grade): at 10x, in 600
steps, the slope reached 70 % of the value that reproduces the built-in auto_exposure look. The
grade's own L1 term has weight 0.1: at 1.0 it held local_contrast back. A 64 px thumbnail of the
whole photo drives the U-Net's global context; the pixel coordinates stay out of the U-Net's input,
as the frame gain reads them for vignettes and graduated filters. One LUT rather than an
image-adaptive one: from a dozen training photos the per-photo mixing weights fit the training
photos and grade held-out ones worse. The default config's size otherwise (3 levels, 16 base
channels), 64 px crops: 1300 steps and the final evaluation take 7 to 9 minutes on 2 CPU cores
(400 s with AVX-512, 540 s with AVX2 only, 2026-12). Figures of this recipe
at its 1300 steps: experiments/results/color_head_1300.md; the 600-step ablation rows of the
recipe before 2026-12-04 (17^3 LUT under total variation):
experiments/results/color_head_600_lut17.md.

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
  config.optimizer.global_grade_lr_factor = 10.0
  config.optimizer.exposure_lr_factor = 10.0
  config.loss.perceptual = 0.0  # costs more than the U-Net at this size
  config.loss.global_grade = 0.1
  # Carries the grade's trend into LUT cells the training photos never reach.
  config.loss.lut_smoothness = 0.0
  config.loss.lut_curvature = 10.0
  config.loss.frame_gain_curvature = 0.1
  config.log_every_steps = 50
  config.predict.tile_size = 256
  config.predict.tile_overlap = 32
  config.model.color_head = 'lut'
  config.model.lut_size = 33
  config.model.thumbnail = 'photo'
  config.model.global_context = 'thumbnail'
  config.model.thumbnail_stats = True
  config.model.coords = False
  config.model.frame_gain = 9
  config.model.exposure = True
  config.num_train_steps = 1300
  config.eval_every_steps = 500
  config.checkpoint_every_steps = 500
  return config
