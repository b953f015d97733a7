"""Predict on photos that are legal but awkward (issue 32): profiles that cannot be written
back, grey or CMYK profiles on RGB pixels, decompression bombs, folders shared by two runs,
a user's own file named like our summary."""

import errno
import json
import multiprocessing
import os
import struct

import numpy as np
import pytest
import pyvips

from tests import photo_files as pf
from tests.helpers import identity_model
from unet_jax.data import DataError, colour_spaces, load_photo
from unet_jax.inference import files, output_files, photo_writer, predict_summary


def _tag_table(profile: bytes) -> list[tuple[bytes, bytes]]:
  (count,) = struct.unpack_from('>I', profile, 128)
  tags = []
  for index in range(count):
    signature, offset, size = struct.unpack_from('>4sII', profile, 132 + 12 * index)
    tags.append((signature, profile[offset : offset + size]))
  return tags


def rebuild_profile(profile: bytes, *, kind: bytes, space: bytes = b'RGB ', tags=None) -> bytes:
  """`profile`'s header with another class and colour space, and the given tag list."""
  tags = _tag_table(profile) if tags is None else tags
  offset = 128 + 4 + 12 * len(tags)
  table, body = b'', b''
  for signature, data in tags:
    table += struct.pack('>4sII', signature, offset + len(body), len(data))
    body += data + b'\0' * (-len(data) % 4)
  header = bytearray(profile[:128])
  header[0:4] = struct.pack('>I', offset + len(body))
  header[8:12] = struct.pack('>I', 0x02100000)  # v2.1: lut16 tags
  header[12:16] = kind
  header[16:20] = space
  header[84:100] = b'\0' * 16  # profile ID: no longer valid
  return bytes(header) + struct.pack('>I', len(tags)) + table + body


def camera_input_profile() -> bytes:
  """A camera's input profile as ArgyllCMS writes them: class `scnr`, A2B0 only (a lut16 from
  RGB to PCS XYZ), no B2A table and no matrix, so nothing can be converted into it."""
  srgb = colour_spaces.profile_bytes('srgb')
  colorants = np.array(
    [[0.4361, 0.3851, 0.1431], [0.2225, 0.7169, 0.0606], [0.0139, 0.0971, 0.7141]]
  )
  identity = struct.pack('>9i', *[65536 if i in (0, 4, 8) else 0 for i in range(9)])
  ramp = struct.pack('>2H', 0, 65535) * 3
  grid = []
  for r in (0, 1):
    for g in (0, 1):
      for b in (0, 1):
        xyz = colorants @ np.array([r, g, b], float)
        grid += [min(65535, round(v * 32768)) for v in xyz]
  clut = struct.pack(f'>{len(grid)}H', *grid)
  a2b0 = b'mft2\0\0\0\0' + bytes([3, 3, 2, 0]) + identity + struct.pack('>2H', 2, 2)
  a2b0 += ramp + clut + ramp
  keep = [(s, d) for s, d in _tag_table(srgb) if s in (b'desc', b'wtpt', b'cprt')]
  return rebuild_profile(srgb, kind=b'scnr', tags=[*keep, (b'A2B0', a2b0)])


def grey_profile() -> bytes:
  """A grey display profile (a gamma 2.2 curve), such as a scanner's greyscale mode writes."""
  srgb = colour_spaces.profile_bytes('srgb')
  keep = [(s, d) for s, d in _tag_table(srgb) if s in (b'desc', b'wtpt', b'cprt')]
  curve = b'curv\0\0\0\0' + struct.pack('>IH', 1, 563)
  return rebuild_profile(srgb, kind=b'mntr', space=b'GRAY', tags=[*keep, (b'kTRC', curve)])


def with_icc(path, profile: bytes) -> None:
  """Embeds `profile` in a JPEG as its APP2 ICC_PROFILE segment, whatever its colour space
  (libvips drops a profile that does not fit the pixels when it saves, a camera need not)."""
  data = path.read_bytes()
  chunks = [profile[i : i + 65000] for i in range(0, len(profile), 65000)]
  segments = b''
  for index, chunk in enumerate(chunks, start=1):
    payload = b'ICC_PROFILE\0' + bytes([index, len(chunks)]) + chunk
    segments += b'\xff\xe2' + struct.pack('>H', len(payload) + 2) + payload
  path.write_bytes(data[:2] + segments + data[2:])


