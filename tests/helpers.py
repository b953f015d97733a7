"""Helpers shared by the tests (no tests here): the tiny config, a saved checkpoint's weights,
photo-like arrays and random model variables, tiny image files and pair folders."""

import atexit
import json
import os
import pathlib
import struct
import subprocess
import sys
import tempfile
import zlib
from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
from PIL import Image

from configs import tiny
from unet_jax.config import get_base_config
from unet_jax.models import UNet
from unet_jax.training import loop

ROOT = pathlib.Path(__file__).resolve().parents[1]


def run_main(
  *args: str, timeout: float = 300, cwd: str | os.PathLike = ROOT
) -> subprocess.CompletedProcess:
  """`python -m unet_jax.main ARGS` in `cwd` (the repository root), as a user runs it."""
  return run_python('-m', 'unet_jax.main', *args, timeout=timeout, cwd=cwd)


def run_main_patched(patch: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
  """`run_main(ARGS)` with `patch` (Python source) run first in the same process: a fault
  injected where no flag can put it (a full disk, a bug)."""
  script = f'{patch}\nfrom absl import app\nfrom unet_jax import cli_errors, main\n'
  script += 'app.run(main.main, flags_parser=cli_errors.parse_flags)\n'
  return run_python('-c', script, *args, timeout=timeout)


def run_python(
  *args: str,
  timeout: float = 300,
  cwd: str | os.PathLike = ROOT,
  env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess:
  """`python ARGS` (`-m MODULE ...`, `-c SOURCE ...` or `SCRIPT ...`) in `cwd`, with `env` (this
  process's by default) and the repository on the path; text output. A process of its own,
  forked from one with the modules imported (`tests/forked_cli.py`) when `env`'s `JAX_*`
  variables are the server's, else started afresh."""
  global _fork_server
  env = {**(os.environ if env is None else env), 'PYTHONPATH': str(ROOT)}
  command = [sys.executable, *args]
  if _fork_server is None or _fork_server.process.poll() is not None:
    _fork_server = _ForkServer()
  if not _fork_server.serves(env):
    return subprocess.run(
      command, capture_output=True, text=True, timeout=timeout, cwd=cwd, env=env
    )
  status, stdout, stderr = _fork_server.run(list(args), env, timeout, cwd)
  return subprocess.CompletedProcess(command, status, stdout, stderr)


class _ForkServer:
  """This test process's `tests/forked_cli.py` server, started at the first command."""

  def __init__(self):
    self.env = {**os.environ, 'PYTHONPATH': str(ROOT)}
    self.process = subprocess.Popen(
      [sys.executable, str(ROOT / 'tests' / 'forked_cli.py')],
      stdin=subprocess.PIPE,
      stdout=subprocess.PIPE,
      text=True,
      cwd=ROOT,
      env=self.env,
    )
    atexit.register(self.process.kill)

  def serves(self, env: dict[str, str]) -> bool:
    """Whether a command in `env` can run forked: jax read the server's JAX_* at import."""
    jax_variables = lambda env: {k: v for k, v in env.items() if k.startswith('JAX_')}
    return self.process.poll() is None and jax_variables(env) == jax_variables(self.env)

  def run(self, args: list[str], env: dict, timeout: float, cwd) -> tuple:
    """(exit status, stdout, stderr) of `python ARGS`; TimeoutExpired past `timeout` s."""
    with tempfile.TemporaryDirectory(prefix='unet_jax_cli_') as folder:
      out, err = os.path.join(folder, 'stdout'), os.path.join(folder, 'stderr')
      request = {'argv': args, 'cwd': str(cwd), 'env': env, 'timeout': timeout}
      request.update(stdout=out, stderr=err)
      self.process.stdin.write(json.dumps(request) + '\n')
      self.process.stdin.flush()
      reply = json.loads(self.process.stdout.readline())
      texts = [pathlib.Path(path).read_text(errors='replace') for path in (out, err)]
    if reply.get('timeout'):
      raise subprocess.TimeoutExpired(args, timeout, *texts)
    return reply['status'], *texts


_fork_server: _ForkServer | None = None


PHOTO_SIZE = (97, 131)  # odd on purpose: neither is a multiple of 2**levels or of any stride


def tiny_config(steps: int | None = None, **overrides) -> ml_collections.ConfigDict:
  """configs/tiny.py with dotted overrides, e.g. `tiny_config(**{'data.look': 'warm_film'})`.

  `steps`: a run of that many steps with one eval, at the end (the tiny config's cadence of
  logs and checkpoints every 2 steps stays).
  """
  config = tiny.get_config()
  if steps is not None:
    config.num_train_steps = config.eval_every_steps = steps
  config.update_from_flattened_dict(overrides)
  return config


def saved_params(workdir: str, step: int | None = None) -> tuple[dict, int]:
  """The params pytree of a checkpoint (the latest by default) as numpy, and its step."""
  manager = ocp.CheckpointManager(
    os.path.join(workdir, 'checkpoints'), options=ocp.CheckpointManagerOptions(read_only=True)
  )
  step = manager.latest_step() if step is None else step
  manager.close()
  # Restore as host numpy so that a checkpoint written on another device topology still reads.
  path = os.path.join(workdir, 'checkpoints', str(step), 'state')
  checkpointer = ocp.PyTreeCheckpointer()
  metadata = checkpointer.metadata(path).item_metadata
  restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), metadata)
  restored = checkpointer.restore(path, args=ocp.args.PyTreeRestore(restore_args=restore_args))
  return restored['params'], step


