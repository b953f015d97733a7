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

`export_files.check_export_folder` names what an export folder lacks ("incomplete export: missing
X"); `model_card.py` writes MODEL.md.
"""

import logging
import os
import shutil
import tempfile
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import safetensors.numpy

from unet_jax import option_ranges
from unet_jax.inference import files, lut_export, restore
from unet_jax.inference.export_files import (
  CARD_FILE,
  CHECKSUM_FILE,
  CONFIG_FILE,
  LUT_FILE,
  ONNX_FILE,
  PLATFORMS,
  STABLEHLO_FILE,
  WEIGHTS_FILE,
  flatten_variables,
)
from unet_jax.inference.model_card import model_card
from unet_jax.paths import sha256_file
from unet_jax.whole_photo import WholePhotoInputs

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
  if WholePhotoInputs.from_model_config(model).thumbnail_size:
    blockers.append(
      'the model reads a thumbnail (config.model.exposure, local_grid, '
      "color_head='adaptive_lut' or global_context='thumbnail'): its resize "
      '(jax.image.resize) has no jax2onnx conversion for a symbolic batch'
    )
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
  summary['sha256'] = sha256_file(weights)
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
