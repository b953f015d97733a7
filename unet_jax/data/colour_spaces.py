"""The RGB working spaces a run can learn in, and the ICC profiles that name them.

`config.data.working_space` is one of `WORKING_SPACES`. sRGB uses the profile built into
libvips. Display P3, Adobe RGB (1998) and ProPhoto RGB are written here as ICC v4 matrix/TRC
display profiles from their published primaries, white points and curves (libvips' built-in
`p3` clips two colorants to positive values, about 1e-3 off; no package here ships the others):

- Display P3: DCI-P3 primaries (0.680, 0.320), (0.265, 0.690), (0.150, 0.060), white D65, the
  sRGB curve.
- Adobe RGB (1998): primaries (0.64, 0.33), (0.21, 0.71), (0.15, 0.06), white D65, gamma
  563/256 (Adobe RGB (1998) Color Image Encoding, 2005).
- ProPhoto RGB: primaries (0.7347, 0.2653), (0.1596, 0.8404), (0.0366, 0.0001), white D50, pure
  gamma 1.8 (the curve Adobe's and Kodak's profiles carry; ROMM's short linear toe is not).

The colorants are adapted to the ICC's D50 connection space with the Bradford transform (the
`chad` tag records it), as ICC v4 asks of display profiles. The bytes are fixed (no date, no
random ID), so a profile read back from a file we wrote is recognised as the working space.
"""

import dataclasses
import functools
import hashlib
import os
import struct

import numpy as np
import pyvips

from unet_jax import paths

# The ICC profile connection space white (ICC.1:2010, 7.2.16), as the header stores it.
PCS_WHITE = (0.9642, 1.0, 0.8249)
D65 = (0.3127, 0.3290)
D50 = (0.3457, 0.3585)
_BRADFORD = np.array(
  [[0.8951, 0.2664, -0.1614], [-0.7502, 1.7135, 0.0367], [0.0389, -0.0685, 1.0296]]
)
# The tags that fix what an RGB value means; profiles equal in these convert to each other as
# the identity.
_COLORIMETRIC_TAGS = (b'rXYZ', b'gXYZ', b'bXYZ', b'rTRC', b'gTRC', b'bTRC')


@dataclasses.dataclass(frozen=True)
class WorkingSpace:
  name: str
  description: str
  builtin: str | None = None  # libvips's own profile name
  primaries: tuple[tuple[float, float], ...] | None = None  # xy of red, green, blue
  white: tuple[float, float] | None = None  # xy
  curve: tuple[float, ...] | None = None  # ICC parametric curve: (gamma,) or (g, a, b, c, d)


# The sRGB curve (IEC 61966-2-1) as an ICC parametric curve of type 3.
SRGB_CURVE = (2.4, 1 / 1.055, 0.055 / 1.055, 1 / 12.92, 0.04045)


WORKING_SPACES = {
  'srgb': WorkingSpace('srgb', 'sRGB', builtin='srgb'),
  'display_p3': WorkingSpace(
    'display_p3',
    'Display P3 (unet_jax)',
    primaries=((0.680, 0.320), (0.265, 0.690), (0.150, 0.060)),
    white=D65,
    curve=SRGB_CURVE,
  ),
  'adobe_rgb': WorkingSpace(
    'adobe_rgb',
    'Adobe RGB (1998) (unet_jax)',
    primaries=((0.64, 0.33), (0.21, 0.71), (0.15, 0.06)),
    white=D65,
    curve=(563 / 256,),
  ),
  'prophoto_rgb': WorkingSpace(
    'prophoto_rgb',
    'ProPhoto RGB (unet_jax)',
    primaries=((0.7347, 0.2653), (0.1596, 0.8404), (0.0366, 0.0001)),
    white=D50,
    curve=(1.8,),
  ),
}


def check_working_space(name: str, option: str = 'config.data.working_space') -> WorkingSpace:
  """The WorkingSpace called `name`; ValueError naming `option` otherwise."""
  if name not in WORKING_SPACES:
    raise ValueError(f'{option}={name!r} is not one of {list(WORKING_SPACES)}.')
  return WORKING_SPACES[name]


