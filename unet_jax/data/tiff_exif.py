"""EXIF for TIFF files, which libvips neither reads nor writes (it keeps ICC and XMP only).

A TIFF keeps its EXIF as tags of its first directory (Make, Model, DateTime, ...) plus an
Exif sub-directory (exposure, lens, ...). `descriptive_exif` picks those out of Pillow's
reading of a TIFF into an EXIF block (the form JPEG and libvips use); `add_exif` appends such a
block to a TIFF that libvips wrote: Pillow serialises the tags at the end of the file, and a new
first directory, the old entries plus these, replaces the old one in the header. The pixel data
and every existing offset stay where they are.
"""

import struct

from PIL import Image, TiffImagePlugin

# First-directory tags that describe the photo rather than the pixel layout.
DESCRIPTIVE_TAGS = (
  0x010E,  # ImageDescription
  0x010F,  # Make
  0x0110,  # Model
  0x0112,  # Orientation
  0x0131,  # Software
  0x0132,  # DateTime
  0x013B,  # Artist
  0x8298,  # Copyright
)
EXIF_IFD, GPS_IFD = 0x8769, 0x8825


def descriptive_exif(tags: Image.Exif) -> bytes | None:
  """The EXIF block (`b'Exif\\0\\0...'`) of a TIFF's descriptive tags; None if it has none."""
  out = Image.Exif()
  for tag in DESCRIPTIVE_TAGS:
    if tag in tags:
      out[tag] = tags[tag]
  for tag in (EXIF_IFD, GPS_IFD):
    sub = tags.get_ifd(tag)
    if sub:
      out[tag] = dict(sub)
  return out.tobytes() if len(out) else None


def add_exif(tiff: bytes, exif: bytes) -> bytes:
  """`tiff` with the tags of the EXIF block `exif` in its first directory (classic TIFF only)."""
  order = tiff[:2]
  if order not in (b'II', b'MM') or struct.unpack(_fmt(order, 'H'), tiff[2:4])[0] != 42:
    return tiff  # BigTIFF or not a TIFF: left as it is
  tags = Image.Exif()
  tags.load(exif)
  new = TiffImagePlugin.ImageFileDirectory_v2(ifh=order + tiff[2:4] + b'\0\0\0\0')
  for tag, value in tags.items():
    if tag in (EXIF_IFD, GPS_IFD):
      sub = tags.get_ifd(tag)
      if sub:
        new[tag] = dict(sub)
    elif tag in DESCRIPTIVE_TAGS:
      new[tag] = value
  if not len(new):
    return tiff
  start = len(tiff) + len(tiff) % 2  # directories and values start on a word boundary
  block = new.tobytes(start)
  (count,) = struct.unpack(_fmt(order, 'H'), block[:2])
  added = {_tag(order, block, 2 + 12 * i): block[2 + 12 * i : 14 + 12 * i] for i in range(count)}
  (first,) = struct.unpack(_fmt(order, 'I'), tiff[4:8])
  (old_count,) = struct.unpack(_fmt(order, 'H'), tiff[first : first + 2])
  entries = {}
  for i in range(old_count):
    at = first + 2 + 12 * i
    entries[_tag(order, tiff, at)] = tiff[at : at + 12]
  following = tiff[first + 2 + 12 * old_count : first + 6 + 12 * old_count]
  entries.update(added)
  body = tiff + b'\0' * (start - len(tiff)) + block
  body += b'\0' * (len(body) % 2)
  directory = len(body)
  table = struct.pack(_fmt(order, 'H'), len(entries))
  table += b''.join(entries[tag] for tag in sorted(entries)) + following
  header = tiff[:4] + struct.pack(_fmt(order, 'I'), directory)
  return header + body[8:] + table


def _fmt(order: bytes, code: str) -> str:
  return ('<' if order == b'II' else '>') + code


def _tag(order: bytes, data: bytes, at: int) -> int:
  return struct.unpack(_fmt(order, 'H'), data[at : at + 2])[0]
