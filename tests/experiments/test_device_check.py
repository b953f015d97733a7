"""experiments/device_check.sh runs end to end in its dry run (CPU, tiny sizes, no installs).

The real run needs a GPU machine that CI never has; this keeps every step of the script (tests,
benchmark against PyTorch, training run, large predict, the JSON report) known to work.
"""

import json
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
SCRIPT = ROOT / 'experiments' / 'device_check.sh'

pytest.importorskip('torch')  # the benchmark step races the PyTorch reference


@pytest.mark.slow
def test_dry_run_writes_every_steps_figures(tmp_path):
  env = dict(os.environ, OUT=str(tmp_path / 'out'), DRY_RUN='1', PYTHON=sys.executable)
  # One device, as a user has (the suite's 8 fake ones would split the tiny batches); compiled
  # without backend optimisation like the rest of the suite (tests/conftest.py).
  env['XLA_FLAGS'] = '--xla_backend_optimization_level=0'
  done = subprocess.run(
    ['bash', str(SCRIPT)], env=env, cwd=ROOT, capture_output=True, text=True, timeout=2400
  )
  log = (tmp_path / 'out' / 'device_check.log').read_text()
  assert done.returncode == 0, done.stdout[-3000:] + log[-5000:]
  report = json.loads((tmp_path / 'out' / 'device_check.json').read_text())
  assert report['dry_run'] is True
  assert report['steps']['install']['exit'] == 'skipped'
  for step in ('tests', 'benchmark', 'train', 'predict'):
    assert report['steps'][step]['exit'] == '0', step
  summary = report['summary']
  assert summary['jax_images_per_second'] > 0
  assert summary['torch_images_per_second'] > 0
  assert summary['jax_over_torch'] > 0
  assert summary['train_images_per_second'] > 0
  assert 0 < summary['held_out_psnr'] < 100
  assert summary['predict_megapixels'] == pytest.approx(96 * 64 / 1e6)


def test_unknown_argument_is_refused(tmp_path):
  done = subprocess.run(
    ['bash', str(SCRIPT), '--fast'],
    env=dict(os.environ, OUT=str(tmp_path), PYTHON=sys.executable),
    capture_output=True,
    text=True,
    timeout=60,
  )
  assert done.returncode == 2
  assert "unknown argument '--fast'" in done.stderr
