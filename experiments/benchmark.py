"""Train-step speed, FLOPs, predict cost and input-pipeline rate of a config, optionally raced
against the same U-Net in PyTorch.

  python -m experiments.benchmark --config=configs/res256.py --compare-torch
  python -m experiments.benchmark --config=configs/res256.py --resolution=128,256 --batch=8 \
    --steps=20 --compare-torch --json-out=/tmp/benchmark.json

Train step: the library's own jitted step (`unet_jax.training.steps.make_train_step`: forward, loss,
gradients, clipped AdamW, EMA, NaN guard; state donated) on a fixed random batch; each step is
timed on its own up to `block_until_ready`, and the median over `--steps` after `--warmup` is
kept. FLOPs per step come from XLA's cost analysis of the compiled step; achieved FLOP/s is
FLOPs / median time and model FLOPs utilisation is that over `--peak-flops` (or a known peak of
the device). With `--compare-torch` the reference in `experiments/torch_unet.py` (same layers,
same parameter count, checked here) runs the same step in eager PyTorch: L1, AdamW with the same
decay mask, gradient clipping and EMA. The two frameworks alternate step by step so that other
load on the machine hits both alike; the ratio is JAX images/s over PyTorch images/s.

The loss is L1 only unless `--noloss-l1-only`: the reference implements no other term, and the
config's perceptual and SSIM terms would time VGG, not the U-Net.

Predict: `unet_jax.grading.grade_image` on a random `--predict-size` square image with the
config's tiling, timed on the second call (the first compiles); peak memory is the device's peak
where the backend reports one, and the process's peak RSS otherwise (predict runs first, so
that high-water mark is its own). `experiments/predict_memory.py` measures the whole file-to-file
path on a large photo instead.

Predict against PyTorch (with `--compare-torch`): one `--compare-predict-megapixels` photo (4:3)
graded by each framework in a fresh process of its own (spawned), so that each peak RSS is its
own: the same random-init weights (copied into `torch_unet`), the same tiles, overlap, batch and
blending (`torch_unet.grade_image` uses `unet_jax.inference.tiling`). Each first grades one tile
to compile / warm up, then the whole photo once; the ratio is PyTorch seconds over JAX seconds.

Pipeline: pairs per second of `unet_jax.data.create_train_iterator` for the config (built-in
data unless the config names other), beside the pairs per second the train step consumes.
"""

import json
import multiprocessing
import os
import pathlib
import platform
import resource
import tempfile
import time
from typing import Any

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from experiments import data_throughput  # noqa: E402
from experiments.step_timing import JaxStep, time_alternating  # noqa: E402
from unet_jax.inference import grading, tile_programs  # noqa: E402
from unet_jax.models import create_model  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file(
  'config', 'configs/res256.py', 'Model, optimiser, data and predict config.'
)
_RESOLUTION = flags.DEFINE_list(
  'resolution', [], 'Square crop sizes to time (px); empty: config.data.crop_size.'
)
_BATCH = flags.DEFINE_integer('batch', 8, 'Global batch size; 0: config.batch_size.')
_STEPS = flags.DEFINE_integer('steps', 5, 'Timed steps per framework (the median is kept).')
_WARMUP = flags.DEFINE_integer('warmup', 2, 'Untimed steps per framework after compilation.')
_COMPARE_TORCH = flags.DEFINE_bool(
  'compare-torch', False, 'Race the PyTorch reference (experiments/torch_unet.py), alternating.'
)
_TORCH_CHANNELS_LAST = flags.DEFINE_bool(
  'torch-channels-last', True, 'PyTorch in channels_last memory format (its faster CPU path).'
)
_L1_ONLY = flags.DEFINE_bool('loss-l1-only', True, 'Train with L1 alone (what the reference has).')
_PEAK_FLOPS = flags.DEFINE_float(
  'peak-flops', None, "Device peak FLOP/s for MFU; default: a known device's peak, or none."
)
_PREDICT_SIZE = flags.DEFINE_integer(
  'predict-size', 512, 'Side of the square image graded by predict (px); 0 skips predict.'
)
_COMPARE_PREDICT_MP = flags.DEFINE_float(
  'compare-predict-megapixels',
  12.0,
  'With --compare-torch: photo size (MP, 4:3) graded by both frameworks; 0 skips.',
)
_PIPELINE_SECONDS = flags.DEFINE_float(
  'pipeline-seconds', 5.0, 'Seconds of input-pipeline reading; 0 skips the pipeline.'
)
_JSON_OUT = flags.DEFINE_string(
  'json-out', os.path.join(tempfile.gettempdir(), 'unet_jax_benchmark.json'), 'JSON results file.'
)

