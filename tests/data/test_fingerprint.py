"""The training-data fingerprint: each file's SHA-256 (paths.sha256_file, the checksum the
weights cache and exports use too), reused while a file's size and time are unchanged, and a
changed file named on resume."""

import hashlib
import os

from tests.helpers import tiny_config, write_pairs
from unet_jax.data import fingerprint


def test_the_fingerprint_hashes_each_training_file_and_names_a_changed_one(tmp_path):
  write_pairs(tmp_path, 'train', ['a', 'b'])
  config = tiny_config(**{'data.name': 'paired_folders', 'data.dir': str(tmp_path)})
  before = fingerprint.train_fingerprint(config, None)
  assert sorted(before['files']) == [
    os.path.join('train', side, f'{name}.png') for side in ('input', 'target') for name in 'ab'
  ]
  for relative, entry in before['files'].items():
    content = (tmp_path / relative).read_bytes()
    assert entry['sha256'] == hashlib.sha256(content).hexdigest()
    assert entry['bytes'] == len(content)

  # A recorded hash is reused while the file's size and time are unchanged ...
  reused = {k: {**v, 'sha256': 'recorded'} for k, v in before['files'].items()}
  again = fingerprint.train_fingerprint(config, None, {**before, 'files': reused})
  assert {entry['sha256'] for entry in again['files'].values()} == {'recorded'}
  assert fingerprint.differences(before, fingerprint.train_fingerprint(config, None)) == []

  # ... and a file with other bytes is named.
  write_pairs(tmp_path, 'train', ['b'], seed=1)
  for side in ('input', 'target'):  # times other than the recorded ones, whatever the clock
    os.utime(tmp_path / 'train' / side / 'b.png', ns=(0, 0))
  found = fingerprint.differences(before, fingerprint.train_fingerprint(config, None, before))
  assert found == ['2 training file(s) have other contents (train/input/b.png, train/target/b.png)']
