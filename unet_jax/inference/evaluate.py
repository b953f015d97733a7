"""Evaluation on the held-out split at full resolution, beside the identity baseline.

Each test image is graded whole by tiled inference (`grading.grade_image`), so memory stays
bounded and every image compiles the same tile shape. Metrics are averaged over images; with
several processes each grades its share and the sums are combined.
"""

import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from clu import metrics as clu_metrics
from jax.experimental import multihost_utils
from PIL import Image

from unet_jax import data, metrics
from unet_jax.data import colour_spaces
from unet_jax.data.images import to_uint8
from unet_jax.inference import grading
from unet_jax.models import UNet


def side_by_side(*images: np.ndarray) -> np.ndarray:
  """Concatenates `[H, W, C]` images left to right (input | output | target)."""
  height = max(image.shape[0] for image in images)
  padded = [np.pad(image, ((0, height - image.shape[0]), (0, 0), (0, 0))) for image in images]
  return np.concatenate(padded, axis=1)


class ImageScores:
  """Per-image scores averaged over every image of every process (`clu.metrics.Average`)."""

  def __init__(self):
    self._averages: dict[str, clu_metrics.Average] = {}
    self.count = 0

  @property
  def names(self) -> list[str]:
    return sorted(self._averages)

  def add(self, scores: dict[str, Any]) -> None:
    for name, value in scores.items():
      one = clu_metrics.Average.from_model_output(jnp.asarray(value, jnp.float32).reshape(()))
      self._averages[name] = self._averages[name].merge(one) if name in self._averages else one
    self.count += 1

  def means(self, names: list[str]) -> dict[str, float]:
    """The mean of each of `names` over all processes' images (0 where none were scored)."""
    empty = clu_metrics.Average(total=jnp.float32(0.0), count=jnp.int32(0))
    averages = {name: self._averages.get(name, empty) for name in names}
    if jax.process_count() > 1:
      # Each process's (total, count) stacked on a leading axis, which clu's reduce() sums.
      averages = {
        name: jax.tree.map(jnp.asarray, multihost_utils.process_allgather(average)).reduce()
        for name, average in averages.items()
      }
    return {name: float(a.compute()) if int(a.count) else 0.0 for name, a in averages.items()}


def _sum_over_processes(values: np.ndarray) -> np.ndarray:
  if jax.process_count() == 1:
    return values
  return np.asarray(multihost_utils.process_allgather(values)).sum(axis=0)