# Dense peak FLOP/s by device kind and compute dtype (vendor figures, no sparsity).
_KNOWN_PEAKS = {
  'NVIDIA H100 80GB HBM3': {'bfloat16': 989e12, 'float32': 67e12},
  'NVIDIA H200': {'bfloat16': 989e12, 'float32': 67e12},
  'NVIDIA A100-SXM4-80GB': {'bfloat16': 312e12, 'float32': 19.5e12},
  'NVIDIA A100-SXM4-40GB': {'bfloat16': 312e12, 'float32': 19.5e12},
  'TPU v4': {'bfloat16': 275e12},
  'TPU v5 lite': {'bfloat16': 197e12},
}


def peak_flops(config) -> float | None:
  if _PEAK_FLOPS.value:
    return _PEAK_FLOPS.value
  kind = jax.devices()[0].device_kind
  per_device = _KNOWN_PEAKS.get(kind, {}).get(config.model.dtype)
  return per_device * jax.device_count() if per_device else None


def peak_rss_mib() -> float:
  # Linux reports ru_maxrss in KiB.
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def device_peak_bytes() -> int | None:
  stats = jax.devices()[0].memory_stats() or {}
  return stats.get('peak_bytes_in_use')


def benchmark_predict(config, model, variables, size: int) -> dict[str, Any]:
  """Seconds per megapixel and peak memory of tiled grading of a `size` x `size` image."""
  image = np.random.default_rng(0).random((size, size, config.model.in_channels), np.float32)
  rss_before = peak_rss_mib()

  def grade():
    start = time.perf_counter()
    grading.grade_image(
      model,
      variables,
      image,
      tile_size=config.predict.tile_size,
      tile_overlap=config.predict.tile_overlap,
      batch_tiles=config.predict.batch_tiles,
    )
    return time.perf_counter() - start

  first = grade()
  seconds = grade()
  megapixels = size * size / 1e6
  return {
    'image_px': size,
    'tile_size': config.predict.tile_size,
    'tile_overlap': config.predict.tile_overlap,
    'batch_tiles': config.predict.batch_tiles,
    'seconds_first_call': first,
    'seconds': seconds,
    'seconds_per_megapixel': seconds / megapixels,
    'peak_rss_mib': peak_rss_mib(),
    'rss_before_mib': rss_before,
    'device_peak_bytes': device_peak_bytes(),
  }


