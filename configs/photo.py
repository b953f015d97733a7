"""A CPU recipe for a user's own photo pairs: the U-Net beside a global grade.

The global grade, under the U-Net's edit: an exposure in linear light (stops in proportion to the
whole photo's key, with a highlight roll-off), one learned 3D LUT (17^3) and a learned gain over
the frame. It gets global looks right by construction; the U-Net adds local edits on top. The
exposure's two numbers take a 100x step (10x for the rest of the grade): at 10x, in 600 steps,
the slope reached 70 % and the white point's log 18 % of the values that reproduce the built-in
auto_exposure look (grade alone, seed 0), and the recipe graded it at 32.91 dB; at 100x, 56.92 dB.
The grade's own L1 term has weight 0.1: at 1.0 it held local_contrast back (600 steps, seed 0:
29.11 dB, 31.08 dB without it, 31.34 dB at 0.1) for 0.6 dB on warm_film (56.36 against 55.76 dB).
A 64 px thumbnail of the whole photo drives the U-Net's global context; the pixel coordinates stay
out of the U-Net's input (local_contrast 28.67 dB with them, 29.11 dB without, seed 0), as the
frame gain reads them for vignettes and graduated filters. One LUT rather than an image-adaptive
one: from a dozen training photos the per-photo mixing weights fit the training photos and grade
held-out ones worse (built-in warm_film, the global grade alone without the exposure stage, 600
steps, seed 0: 57.44 dB with one LUT and no frame gain, 53.00 dB adaptive with it). The default
config's size otherwise (3 levels, 16 base channels), 64 px crops: 1300 steps take about 15
minutes on 2 CPU cores. Figures (600-step runs of this recipe):
experiments/results/color_head_600.md.

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
  # Pulls LUT cells the training photos never reach towards their neighbours' grade.
  config.loss.lut_smoothness = 1.0
  config.log_every_steps = 50
  config.predict.tile_size = 256
  config.predict.tile_overlap = 32
  config.model.color_head = 'lut'
  config.model.lut_size = 17
  config.model.thumbnail_context = True
  config.model.global_context = True
  config.model.thumbnail_stats = True
  config.model.coords = False
  config.model.frame_gain = 9
  config.model.exposure = True
  config.num_train_steps = 1300
  config.eval_every_steps = 500
  config.checkpoint_every_steps = 500
  return config
