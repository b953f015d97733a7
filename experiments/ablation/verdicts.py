"""Statistics over seeds and the verdict on each claim."""

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from experiments.ablation.claims import LOWER_IS_BETTER, TASKS, Claim

# Steps-to-target: the first eval step whose PSNR reaches identity + this fraction of the
# baseline's mean final gain over identity on the same task.
TARGET_FRACTION = 0.5
# A difference counts when it exceeds this many standard errors of the difference of two means.
SIGNIFICANCE_SE = 2.0


def metric_values(results, task, variant, key) -> list[float]:
  out = []
  for r in results:
    if r['task'] != task or r['variant'] != variant or r['error']:
      continue
    value = r.get(key)
    if value is None:
      value = r['model'].get(key, r['measures'].get(key))
    if value is not None and math.isfinite(value):
      out.append(float(value))
  return out


def mean_std(values: Sequence[float]) -> tuple[float, float]:
  if not values:
    return math.nan, math.nan
  std = float(np.std(values, ddof=1)) if len(values) > 1 else math.nan
  return float(np.mean(values)), std


def steps_to_target(curve: Sequence[Sequence[float]], target: float) -> float:
  """The first eval step whose PSNR reaches `target` (inf if none does)."""
  for step, psnr in curve:
    if psnr is not None and psnr >= target:
      return float(step)
  return math.inf


def add_steps_to_target(results: list[dict[str, Any]]) -> dict[str, float]:
  """Sets `steps_to_target` on each result; returns the target PSNR per task."""
  targets = {}
  for task in TASKS:
    baseline = [r for r in results if r['task'] == task and r['variant'] == 'baseline']
    baseline = [r for r in baseline if 'psnr' in r['model'] and 'psnr' in r['identity']]
    if not baseline:
      continue
    identity = float(np.mean([r['identity']['psnr'] for r in baseline]))
    gain = float(np.mean([r['model']['psnr'] for r in baseline])) - identity
    targets[task] = identity + TARGET_FRACTION * max(gain, 0.0)
  for r in results:
    if r['task'] in targets and r['curve']:
      steps = steps_to_target(r['curve'], targets[r['task']])
      r['steps_to_target'] = steps
      # For the verdicts, a run that never reached the target counts as reaching it one eval
      # interval after its last eval (a lower bound on what it needed).
      last = r['curve'][-1][0]
      interval = last - r['curve'][-2][0] if len(r['curve']) > 1 else last
      r['steps_censored'] = steps if math.isfinite(steps) else float(last + interval)
  return targets


def pooled_std(groups: Sequence[Sequence[float]]) -> float:
  """Seed-to-seed std pooled over every group with two or more seeds (nan if none has)."""
  dof = sum(len(g) - 1 for g in groups if len(g) > 1)
  if not dof:
    return math.nan
  return math.sqrt(sum((len(g) - 1) * np.var(g, ddof=1) for g in groups if len(g) > 1) / dof)


def compare(
  better: list[float], worse: list[float], metric: str, noise_std: float | None = None
) -> dict[str, Any]:
  """Tests "`better` beats `worse` on `metric`": supported / contradicted / not supported.

  `noise_std`: the seed-to-seed std to judge the difference by (pooled over the variants of a
  task, so that a variant run with one seed can still be judged); None pools the two groups.
  """
  sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
  if not better or not worse:
    return {'verdict': 'not measured', 'gain': math.nan, 'se': math.nan}
  gain = float(sign * (np.mean(better) - np.mean(worse)))
  std = pooled_std([better, worse]) if noise_std is None else noise_std
  if not math.isfinite(std):
    return {'verdict': 'not supported at this scale (one seed: no spread)', 'gain': gain, 'se': 0}
  se = std * math.sqrt(1.0 / len(better) + 1.0 / len(worse))
  if gain > SIGNIFICANCE_SE * se and gain > 0:
    verdict = 'supported'
  elif -gain > SIGNIFICANCE_SE * se and gain < 0:
    verdict = 'contradicted'
  else:
    verdict = 'not supported at this scale (within seed noise)'
  return {'verdict': verdict, 'gain': gain, 'se': float(se)}


def claim_verdicts(claim: Claim, results: list[dict[str, Any]]) -> list[dict[str, Any]]:
  rows = []
  for task in TASKS:
    variants = sorted({r['variant'] for r in results if r['task'] == task})
    for c in claim.comparisons:
      key = 'steps_censored' if c.metric == 'steps_to_target' else c.metric
      better = metric_values(results, task, c.better, key)
      worse = metric_values(results, task, c.worse, key)
      # The two groups' own spread; the task's pooled spread only when neither has two seeds.
      noise = pooled_std([better, worse])
      if not math.isfinite(noise):
        noise = pooled_std([metric_values(results, task, v, key) for v in variants])
      outcome = compare(better, worse, c.metric, noise)
      rows.append({'task': task, 'comparison': c, **outcome})
  return rows


def summarise_verdict(rows: list[dict[str, Any]]) -> str:
  measured = [r for r in rows if r['verdict'] != 'not measured']
  if not measured:
    return 'not run in this preset'
  kinds = {r['verdict'].split(' (')[0] for r in measured}
  if kinds == {'supported'}:
    return 'supported'
  if kinds == {'contradicted'}:
    return 'contradicted'
  if {'supported', 'contradicted'} <= kinds:
    return 'mixed: parts supported, parts contradicted'
  if 'supported' in kinds or 'contradicted' in kinds:
    return 'partly supported' if 'supported' in kinds else 'partly contradicted'
  return 'not supported at this scale'
