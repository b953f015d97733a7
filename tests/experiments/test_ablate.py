"""The ablation script: its measures and verdicts, and the quick preset end to end."""

import math
import pathlib
import re

import numpy as np
import pytest

from experiments import ablate
from experiments.ablation import measures, runs, verdicts
from experiments.ablation.claims import CLAIMS
from experiments.ablation.presets import PRESETS

VERDICTS = (
  'supported',
  'contradicted',
  'partly supported',
  'partly contradicted',
  'mixed: parts supported, parts contradicted',
  'not supported at this scale',
  'not run in this preset',
)


def test_checkerboard_energy_finds_a_period_2_pattern():
  rows, cols = np.indices((32, 48))
  checker = ((rows + cols) % 2).astype(np.float32)[..., None].repeat(3, axis=-1)
  # Whole periods, so that no edge leaks energy into the Nyquist bins.
  smooth = np.sin(2 * np.pi * rows * 2 / 32) + np.cos(2 * np.pi * cols * 3 / 48)
  smooth = smooth[..., None].repeat(3, axis=-1)
  assert measures.checkerboard_energy(checker) > 0.99
  assert measures.checkerboard_energy(smooth) < 1e-6
  assert measures.checkerboard_energy(smooth + 0.1 * checker) > 10 * measures.checkerboard_energy(
    smooth
  )


def test_verdicts_need_a_difference_beyond_the_seed_noise():
  clear = verdicts.compare([30.0, 30.1, 30.2], [29.0, 29.1, 29.2], 'psnr')
  assert clear['verdict'] == 'supported'
  assert math.isclose(clear['gain'], 1.0)
  assert verdicts.compare([29.0, 29.1], [30.0, 30.1], 'psnr')['verdict'] == 'contradicted'
  noisy = verdicts.compare([30.0, 31.0, 29.0], [29.9, 30.9, 28.8], 'psnr')
  assert noisy['verdict'].startswith('not supported at this scale')
  # Lower is better for LPIPS: the claimed-better variant must have the smaller value.
  assert verdicts.compare([0.1, 0.11], [0.2, 0.21], 'lpips')['verdict'] == 'supported'
  # One seed per variant is judged by the spread pooled over the other variants of the task.
  assert verdicts.compare([30.0], [29.0], 'psnr', noise_std=0.2)['verdict'] == 'supported'
  assert verdicts.compare([30.0], [29.0], 'psnr', noise_std=1.0)['verdict'].startswith('not')
  assert math.isclose(verdicts.pooled_std([[1.0, 3.0], [5.0], [2.0, 4.0]]), math.sqrt(2.0))
  assert verdicts.steps_to_target([(10, 20.0), (20, 25.0)], 24.0) == 20
  assert verdicts.steps_to_target([(10, 20.0)], 24.0) == math.inf


def _table_rows(text: str, section: str) -> list[list[str]]:
  body = text.split(section, 1)[1].split('\n## ', 1)[0]
  rows = [line for line in body.splitlines() if line.startswith('| ')]
  return [[cell.strip() for cell in row.strip('|').split('|')] for row in rows[1:]]


@pytest.mark.slow
def test_quick_preset_writes_the_report_and_plots(tmp_path):
  output_dir, runs_dir = tmp_path / 'results', tmp_path / 'runs'
  path = ablate.run_ablation('quick', str(output_dir), str(runs_dir))
  text = pathlib.Path(path).read_text()
  assert path == str(output_dir / 'ablations.md')
  assert 'Machine:' in text and 'Wall clock:' in text and '--preset=quick' in text

  for task, settings in PRESETS['quick'].tasks.items():
    rows = _table_rows(text, f'## Results: `{task}`')
    variants = [row[0] for row in rows]
    assert variants == ['identity (input)', *settings.variants]
    for row in rows[1:]:
      psnr, ssim, lpips, delta_e = (float(c.split(' ')[0]) for c in row[5:9])
      assert all(math.isfinite(v) for v in (psnr, ssim, lpips, delta_e))
      assert 5.0 < psnr < 60.0 and 0.0 < ssim <= 1.0
      assert math.isfinite(float(row[11])) and math.isfinite(float(row[10]))
    assert (output_dir / f'crops_{task}.png').stat().st_size > 0

  verdict_rows = _table_rows(text, '## Verdicts')
  verdicts = {row[0]: row[5].strip('*') for row in verdict_rows if row[0]}
  assert set(verdicts) == {claim.title for claim in CLAIMS}
  assert all(v in VERDICTS for v in verdicts.values()), verdicts
  assert not re.search(r'\bnan\b', text, re.IGNORECASE)
  for claim in CLAIMS:
    assert (output_dir / f'curves_{claim.key}.png').stat().st_size > 0
  assert re.search(r'enhance: [0-9.]+ dB', text)

  # Resumable: a second sweep reuses every finished run instead of training again.
  result_files = sorted(runs_dir.glob('*/*/seed_*/result.json'))
  assert len(result_files) == len(runs.planned_runs(PRESETS['quick']))
  stamps = [p.stat().st_mtime_ns for p in result_files]
  results, skipped = runs.run_sweep(PRESETS['quick'], str(runs_dir))
  assert len(results) == len(result_files) and not skipped
  assert [p.stat().st_mtime_ns for p in result_files] == stamps