def _photo_shape(megapixels: float, channels: int) -> tuple[int, int, int]:
  width = int(round((megapixels * 1e6 * 4 / 3) ** 0.5))
  return (width * 3 // 4, width, channels)


def _predict_in_process(
  framework: str, config_dict: dict, shape: tuple, weights_path: str, queue
) -> None:
  """Runs in a spawned process: grades one photo with `framework`, puts its figures on `queue`."""
  import ml_collections  # noqa: PLC0415
  from flax import traverse_util  # noqa: PLC0415

  config = ml_collections.ConfigDict(config_dict)
  with np.load(weights_path) as stored:
    variables = traverse_util.unflatten_dict({tuple(k.split('/')): v for k, v in stored.items()})
  image = np.random.default_rng(0).random(shape, np.float32)
  tile = config.predict.tile_size
  kwargs = dict(tile_size=tile, tile_overlap=config.predict.tile_overlap)
  if framework == 'jax':
    model = create_model(config.model, task=config.task)
    batch = config.predict.batch_tiles or tile_programs.auto_batch_tiles(model, variables, tile)

    def grade(photo):
      grading.grade_image(model, variables, photo, batch_tiles=batch, **kwargs)

  else:
    import torch  # noqa: PLC0415

    from experiments import torch_unet  # noqa: PLC0415

    net = torch_unet.from_config(config.model)
    torch_unet.load_flax_params(net, variables)
    device = 'cuda' if torch.cuda.is_available() else 'cpu'
    net = net.to(device, memory_format=torch.channels_last).eval()
    batch = config.predict.batch_tiles or 1
    amp = config.model.dtype == 'bfloat16'

    def grade(photo):
      torch_unet.grade_image(net, photo, batch_tiles=batch, amp=amp, **kwargs)

  grade(image[:tile, :tile])  # one tile: compiles (JAX) or warms up (PyTorch) that shape
  before = peak_rss_mib()
  start = time.perf_counter()
  grade(image)
  seconds = time.perf_counter() - start
  queue.put(
    {
      'seconds': seconds,
      'seconds_per_megapixel': seconds / (shape[0] * shape[1] / 1e6),
      'peak_rss_mib': peak_rss_mib(),
      'rss_before_photo_mib': before,
      'batch_tiles': batch,
    }
  )


def compare_predict(config, variables, megapixels: float) -> dict[str, Any]:
  """Grades one `megapixels` photo in JAX and in PyTorch, each in its own fresh process."""
  from flax import traverse_util  # noqa: PLC0415

  shape = _photo_shape(megapixels, config.model.in_channels)
  config_dict = config.to_dict()
  results: dict[str, Any] = {
    'height': shape[0],
    'width': shape[1],
    'megapixels': shape[0] * shape[1] / 1e6,
    'tile_size': config.predict.tile_size,
    'tile_overlap': config.predict.tile_overlap,
  }
  context = multiprocessing.get_context('spawn')
  with tempfile.TemporaryDirectory() as folder:
    weights_path = os.path.join(folder, 'variables.npz')
    flat = traverse_util.flatten_dict(jax.device_get(variables), sep='/')
    np.savez(weights_path, **{k: np.asarray(v) for k, v in flat.items()})
    for framework in ('jax', 'torch'):
      queue = context.Queue()
      process = context.Process(
        target=_predict_in_process, args=(framework, config_dict, shape, weights_path, queue)
      )
      process.start()
      results[framework] = queue.get()
      process.join()
  results['jax_over_torch'] = results['torch']['seconds'] / results['jax']['seconds']
  return results


def benchmark_pipeline(config, seconds: float) -> dict[str, Any]:
  """Pairs per second of the training iterator, after a first batch that starts it."""
  rate = data_throughput.measure(config, seconds)
  return {
    'dataset': config.data.name,
    'crop_size': config.data.crop_size,
    'num_workers': config.data.num_workers,
    'pairs_per_second': rate,
  }


def benchmark_resolution(config, resolution: int, batch_size: int, peak: float | None):
  config = config.copy_and_resolve_references()
  config.data.crop_size = resolution
  config.batch_size = batch_size
  rng = np.random.default_rng(0)
  shape = (batch_size, resolution, resolution, config.model.in_channels)
  batch = {
    'input': rng.random(shape, np.float32),
    'target': rng.random(shape[:-1] + (config.model.out_channels,), np.float32),
  }
  jax_step = JaxStep(config, batch)
  steps = {'jax': jax_step}
  torch_info = {}
  if _COMPARE_TORCH.value:
    from experiments import torch_unet  # noqa: PLC0415 (optional dependency, imported only when asked for)

    torch_step = torch_unet.TrainStep(config, batch, channels_last=_TORCH_CHANNELS_LAST.value)
    if torch_step.num_params != jax_step.num_params:
      raise AssertionError(
        f'PyTorch reference has {torch_step.num_params} parameters, unet_jax '
        f'{jax_step.num_params}: the two nets differ; fix experiments/torch_unet.py.'
      )
    steps['torch'] = torch_step
    torch_info = torch_step.describe()
  times = time_alternating(steps, _WARMUP.value, _STEPS.value)
  result = {
    'resolution': resolution,
    'batch_size': batch_size,
    'num_params': jax_step.num_params,
    'compile_seconds': jax_step.compile_seconds,
    'flops_per_step': jax_step.flops,
  }
  for name, seconds in times.items():
    median = float(np.median(seconds))
    entry = {
      'step_seconds_median': median,
      'step_seconds': seconds,
      'images_per_second': batch_size / median,
      'achieved_flops_per_second': jax_step.flops / median,
    }
    if peak:
      entry['mfu'] = jax_step.flops / median / peak
    result[name] = entry
  if 'torch' in result:
    result['torch'].update(torch_info)
    result['jax_over_torch'] = (
      result['jax']['images_per_second'] / result['torch']['images_per_second']
    )
  return result


def environment() -> dict[str, Any]:
  info = {
    'date_utc': time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime()),
    'python': platform.python_version(),
    'jax': jax.__version__,
    'backend': jax.default_backend(),
    'device_kind': jax.devices()[0].device_kind,
    'device_count': jax.device_count(),
    'processor': _cpu_model(),
  }
  import flax  # noqa: PLC0415

  info['flax'] = flax.__version__
  if _COMPARE_TORCH.value:
    import torch  # noqa: PLC0415

    info['torch'] = torch.__version__
    info['torch_threads'] = torch.get_num_threads()
  return info