def evaluate(
  config: ml_collections.ConfigDict,
  model: UNet,
  variables: dict[str, Any],
  *,
  lpips_params: Any = None,
  data_dir: str | None = None,
  output_dir: str | None = None,
  max_images: int | None = None,
) -> dict[str, Any]:
  """Grades every eval image and scores it.

  Returns `{'model': {...}, 'identity': {...}, 'images': [...], 'examples': [...]}`: mean
  metrics of the model and of the untouched input (what doing nothing scores), per-image
  scores, and up to `config.num_image_summaries` (input, output, target) triples for display.
  With `output_dir`, writes `metrics.json`, an `input | output | target` PNG per image and the
  graded image alone (`<name>_graded.png`); for segmentation, an `input | predicted | true`
  panel and the predicted class ids (`<name>_labels.png`).
  """
  if output_dir is not None:
    # Every process writes the panels of its own share of the images (metrics.json is process
    # 0's), so each one makes sure the folder exists where it writes.
    os.makedirs(output_dir, exist_ok=True)
  if config.task == 'segment':
    return _evaluate_segmentation(config, model, variables, data_dir, output_dir, max_images)

  model_scores, identity_scores = ImageScores(), ImageScores()
  per_image, examples, nonfinite = [], [], 0
  # The pixels are in the run's working space: tag the PNGs with it (sRGB ones stay untagged).
  space = config.data.working_space
  tag = {} if space == 'srgb' else {'icc_profile': colour_spaces.profile_bytes(space)}
  for example in _eval_examples(config, data_dir, max_images):
    graded = grading.grade_image(
      model, variables, example['input'], **grading.tile_settings(config)
    )
    nonfinite += int(not np.all(np.isfinite(graded)))
    target = example['target']
    scores = metrics.image_metrics(graded[None], target[None], lpips_params)
    baseline = metrics.image_metrics(example['input'][None], target[None], lpips_params)
    model_scores.add(scores)
    identity_scores.add(baseline)
    name = str(example['name'])
    per_image.append(
      {
        'name': name,
        'model': {k: float(np.asarray(v).reshape(())) for k, v in scores.items()},
        'identity': {k: float(np.asarray(v).reshape(())) for k, v in baseline.items()},
      }
    )
    if len(examples) < config.num_image_summaries:
      examples.append((name, side_by_side(example['input'], np.clip(graded, 0, 1), target)))
    if output_dir is not None:
      panel = side_by_side(example['input'], graded, target)
      Image.fromarray(to_uint8(panel)).save(os.path.join(output_dir, f'{name}.png'), **tag)
      graded_path = os.path.join(output_dir, f'{name}_graded.png')
      Image.fromarray(to_uint8(graded)).save(graded_path, **tag)

  names = model_scores.names or ['psnr']
  results = {
    'model': model_scores.means(names),
    'identity': identity_scores.means(names),
    'num_images': int(_sum_over_processes(np.array([model_scores.count]))[0]),
    # Images the model graded to NaN or Inf somewhere (the scores clip them away).
    'nonfinite_outputs': int(_sum_over_processes(np.array([nonfinite]))[0]),
    'images': per_image,
    'examples': examples,
  }
  _write_json(results, output_dir)
  return results


def _eval_examples(config, data_dir, max_images):
  """This process's share of the eval split, at most `max_images` examples."""
  examples = data.create_eval_iterator(
    config,
    data_dir=data_dir,
    process_index=jax.process_index(),
    process_count=jax.process_count(),
  )
  for index, example in enumerate(examples):
    if max_images is not None and index >= max_images:
      return
    yield example


def _evaluate_segmentation(config, model, variables, data_dir, output_dir, max_images):
  num_classes = config.model.num_classes
  confusion = np.zeros((num_classes, num_classes), np.float64)
  examples, count = [], 0
  for example in _eval_examples(config, data_dir, max_images):
    labels = grading.segment_image(
      model, variables, example['input'], **grading.tile_settings(config)
    )
    confusion += np.asarray(
      metrics.confusion_matrix(
        labels[None], example['mask'][None], num_classes, config.loss.ignore_label
      )
    )
    count += 1
    name = str(example['name'])
    panel = side_by_side(
      example['input'],
      _labels_as_gray(labels, num_classes),
      _labels_as_gray(example['mask'], num_classes),
    )
    if len(examples) < config.num_image_summaries:
      examples.append((name, panel))
    if output_dir is not None:
      Image.fromarray(to_uint8(panel)).save(os.path.join(output_dir, f'{name}.png'))
      mask = Image.fromarray(labels.astype(np.uint8))
      mask.save(os.path.join(output_dir, f'{name}_labels.png'))
  confusion = _sum_over_processes(confusion)
  results = {
    'model': metrics.segmentation_scores(confusion),
    'num_images': int(_sum_over_processes(np.array([count]))[0]),
    'examples': examples,
  }
  _write_json(results, output_dir)
  return results


def _labels_as_gray(labels: np.ndarray, num_classes: int) -> np.ndarray:
  gray = labels.astype(np.float32) / max(num_classes - 1, 1)
  return np.repeat(gray[..., None], 3, axis=-1)


def _write_json(results: dict[str, Any], output_dir: str | None) -> None:
  if output_dir is None or jax.process_index() != 0:
    return
  serialisable = {k: v for k, v in results.items() if k != 'examples'}
  with open(os.path.join(output_dir, 'metrics.json'), 'w') as f:
    json.dump(serialisable, f, indent=2)
