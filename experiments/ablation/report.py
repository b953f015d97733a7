"""The report: `ablations.md` (set-up, result tables, verdicts), learning curves, crops."""

import datetime
import json
import math
import os
import platform
import subprocess
from typing import Any

import jax
import numpy as np

from experiments.ablation.claims import CLAIMS, METRICS, TASKS, Claim
from experiments.ablation.measures import eval_panels, image_measures, split_panel
from experiments.ablation.presets import ENHANCE_LOOK, Preset
from experiments.ablation.verdicts import (
  SIGNIFICANCE_SE,
  TARGET_FRACTION,
  add_steps_to_target,
  claim_verdicts,
  mean_std,
  metric_values,
  summarise_verdict,
)
from experiments.sweep import Run, json_safe


def _fmt(mean: float, std: float, digits: int) -> str:
  if not math.isfinite(mean):
    return '—'
  if not math.isfinite(std):
    return f'{mean:.{digits}f}'
  return f'{mean:.{digits}f} ± {std:.{digits}f}'


def _steps_cell(results, task, variant) -> str:
  values = metric_values(results, task, variant, 'steps_to_target')
  runs = [r for r in results if r['task'] == task and r['variant'] == variant and not r['error']]
  if not runs:
    return '—'
  reached = [v for v in values if math.isfinite(v)]
  cell = _fmt(*mean_std(reached), 0) if reached else 'never'
  if len(reached) < len(runs):
    cell += f' ({len(reached)}/{len(runs)} reached)'
  return cell


def _claims_of(variant: str) -> list[str]:
  return [c.title for c in CLAIMS if variant in c.variants]


