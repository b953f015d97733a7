"""A PyTorch U-Net built like `unet_jax.models.UNet`: the reference the benchmark races against.

Same layers in the same order, the same parameter count (checked by `experiments/benchmark.py`
and `tests/experiments/test_benchmark_reference.py`) and, with `load_flax_params`, the same
function: bias-free 3x3 convs before BatchNorm (momentum 0.1 here is flax's 0.9, eps 1e-5),
2x2 max-pool, bilinear up-sampling (half-pixel centres, as `jax.image.resize`) then a 3x3 conv
with bias, skip concat `[up, skip]`, and a zero-initialised 1x1 head added to the input (residual).

Only what the benchmark needs is mirrored; other `config.model` options raise. PyTorch is not a
dependency of unet_jax: this file is imported only by `benchmark.py --compare-torch` and by a
test that is skipped without torch.
"""

import time
from collections import OrderedDict
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from unet_jax.inference import tiling  # numpy only: the same tiles and blending as unet_jax

_MIRRORED = dict(
  norm=('batch', 'none'),
  activation=('relu', 'gelu', 'silu'),
  down=('maxpool',),
  up=('bilinear',),
  skip=('concat', 'none'),
  attention_gates=(False,),
  multiscale_input=(False,),
  global_context=('none',),
)
_ACTIVATIONS = {'relu': nn.ReLU, 'gelu': nn.GELU, 'silu': nn.SiLU}


def check_mirrored(model_config: Any) -> None:
  """Raises NotImplementedError for a `config.model` option this reference does not build."""
  for option, allowed in _MIRRORED.items():
    value = model_config[option]
    if value not in allowed:
      raise NotImplementedError(
        f'experiments/torch_unet.py does not mirror config.model.{option}={value!r} '
        f'(it builds {list(allowed)}); compare with an option it mirrors.'
      )


class ConvBlock(nn.Sequential):
  """2 x (3x3 conv -> norm -> activation); the conv has a bias only without a norm."""

  def __init__(self, in_channels: int, features: int, norm: str, activation: str):
    modules = OrderedDict()
    for i in range(2):
      modules[f'conv_{i}'] = nn.Conv2d(
        in_channels if i == 0 else features, features, 3, padding=1, bias=norm == 'none'
      )
      # flax: running = 0.9 * running + 0.1 * batch; torch's momentum is the batch's share.
      modules[f'norm_{i}'] = (
        nn.BatchNorm2d(features, eps=1e-5, momentum=0.1) if norm == 'batch' else nn.Identity()
      )
      modules[f'act_{i}'] = _ACTIVATIONS[activation]()
    super().__init__(modules)


class Upsample(nn.Module):
  """Bilinear 2x (align_corners=False, which is jax.image.resize's half-pixel rule), 3x3 conv."""

  def __init__(self, in_channels: int, features: int):
    super().__init__()
    self.conv = nn.Conv2d(in_channels, features, 3, padding=1)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    x = F.interpolate(x, scale_factor=2, mode='bilinear', align_corners=False)
    return self.conv(x)


class TorchUNet(nn.Module):
  """`[B, C, H, W]` in, `[B, out_channels, H, W]` out; any H and W (reflect-padded inside)."""

  def __init__(
    self,
    *,
    levels: int = 4,
    base_channels: int = 32,
    max_channels: int = 512,
    in_channels: int = 3,
    out_channels: int = 3,
    norm: str = 'batch',
    activation: str = 'relu',
    skip: str = 'concat',
    residual: bool = True,
  ):
    super().__init__()
    self.levels, self.skip, self.residual = levels, skip, residual
    channels = [min(base_channels * 2**level, max_channels) for level in range(levels + 1)]
    self.encoders = nn.ModuleList()
    previous = in_channels
    for level in range(levels):
      self.encoders.append(ConvBlock(previous, channels[level], norm, activation))
      previous = channels[level]
    self.bottleneck = ConvBlock(previous, channels[levels], norm, activation)
    previous = channels[levels]
    self.ups = nn.ModuleList()
    self.decoders = nn.ModuleList()
    for level in reversed(range(levels)):
      self.ups.append(Upsample(previous, channels[level]))
      joined = 2 * channels[level] if skip == 'concat' else channels[level]
      self.decoders.append(ConvBlock(joined, channels[level], norm, activation))
      previous = channels[level]
    self.head = nn.Conv2d(previous, out_channels, 1)
    if residual:
      nn.init.zeros_(self.head.weight)
      nn.init.zeros_(self.head.bias)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    height, width = x.shape[-2:]
    multiple = 2**self.levels
    pad_h, pad_w = (-height) % multiple, (-width) % multiple
    if pad_h or pad_w:
      x = F.pad(x, (0, pad_w, 0, pad_h), mode='reflect')
    features = x
    skips = []
    for level, encoder in enumerate(self.encoders):
      if level > 0:
        features = F.max_pool2d(features, 2)
      features = encoder(features)
      skips.append(features)
    features = self.bottleneck(F.max_pool2d(features, 2))
    for up, decoder, skip in zip(self.ups, self.decoders, reversed(skips), strict=True):
      features = up(features)
      if self.skip == 'concat':
        features = torch.cat([features, skip], dim=1)
      features = decoder(features)
    out = self.head(features)
    if self.residual:
      out = x + out
    return out[..., :height, :width]