def psnr(a: np.ndarray, b: np.ndarray) -> float:
  return float(10 * np.log10(1.0 / np.mean((a - b) ** 2)))


def photo(height: int, width: int, seed: int = 0) -> np.ndarray:
  """Smooth colour fields plus a little noise, in [0, 1]: edges and flat areas, like a photo."""
  rng = np.random.default_rng(seed)
  coarse = (rng.random((height // 8 + 2, width // 8 + 2, 3)) * 255).astype(np.uint8)
  smooth = np.asarray(
    Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC), np.float32
  )
  return np.clip(smooth / 255 + 0.05 * rng.standard_normal((height, width, 3)), 0, 1).astype(
    np.float32
  )


def random_variables(model: UNet, *, seed: int = 0, head_scale: float = 0.1) -> dict:
  """Random variables in the shapes `model.init` makes, drawn with numpy.

  Non-trivial on purpose: a random head (the zero-initialised one makes the net the identity;
  `head_scale=0` keeps that) and batch-norm statistics and scales away from the identity. Drawn
  on the host because compiling or running `model.init` op by op costs seconds per model here.
  """
  shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 32, 32, model.in_channels)))
  rng = np.random.default_rng(seed)

  def draw(path, leaf):
    names = [getattr(p, 'key', '') for p in path]
    noise = rng.standard_normal(leaf.shape).astype(np.float32)
    if 'head' in names:
      return head_scale * noise
    if names[-1] == 'kernel':
      return noise / np.sqrt(np.prod(leaf.shape[:-1]))
    if names[-1] in ('bias', 'mean'):
      return 0.1 * noise
    return 1 + 0.3 * np.abs(noise)  # norm scales and running variances

  return jax.tree_util.tree_map_with_path(draw, shapes)


def identity_model(working_space: str) -> tuple[ml_collections.ConfigDict, UNet, dict]:
  """(config, model, variables) of an untrained residual U-Net (its last conv starts at zero):
  output = input, grading in `working_space` with 32 px tiles."""
  config = get_base_config()
  config.predict.tile_size, config.predict.tile_overlap = 32, 8
  config.data.working_space = working_space
  model = UNet(levels=2, base_channels=4)
  return config, model, random_variables(model, head_scale=0.0)


def random_pixels(seed: int, height: int, width: int) -> np.ndarray:
  """uint8 `[H, W, 3]` noise: every pixel differs, so any misalignment shows."""
  return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def save(path: pathlib.Path, pixels: np.ndarray, **kwargs) -> pathlib.Path:
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(pixels).save(path, **kwargs)
  return path


