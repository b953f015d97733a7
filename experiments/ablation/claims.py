"""The design notes' claims the ablation tests, and the variants of the baseline that test them."""

import dataclasses
from typing import Any

METRICS = ('psnr', 'ssim', 'lpips', 'delta_e2000')
LOWER_IS_BETTER = {'lpips', 'delta_e2000', 'checkerboard', 'steps_to_target', 'step_time'}
TASKS = ('enhance', 'denoise')


@dataclasses.dataclass(frozen=True)
class Variant:
  name: str
  overrides: dict[str, Any]
  label: str


VARIANTS = {
  v.name: v
  for v in (
    Variant('baseline', {}, 'baseline: skip, residual, L1, maxpool, bilinear, BN'),
    Variant('no_skip', {'model.skip': 'none'}, 'plain encoder-decoder (no skips)'),
    Variant('direct', {'model.residual': False}, 'direct output (not residual)'),
    Variant('l2', {'loss.l1': 0.0, 'loss.l2': 1.0}, 'L2 loss'),
    Variant(
      'l1_perceptual_ssim',
      {
        'loss.perceptual': 0.1,
        'loss.ssim': 0.1,
        # relu1_2 only: the deeper VGG blocks would cost several U-Net steps each on a CPU.
        'loss.perceptual_layer_weights': (1.0, 0.0, 0.0, 0.0, 0.0),
      },
      'L1 + 0.1 perceptual + 0.1 (1 - SSIM)',
    ),
    Variant('strided', {'model.down': 'strided'}, 'strided-conv down-sampling'),
    Variant('transposed', {'model.up': 'transposed'}, 'transposed-conv up-sampling'),
    Variant('pixel_shuffle', {'model.up': 'pixel_shuffle'}, 'pixel-shuffle up-sampling'),
    Variant('group_norm', {'model.norm': 'group'}, 'GroupNorm'),
    Variant('no_norm', {'model.norm': 'none'}, 'no normalisation'),
    Variant('attention', {'model.attention_gates': True}, 'attention gates on skips'),
    Variant('levels_3', {'model.levels': 3}, '3 levels'),
    Variant('levels_5', {'model.levels': 5}, '5 levels'),
  )
}


@dataclasses.dataclass(frozen=True)
class Comparison:
  """`better` is claimed to beat `worse` on `metric` (see LOWER_IS_BETTER for the direction)."""

  better: str
  worse: str
  metric: str


@dataclasses.dataclass(frozen=True)
class Claim:
  key: str
  title: str
  claim: str
  variants: tuple[str, ...]
  comparisons: tuple[Comparison, ...]


CLAIMS = (
  Claim(
    'skip',
    'Skip connections',
    'Skip connections beat the plain encoder-decoder on fine detail (PSNR, SSIM, sharpness).',
    ('baseline', 'no_skip'),
    (
      Comparison('baseline', 'no_skip', 'psnr'),
      Comparison('baseline', 'no_skip', 'ssim'),
    ),
  ),
  Claim(
    'residual',
    'Residual output',
    'Learning the edit (output = input + U-Net(input)) converges faster and ends better.',
    ('baseline', 'direct'),
    (
      Comparison('baseline', 'direct', 'steps_to_target'),
      Comparison('baseline', 'direct', 'psnr'),
    ),
  ),
  Claim(
    'loss',
    'Loss',
    'L2 is blurrier than L1; L1 + perceptual + SSIM is best perceptually (LPIPS).',
    ('baseline', 'l2', 'l1_perceptual_ssim'),
    (
      Comparison('baseline', 'l2', 'lpips'),
      Comparison('l1_perceptual_ssim', 'baseline', 'lpips'),
    ),
  ),
  Claim(
    'down',
    'Down-sampling',
    'Strided convolution "often works better" than max-pooling.',
    ('baseline', 'strided'),
    (Comparison('strided', 'baseline', 'psnr'),),
  ),
  Claim(
    'up',
    'Up-sampling',
    'Transposed convolution causes checkerboard artifacts; bilinear + conv is stable.',
    ('baseline', 'transposed', 'pixel_shuffle'),
    (
      Comparison('baseline', 'transposed', 'checkerboard'),
      Comparison('baseline', 'pixel_shuffle', 'checkerboard'),
      Comparison('baseline', 'transposed', 'psnr'),
    ),
  ),
  Claim(
    'norm',
    'Normalisation',
    'BatchNorm stabilises training (better than none; GroupNorm as the batch-free alternative).',
    ('baseline', 'group_norm', 'no_norm'),
    (
      Comparison('baseline', 'no_norm', 'psnr'),
      Comparison('baseline', 'group_norm', 'psnr'),
    ),
  ),
  Claim(
    'attention',
    'Attention gates',
    'Attention gates on the skips help the U-Net pick relevant features.',
    ('baseline', 'attention'),
    (Comparison('attention', 'baseline', 'psnr'),),
  ),
  Claim(
    'levels',
    'Depth',
    'More levels (4-5 rather than 3) give a better U-Net.',
    ('levels_3', 'baseline', 'levels_5'),
    (
      Comparison('baseline', 'levels_3', 'psnr'),
      Comparison('levels_5', 'baseline', 'psnr'),
    ),
  ),
)