def _xyz(xy: tuple[float, float]) -> np.ndarray:
  x, y = xy
  return np.array([x / y, 1.0, (1 - x - y) / y])


def rgb_to_xyz_matrix(primaries, white) -> np.ndarray:
  """`[3, 3]` matrix from linear RGB to XYZ (Y of white = 1), from xy chromaticities."""
  columns = np.stack([_xyz(p) for p in primaries], axis=1)
  scale = np.linalg.solve(columns, _xyz(white))
  return columns * scale


def bradford(source_white: np.ndarray, target_white: np.ndarray) -> np.ndarray:
  """`[3, 3]` Bradford chromatic adaptation between two XYZ whites."""
  gain = (_BRADFORD @ target_white) / (_BRADFORD @ source_white)
  return np.linalg.inv(_BRADFORD) @ np.diag(gain) @ _BRADFORD


def pcs_colorants(space: WorkingSpace) -> np.ndarray:
  """`[3, 3]` linear RGB -> D50 PCS XYZ; its columns are the profile's rXYZ, gXYZ, bXYZ."""
  matrix = rgb_to_xyz_matrix(space.primaries, space.white)
  return bradford(_xyz(space.white), np.array(PCS_WHITE)) @ matrix


def _s15f16(values) -> bytes:
  return b''.join(struct.pack('>i', round(float(v) * 65536)) for v in values)


def _xyz_tag(xyz) -> bytes:
  return b'XYZ \0\0\0\0' + _s15f16(xyz)


def _mluc_tag(text: str) -> bytes:
  # multiLocalizedUnicodeType (ICC.1:2010, 10.13) with one en-US record.
  utf16 = text.encode('utf-16-be')
  return b'mluc\0\0\0\0' + struct.pack('>II2s2sII', 1, 12, b'en', b'US', len(utf16), 28) + utf16


def _curve_tag(curve: tuple[float, ...]) -> bytes:
  # parametricCurveType: (g,) is Y = X**g; (g, a, b, c, d) is Y = (aX + b)**g above d, cX below.
  function = {1: 0, 5: 3}[len(curve)]
  return b'para\0\0\0\0' + struct.pack('>HH', function, 0) + _s15f16(curve)


def _pad(tag: bytes) -> bytes:
  return tag + b'\0' * (-len(tag) % 4)


def matrix_profile(
  description: str,
  colorants: np.ndarray,
  adaptation: np.ndarray,
  curve: tuple[float, ...] | bytes,
) -> bytes:
  """An ICC v4 RGB display profile from D50 colorants `[3, 3]` (columns), the `[3, 3]`
  adaptation of the space's white to D50 (`chad`), and one curve for R, G and B: parametric
  parameters, or a ready curve tag (e.g. a sampled `curv` table as other producers write)."""
  curve_tag = curve if isinstance(curve, bytes) else _curve_tag(curve)
  tags = [
    (b'desc', _mluc_tag(description)),
    (b'cprt', _mluc_tag('No copyright, use freely')),
    (b'wtpt', _xyz_tag(PCS_WHITE)),
    (b'chad', b'sf32\0\0\0\0' + _s15f16(adaptation.reshape(-1))),
    (b'rXYZ', _xyz_tag(colorants[:, 0])),
    (b'gXYZ', _xyz_tag(colorants[:, 1])),
    (b'bXYZ', _xyz_tag(colorants[:, 2])),
    (b'rTRC', curve_tag),
    (b'gTRC', curve_tag),
    (b'bTRC', curve_tag),
  ]
  offset = 128 + 4 + 12 * len(tags)
  table, body, placed = [], b'', {}
  for signature, data in tags:
    if data not in placed:  # the three curves share one copy, as the spec allows
      placed[data] = offset + len(body)
      body += _pad(data)
    table.append(struct.pack('>4sII', signature, placed[data], len(data)))
  size = offset + len(body)
  header = (
    struct.pack('>I', size)
    + b'\0' * 4  # preferred CMM
    + struct.pack('>I', 0x04300000)  # version 4.3
    + b'mntrRGB XYZ '
    + b'\0' * 12  # date: left zero so the bytes never change
    + b'acsp'
    + b'\0' * 24  # platform, flags, manufacturer, model, attributes
    + struct.pack('>I', 0)  # default intent: perceptual
    + _s15f16(PCS_WHITE)
    + b'\0' * 48  # creator, profile ID (optional in v4), reserved
  )
  return header + struct.pack('>I', len(tags)) + b''.join(table) + body