def from_config(model_config: Any) -> TorchUNet:
  """The reference for a `config.model` (float32 parameters); raises for options it lacks."""
  check_mirrored(model_config)
  return TorchUNet(
    levels=model_config.levels,
    base_channels=model_config.base_channels,
    max_channels=model_config.max_channels,
    in_channels=model_config.in_channels,
    out_channels=model_config.out_channels,
    norm=model_config.norm,
    activation=model_config.activation,
    skip=model_config.skip,
    residual=model_config.residual,
  )


def count_params(model: nn.Module) -> int:
  return sum(p.numel() for p in model.parameters())


def _conv_from_flax(conv: nn.Conv2d, flax_conv: dict[str, Any]) -> None:
  # flax kernels are [H, W, in, out]; torch's are [out, in, H, W].
  kernel = np.asarray(flax_conv['kernel'], np.float32).transpose(3, 2, 0, 1)
  conv.weight.copy_(torch.tensor(kernel))
  if conv.bias is not None:
    conv.bias.copy_(torch.tensor(np.asarray(flax_conv['bias'], np.float32)))


def _block_from_flax(block: ConvBlock, params: dict[str, Any], stats: dict[str, Any]) -> None:
  for i in range(2):
    _conv_from_flax(getattr(block, f'conv_{i}'), params[f'conv_{i}'])
    norm = getattr(block, f'norm_{i}')
    if isinstance(norm, nn.BatchNorm2d):
      flax_norm = params[f'norm_{i}']['BatchNorm_0']
      norm.weight.copy_(torch.tensor(np.asarray(flax_norm['scale'], np.float32)))
      norm.bias.copy_(torch.tensor(np.asarray(flax_norm['bias'], np.float32)))
      running = stats[f'norm_{i}']['BatchNorm_0']
      norm.running_mean.copy_(torch.tensor(np.asarray(running['mean'], np.float32)))
      norm.running_var.copy_(torch.tensor(np.asarray(running['var'], np.float32)))


@torch.no_grad()
def load_flax_params(model: TorchUNet, variables: dict[str, Any]) -> None:
  """Copies a flax `UNet`'s variables into `model` (same config), making the two nets equal."""
  params, stats = variables['params'], variables.get('batch_stats', {})
  for level, encoder in enumerate(model.encoders):
    name = f'encoder_{level}'
    _block_from_flax(encoder, params[name], stats.get(name, {}))
  _block_from_flax(model.bottleneck, params['bottleneck'], stats.get('bottleneck', {}))
  for i, level in enumerate(reversed(range(model.levels))):
    _conv_from_flax(model.ups[i].conv, params[f'up_{level}']['conv'])
    name = f'decoder_{level}'
    _block_from_flax(model.decoders[i], params[name], stats.get(name, {}))
  _conv_from_flax(model.head, params['head'])


