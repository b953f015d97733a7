"""A trained run as files other programs can use: weights, a StableHLO program, ONNX.

`export_workdir` writes a new folder (never into one that holds files):

  model.safetensors  the inference variables (EMA weights where the run keeps them, BatchNorm
                     statistics), flat names such as `params/encoder_0/conv_0/kernel`
  config.json        the run's resolved config (rebuilds the model: `unet_jax.load(folder)`)
  grade_tile.jax     serialized `jax.export` program for cpu, cuda and tpu: tiles
                     `[B, H, W, C]` -> graded tiles, B symbolic, H and W any multiples of
                     2**levels; the weights are inside, so `jax` alone can run it
  model.onnx         the same function for a fixed tile (symbolic batch), where jax2onnx can
                     express the model's options (`onnx_blockers` names the ones it cannot)
  look.cube          the model's best global colour mapping (`lut_export`), image models
  MODEL.md           what the model was trained on, for how long, its held-out scores
  model.sha256       the SHA-256 of model.safetensors (`sha256sum -c model.sha256` format),
                     checked by `load_weights` (and so `unet_jax.load`) before any weight is used

`check_export_folder` names what an export folder lacks ("incomplete export: missing X").
"""

import hashlib
import json
import logging
import os
import shutil
import tempfile
from typing import Any

import flax.linen as nn
import flax.traverse_util
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import safetensors.numpy

from unet_jax import option_ranges
from unet_jax.inference import files, lut_export, restore
from unet_jax.whole_photo import WholePhotoInputs

WEIGHTS_FILE = 'model.safetensors'
CONFIG_FILE = 'config.json'
STABLEHLO_FILE = 'grade_tile.jax'
ONNX_FILE = 'model.onnx'
LUT_FILE = 'look.cube'
CARD_FILE = 'MODEL.md'
CHECKSUM_FILE = 'model.sha256'
# Files only an export folder holds (a training workdir has config.json too).
_EXPORT_MARKERS = (WEIGHTS_FILE, STABLEHLO_FILE, CARD_FILE, CHECKSUM_FILE)
PLATFORMS = ('cpu', 'cuda', 'tpu')
_SEPARATOR = '/'


# ---------------------------------------------------------------------------------------------
# Weights.


def flatten_variables(variables: dict[str, Any]) -> dict[str, np.ndarray]:
  """`{'params': {...}, 'batch_stats': {...}}` -> `{'params/encoder_0/conv_0/kernel': array}`."""
  flat = flax.traverse_util.flatten_dict(jax.device_get(variables), sep=_SEPARATOR)
  return {name: np.ascontiguousarray(value) for name, value in flat.items()}


def unflatten_variables(flat: dict[str, np.ndarray]) -> dict[str, Any]:
  return flax.traverse_util.unflatten_dict(flat, sep=_SEPARATOR)


