"""From `config.data` to prepared, checked random-access sources, one per split.

`config.data.name`:
- 'builtin': the default dataset (see builtin.py), for the enhance and denoise tasks.
- 'paired_folders': the user's pairs under `config.data.dir` (see paired_folders.py).
- any other name: a tfds dataset with image and mask for the segment task (see segmentation.py).

Denoising uses clean photos only: the untouched photos of 'builtin' (its inputs), the target
side of paired folders.
"""

import dataclasses
import hashlib
import os
from typing import Any

import ml_collections

from unet_jax import paths
from unet_jax.data import builtin, images, paired_folders, segmentation
from unet_jax.data.errors import DataError
from unet_jax.data.folder_scan import report

PAIR_DATASETS = ('builtin', 'paired_folders')


class SubsetSource:
  """Some records of a source, by index; picklable, with a stable repr for grain."""

  def __init__(self, source: Any, indices: list[int]):
    self._source = source
    self._indices = list(indices)

  def __len__(self) -> int:
    return len(self._indices)

  def __getitem__(self, index: int) -> Any:
    return self._source[self._indices[index]]

  def __repr__(self) -> str:
    digest = hashlib.sha256(repr(self._indices).encode()).hexdigest()[:12]
    return f'SubsetSource({self._source!r}, {len(self._indices)} records, indices={digest})'


@dataclasses.dataclass
class Split:
  """A split ready for grain: its source, and record names/sizes when known."""

  source: Any
  sizes: list[tuple[str, int, int]] | None  # (name, height, width) per record
  skipped: list[dict[str, str]]  # records left out for this use (crop too big)


def tfds_dir(config: ml_collections.ConfigDict, workdir: str | None = None) -> str:
  """The one decision of where prepared tfds (ArrayRecord) files live.

  The built-in dataset is the same for every run, so it is prepared once in the cache
  (`cache_dir('data', 'tfds')`). Otherwise `config.data.tfds_data_dir` if set; else
  `<workdir>/tfds` (a run's own copy of its folders), or the cache when there is no workdir.
  """
  if config.data.name == 'builtin':
    return str(paths.cache_dir('data', 'tfds'))
  if config.data.tfds_data_dir:
    return config.data.tfds_data_dir
  if workdir is not None:
    return os.path.join(workdir, 'tfds')
  return str(paths.cache_dir('data', 'tfds'))


@dataclasses.dataclass
class PreparedData:
  """A dataset made ready for `config`; `split()` gives grain-ready sources."""

  config: ml_collections.ConfigDict
  data_dir: str
  folders: paired_folders.PreparedFolders | None  # None for tfds segmentation datasets

  def split(self, name: str, *, training: bool) -> Split:
    if self.folders is None:
      source = segmentation.open_split(self.config.data.name, name, self.data_dir)
      if len(source) == 0:
        raise DataError(f'Split {name!r} of {self.config.data.name!r} is empty.')
      return Split(source, None, [])
    rows = self.folders.records.get(name)
    if not rows:
      found = sorted(s for s, r in self.folders.records.items() if r)
      raise DataError(
        f'Split {name!r} of {self.folders.root} has no usable pairs (splits with pairs: '
        f'{found}); check config.data.train_split / config.data.eval_split.'
      )
    keep, skipped = list(range(len(rows))), []
    if training and self.config.data.sampling != 'resize':
      keep, skipped = _fitting(rows, name, self.config, self.folders.root)
    source = self.folders.source(name)
    if len(keep) < len(rows):
      source = SubsetSource(source, keep)
    return Split(source, [rows[i] for i in keep], skipped)


def _fitting(rows, split, config, root) -> tuple[list[int], list[dict[str, str]]]:
  crop = config.data.crop_size
  keep, small = [], []
  for index, (name, height, width) in enumerate(rows):
    if min(height, width) >= crop:
      keep.append(index)
    else:
      small.append(
        {
          'split': split,
          'name': name,
          'message': f'{name} in {root}/{split} is {width}x{height}, smaller than '
          f'config.data.crop_size={crop}.',
        }
      )
  if small and config.data.bad_pair_policy == 'error':
    raise DataError(
      report(
        small,
        f"{len(small)} image(s) smaller than the crop (config.data.bad_pair_policy='error'; "
        "lower config.data.crop_size, use config.data.sampling='resize', or set the policy "
        "to 'skip'):",
      )
    )
  if not keep:
    raise DataError(
      f'Every image of split {split!r} in {root} is smaller than config.data.crop_size={crop}.'
    )
  return keep, small