def _plot_curves(results, claim: Claim, path: str) -> None:
  import matplotlib

  matplotlib.use('Agg')
  import matplotlib.pyplot as plt

  fig, axes = plt.subplots(1, len(TASKS), figsize=(5 * len(TASKS), 3.6), squeeze=False)
  for ax, task in zip(axes[0], TASKS, strict=True):
    identity = None
    for index, variant in enumerate(claim.variants):
      runs = [r for r in results if r['task'] == task and r['variant'] == variant and r['curve']]
      for seed_index, r in enumerate(runs):
        steps, psnr = zip(*r['curve'], strict=True)
        ax.plot(
          steps,
          psnr,
          color=f'C{index}',
          marker='o',
          markersize=3,
          alpha=0.85,
          label=variant if seed_index == 0 else None,
        )
        identity = r['identity'].get('psnr', identity)
    if identity is not None:
      ax.axhline(identity, color='gray', linestyle=':', label='identity (input)')
    ax.set_title(f'{claim.title}: {task}')
    ax.set_xlabel('training step')
    ax.set_ylabel('held-out PSNR (dB)')
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
      ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def _crop_box(image: np.ndarray, size: int) -> tuple[int, int, int]:
  """The `size` square with the most detail (so that artifacts and blur show)."""
  height, width = image.shape[:2]
  size = min(size, height, width)
  gray = image.mean(axis=-1)
  detail = np.abs(np.diff(gray, axis=0))[:, :-1] + np.abs(np.diff(gray, axis=1))[:-1]
  best, box = -1.0, (0, 0)
  stride = max(size // 4, 1)
  for top in range(0, height - size + 1, stride):
    for left in range(0, width - size + 1, stride):
      score = detail[top : top + size - 1, left : left + size - 1].sum()
      if score > best:
        best, box = score, (top, left)
  return box[0], box[1], size


def _plot_crops(results, task, variants, runs_dir, crop_px, path) -> bool:
  import matplotlib

  matplotlib.use('Agg')
  import matplotlib.pyplot as plt

  chosen = []
  for variant in variants:
    runs = [r for r in results if r['task'] == task and r['variant'] == variant]
    runs = sorted(runs, key=lambda r: r['seed'])
    panels = eval_panels(os.path.join(runs_dir, runs[0]['eval_dir'])) if runs else []
    if panels:
      chosen.append((variant, panels[0]))
  if not chosen:
    return False
  reference_input, _, reference_target = split_panel(chosen[0][1])
  top, left, size = _crop_box(reference_target, crop_px)

  def crop(image):
    return np.clip(image[top : top + size, left : left + size], 0, 1)

  columns = len(chosen) + 2
  fig, axes = plt.subplots(1, columns, figsize=(1.6 * columns, 2.0))
  tiles = [('input', reference_input)] + [(v, split_panel(p)[1]) for v, p in chosen]
  tiles.append(('target', reference_target))
  for ax, (title, image) in zip(axes, tiles, strict=True):
    ax.imshow(crop(image), interpolation='nearest')
    ax.set_title(title, fontsize=7)
    ax.axis('off')
  name = os.path.basename(chosen[0][1])[: -len('.png')]
  fig.suptitle(
    f'{task}: {name}, {size} px crop (seed {min(r["seed"] for r in results)})', fontsize=8
  )
  fig.tight_layout()
  fig.savefig(path, dpi=130)
  plt.close(fig)
  return True


def _sweep_span(results: list[dict[str, Any]], runs_dir: str) -> float:
  """Seconds from the start of the earliest run to the end of the latest (result.json times)."""
  starts, ends = [], []
  for r in results:
    path = Run(r['task'], r['variant'], r['seed']).result_path(runs_dir)
    if os.path.exists(path):
      end = os.path.getmtime(path)
      starts.append(end - r['wall_seconds'])
      ends.append(end)
  return max(ends) - min(starts) if ends else 0.0


def _machine() -> str:
  try:
    out = subprocess.run(['lscpu'], capture_output=True, text=True, check=True).stdout
    model = next(
      (line.split(':', 1)[1].strip() for line in out.splitlines() if 'Model name' in line), '?'
    )
  except (OSError, subprocess.CalledProcessError):
    model = platform.processor() or '?'
  return f'{model}, {os.cpu_count()} CPU cores, {platform.system()} ({jax.devices()[0].platform})'


def write_report(
  preset: Preset,
  results: list[dict[str, Any]],
  skipped: list[tuple[str, str, int]],
  output_dir: str,
  runs_dir: str,
  *,
  wall_seconds: float,
  command: str,
) -> str:
  """Writes `ablations.md`, `curves_<claim>.png` and `crops_<task>.png`; returns the md path."""
  os.makedirs(output_dir, exist_ok=True)
  for r in results:
    # Recomputed from the saved panels, so that the report follows this file's measures.
    eval_dir = os.path.join(runs_dir, r['eval_dir'])
    if os.path.exists(os.path.join(eval_dir, 'metrics.json')):
      r['measures'] = image_measures(eval_dir)
  targets = add_steps_to_target(results)
  failed = [r for r in results if r['error']]
  lines = [
    f"# Ablations of the design notes' claims (preset `{preset.name}`)",
    '',
    f'- Command: `{command}`',
    f'- Date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC',
    f'- Machine: {_machine()}. Step times are indicative only: other load on the machine '
    'changes them.',
    f"- Wall clock: {_sweep_span(results, runs_dir) / 60:.1f} min from the first run's start "
    f"to the last run's end, {sum(r['wall_seconds'] for r in results) / 60:.1f} min of it in "
    f'the {len(results)} runs themselves; the invocation that wrote this report took '
    f'{wall_seconds / 60:.1f} min (it reuses runs that an earlier one finished).',
    f'- {preset.note}',
    '',
    '## Set-up',
    '',
    f'- Data: the built-in dataset (9 train photos, 3 held-out: chelsea, coffee, china). '
    f'`enhance`: look `{ENHANCE_LOOK}` (luminance detail above a 6 px Gaussian doubled, '
    'saturation +15 %); `denoise`: Gaussian noise sigma 25/255 added to the clean photo.',
  ]
  for task, settings in preset.tasks.items():
    size = (
      'full resolution (longer side 512 px)'
      if settings.eval_size is None
      else (f'resized to a longer side of {settings.eval_size} px')
    )
    lines.append(
      f'- `{task}`: {settings.num_train_steps or preset.num_train_steps} training steps; eval '
      f'on the 3 held-out photos {size}, every {settings.eval_every_steps} steps.'
    )
  lines += [
    f'- Baseline: {preset.levels} levels, base {preset.base_channels} channels, max-pool down, '
    'bilinear + conv up, concatenated skips, BatchNorm, residual output, L1 loss; '
    f'{preset.crop_size} px random crops with flips, batch {preset.batch_size}, '
    'AdamW (peak lr '
    f'{preset.learning_rate}, '
    f'{preset.warmup_steps} warm-up steps, cosine decay), no EMA. GroupNorm uses '
    f'{preset.group_norm_groups} groups. Each variant changes one option of the baseline.',
    f'- Seeds: {", ".join(map(str, preset.seeds))} (initialisation and data order); cells are '
    'mean ± sample std over the seeds that ran.',
    '- Params: trainable parameters. Step time: median seconds per training step (jitted, 1 '
    'CPU device), leaving out the intervals with the compile or an eval.',
    "- PSNR / SSIM / LPIPS / ΔE2000: the library's eval at the last step, mean over the "
    'held-out photos; the `identity` row scores the untouched input.',
    '- Steps to target: first eval step whose PSNR reaches the target = identity PSNR + '
    f"{TARGET_FRACTION:.0%} of the baseline's mean final gain over identity"
    + (
      ' (' + '; '.join(f'{task}: {value:.2f} dB' for task, value in targets.items()) + ')'
      if targets
      else ''
    )
    + '. Resolution: the eval interval.',
    '- Checkerboard: energy on the period-2 frequencies (the Nyquist row and column of the 2-D '
    'DFT, mean removed) as a fraction of the total, of the predicted held-out images, divided by '
    'the same fraction for the target (1 = as much as the true photo; > 1 = extra period-2 '
    "pattern). Sharpness: mean squared Laplacian of the prediction over the target's (< 1: "
    'blurrier). Both from the 8-bit eval PNGs of the last step. For `denoise` both also count '
    'the noise a model leaves in (white noise has energy at every frequency).',
    f'- Verdicts: a comparison counts when the mean difference exceeds {SIGNIFICANCE_SE:g} '
    'standard errors, SE = s * sqrt(1/n_a + 1/n_b), where s is the seed-to-seed std pooled over '
    'the two variants compared (over all variants of the task if neither has two seeds); '
    'otherwise "not supported at this scale". With 2-3 seeds this is a loose test (3 vs 3 seeds: '
    'two-sided p of about 0.12 at the threshold). A claim is supported when all its comparisons '
    'that ran are.',
    '- Caveats: (1) `enhance` is scored at full resolution because `config.data.eval_size` '
    'resizes input and target after the look was applied, which turns the 6 px local-contrast '
    'look into a ~1.5 px one at 128 px: a model trained on full-scale crops would be scored on '
    'a different look. Full-resolution LPIPS is the costly part of an eval here, so `enhance` '
    "has two evals per run and fewer variants. (2) EMA is off: the library's EMA (decay 0.999, "
    'no bias correction) would still be mostly the initial weights after a few hundred steps. '
    '(3) The perceptual term uses VGG16 relu1_2 only (weights 1, 0, 0, 0, 0) to fit a CPU; '
    'LPIPS, the metric, uses all five layers.',
  ]
  if skipped:
    lines.append(
      '- Planned but not run (the time budget was reached or the sweep was stopped): '
      + ', '.join(f'{t}/{v}/seed {s}' for t, v, s in skipped)
      + '.'
    )
  if failed:
    lines.append(
      '- Diverged (the library stopped on a non-finite loss): '
      + ', '.join(f'{r["task"]}/{r["variant"]}/seed {r["seed"]}' for r in failed)
      + '.'
    )

  header = (
    '| variant | claim tested | seeds | params | step time (s) | PSNR (dB) | SSIM | LPIPS | '
    'ΔE2000 | steps to target | checkerboard (× target) | sharpness (× target) |'
  )
  for task, settings in preset.tasks.items():
    lines += ['', f'## Results: `{task}`', '', header, '|' + '---|' * 12]
    identity = [r['identity'] for r in results if r['task'] == task and r['identity']]
    if identity:
      cells = [_fmt(float(np.mean([i[m] for i in identity])), math.nan, 4) for m in METRICS]
      lines.append(f'| identity (input) | — | — | 0 | — | {" | ".join(cells)} | — | — | — |')
    for variant in settings.variants:
      runs = [r for r in results if r['task'] == task and r['variant'] == variant]
      if not runs:
        continue
      ok = [r for r in runs if not r['error']]
      digits = {'psnr': 2, 'ssim': 4, 'lpips': 4, 'delta_e2000': 3}
      metric_cells = [
        _fmt(*mean_std(metric_values(results, task, variant, m)), digits[m]) for m in METRICS
      ]
      seeds = f'{len(ok)}' + (f' ({len(runs) - len(ok)} diverged)' if len(ok) < len(runs) else '')
      lines.append(
        f'| {variant} | {", ".join(_claims_of(variant))} | {seeds} | {runs[0]["params"]:,} | '
        f'{_fmt(*mean_std(metric_values(results, task, variant, "step_time")), 3)} | '
        f'{" | ".join(metric_cells)} | {_steps_cell(results, task, variant)} | '
        f'{_fmt(*mean_std(metric_values(results, task, variant, "checkerboard")), 2)} | '
        f'{_fmt(*mean_std(metric_values(results, task, variant, "sharpness")), 2)} |'
      )

  lines += ['', '## Verdicts', '']
  lines += [
    '| claim | notes say | comparison | enhance | denoise | verdict |',
    '|---|---|---|---|---|---|',
  ]
  for claim in CLAIMS:
    rows = claim_verdicts(claim, results)
    verdict = summarise_verdict(rows)
    for index, c in enumerate(claim.comparisons):
      cells = []
      for task in TASKS:
        row = next(r for r in rows if r['task'] == task and r['comparison'] == c)
        if row['verdict'] == 'not measured':
          cells.append('not run')
        else:
          unit = {'psnr': ' dB', 'steps_to_target': ' steps'}.get(c.metric, '')
          cells.append(f'{row["gain"]:+.4g}{unit} ± {row["se"]:.2g}: {row["verdict"]}')
      first = index == 0
      lines.append(
        f'| {claim.title if first else ""} | {claim.claim if first else ""} | '
        f'{c.better} vs {c.worse} on {c.metric} | {cells[0]} | {cells[1]} | '
        f'{("**" + verdict + "**") if first else ""} |'
      )
  lines += [
    '',
    'Gains are signed so that positive means the claimed-better variant is better (for LPIPS, '
    'steps, checkerboard: lower), ± the standard error of the difference.',
    '',
    '## Plots',
    '',
  ]
  for claim in CLAIMS:
    name = f'curves_{claim.key}.png'
    _plot_curves(results, claim, os.path.join(output_dir, name))
    lines.append(f'- {claim.title}: held-out PSNR during training, one line per seed: ![]({name})')
  for task, settings in preset.tasks.items():
    name = f'crops_{task}.png'
    if _plot_crops(
      results, task, settings.variants, runs_dir, preset.crop_px, os.path.join(output_dir, name)
    ):
      lines.append(f'- Before/after crop, `{task}` (input, each variant, target): ![]({name})')
  path = os.path.join(output_dir, 'ablations.md')
  with open(path, 'w') as f:
    f.write('\n'.join(lines) + '\n')
  with open(os.path.join(output_dir, 'ablations.json'), 'w') as f:
    json.dump(json_safe(results), f)
  return path