@pytest.fixture(scope='module')
def srgb_identity():
  return identity_model('srgb')


def test_the_camera_profile_reads_but_cannot_be_written_into():
  profile = camera_input_profile()
  assert 'input' in photo_writer.unwritable_reason(profile)
  assert photo_writer.unwritable_reason(colour_spaces.profile_bytes('display_p3')) is None
  image = pyvips.Image.new_from_array(np.zeros((1, 1, 3), np.uint16)).copy(interpretation='rgb16')
  with pytest.raises(pyvips.Error):  # what 70e8f58 did with it, and died
    image.icc_transform(colour_spaces.profile_file(profile, 'camera'), input_profile='srgb')


def test_a_camera_profile_photo_is_written_in_the_working_space_and_the_folder_finishes(
  srgb_identity, tmp_path
):
  config, model, variables = srgb_identity
  source, out = tmp_path / 'in', tmp_path / 'out'
  values = pf.colourful(24, 32, 16)
  pf.write(source / 'a_camera.tif', values, profile=camera_input_profile())
  pf.write(source / 'b_plain.png', pf.colourful(24, 32, 8, seed=2))

  summary = files.predict_paths(config, model, variables, str(source), str(out))

  assert summary['complete'] and not summary['failed']
  assert sorted(os.path.basename(w['output']) for w in summary['written']) == [
    'a_camera.tif',
    'b_plain.png',
  ]
  camera = next(w for w in summary['written'] if w['input'].endswith('a_camera.tif'))
  assert camera['profile'] == 'sRGB' and "class 'scnr'" in camera['profile_note']
  written = load_photo(out / 'a_camera.tif')
  assert written.profile == colour_spaces.profile_bytes('srgb') and written.bits == 16
  # Identity model: the file holds what reading the input gave, in sRGB.
  expected = load_photo(source / 'a_camera.tif').pixels
  np.testing.assert_allclose(written.pixels, expected, atol=2 / 65535)


def test_a_photo_that_fails_to_encode_is_a_failed_entry_and_the_rest_is_graded(
  srgb_identity, tmp_path, monkeypatch
):
  config, model, variables = srgb_identity
  source, out = tmp_path / 'in', tmp_path / 'out'
  for name in ('a', 'b', 'c'):
    pf.write(source / f'{name}.png', pf.colourful(16, 16, 8, seed=ord(name)))
  real = photo_writer.encode_photo

  def encode(pixels, photo, spec, quality=95):
    if encode.calls == 0:
      encode.calls += 1
      raise pyvips.Error('icc_transform: no output profile')
    return real(pixels, photo, spec, quality)

  encode.calls = 0
  monkeypatch.setattr(photo_writer, 'encode_photo', encode)
  summary = files.predict_paths(config, model, variables, str(source), str(out))
  assert summary['complete']
  assert [os.path.basename(f['input']) for f in summary['failed']] == ['a.png']
  assert 'no output profile' in summary['failed'][0]['reason']
  assert sorted(os.listdir(out)) == ['b.png', 'c.png', predict_summary.SUMMARY_FILE]


@pytest.mark.parametrize('kind', ['grey', 'cmyk'])
def test_a_grey_or_cmyk_profile_on_rgb_pixels_is_not_the_output_profile(
  srgb_identity, tmp_path, kind
):
  config, model, variables = srgb_identity
  source, out = tmp_path / 'in', tmp_path / 'out'
  cmyk = lambda: bytes(pyvips.Operation.call('profile_load', 'cmyk'))
  profile = grey_profile() if kind == 'grey' else cmyk()
  pf.write(source / 'photo.jpg', pf.colourful(24, 32, 8), Q=95)
  with_icc(source / 'photo.jpg', profile)
  assert load_photo(source / 'photo.jpg').profile == profile

  summary = files.predict_paths(config, model, variables, str(source), str(out))

  [entry] = summary['written']
  assert entry['profile'] == 'sRGB'
  assert ('GRAY' if kind == 'grey' else 'CMYK') in entry['profile_note']
  written = load_photo(out / 'photo.jpg')
  assert written.profile == colour_spaces.profile_bytes('srgb')
  assert written.colours == 'rgb'
  expected = load_photo(source / 'photo.jpg').pixels
  # A colour JPEG of the colours read (70e8f58 wrote a grey one: about 14 dB from its input).
  mse = float(np.mean((written.pixels - expected) ** 2))
  assert 10 * np.log10(1 / mse) > 35


