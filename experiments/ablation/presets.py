"""Sweep sizes (`quick` for tests, `default` for the committed results) and the config of a run."""

import dataclasses

import ml_collections

from experiments.ablation.claims import VARIANTS
from unet_jax.config import get_base_config

ENHANCE_LOOK = 'local_contrast'


@dataclasses.dataclass(frozen=True)
class TaskSettings:
  eval_size: int | None  # None: full resolution (the scale the look is defined at)
  eval_every_steps: int
  tile_size: int
  variants: tuple[str, ...]
  num_train_steps: int | None = None  # None: the preset's


@dataclasses.dataclass(frozen=True)
class Preset:
  name: str
  seeds: tuple[int, ...]
  num_train_steps: int
  levels: int
  base_channels: int
  group_norm_groups: int
  crop_size: int
  batch_size: int
  learning_rate: float
  warmup_steps: int
  log_every_steps: int
  tasks: dict[str, TaskSettings]
  budget_minutes: float  # no new run starts after this much wall clock (finished runs count)
  crop_px: int  # side of the before/after crop, in pixels of the eval image
  note: str


ALL_VARIANTS = tuple(VARIANTS)
PERCEPTUAL = ('l1_perceptual_ssim',)
MIN_SEEDS = 2

PRESETS = {
  'quick': Preset(
    name='quick',
    seeds=(0,),
    num_train_steps=2,
    levels=2,
    base_channels=4,
    group_norm_groups=2,
    crop_size=32,
    batch_size=8,
    learning_rate=2e-3,
    warmup_steps=1,
    log_every_steps=1,
    tasks={'enhance': TaskSettings(32, 1, 32, ('baseline', 'transposed'))},
    budget_minutes=30.0,
    crop_px=24,
    note=(
      'Smoke test of the pipeline: a few steps of a tiny net, one seed, a subset of variants, '
      'eval on downsized photos. The numbers mean nothing; the verdicts say so.'
    ),
  ),
  'default': Preset(
    name='default',
    seeds=(0, 1, 2),
    num_train_steps=150,
    levels=4,
    base_channels=8,
    group_norm_groups=4,
    crop_size=64,
    batch_size=8,
    learning_rate=2e-3,
    warmup_steps=15,
    log_every_steps=15,
    tasks={
      # local_contrast is defined on the 512 px photos (a 6 px Gaussian): resizing the eval
      # photos would change the look, so enhance is scored at full resolution, on fewer evals.
      # Full-resolution LPIPS makes each enhance eval cost about a minute on this machine, so
      # enhance covers the claims about detail and the output form; denoise covers them all.
      'enhance': TaskSettings(None, 75, 512, ('baseline', 'no_skip', 'direct')),
      'denoise': TaskSettings(
        128,
        25,
        128,
        tuple(v for v in ALL_VARIANTS if v not in PERCEPTUAL) + PERCEPTUAL,
        num_train_steps=100,
      ),
    },
    budget_minutes=65.0,
    crop_px=96,
    note=(
      'Small nets (base 8 channels) on 64 px crops for 100-150 steps: what a shared 2-core CPU '
      'affords in about an hour. Claims about large models trained for days are tested only as '
      'far as this scale reaches: the nets are far from converged.'
    ),
  ),
}


def make_config(preset: Preset, task: str, variant: str, seed: int) -> ml_collections.ConfigDict:
  """The baseline of `preset` for `task`, with `variant`'s overrides and `seed`."""
  settings = preset.tasks[task]
  config = get_base_config()
  config.seed = seed
  config.task = task
  config.data.name = 'builtin'
  config.data.look = ENHANCE_LOOK
  config.data.eval_size = settings.eval_size
  config.data.crop_size = preset.crop_size
  config.model.levels = preset.levels
  config.model.base_channels = preset.base_channels
  config.model.group_norm_groups = preset.group_norm_groups
  config.batch_size = preset.batch_size
  config.num_train_steps = settings.num_train_steps or preset.num_train_steps
  config.optimizer.learning_rate = preset.learning_rate
  config.optimizer.warmup_steps = preset.warmup_steps
  # Evaluate the trained weights themselves, as the committed results did (they predate the
  # library's bias-corrected EMA); a claim about EMA would be a variant of its own.
  config.optimizer.ema_decay = 0.0
  config.loss.l1 = 1.0
  config.loss.ssim = 0.0
  config.loss.perceptual = 0.0
  config.log_every_steps = preset.log_every_steps
  config.eval_every_steps = settings.eval_every_steps
  config.checkpoint_every_steps = config.num_train_steps
  config.keep_checkpoints = 1
  config.num_image_summaries = 1
  config.predict.tile_size = settings.tile_size
  config.predict.tile_overlap = min(32, settings.tile_size // 4)
  config.update_from_flattened_dict(dict(VARIANTS[variant].overrides))
  return config