def png16(pixels: np.ndarray) -> bytes:
  """A 16-bit RGB PNG (Pillow cannot write one): `pixels` uint16 `[H, W, 3]`."""
  height, width, _ = pixels.shape
  raw = b''.join(b'\x00' + pixels[y].astype('>u2').tobytes() for y in range(height))

  def chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', crc)

  header = struct.pack('>IIBBBBB', width, height, 16, 2, 0, 0, 0)
  return (
    b'\x89PNG\r\n\x1a\n'
    + chunk(b'IHDR', header)
    + chunk(b'IDAT', zlib.compress(raw))
    + chunk(b'IEND', b'')
  )


def write_pairs(
  root: pathlib.Path,
  split: str,
  names: list[str],
  *,
  size: tuple[int, int] = (40, 48),
  look: Callable[[np.ndarray], np.ndarray] | None = None,
  seed: int = 0,
  input_ext: str = 'png',
  target_ext: str = 'png',
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """Writes `root/split/{input,target}/<name>.<ext>`; target = look(input) rounded to 8 bits."""
  pairs = {}
  for index, name in enumerate(names):
    pixels = random_pixels(seed * 1000 + index, *size)
    target = pixels
    if look is not None:
      graded = look(pixels.astype(np.float32) / 255.0)
      target = np.round(np.clip(graded, 0, 1) * 255).astype(np.uint8)
    save(root / split / 'input' / f'{name}.{input_ext}', pixels, quality=100)
    save(root / split / 'target' / f'{name}.{target_ext}', target, quality=100)
    pairs[name] = (pixels, target)
  return pairs


def train_on_look(
  tmp_path: pathlib.Path, look: Callable[[np.ndarray], np.ndarray], **overrides
) -> tuple[dict, dict]:
  """Trains `tiny_config` with dotted `overrides` for 4 steps on 6 training pairs of `look` (and
  one held-out pair) under `tmp_path`; returns the params saved at step 2 and at step 4."""
  root = tmp_path / 'pairs'
  write_pairs(root, 'train', [f'p{i}' for i in range(6)], look=look)
  write_pairs(root, 'test', ['t'], look=look, seed=9)
  options = {'data.name': 'paired_folders', 'data.dir': str(root), **overrides}
  workdir = str(tmp_path / 'run')
  loop.train_and_evaluate(tiny_config(steps=4, **options), workdir)
  first, _ = saved_params(workdir, 2)
  last, step = saved_params(workdir, 4)
  assert step == 4
  return first, last


def uniform_pairs(root: pathlib.Path, split: str, count: int, size: int = 40) -> None:
  """Pairs whose pixels all equal the record number (/255): a batch row says which record."""
  for index in range(count):
    pixels = np.full((size, size, 3), 10 * (index + 1), np.uint8)
    save(root / split / 'input' / f'r{index:02d}.png', pixels)
    save(root / split / 'target' / f'r{index:02d}.png', pixels)


def record_ids(batch: np.ndarray) -> list[int]:
  """Inverse of `uniform_pairs`: the record number of each row of a batch."""
  return [round(float(row.mean()) * 255 / 10) - 1 for row in batch]


def fit_photo_part(
  model, params, inputs, figures, targets, optimizer, steps: int, error: Callable = jnp.abs
):
  """`params` of a part that grades `[B, H, W, 3]` `inputs` by their whole-photo `figures`,
  after `steps` full-batch steps of `optimizer` on the mean `error` to `targets`."""

  def loss(params):
    return jnp.mean(error(model.apply({'params': params}, inputs, figures) - targets))

  @jax.jit
  def step(params, state):
    updates, state = optimizer.update(jax.grad(loss)(params), state)
    return optax.apply_updates(params, updates), state

  state = optimizer.init(params)
  for _ in range(steps):
    params, state = step(params, state)
  return params
