"""grain pipelines: source -> decode (cached up to `data.photo_cache_mb`) -> shuffled positions ->
paired augmentation -> host batches.

The training stream is defined globally and cut per host, so that what a record looks like
never depends on the process or worker count:

- positions `0, 1, 2, ...` walk the records in a fresh permutation per epoch (`config.seed`);
- a record's random crop/flip/rotation/noise is drawn from its global position;
- global batch `t` is positions `[t * B, (t + 1) * B)`, and host `i` of `P` takes the block of
  `b = B // P` rows starting at `t * B + i * b`, so the rows of all hosts, concatenated in
  process order (as `jax.make_array_from_process_local_data` does), are the single-host batch;
- batches are formed before the worker processes split the work, so they do not change with
  `config.data.num_workers` either (a saved data position still needs the same worker count).
"""

from typing import Any

import grain
import ml_collections
from absl import flags

from unet_jax.data import segmentation, sources
from unet_jax.data.errors import DataError
from unet_jax.data.photo_cache import CachedPhotos
from unet_jax.data.transforms import AddWholePhoto, DecodePair, EvalExample, PairedAugment
from unet_jax.whole_photo import WholePhotoInputs

_SEED_MODULUS = 2**32


def _decoder(config: ml_collections.ConfigDict) -> grain.transforms.Map:
  if config.task == 'segment':
    spec = segmentation.spec_for(config.data.name)
    return segmentation.DecodeSegmentation(
      spec, spec.num_classes or config.model.num_classes, config.loss.ignore_label
    )
  space = config.data.working_space
  if config.task == 'denoise':
    clean_key = 'input' if config.data.name == 'builtin' else 'target'
    return DecodePair(clean_key=clean_key, working_space=space)
  return DecodePair(working_space=space)


def _noise_sigma(config: ml_collections.ConfigDict) -> float | None:
  return float(config.data.noise_sigma) if config.task == 'denoise' else None


def host_batch_size(config: ml_collections.ConfigDict, process_count: int) -> int:
  if config.batch_size <= 0 or config.batch_size % process_count:
    raise DataError(
      f'config.batch_size={config.batch_size} is global and must be a positive multiple of '
      f'the process count {process_count}.'
    )
  return config.batch_size // process_count


def _read_options(config: ml_collections.ConfigDict) -> grain.ReadOptions:
  buffer = config.data.prefetch_buffer_size
  return grain.ReadOptions(num_threads=max(1, buffer), prefetch_buffer_size=buffer)


def train_dataset(
  config: ml_collections.ConfigDict,
  *,
  process_index: int,
  process_count: int,
  data_dir: str | None = None,
) -> grain.IterDataset:
  """The infinite training `IterDataset` of this host (see the module doc for the layout)."""
  if not 0 <= process_index < process_count:
    raise DataError(f'process_index={process_index} is not in [0, {process_count}).')
  batch = host_batch_size(config, process_count)
  split = sources.prepare(config, data_dir).split(config.data.train_split, training=True)
  data = config.data
  augment = PairedAugment(
    crop_size=data.crop_size,
    sampling=data.sampling,
    hflip=data.hflip,
    vflip=data.vflip,
    rot90=data.rot90,
    max_rotation_degrees=float(data.max_rotation_degrees),
    noise_sigma=_noise_sigma(config),
  )
  seed = config.seed % _SEED_MODULUS
  # Decoding and metering are deterministic per record, so they may come before the shuffle
  # (and be cached) without changing the stream.
  photos = (
    grain.MapDataset.source(split.source)
    .map(_decoder(config))
    .map(
      AddWholePhoto(
        WholePhotoInputs.from_model_config(config.model).in_training_batches(),
        target_thumbnail=config.task != 'segment' and config.loss.get('whole_photo_grade', 0.0) > 0,
      )
    )
  )
  if data.photo_cache_mb > 0:
    photos = CachedPhotos(photos, data.photo_cache_mb)
  dataset = (
    photos.shuffle(seed=seed)
    .repeat()
    .random_map(augment, seed=(seed + 1) % _SEED_MODULUS)
    .batch(batch, drop_remainder=True)[process_index::process_count]
    .to_iter_dataset(_read_options(config))
  )
  if data.num_workers > 0:
    # grain reads absl flags in its workers; outside `absl.app.run` (tests, notebooks) they
    # have not been parsed, and their defaults are what we want.
    if not flags.FLAGS.is_parsed():
      flags.FLAGS.mark_as_parsed()
    dataset = dataset.mp_prefetch(
      grain.MultiprocessingOptions(
        num_workers=data.num_workers, per_worker_buffer_size=max(1, data.prefetch_buffer_size)
      )
    )
  return dataset


def create_train_iterator(
  config: ml_collections.ConfigDict,
  *,
  process_index: int,
  process_count: int,
  data_dir: str | None = None,
) -> grain.DatasetIterator:
  """Infinite iterator of this host's batches, as numpy arrays, b = batch_size // process_count.

  enhance / denoise: `{'input', 'target'}` float32 `[b, crop, crop, 3]` in [0, 1] (denoise:
  input = target + noise); segment: `{'input'}` and `{'mask'}` int32 `[b, crop, crop]`. And
  the whole-photo inputs the model reads that the crop cannot give
  (`whole_photo.WholePhotoInputs.in_training_batches`): `'thumbnail'` `[b, T, T, 3]` and
  `'statistics'` `[b, 8]` of each whole input photo, `'coords'` `[b, crop, crop, 2]`. Its
  `get_state()` / `set_state()` (or orbax `grain.checkpoint.CheckpointSave/Restore`) resume at
  exactly the next batch.
  """
  dataset = train_dataset(
    config, process_index=process_index, process_count=process_count, data_dir=data_dir
  )
  return iter(dataset)


class _NameFallback(grain.transforms.MapWithIndex):
  """Gives nameless records (some tfds datasets) a stable name from their index."""

  def map_with_index(self, index: int, example: dict[str, Any]) -> dict[str, Any]:
    if not example.get('name'):
      example = dict(example, name=f'{index:05d}')
    return example


def eval_dataset(
  config: ml_collections.ConfigDict,
  *,
  data_dir: str | None = None,
  process_index: int = 0,
  process_count: int = 1,
) -> grain.IterDataset:
  """Every image of `config.data.eval_split` once, unbatched, in a fixed order (see below)."""
  split = sources.prepare(config, data_dir).split(config.data.eval_split, training=False)
  finish = EvalExample(eval_size=config.data.eval_size, noise_sigma=_noise_sigma(config))
  dataset = (
    grain.MapDataset.source(split.source)
    .map(_decoder(config))
    .map_with_index(_NameFallback())
    .map(finish)[process_index::process_count]
  )
  return dataset.to_iter_dataset(_read_options(config))


def create_eval_iterator(
  config: ml_collections.ConfigDict,
  *,
  data_dir: str | None = None,
  process_index: int = 0,
  process_count: int = 1,
) -> grain.IterDataset:
  """Iterable of single eval examples: `{'input': float32 [H, W, 3], 'target' [H, W, 3] or
  'mask' int32 [H, W], 'name': str}`; deterministic, each image of the eval split once (records
  `process_index::process_count` on a host); full size unless `config.data.eval_size` (longer
  side, aspect kept). Denoising noise is seeded per image name.
  """
  return eval_dataset(
    config, data_dir=data_dir, process_index=process_index, process_count=process_count
  )
