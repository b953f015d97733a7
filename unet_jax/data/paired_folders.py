"""Folders of (input, target) pairs -> a tfds dataset of ArrayRecord files, checked pair by pair.

The layouts and the cheap checks are in folder_scan.py. Files are stored as they are (encoded
bytes, no TensorFlow), one record per pair in sorted order. The tfds config name is the
folder's name plus a fingerprint of the listing (paths, sizes, mtimes), so a second run reuses
the prepared files and any change to the folder prepares a fresh copy. Every pair is decoded
before it is written; bad pairs are listed in the dataset's metadata and either stop the build
(`bad_pair_policy='error'`) or are left out ('skip').
"""

import contextlib
import dataclasses
import fcntl
import os
import re
from collections.abc import Iterator
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from unet_jax.data.errors import DataError
from unet_jax.data.folder_scan import FolderScan, Pair, check_pair, report, scan_folder
from unet_jax.data.images import DEFAULT_MAX_PIXELS, DEFAULT_WORKING_SPACE
from unet_jax.options import BAD_PAIR_POLICIES


@dataclasses.dataclass(eq=False)
class PairedFoldersConfig(tfds.core.BuilderConfig):
  scan: FolderScan | None = dataclasses.field(default=None, repr=False)
  bad_pair_policy: str = 'error'
  working_space: str = DEFAULT_WORKING_SPACE
  max_pixels: int = DEFAULT_MAX_PIXELS