def file_sha256(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    for block in iter(lambda: f.read(1 << 20), b''):
      digest.update(block)
  return digest.hexdigest()


def load_weights(path: str) -> dict[str, Any]:
  """The variables a `model.safetensors` file holds, nested as `model.apply` wants them.

  When the folder has `model.sha256` (exports since it was added), the file's SHA-256 must
  match: a same-size damaged or altered file would otherwise grade garbage. ValueError names it.
  """
  recorded = os.path.join(os.path.dirname(path), CHECKSUM_FILE)
  if os.path.isfile(recorded):
    with open(recorded) as f:
      expected = (f.read().split() or [''])[0].lower()
    actual = file_sha256(path)
    if actual != expected:
      raise ValueError(
        f'{path}: its SHA-256 is {actual}, not the {expected} recorded in {recorded} at export: '
        'the file was damaged or changed. Export the run again.'
      )
  return unflatten_variables(safetensors.numpy.load_file(path))


def check_export_folder(path: str) -> bool:
  """True for a complete export folder, False for a folder that is not an export; ValueError
  'incomplete export: missing X' for one that has some export files but lacks what loads it."""
  if not os.path.isdir(path) or not any(
    os.path.isfile(os.path.join(path, name)) for name in _EXPORT_MARKERS
  ):
    return False
  missing = [n for n in (WEIGHTS_FILE, CONFIG_FILE) if not os.path.isfile(os.path.join(path, n))]
  if missing:
    raise ValueError(
      f'{path}: incomplete export: missing {" and ".join(missing)}. Export the run again '
      '(--mode=export).'
    )
  return True


# ---------------------------------------------------------------------------------------------
# Programs.


def tile_function(model: nn.Module, variables: dict[str, Any]):
  """`tiles [B, H, W, C] -> [B, H, W, out]`: the net in inference mode, weights as constants.

  Image head: the graded tiles, not clipped (clip to [0, 1] after blending tiles, as predict
  does); segmentation head: logits. A global-context model pools over the tile it is given.
  """
  constants = jax.tree.map(jnp.asarray, variables)
  return lambda tiles: model.apply(constants, tiles, train=False)


def tile_shape_spec(model: nn.Module) -> str:
  """The symbolic input shape: any batch, H and W multiples of 2**levels (so the net never
  pads inside the program), the model's channels."""
  multiple = 2**model.levels
  return f'batch, {multiple}*rows, {multiple}*cols, {model.in_channels}'


def export_stablehlo(model: nn.Module, variables: dict[str, Any]) -> jax.export.Exported:
  """The tile function lowered for every platform in `PLATFORMS`, shape-polymorphic."""
  shape = jax.export.symbolic_shape(tile_shape_spec(model))
  spec = jax.ShapeDtypeStruct(shape, jnp.float32)
  return jax.export.export(jax.jit(tile_function(model, variables)), platforms=PLATFORMS)(spec)


def onnx_blockers(model: nn.Module) -> list[str]:
  """The model options jax2onnx (0.17) cannot express, each with the reason."""
  blockers = []
  if model.multiscale_input:
    blockers.append(
      'config.model.multiscale_input=True: its average pooling (flax nn.avg_pool) has no '
      'working jax2onnx conversion'
    )
  return blockers


def export_onnx(model: nn.Module, variables: dict[str, Any], tile_size: int) -> tuple[bytes, str]:
  """ONNX bytes of the tile function for `[batch, tile_size, tile_size, C]` tiles, and a note.

  Raises ValueError naming the option when `onnx_blockers` finds one. H and W are fixed:
  jax2onnx drops the multiple-of-2**levels constraint of symbolic sizes, and the net's
  padding and up-sampling need it. A bfloat16 model is written computing in float32 (the
  weights are float32; onnxruntime has no bfloat16 convolution on CPU).
  """
  blockers = onnx_blockers(model)
  if blockers:
    raise ValueError('ONNX export is not possible: ' + '; '.join(blockers) + '.')
  try:
    from jax2onnx import to_onnx  # heavy (onnx, onnx_ir), and an extra: only export needs it
  except ImportError as error:
    raise ValueError(
      f"ONNX export needs jax2onnx, which is not installed: pip install '.[export]' ({error})"
    ) from error
  note = f'fixed {tile_size}x{tile_size} tiles, symbolic batch'
  if model.dtype != jnp.float32:
    model = model.clone(dtype=jnp.float32)
    note += '; config.model.dtype=bfloat16 is computed in float32 in ONNX'
  # onnx_ir warns once per shape tensor it serialises without a type; nothing a user can act on.
  logging.getLogger('onnx_ir').setLevel(logging.ERROR)
  proto = to_onnx(
    tile_function(model, variables),
    [('batch', tile_size, tile_size, model.in_channels)],
    model_name='unet_jax',
    input_names=['tiles'],
    output_names=['graded'],
  )
  return proto.SerializeToString(), note


# ---------------------------------------------------------------------------------------------
# The folder.


def check_output_dir(output_dir: str) -> None:
  """Refuses an `--output` that exists and is not an empty folder (nothing is overwritten)."""
  if not os.path.exists(output_dir):
    return
  if not os.path.isdir(output_dir):
    raise ValueError(f'--output {output_dir} exists and is not a folder.')
  if os.listdir(output_dir):
    raise ValueError(
      f'--output {output_dir} is not empty: export writes a new folder and never replaces '
      'files; pick another --output.'
    )


def export_workdir(
  workdir: str,
  output_dir: str,
  *,
  input_path: str | None = None,
  lut_size: int = lut_export.DEFAULT_SIZE,
  predict_overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
  """Writes the export folder of the run in `workdir` (see the module doc); returns a summary.

  The files are written into a temporary folder beside `output_dir` and renamed to it at the
  end, so a failed export leaves no half-written folder. `input_path` (a photo or folder) gives
  the photos the LUT is fitted on instead of the run's eval photos.
  """
  check_output_dir(output_dir)
  option_ranges.check_flag('lut_size', lut_size, option_ranges.LUT_SIZE)
  if input_path is not None:
    files.list_inputs(input_path)  # a bad --input fails before the model is restored
  config, model, variables, checkpoint_path = restore.load_trained_model(
    workdir, predict_overrides=predict_overrides
  )
  parent = os.path.dirname(os.path.abspath(output_dir))
  os.makedirs(parent, exist_ok=True)
  staging = tempfile.mkdtemp(prefix='.export-', dir=parent)
  try:
    summary = _write_folder(
      staging, workdir, config, model, variables, checkpoint_path, input_path, lut_size
    )
    check_output_dir(output_dir)
    if os.path.isdir(output_dir):
      os.rmdir(output_dir)  # empty (checked): the staged folder takes its place
    os.rename(staging, output_dir)
    # mkdtemp (and safetensors) make private files; an export is meant to be shared.
    mask = _umask()
    os.chmod(output_dir, 0o777 & ~mask)
    for name in os.listdir(output_dir):
      os.chmod(os.path.join(output_dir, name), 0o666 & ~mask)
  except BaseException:
    shutil.rmtree(staging, ignore_errors=True)
    raise
  summary['output_dir'] = output_dir
  summary['files'] = sorted(os.listdir(output_dir))
  return summary


def _umask() -> int:
  mask = os.umask(0)
  os.umask(mask)
  return mask


def _write_folder(folder, workdir, config, model, variables, checkpoint_path, input_path, size):
  summary: dict[str, Any] = {'checkpoint': checkpoint_path, 'notes': []}
  weights = os.path.join(folder, WEIGHTS_FILE)
  safetensors.numpy.save_file(flatten_variables(variables), weights, metadata={'format': 'np'})
  summary['sha256'] = file_sha256(weights)
  with open(os.path.join(folder, CHECKSUM_FILE), 'w') as f:
    f.write(f'{summary["sha256"]}  {WEIGHTS_FILE}\n')
  with open(os.path.join(folder, CONFIG_FILE), 'w') as f:
    f.write(config.to_json_best_effort(indent=2))

  with open(os.path.join(folder, STABLEHLO_FILE), 'wb') as f:
    f.write(export_stablehlo(model, variables).serialize())

  try:
    onnx_bytes, note = export_onnx(model, variables, config.predict.tile_size)
  except ValueError as error:
    summary['notes'].append(f'{ONNX_FILE} not written. {error}')
  else:
    with open(os.path.join(folder, ONNX_FILE), 'wb') as f:
      f.write(onnx_bytes)
    summary['onnx'] = note

  lut_problem = lut_export.lut_blocker(model)
  if lut_problem is None:
    try:
      photos = lut_export.lut_photos(config, workdir, input_path)
    except (FileNotFoundError, ValueError) as error:
      lut_problem = f'{error}'
  if lut_problem is None:
    table, fidelity = lut_export.fit_model_lut(config, model, variables, photos, size=size)
    lut_export.write_model_lut(os.path.join(folder, LUT_FILE), table, config)
    summary['lut'] = fidelity
  else:
    summary['notes'].append(f'{LUT_FILE} not written: {lut_problem}')

  with open(os.path.join(folder, CARD_FILE), 'w') as f:
    f.write(model_card(config, model, workdir, checkpoint_path, summary))
  for note in summary['notes']:
    logging.warning('%s', note)
  return summary


# ---------------------------------------------------------------------------------------------
# MODEL.md.


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


def _trained_on(config: ml_collections.ConfigDict) -> str:
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
    f'- Task: `{config.task}`; trained on {_trained_on(config)}, split '
    f"'{config.data.train_split}'.",
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
