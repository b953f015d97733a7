"""MODEL.md of an export folder: what the model was trained on, for how long, its held-out
scores (from the run's metrics.jsonl), and how to run each exported file."""

import json
import os

import flax.linen as nn
import ml_collections

from unet_jax.inference.export_files import (
  CHECKSUM_FILE,
  CONFIG_FILE,
  LUT_FILE,
  ONNX_FILE,
  PLATFORMS,
  STABLEHLO_FILE,
  WEIGHTS_FILE,
)
from unet_jax.whole_photo import WholePhotoInputs


def held_out_scores(workdir: str, step: int) -> dict[str, dict[str, float]] | None:
  """`{'model': {...}, 'identity': {...}}` logged by the eval at `step` in metrics.jsonl."""
  path = os.path.join(workdir, 'metrics.jsonl')
  if not os.path.exists(path):
    return None
  logged: dict[str, float] = {}
  with open(path) as f:
    for line in f:
      row = json.loads(line) if line.strip() else {}
      if row.get('step') == step:
        logged.update(row)  # model and identity scores are separate rows; a rerun's win
  pick = lambda prefix: {k[len(prefix) :]: v for k, v in logged.items() if k.startswith(prefix)}
  scores = {'model': pick('eval/'), 'identity': pick('eval_identity/')}
  return scores if scores['model'] else None


def trained_on(config: ml_collections.ConfigDict) -> str:
  data = config.data
  if data.name == 'builtin':
    return f"the built-in graded photos (scikit-image samples, look '{data.look}')"
  if data.name == 'paired_folders':
    return f'paired folders in `{data.dir}`'
  return f"the tfds dataset '{data.name}'"


def whole_photo_parts(model: nn.Module) -> list[str]:
  """What the model reads of the whole photo, which an exported tile program takes of the tile."""
  inputs = WholePhotoInputs.from_model_config(model)
  parts = {
    'its global context': model.global_context,
    'its thumbnail': inputs.thumbnail_size > 0,
    'its metering statistics': inputs.statistics,
    'its pixel coordinates': inputs.coords,
  }
  return [name for name, used in parts.items() if used]


def model_card(config, model, workdir, checkpoint_path, summary) -> str:
  step = int(checkpoint_path.rstrip('/').rsplit('/', 1)[-1])
  multiple = 2**model.levels
  decay = config.optimizer.ema_decay
  weights = f'EMA of the parameters (decay {decay}).' if decay > 0 else 'raw parameters.'
  lines = [
    '# unet_jax model',
    '',
    f"- Task: `{config.task}`; trained on {trained_on(config)}, split '{config.data.train_split}'.",
    f'- Weights: step {step} of {config.num_train_steps} (`{checkpoint_path}`), {weights}',
    f'- Model: {model.levels} levels, base {model.base_channels} channels, norm `{model.norm}`, '
    f'up `{model.up}`, down `{model.down}`, compute `{config.model.dtype}`.',
    '',
  ]
  scores = held_out_scores(workdir, step)
  if scores:
    lines += [f"## Held-out scores at step {step} (split '{config.data.eval_split}')", '']
    lines += ['| metric | model | identity (input unchanged) |', '|---|---|---|']
    for name, value in sorted(scores['model'].items()):
      identity = scores['identity'].get(name)
      shown = '' if identity is None else f'{identity:.4f}'
      lines.append(f'| {name} | {value:.4f} | {shown} |')
    lines.append('')
  else:
    lines += [f'No eval was logged at step {step} in `{workdir}/metrics.jsonl`.', '']
  lines += [
    '## Files',
    '',
    f'- `{WEIGHTS_FILE}`: variables by flat name (`params/...`, `batch_stats/...`); '
    f'`{CONFIG_FILE}` rebuilds the model (`unet_jax.load(this_folder)`). SHA-256 '
    f'`{summary.get("sha256", "?")}` (in `{CHECKSUM_FILE}`; `unet_jax.load` checks it).',
    f'- `{STABLEHLO_FILE}`: `jax.export` program for {", ".join(PLATFORMS)}. Input float32 '
    f'`[B, H, W, {model.in_channels}]` in [0, 1], B any, H and W multiples of {multiple}; '
    'output '
    + (
      f'logits `[B, H, W, {model.num_classes}]`.'
      if model.head == 'segmentation'
      else f'`[B, H, W, {model.out_channels}]`, not clipped (clip to [0, 1]).'
    ),
  ]
  if whole := whole_photo_parts(model):
    lines.append(
      f'  The model reads the whole photo ({", ".join(whole)}); the program takes it of each '
      "call's input: grade a whole photo in one call (padded to the multiple) as predict does."
    )
  if 'onnx' in summary:
    lines.append(f'- `{ONNX_FILE}`: the same function, {summary["onnx"]}.')
  if 'lut' in summary:
    fidelity = summary['lut']
    lines.append(
      f'- `{LUT_FILE}`: {fidelity["size"]}^3 LUT of the global colour mapping, fitted on '
      f'{fidelity["images"]} photos; LUT vs model {fidelity["psnr_lut_vs_model"]:.2f} dB PSNR '
      f'(input vs model {fidelity["psnr_input_vs_model"]:.2f} dB): the rest is local edits.'
    )
  lines += [f'- Not written: {note}' for note in summary['notes']]
  lines += [
    '',
    '## Running the StableHLO program with jax only',
    '',
    '```python',
    'import jax, numpy as np',
    f"grade = jax.export.deserialize(open('{STABLEHLO_FILE}', 'rb').read())",
    f'tiles = np.zeros((1, {multiple * 8}, {multiple * 8}, {model.in_channels}), np.float32)',
    'graded = np.clip(np.asarray(grade.call(tiles)), 0, 1)',
    '```',
    '',
    f'Photos larger than memory allows go through in tiles: `config.predict` used '
    f'{config.predict.tile_size} px tiles overlapping by {config.predict.tile_overlap} px.',
    '',
  ]
  return '\n'.join(lines)
