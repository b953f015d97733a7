"""Time and peak memory (RSS) of grading one large photo with tiled inference, end to end.

  python -m experiments.predict_memory --config=configs/res256.py --width=5000 --height=3500

Writes a synthetic JPEG of the given size to a temporary folder, then runs `predict_paths` on
it (decode, two-pass or one-pass tiled grading, PNG encode) with a random-init model of the
config: the weights do not change the cost. Peak RSS is the process's high-water mark
(`resource.getrusage`), so run it in a fresh process; it is printed next to the RSS before
grading (Python, jax and the model) to show what the photo itself adds.
"""

import json
import pathlib
import resource
import tempfile
import time

import jax
import jax.numpy as jnp
from absl import app, flags
from ml_collections import config_flags

from experiments.synthetic_photo import synthetic_photo
from unet_jax.inference import files, tiling
from unet_jax.models import create_model

_CONFIG = config_flags.DEFINE_config_file(
  'config', 'configs/res256.py', 'Model and predict config.'
)
_WIDTH = flags.DEFINE_integer('width', 5000, 'Photo width (px).')
_HEIGHT = flags.DEFINE_integer('height', 3500, 'Photo height (px).')
_JSON_OUT = flags.DEFINE_string('json-out', None, 'Also write the figures to this JSON file.')


def peak_rss_mb() -> float:
  # Linux reports ru_maxrss in KiB.
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv: list[str]) -> None:
  del argv
  config = _CONFIG.value
  model = create_model(config.model, task=config.task)
  variables = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 64, 64, 3)))
  with tempfile.TemporaryDirectory() as root:
    source = pathlib.Path(root, 'in')
    source.mkdir()
    synthetic_photo(_HEIGHT.value, _WIDTH.value).save(source / 'photo.jpg', quality=92)
    before = peak_rss_mb()
    start = time.perf_counter()
    summary = files.predict_paths(
      config, model, variables, str(source), str(pathlib.Path(root, 'out'))
    )
    seconds = time.perf_counter() - start
    assert not summary['failed'], summary['failed']
  tile, overlap = config.predict.tile_size, config.predict.tile_overlap
  multiple = 2**config.model.levels
  tiles = len(tiling.tile_offsets(_HEIGHT.value, tile, overlap, multiple)) * len(
    tiling.tile_offsets(_WIDTH.value, tile, overlap, multiple)
  )
  print(
    f'{_WIDTH.value}x{_HEIGHT.value} photo, model levels={config.model.levels} '
    f'base={config.model.base_channels} global_context={config.model.global_context}, '
    f'tile {tile} overlap {overlap} batch_tiles {config.predict.batch_tiles} ({tiles} tiles), '
    f'{jax.devices()[0].platform} x{jax.device_count()}: {seconds:.1f} s (compile included), '
    f'peak RSS {peak_rss_mb():.0f} MiB (before grading: {before:.0f} MiB)'
  )
  if _JSON_OUT.value:
    stats = jax.devices()[0].memory_stats() or {}
    figures = {
      'width': _WIDTH.value,
      'height': _HEIGHT.value,
      'megapixels': _WIDTH.value * _HEIGHT.value / 1e6,
      'tiles': tiles,
      'tile_size': tile,
      'tile_overlap': overlap,
      'batch_tiles': config.predict.batch_tiles,
      'backend': jax.default_backend(),
      'seconds_with_compile': seconds,
      'peak_rss_mib': peak_rss_mb(),
      'rss_before_mib': before,
      'device_peak_bytes': stats.get('peak_bytes_in_use'),
    }
    pathlib.Path(_JSON_OUT.value).write_text(json.dumps(figures, indent=2))


if __name__ == '__main__':
  app.run(main)