# ----------------------------------------------------------------- decompression bomb


def test_a_decompression_bomb_is_refused_from_its_header_naming_the_option(srgb_identity, tmp_path):
  config, model, variables = srgb_identity
  source, out = tmp_path / 'in', tmp_path / 'out'
  source.mkdir()
  (source / 'bomb.jpg').write_bytes(pf.bomb_jpeg())
  pf.write(source / 'fine.png', pf.colourful(16, 16, 8))
  summary = files.predict_paths(config, model, variables, str(source), str(out))
  [failed] = summary['failed']
  assert '65000x65000' in failed['reason'] and 'config.data.max_pixels' in failed['reason']
  assert [os.path.basename(w['output']) for w in summary['written']] == ['fine.png']
  # The limit is the option's: a lower one refuses ordinary photos too.
  with pytest.raises(DataError, match='config.data.max_pixels=100'):
    load_photo(source / 'fine.png', max_pixels=100)


# ----------------------------------------------------------------- two runs, one folder


def _slow_png_grade(path):
  import time

  time.sleep(0.05)
  return (source_bytes := open(path, 'rb').read()), {'size': len(source_bytes)}


def _finish_folder(inputs, outputs, output_dir):
  files.run_batch(inputs, outputs, output_dir, _slow_png_grade, skip_existing=True)


@pytest.mark.filterwarnings('ignore:os.fork')
def test_two_skip_existing_runs_into_one_folder_write_no_duplicates(tmp_path):
  source, out = tmp_path / 'in', tmp_path / 'out'
  names = [f'p{i:02d}.png' for i in range(16)]
  for index, name in enumerate(names):
    pf.write(source / name, pf.colourful(4, 4, 8, seed=index))
  inputs = [str(source / n) for n in names]
  outputs = [str(out / n) for n in names]
  context = multiprocessing.get_context('fork')
  runs = [context.Process(target=_finish_folder, args=(inputs, outputs, str(out))) for _ in '12']
  for run in runs:
    run.start()
  for run in runs:
    run.join(60)
    assert run.exitcode == 0
  assert sorted(n for n in os.listdir(out) if not n.startswith(('.', 'predict'))) == names


def test_a_claim_left_by_a_dead_run_is_taken_over(tmp_path):
  planned = str(tmp_path / 'a.png')
  claim = output_files.claim_output(planned)
  assert claim and output_files.claim_output(planned) is not None  # our own pid: not another run
  with open(claim, 'w') as f:
    f.write(str(os.getpid() + 10**6))  # no such process
  assert output_files.claim_output(planned) == claim
  with open(claim, 'w') as f:
    f.write(str(os.getppid()))  # a live process
  assert output_files.claim_output(planned) is None


# ----------------------------------------------------------------- the summary file


def test_a_users_own_predict_summary_json_is_never_overwritten(srgb_identity, tmp_path):
  config, model, variables = srgb_identity
  source, out = tmp_path / 'in', tmp_path / 'out'
  pf.write(source / 'a.png', pf.colourful(16, 16, 8))
  out.mkdir()
  mine = out / predict_summary.SUMMARY_FILE
  mine.write_text('my notes about this shoot\n')
  files.predict_paths(config, model, variables, str(source), str(out))
  assert mine.read_text() == 'my notes about this shoot\n'
  ours = json.loads((out / 'predict_summary-1.json').read_text())
  assert ours['complete'] and len(ours['written']) == 1
  # Our own summary is ours to rewrite on the next run.
  files.predict_paths(config, model, variables, str(source), str(out), skip_existing=True)
  assert json.loads((out / 'predict_summary-1.json').read_text())['skipped']
  assert not (out / 'predict_summary-2.json').exists()


# ----------------------------------------------------------------- not photos