def prepare(config: ml_collections.ConfigDict, data_dir: str | None = None) -> PreparedData:
  """Builds / prepares what `config.data` names (once; reused after) and checks every pair."""
  data = config.data
  data_dir = os.path.abspath(data_dir or tfds_dir(config))
  if data.name == 'builtin':
    folders = builtin.prepare(data.look, data_dir, builtin.min_side(data))
    return PreparedData(config, data_dir, folders)
  if data.name == 'paired_folders':
    if not data.dir:
      raise DataError("config.data.name='paired_folders' needs config.data.dir (the pairs root).")
    folders = paired_folders.prepare(
      data.dir,
      data_dir,
      data.bad_pair_policy,
      data.working_space,
      data.get('max_pixels', images.DEFAULT_MAX_PIXELS),
    )
    return PreparedData(config, data_dir, folders)
  return PreparedData(config, data_dir, None)


def colour_summary(
  folders: paired_folders.PreparedFolders | None, working_space: str, *, builtin: bool = False
) -> str:
  """What the files' ICC profiles were and what reading them into `working_space` did."""
  head = f'  colour: working space {working_space!r}'
  if builtin or folders is None:
    note = 'untagged sRGB PNGs' if builtin else 'as stored'
    return f'{head}; files {note}.'
  profiles: dict[str, int] = {}
  untagged = mixed = clipped_files = clipped_pixels = 0
  for rows in folders.colour.values():
    for input_profile, target_profile, input_clipped, target_clipped in rows:
      for profile in (input_profile, target_profile):
        untagged += profile is None
        key = profile or 'none'
        profiles[key] = profiles.get(key, 0) + 1
      mixed += input_profile != target_profile
      clipped_files += (input_clipped > 0) + (target_clipped > 0)
      clipped_pixels += input_clipped + target_clipped
  listed = ', '.join(f'{name} x{count}' for name, count in sorted(profiles.items()))
  lines = [f'{head}; profiles: {listed or "-"}.']
  if untagged:
    lines.append(f'  {untagged} file(s) without an ICC profile, read as sRGB.')
  if mixed:
    lines.append(
      f'  {mixed} pair(s) whose input and target carry different profiles, aligned in '
      f'{working_space}.'
    )
  if clipped_files:
    lines.append(
      f'  {clipped_files} file(s) with colours outside {working_space}: {clipped_pixels} '
      'pixel(s) clipped to its edge (a wider config.data.working_space keeps them).'
    )
  return '\n'.join(lines)


def dataset_summary(config: ml_collections.ConfigDict, data_dir: str | None = None) -> str:
  """Prepares the data if needed and describes it: splits, sizes, look, what was skipped."""
  prepared = prepare(config, data_dir)
  data = config.data
  lines = [f'Data: {data.name!r} for task {config.task!r}']
  if data.name == 'builtin':
    info = builtin.summary(prepared.folders, data.look, prepared.data_dir, builtin.min_side(data))
    lines.append(builtin.format_summary(info))
  elif prepared.folders is not None:
    lines.append(f'  root: {prepared.folders.root}')
  train = prepared.split(data.train_split, training=True)
  evaluation = prepared.split(data.eval_split, training=False)
  lines.append(
    f'  {data.train_split}: {len(train.source)} records for training; '
    f'{data.eval_split}: {len(evaluation.source)} for eval '
    f'(at {data.eval_size or "full"} size).'
  )
  lines.append(
    f'  sampling {data.sampling!r}, crop {data.crop_size} px, hflip={data.hflip}, '
    f'vflip={data.vflip}, rot90={data.rot90}, rotation <= {data.max_rotation_degrees} deg'
  )
  if data.name == 'builtin' and data.look == 'vignette' and data.sampling == 'crop':
    lines.append(
      "  note: a crop cannot tell where it sits in the frame, so the 'vignette' look needs "
      "config.data.sampling='resize' or 'mixed' to be learnt."
    )
  lines.append(colour_summary(prepared.folders, data.working_space, builtin=data.name == 'builtin'))
  if train.sizes:
    heights = [row[1] for row in train.sizes]
    widths = [row[2] for row in train.sizes]
    lines.append(f'  train sizes: {min(widths)}..{max(widths)} x {min(heights)}..{max(heights)}')
  if prepared.folders is not None:
    skipped = prepared.folders.problems + train.skipped
    if skipped:
      lines.append(report(skipped, f'  skipped {len(skipped)} bad pair(s):'))
    if prepared.folders.ignored_files:
      lines.append(f'  ignored {prepared.folders.ignored_files} non-image file(s).')
  return '\n'.join(lines)


def build_default_dataset(look: str = builtin.looks.DEFAULT_LOOK) -> dict[str, Any]:
  """Builds (offline, once) and prepares the built-in dataset; prints and returns its summary.

  `python -c "from unet_jax.data import build_default_dataset; build_default_dataset()"`
  """
  config = ml_collections.ConfigDict({'data': {'name': 'builtin', 'tfds_data_dir': None}})
  data_dir = tfds_dir(config)
  info = builtin.summary(builtin.prepare(look, data_dir), look, data_dir)
  print(builtin.format_summary(info))
  return info
