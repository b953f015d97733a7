"""Decoded + augmented training pairs per second of the grain pipeline, by worker count and crop.

Two datasets, both prepared with the real code path (tfds ArrayRecord -> grain):
- `builtin`: the default dataset (PNG, longer side <= 512 px), look 'local_contrast';
- `jpeg1536`: the package photos enlarged to a 1536 px longer side and saved as JPEG (q95),
  target graded with 'warm_film': the size of a typical user's exported pair.

  python -m experiments.data_throughput --workers=0,1,2 --crops=256,512 --seconds=10

Worker count 0 decodes in the main process (grain threads only). Each figure is pairs per
second over `--seconds` after a warm-up batch (which also starts the worker processes), the
best of `--repeats` runs.
"""

import os
import pathlib
import shutil
import tempfile
import time

import numpy as np
from absl import app, flags
from PIL import Image

from unet_jax.config import get_base_config
from unet_jax.data import builtin, create_train_iterator, load_image, looks
from unet_jax.data.images import to_uint8

_WORKERS = flags.DEFINE_list('workers', ['0', '1', '2', str(os.cpu_count())], 'Worker counts.')
_CROPS = flags.DEFINE_list('crops', ['256', '512'], 'Crop sizes (px).')
_SECONDS = flags.DEFINE_float('seconds', 10.0, 'Measuring time per setting.')
_BATCH = flags.DEFINE_integer('batch_size', 8, 'Batch size.')
_REPEATS = flags.DEFINE_integer(
  'repeats', 3, 'Runs per figure; the best is kept, since other load only ever slows a run.'
)
_LONG_SIDE = 1536


def write_jpeg_pairs(root: pathlib.Path) -> None:
  for name, path in builtin.photo_files().items():
    image = Image.fromarray(to_uint8(load_image(path)))
    scale = _LONG_SIDE / max(image.size)
    image = image.resize(
      (round(image.width * scale), round(image.height * scale)), Image.Resampling.LANCZOS
    )
    pixels = np.asarray(image)
    target = to_uint8(looks.warm_film(pixels.astype(np.float32) / 255))
    split = builtin.split_of(name)
    for side, data in (('input', pixels), ('target', target)):
      out = root / split / side / f'{name}.jpg'
      out.parent.mkdir(parents=True, exist_ok=True)
      Image.fromarray(data).save(out, quality=95)


def measure(config, seconds: float) -> float:
  iterator = create_train_iterator(config, process_index=0, process_count=1)
  next(iterator)  # starts workers and fills the prefetch buffers
  count, start = 0, time.perf_counter()
  while time.perf_counter() - start < seconds:
    count += next(iterator)['input'].shape[0]
  rate = count / (time.perf_counter() - start)
  if hasattr(iterator, 'close'):
    iterator.close()
  return rate


def main(argv):
  del argv
  workdir = pathlib.Path(tempfile.mkdtemp(prefix='data_throughput_'))
  try:
    run(workdir)
  finally:
    shutil.rmtree(workdir, ignore_errors=True)


def run(workdir: pathlib.Path) -> None:
  write_jpeg_pairs(workdir / 'jpeg1536')
  workers = sorted({int(w) for w in _WORKERS.value})
  print(
    f'cpu cores: {os.cpu_count()}, batch {_BATCH.value}, best of {_REPEATS.value} x '
    f'{_SECONDS.value:g} s per figure'
  )
  print('| dataset | crop | ' + ' | '.join(f'{w} workers' for w in workers) + ' |')
  print('|---|---|' + '---|' * len(workers))
  settings = [('builtin', 256)] + [('jpeg1536', int(c)) for c in _CROPS.value]
  for dataset, crop in settings:
    config = get_base_config()
    config.batch_size = _BATCH.value
    config.data.crop_size = crop
    config.data.tfds_data_dir = str(workdir / 'tfds')
    if dataset == 'jpeg1536':
      config.data.name = 'paired_folders'
      config.data.dir = str(workdir / 'jpeg1536')
    rates = []
    for count in workers:
      config.data.num_workers = count
      rates.append(max(measure(config, _SECONDS.value) for _ in range(_REPEATS.value)))
    print(f'| {dataset} | {crop} | ' + ' | '.join(f'{r:.1f}' for r in rates) + ' |', flush=True)


if __name__ == '__main__':
  app.run(main)
