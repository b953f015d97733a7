"""The line of a libvips error that says what went wrong, for one-line `Error:` messages."""

import pyvips


def first_line(error: pyvips.Error) -> str:
  lines = [line.strip() for line in str(error).splitlines() if line.strip()]
  return lines[1] if len(lines) > 1 else (lines[0] if lines else 'unknown error')