class TrainStep:
  """One eager PyTorch step doing the work of `unet_jax.training.steps.train_step` with an L1 loss.

  Forward in train mode (BatchNorm updates its running statistics), L1, backward, clipping by
  global norm, AdamW with weight decay on conv kernels only, and an EMA of the weights; a
  bfloat16 `config.model.dtype` runs under autocast (AMP), as mixed precision in PyTorch does.
  Calling it runs a step on a fixed batch and returns its seconds, synchronised.
  """

  def __init__(self, config: Any, batch: dict[str, np.ndarray], *, channels_last: bool = True):
    torch.manual_seed(config.seed)
    self.device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    self.channels_last = channels_last
    self.amp = config.model.dtype == 'bfloat16'
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    self.model = from_config(config.model).to(self.device, memory_format=memory_format)
    self.model.train()
    self.num_params = count_params(self.model)
    opt = config.optimizer
    params = list(self.model.parameters())
    kernels = [p for p in params if p.ndim > 1]
    others = [p for p in params if p.ndim <= 1]
    groups = [
      {'params': kernels, 'weight_decay': opt.weight_decay},
      {'params': others, 'weight_decay': 0.0},
    ]
    self.optimizer = torch.optim.AdamW(
      groups,
      lr=opt.learning_rate,
      betas=(opt.b1, opt.b2),
      eps=1e-8,
      foreach=True,
    )
    self.params = params
    self.clip = opt.grad_clip_norm
    self.ema_decay = opt.ema_decay
    self.ema = [p.detach().clone() for p in params]

    def to_torch(array: np.ndarray) -> torch.Tensor:
      tensor = torch.from_numpy(np.ascontiguousarray(array.transpose(0, 3, 1, 2)))
      return tensor.to(self.device).contiguous(memory_format=memory_format)

    self.inputs, self.targets = to_torch(batch['input']), to_torch(batch['target'])

  def _step(self) -> torch.Tensor:
    self.optimizer.zero_grad(set_to_none=True)
    with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
      outputs = self.model(self.inputs)
    loss = (outputs.float() - self.targets).abs().mean()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(self.params, self.clip, foreach=True)
    self.optimizer.step()
    with torch.no_grad():
      torch._foreach_lerp_(self.ema, self.params, 1.0 - self.ema_decay)
    return loss

  def __call__(self) -> float:
    start = time.perf_counter()
    loss = self._step()
    loss.item()  # waits for the device
    return time.perf_counter() - start

  def describe(self) -> dict[str, Any]:
    return {
      'device': str(self.device),
      'threads': torch.get_num_threads(),
      'channels_last': self.channels_last,
      'amp_bfloat16': self.amp,
    }


@torch.inference_mode()
def grade_image(
  model: TorchUNet,
  image: np.ndarray,
  *,
  tile_size: int,
  tile_overlap: int,
  batch_tiles: int = 1,
  amp: bool = False,
) -> np.ndarray:
  """`[H, W, C]` graded photo through the same tiles and blending as `grading.grade_image`.

  Tile origins, reflect-padding and raised-cosine weights come from `unet_jax.inference.tiling`,
  so the two frameworks do the same work per photo; `model` must be in eval mode.
  """
  multiple = tiling.check_tiling(model.levels, tile_size, tile_overlap)
  device = next(model.parameters()).device
  height, width = image.shape[:2]
  rows = tiling.tile_offsets(height, tile_size, tile_overlap, multiple)
  cols = tiling.tile_offsets(width, tile_size, tile_overlap, multiple)
  row_weights = dict(zip(rows, tiling.axis_weights(rows, tile_size, height), strict=True))
  col_weights = dict(zip(cols, tiling.axis_weights(cols, tile_size, width), strict=True))
  positions = [(top, left) for top in rows for left in cols]
  output = None
  for start in range(0, len(positions), batch_tiles):
    chunk = positions[start : start + batch_tiles]
    tiles = np.zeros((batch_tiles, tile_size, tile_size, image.shape[-1]), np.float32)
    for k, (top, left) in enumerate(chunk):
      tiling.extract_tile(image, top, left, tile_size, tiles[k])
    x = torch.from_numpy(tiles).permute(0, 3, 1, 2).to(device, memory_format=torch.channels_last)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
      graded = model(x).float().permute(0, 2, 3, 1).cpu().numpy()
    if output is None:
      output = np.zeros((height, width, graded.shape[-1]), np.float32)
    for k, (top, left) in enumerate(chunk):
      wy, wx = row_weights[top], col_weights[left]
      bottom, right = top + wy.shape[0], left + wx.shape[0]
      output[top:bottom, left:right] += (
        graded[k, : wy.shape[0], : wx.shape[0]] * wy[:, None, None] * wx[None, :, None]
      )
  return output