def test_fifos_dangling_links_and_linked_folders_are_listed_as_skipped_with_why(
  srgb_identity, tmp_path
):
  config, model, variables = srgb_identity
  source, out = tmp_path / 'in', tmp_path / 'out'
  pf.write(source / 'sub' / 'real.png', pf.colourful(16, 16, 8))
  os.mkfifo(source / 'pipe.jpg')  # reading it would block forever
  os.symlink(tmp_path / 'gone.png', source / 'dangling.png')
  other = tmp_path / 'elsewhere'
  pf.write(other / 'outside.png', pf.colourful(16, 16, 8, seed=3))
  os.symlink(other, source / 'linked')

  summary = files.predict_paths(config, model, variables, str(source), str(out), recursive=True)

  assert [os.path.relpath(w['output'], out) for w in summary['written']] == ['sub/real.png']
  reasons = {os.path.basename(s['input']): s['reason'] for s in summary['skipped']}
  assert reasons == {
    'pipe.jpg': 'not a regular file (a FIFO, socket, device or folder)',
    'dangling.png': 'a link to nothing (dangling)',
    'linked': 'a link to a folder (links are not followed)',
  }
  assert summary['complete'] and not summary['failed']


# ----------------------------------------------------------------- the output folder


def test_a_full_disk_stops_naming_the_path_and_leaves_no_partial_file(tmp_path, monkeypatch):
  out = tmp_path / 'out'
  out.mkdir()
  real = os.fsync

  def full(fd):
    raise OSError(errno.ENOSPC, 'No space left on device')

  monkeypatch.setattr(os, 'fsync', full)
  with pytest.raises(
    output_files.OutputWriteError, match=rf'--output: cannot write {out}/a.png: No space'
  ):
    output_files.write_new_file(str(out / 'a.png'), b'bytes')
  monkeypatch.setattr(os, 'fsync', real)
  assert os.listdir(out) == []
  # Status 2 (a path that cannot be written), as docs/options.md says.
  from unet_jax import cli_errors

  assert cli_errors.exit_code(output_files.OutputWriteError(errno.ENOSPC, '--output: x')) == 2


def test_an_unwritable_output_folder_is_refused_before_any_work(tmp_path, monkeypatch):
  source = tmp_path / 'in'
  pf.write(source / 'a.png', pf.colourful(8, 8, 8))
  locked = tmp_path / 'locked'
  locked.mkdir()
  real = os.access
  # Tests run as root, whom permissions do not stop: the read-only folder is simulated.
  monkeypatch.setattr(
    os, 'access', lambda p, mode: False if str(p) == str(locked) else real(p, mode)
  )
  with pytest.raises(ValueError, match=rf'^--output {locked} is not writable'):
    files.check_paths(str(source), str(locked))
  with pytest.raises(ValueError, match=rf'would be made in {locked}, which is not writable'):
    files.check_paths(str(source), str(locked / 'new' / 'deeper'))


def corrupt_tag_table_profile() -> bytes:
  """Adobe RGB with its curve tags' sizes running far past the end of the file."""
  profile = bytearray(colour_spaces.profile_bytes('adobe_rgb'))
  (count,) = struct.unpack_from('>I', profile, 128)
  for index in range(count):
    signature, offset, _ = struct.unpack_from('>4sII', profile, 132 + 12 * index)
    if signature.endswith(b'TRC'):
      struct.pack_into('>4sII', profile, 132 + 12 * index, signature, offset, 0x7FFFFFFF)
  return bytes(profile)


def test_a_jpeg_whose_profile_has_a_corrupt_tag_table_is_written_in_the_working_space(
  srgb_identity, tmp_path
):
  config, model, variables = srgb_identity
  source, out = tmp_path / 'in', tmp_path / 'out'
  pf.write(source / 'a.jpg', pf.colourful(16, 16, 8), Q=95)
  with_icc(source / 'a.jpg', corrupt_tag_table_profile())
  pf.write(source / 'b.jpg', pf.colourful(16, 16, 8, seed=1), Q=95)
  summary = files.predict_paths(config, model, variables, str(source), str(out))
  assert summary['complete'] and not summary['failed'] and len(summary['written']) == 2
  first = summary['written'][0]
  assert first['profile'] == 'sRGB' and 'cannot be converted into' in first['profile_note']
  assert load_photo(out / 'a.jpg').profile == colour_spaces.profile_bytes('srgb')
