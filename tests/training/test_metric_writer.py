"""clu-based aggregation of what a run reports: interval means, eval means, the parameter table."""

import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

from unet_jax.inference.evaluate import ImageScores
from unet_jax.training.metric_writer import IntervalMetrics, log_parameter_overview


def test_logged_train_metrics_are_means_over_each_interval():
  interval = IntervalMetrics()
  losses = [0.9, 0.5, 0.4, 0.2]
  for step, loss in enumerate(losses[:3]):
    interval.add({'loss': jnp.float32(loss), 'grad_norm': jnp.float32(step), 'finite': True})
  first = interval.compute_and_reset()
  assert set(first) == {'loss', 'grad_norm'}  # the finiteness flag is not a metric
  np.testing.assert_allclose(first['loss'], np.mean(losses[:3]), rtol=1e-6)
  np.testing.assert_allclose(first['grad_norm'], 1.0, rtol=1e-6)
  # The next interval starts afresh: one step alone is its own mean.
  interval.add({'loss': jnp.float32(losses[3]), 'grad_norm': jnp.float32(7.0), 'finite': True})
  np.testing.assert_allclose(interval.compute_and_reset()['loss'], losses[3], rtol=1e-6)
  assert interval.compute_and_reset() == {}


def test_eval_scores_are_averaged_over_images():
  scores = ImageScores()
  for psnr, ssim in ((20.0, 0.5), (30.0, 0.7), (31.0, 0.9)):
    scores.add({'psnr': np.float32(psnr), 'ssim': jnp.asarray([ssim])})
  assert scores.count == 3 and scores.names == ['psnr', 'ssim']
  means = scores.means(['psnr', 'ssim', 'lpips'])
  np.testing.assert_allclose([means['psnr'], means['ssim']], [27.0, 0.7], rtol=1e-6)
  assert means['lpips'] == 0.0  # a metric no image had


def test_parameter_table_written_at_start(tmp_path):
  params = {'down_0': {'kernel': jnp.ones((3, 3, 3, 8)), 'bias': jnp.zeros(8)}}
  table = log_parameter_overview(params, str(tmp_path))
  written = (tmp_path / 'parameters.txt').read_text()
  assert 'down_0/kernel' in written and '(3, 3, 3, 8)' in written and 'Total: 224' in written
  assert table.strip() == written.strip()


@pytest.mark.slow
def test_no_tensorflow_at_run_time():
  code = (
    'import sys, unet_jax.training.loop, unet_jax.main; '
    "print('tensorflow' in sys.modules, 'clu.metric_writers' in sys.modules)"
  )
  out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True)
  assert out.stdout.split() == ['False', 'False']


@pytest.mark.slow
def test_starting_the_cli_does_not_import_torch_and_torch_still_imports_after():
  """tensorboardX imports torch when it is installed (seconds of every start); the CLI keeps it
  out, and a user's own `import torch` afterwards still works."""
  pytest.importorskip('torch')
  code = (
    'import sys, unet_jax.main; from unet_jax.training import metric_writer; '
    "print('torch' in sys.modules); import torch; print(torch.zeros(2).sum().item())"
  )
  done = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True)
  assert done.stdout.split() == ['False', '0.0']