class PairedFolders(tfds.core.GeneratorBasedBuilder):
  """tfds builder for a folder of pairs; one config per (folder, listing) fingerprint."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Encoded input and target bytes, one record per pair, sorted.'}

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> None:
    # tfds' lookup of the builder's source file imports `importlib_resources`, which is not
    # among its dependencies; the path only serves to find a checksums file we do not have.
    return None

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
      builder=self,
      description='Pairs of (input, target) image files, stored encoded as they were.',
      features=tfds.features.FeaturesDict(
        {
          'input': tfds.features.Tensor(shape=(), dtype=np.object_),
          'target': tfds.features.Tensor(shape=(), dtype=np.object_),
          'name': tfds.features.Text(),
        }
      ),
      metadata=tfds.core.MetadataDict(),
      # Records stay in sorted order: eval order is stable and metadata rows match indices.
      disable_shuffling=True,
    )

  def _split_generators(self, dl_manager: Any) -> dict[str, Iterator]:
    scan = self.builder_config.scan
    self.info.metadata['root'] = scan.root
    self.info.metadata['problems'] = list(scan.problems)
    self.info.metadata['ignored_files'] = scan.ignored_files
    self.info.metadata['records'] = {}
    self.info.metadata['colour'] = {}
    return {
      split: self._generate_examples(split, pairs) for split, pairs in scan.splits.items() if pairs
    }

  def _generate_examples(self, split: str, pairs: list[Pair]) -> Iterator[tuple[str, dict]]:
    records, problems, colour = [], [], []
    for index, pair in enumerate(pairs):
      try:
        checked = check_pair(
          pair, self.builder_config.working_space, self.builder_config.max_pixels
        )
      except DataError as error:
        problems.append({'split': split, 'name': pair.name, 'message': str(error)})
        continue
      records.append([pair.name, checked.height, checked.width])
      colour.append(checked.colour)
      record = {'input': checked.input_bytes, 'target': checked.target_bytes, 'name': pair.name}
      yield f'{index:08d}', record
    if problems and self.builder_config.bad_pair_policy == 'error':
      raise DataError(report(problems, _header(self.builder_config.scan.root, len(problems))))
    self.info.metadata['problems'].extend(problems)
    self.info.metadata['records'][split] = records
    self.info.metadata['colour'][split] = colour


def _header(root: str, count: int) -> str:
  return (
    f"{count} bad pair(s) in {root} (config.data.bad_pair_policy='error'; fix them, or set "
    "it to 'skip' to leave them out):"
  )


@dataclasses.dataclass
class PreparedFolders:
  """A prepared pairs folder: the tfds builder plus what its metadata says about each split."""

  builder: Any
  root: str
  records: dict[str, list[tuple[str, int, int]]]  # split -> (name, height, width) per index
  problems: list[dict[str, str]]
  ignored_files: int
  # split -> [input profile, target profile, input clipped, target clipped] per index;
  # a profile of None means untagged (read as sRGB).
  colour: dict[str, list[list]] = dataclasses.field(default_factory=dict)
  working_space: str = DEFAULT_WORKING_SPACE

  def source(self, split: str) -> Any:
    return self.builder.as_data_source(split)


@contextlib.contextmanager
def file_lock(path: str) -> Iterator[None]:
  """An exclusive lock between processes of this machine (hosts preparing the same folder)."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, 'w') as handle:
    fcntl.flock(handle, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(handle, fcntl.LOCK_UN)


# Prepared builders of this process by (data_dir, config name); the name changes with the files.
_BUILDERS: dict[tuple[str, str], Any] = {}


def _config_name(root: str, fingerprint: str, working_space: str, max_pixels: int) -> str:
  base = re.sub(r'[^a-z0-9]+', '_', os.path.basename(root).lower()).strip('_')[:40] or 'pairs'
  # The colour checks depend on the working space, the size check on the pixel limit; the
  # defaults keep the earlier names.
  space = '' if working_space == DEFAULT_WORKING_SPACE else f'_{working_space}'
  limit = '' if max_pixels == DEFAULT_MAX_PIXELS else f'_max{max_pixels}'
  return f'{base}_{fingerprint}{space}{limit}'


def prepare(
  root: str,
  data_dir: str,
  bad_pair_policy: str = 'error',
  working_space: str = DEFAULT_WORKING_SPACE,
  max_pixels: int = DEFAULT_MAX_PIXELS,
) -> PreparedFolders:
  """Checks every pair of `root` and writes the ArrayRecord files once; reuses them after.

  Raises DataError listing the bad pairs under the 'error' policy: listing problems (no partner,
  empty file) before anything is decoded, decode problems (truncated, not an image, sizes that
  differ) after one pass over the files.
  """
  if bad_pair_policy not in BAD_PAIR_POLICIES:
    raise DataError(
      f'config.data.bad_pair_policy={bad_pair_policy!r} is not one of {list(BAD_PAIR_POLICIES)}.'
    )
  scan = scan_folder(root)
  if scan.problems and bad_pair_policy == 'error':
    raise DataError(report(scan.problems, _header(scan.root, len(scan.problems))))
  name = _config_name(scan.root, scan.fingerprint, working_space, max_pixels)
  data_dir = os.path.abspath(os.fspath(data_dir))
  builder = _BUILDERS.get((data_dir, name))
  if builder is None:
    config = PairedFoldersConfig(
      name=name,
      scan=scan,
      bad_pair_policy=bad_pair_policy,
      working_space=working_space,
      max_pixels=max_pixels,
    )
    with file_lock(os.path.join(data_dir, 'paired_folders', f'.{name}.lock')):
      builder = PairedFolders(config=config, data_dir=data_dir, file_format='array_record')
      if not builder.is_prepared():
        tfds.disable_progress_bar()
        builder.download_and_prepare()
    _BUILDERS[(data_dir, name)] = builder
  metadata = builder.info.metadata
  problems = list(metadata.get('problems', []))
  if problems and bad_pair_policy == 'error':
    # Prepared earlier under 'skip': the same pairs are still bad.
    raise DataError(report(problems, _header(scan.root, len(problems))))
  records = {
    split: [tuple(row) for row in rows] for split, rows in metadata.get('records', {}).items()
  }
  colour = {split: [list(r) for r in rows] for split, rows in metadata.get('colour', {}).items()}
  return PreparedFolders(
    builder,
    scan.root,
    records,
    problems,
    metadata.get('ignored_files', 0),
    colour,
    working_space,
  )