def _cpu_model() -> str:
  try:
    for line in pathlib.Path('/proc/cpuinfo').read_text().splitlines():
      if line.startswith('model name'):
        return line.split(':', 1)[1].strip()
  except OSError:
    pass
  return platform.processor()


def _fmt(value: float | None, scale: float = 1.0, digits: int = 2) -> str:
  return '-' if value is None else f'{value / scale:.{digits}f}'


def print_table(results: dict[str, Any]) -> None:
  env = results['environment']
  print(
    f'\n{env["device_kind"]} x{env["device_count"]} ({env["backend"]}, {env["processor"]}), '
    f'jax {env["jax"]}, flax {env["flax"]}' + (f', torch {env["torch"]}' if 'torch' in env else '')
  )
  print(
    '| res | batch | JAX img/s | PyTorch img/s | JAX/PyTorch | JAX step ms | GFLOP/step '
    '| JAX GFLOP/s | MFU |'
  )
  print('|---|---|---|---|---|---|---|---|---|')
  for row in results['train']:
    torch_row = row.get('torch', {})
    print(
      f'| {row["resolution"]} | {row["batch_size"]} | {row["jax"]["images_per_second"]:.2f} '
      f'| {_fmt(torch_row.get("images_per_second"))} | {_fmt(row.get("jax_over_torch"))} '
      f'| {row["jax"]["step_seconds_median"] * 1e3:.0f} | {row["flops_per_step"] / 1e9:.1f} '
      f'| {row["jax"]["achieved_flops_per_second"] / 1e9:.1f} '
      f'| {_fmt(row["jax"].get("mfu"), 0.01, 1)}{"%" if "mfu" in row["jax"] else ""} |'
    )
  if results.get('predict'):
    p = results['predict']
    memory = (
      f'device peak {p["device_peak_bytes"] / 2**20:.0f} MiB'
      if p['device_peak_bytes']
      else f'peak RSS {p["peak_rss_mib"]:.0f} MiB (before: {p["rss_before_mib"]:.0f} MiB)'
    )
    print(
      f'\npredict {p["image_px"]}x{p["image_px"]} (tile {p["tile_size"]}, overlap '
      f'{p["tile_overlap"]}): {p["seconds_per_megapixel"]:.2f} s/MP, {memory}'
    )
  if results.get('predict_vs_torch'):
    c = results['predict_vs_torch']
    print(
      f'\npredict {c["width"]}x{c["height"]} ({c["megapixels"]:.1f} MP, tile {c["tile_size"]}, '
      f'overlap {c["tile_overlap"]}, {c["jax"]["batch_tiles"]} tiles per call), each in its own '
      'process:'
    )
    print('| | s/MP | peak RSS MiB | RSS before the photo MiB |')
    print('|---|---|---|---|')
    for name, label in (('jax', 'JAX'), ('torch', 'PyTorch')):
      p = c[name]
      print(
        f'| {label} | {p["seconds_per_megapixel"]:.3f} | {p["peak_rss_mib"]:.0f} '
        f'| {p["rss_before_photo_mib"]:.0f} |'
      )
    print(f'JAX / PyTorch (speed): {c["jax_over_torch"]:.2f}')
  if results.get('pipeline'):
    q = results['pipeline']
    consumed = results['train'][-1]['jax']['images_per_second']
    print(
      f'pipeline ({q["dataset"]}, crop {q["crop_size"]}, {q["num_workers"]} workers): '
      f'{q["pairs_per_second"]:.1f} pairs/s; the step at {results["train"][-1]["resolution"]} px '
      f'consumes {consumed:.1f} pairs/s ({q["pairs_per_second"] / consumed:.1f}x headroom)'
    )