@functools.cache
def profile_bytes(name: str) -> bytes:
  """The ICC profile of working space `name`."""
  space = check_working_space(name)
  if space.builtin is not None:
    return bytes(pyvips.Operation.call('profile_load', space.builtin))
  adaptation = bradford(_xyz(space.white), np.array(PCS_WHITE))
  return matrix_profile(space.description, pcs_colorants(space), adaptation, space.curve)


@functools.cache
def profile_path(name: str) -> str:
  """What libvips' `output_profile=` takes for `name`: a built-in name or a cached .icc file."""
  space = check_working_space(name)
  if space.builtin is not None:
    return space.builtin
  return profile_file(profile_bytes(name), name)


def profile_file(profile: bytes, stem: str) -> str:
  """A file in the cache holding `profile`, named by its content (libvips takes profiles by
  file name); written once, via a temporary file, so readers never see half of it."""
  digest = hashlib.sha256(profile).hexdigest()[:16]
  path = paths.cache_dir('icc') / f'{stem}-{digest}.icc'
  if not path.exists():
    tmp = path.with_suffix(f'.{os.getpid()}.tmp')
    tmp.write_bytes(profile)
    os.replace(tmp, path)
  return str(path)


def icc_tags(profile: bytes) -> dict[bytes, bytes]:
  """Tag signature -> tag data of an ICC profile ({} if the table cannot be read)."""
  if len(profile) < 132:
    return {}
  (count,) = struct.unpack_from('>I', profile, 128)
  tags = {}
  for i in range(min(count, 200)):
    start = 132 + 12 * i
    if start + 12 > len(profile):
      return {}
    signature, offset, size = struct.unpack_from('>4sII', profile, start)
    tags[signature] = profile[offset : offset + size]
  return tags


def colour_space_of(profile: bytes) -> str:
  """The profile's data colour space signature, e.g. 'RGB', 'CMYK', 'GRAY' ('' if unreadable)."""
  return profile[16:20].decode('ascii', 'replace').strip() if len(profile) >= 20 else ''


@functools.lru_cache(maxsize=64)
def same_colours(profile: bytes, name: str) -> bool:
  """True when `profile` defines RGB exactly as working space `name` does (no transform needed).

  Compares the colorant and curve tags byte for byte: our own files, and any other producer
  that writes the same numbers, skip LittleCMS and stay bit-exact.
  """
  if profile == profile_bytes(name):
    return True
  ours, theirs = icc_tags(profile_bytes(name)), icc_tags(profile)
  return colour_space_of(profile) == 'RGB' and all(
    tag in theirs and theirs[tag] == ours[tag] for tag in _COLORIMETRIC_TAGS
  )


@functools.lru_cache(maxsize=64)
def describe(profile: bytes | None) -> str:
  """A short human name for a profile ('none' when absent), from its description tag."""
  if profile is None:
    return 'none'
  for name in WORKING_SPACES:
    if profile == profile_bytes(name):
      return WORKING_SPACES[name].description
  desc = icc_tags(profile).get(b'desc', b'')
  text = ''
  if desc[:4] == b'desc' and len(desc) >= 12:
    (length,) = struct.unpack_from('>I', desc, 8)
    text = desc[12 : 12 + length].split(b'\0', 1)[0].decode('latin-1')
  elif desc[:4] == b'mluc' and len(desc) >= 28:  # ICC v4: the first record
    length, offset = struct.unpack_from('>II', desc, 20)
    text = desc[offset : offset + length].decode('utf-16-be', 'replace')
  return text.strip() or f'unnamed {colour_space_of(profile) or "?"} profile'