def main(argv: list[str]) -> None:
  del argv
  config = _CONFIG.value
  if _L1_ONLY.value:
    for term in ('l2', 'charbonnier', 'ssim', 'ms_ssim', 'perceptual'):
      config.loss[term] = 0.0
    config.loss.l1 = 1.0
  resolutions = [int(r) for r in _RESOLUTION.value] or [config.data.crop_size]
  batch_size = _BATCH.value or config.batch_size
  results: dict[str, Any] = {'environment': environment(), 'config': config.to_dict()}
  peak = peak_flops(config)
  results['peak_flops'] = peak
  compare_mp = _COMPARE_PREDICT_MP.value if _COMPARE_TORCH.value else 0
  if _PREDICT_SIZE.value or compare_mp:
    model = create_model(config.model, task=config.task)
    zeros = jnp.zeros((1, 64, 64, config.model.in_channels), jnp.float32)
    variables = jax.jit(model.init)(jax.random.key(config.seed), zeros)
  if _PREDICT_SIZE.value:
    # Before any training step, so that the process's peak RSS is predict's own.
    results['predict'] = benchmark_predict(config, model, variables, _PREDICT_SIZE.value)
  if compare_mp:
    # In processes of their own, started before this one holds any training state.
    results['predict_vs_torch'] = compare_predict(config, variables, compare_mp)
  results['train'] = []
  for resolution in resolutions:
    row = benchmark_resolution(config, resolution, batch_size, peak)
    results['train'].append(row)
    ratio = f', JAX/PyTorch {row["jax_over_torch"]:.2f}' if 'jax_over_torch' in row else ''
    print(
      f'{resolution} px: JAX {row["jax"]["images_per_second"]:.2f} img/s'
      + (f', PyTorch {row["torch"]["images_per_second"]:.2f} img/s' if 'torch' in row else '')
      + ratio,
      flush=True,
    )
  if _PIPELINE_SECONDS.value:
    pipeline_config = config.copy_and_resolve_references()
    pipeline_config.batch_size = batch_size
    pipeline_config.data.crop_size = resolutions[-1]
    results['pipeline'] = benchmark_pipeline(pipeline_config, _PIPELINE_SECONDS.value)
  print_table(results)
  path = pathlib.Path(_JSON_OUT.value)
  path.write_text(json.dumps(results, indent=2, default=str))
  print(f'\nwrote {path}')


if __name__ == '__main__':
  app.run(main)
