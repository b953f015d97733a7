"""A run never keeps or serves garbage, never resumes on other data, never locks its workdir.

Each test is one of the failure cases found by probing the CLI (issue 15), plus EMA bias
correction, train longer and fine-tuning.
"""

import json
import math
import pathlib
import shutil

import grain
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

from tests import helpers as data_helpers
from tests.helpers import saved_params, tiny_config
from unet_jax import data, parallel
from unet_jax.data import DataError
from unet_jax.inference import restore
from unet_jax.models import create_model
from unet_jax.training import checkpoint, finetune, guards, loop, run_record, steps
from unet_jax.training.train_state import create_optimizer, create_train_state, init_train_state
from unet_jax.validation import ConfigError, validate_config


def pairs_config(root, **overrides):
  settings = {
    'data.name': 'paired_folders',
    'data.dir': str(root),
    'data.eval_size': None,
  }
  settings.update(overrides)
  return tiny_config(steps=6, **settings)


def write_dataset(root, *, seed=0, train_names=('a', 'b', 'c', 'd')):
  data_helpers.write_pairs(root, 'train', list(train_names), seed=seed)
  data_helpers.write_pairs(root, 'test', ['t'], seed=seed + 50)
  return root


# ----------------------------------------------------------------------------- EMA


@pytest.mark.slow
def test_ema_is_the_bias_corrected_average_of_trained_weights():
  config = tiny_config(steps=6)  # the same step as the training tests: compiled once
  decay = config.optimizer.ema_decay
  assert decay == 0.999
  mesh = parallel.create_mesh()
  model = create_model(config.model, task=config.task)
  optimizer = create_optimizer(config)
  replicated = parallel.replicated(mesh)
  state = init_train_state(config, model, optimizer, jax.random.key(0), replicated)
  initial = jax.device_get(state.params)
  sharding = jax.tree.map(lambda _: replicated, state)
  step_fn = steps.make_train_step(config, model, optimizer, mesh, sharding)
  rng = np.random.default_rng(0)
  trained = []
  for _ in range(5):
    pixels = rng.random((8, 32, 32, 3), dtype=np.float32)
    batch = parallel.shard_batch({'input': pixels, 'target': pixels**2}, mesh)
    state, _ = step_fn(state, batch, {})
    trained.append(jax.device_get(state.params))
  n = len(trained)
  weights = [decay ** (n - k) * (1 - decay) / (1 - decay**n) for k in range(1, n + 1)]
  expected = jax.tree.map(
    lambda *ps: sum(w * p for w, p in zip(weights, ps, strict=True)), *trained
  )
  ema = jax.device_get(state.ema_params)
  jax.tree.map(lambda e, x: np.testing.assert_allclose(e, x, rtol=1e-4, atol=1e-6), ema, expected)
  # A raw EMA would still be 99.5 % the initial weights after 5 steps at 0.999.
  kernel = lambda tree: np.concatenate([np.ravel(x) for x in jax.tree.leaves(tree)])
  moved = np.linalg.norm(kernel(trained[-1]) - kernel(initial))
  assert np.linalg.norm(kernel(ema) - kernel(initial)) > 0.3 * moved


@pytest.mark.slow
def test_a_run_traces_its_step_once(tmp_path, monkeypatch):
  """Six steps, logs, saves and an eval compile the step once; nothing is left cached for a
  later run to pick up (the non-finite tests below patch the step's code between runs)."""
  traced = []
  real = steps.compute_loss

  def counting(*args):
    traced.append(1)
    return real(*args)

  monkeypatch.setattr(steps, 'compute_loss', counting)
  loop.train_and_evaluate(tiny_config(steps=6), str(tmp_path / 'run'))
  assert len(traced) == 1
  loop.train_and_evaluate(tiny_config(steps=6, num_train_steps=7), str(tmp_path / 'run'))
  assert len(traced) == 2


# ----------------------------------------------------------------------------- non-finite


@pytest.mark.slow
def test_nonfinite_weights_with_a_finite_loss_stop_training_without_a_checkpoint(
  tmp_path, monkeypatch
):
  workdir = str(tmp_path / 'run')
  loop.train_and_evaluate(tiny_config(steps=6), workdir, stop_at_step=2)
  good, _ = saved_params(workdir)
  real = optax.apply_updates
  poisoned = lambda p, u: jax.tree.map(lambda x: x * jnp.nan, real(p, u))
  monkeypatch.setattr(optax, 'apply_updates', poisoned)
  # The message names what went non-finite (issue 32): here the weights, not the loss.
  refused = (
    r'non-finite at step 3: the parameters of all \d+ top-level modules; the EMA weights.*'
    'lower config.optimizer.learning_rate'
  )
  with pytest.raises(guards.TrainingStopped, match=refused):
    loop.train_and_evaluate(tiny_config(steps=6), workdir)
  after, step = saved_params(workdir)
  assert step == 2
  jax.tree.map(np.testing.assert_array_equal, after, good)


def _write_poisoned_checkpoint(config, workdir, step, poison=lambda x: x * jnp.nan):
  """Bypasses the guards to put a NaN state at `step` (what an older version could write)."""
  model = create_model(config.model, task=config.task)
  target = jax.eval_shape(
    lambda: create_train_state(config, model, create_optimizer(config), jax.random.key(0))
  )
  iterator = data.create_train_iterator(config, process_index=0, process_count=1)
  saver = checkpoint.Checkpointer(workdir, config)
  state = saver.restore_latest(target, iterator)
  nan_ema = jax.tree.map(poison, state.ema_params)
  poisoned = state.replace(step=jnp.asarray(step, jnp.int32), ema_params=nan_ema)
  saver._latest.save(
    step,
    args=ocp.args.Composite(
      state=ocp.args.StandardSave(poisoned),
      data=grain.checkpoint.CheckpointSave(iterator),
    ),
  )
  saver.wait()
  saver.close()


@pytest.mark.slow
def test_a_nonfinite_checkpoint_is_refused_by_resume_eval_and_predict(tmp_path):
  config = tiny_config(steps=6)
  workdir = str(tmp_path / 'run')
  loop.train_and_evaluate(config, workdir, stop_at_step=2)
  _write_poisoned_checkpoint(config, workdir, 3)
  refused = r'checkpoints/3 holds NaN or Inf weights \(ema_params'
  with pytest.raises(checkpoint.CheckpointError, match=refused):
    loop.train_and_evaluate(config, workdir)
  with pytest.raises(checkpoint.CheckpointError, match='checkpoints/3'):
    restore.load_trained_model(workdir)


@pytest.mark.slow
def test_diverged_but_finite_weights_fail_eval_instead_of_scoring_nan(tmp_path):
  # A huge learning rate can keep weights of ~1e30: finite, so the checkpoint is restored,
  # but every graded pixel is NaN or Inf. Eval says so (exit status 5) instead of "nan dB".
  config = tiny_config(steps=6)
  workdir = str(tmp_path / 'run')
  loop.train_and_evaluate(config, workdir, stop_at_step=2)
  _write_poisoned_checkpoint(config, workdir, 3, poison=lambda x: jnp.full_like(x, 1e30))
  with pytest.raises(
    checkpoint.CheckpointError,
    match='checkpoints/3: the model grades 3 of 3 eval photos to NaN or Inf',
  ):
    restore.run_eval(workdir)


def test_nan_config_values_are_refused_and_compare_equal():
  with pytest.raises(ConfigError, match=r'config.optimizer.learning_rate=nan is not a finite'):
    validate_config(tiny_config(steps=6, **{'optimizer.learning_rate': math.nan}))
  with pytest.raises(ConfigError, match=r'config.loss.ssim=inf'):
    validate_config(tiny_config(steps=6, **{'loss.ssim': math.inf}))
  saved = json.loads(tiny_config(steps=6, **{'loss.l1': math.nan}).to_json_best_effort())
  assert run_record.config_changes(saved, json.loads(json.dumps(saved))) == {}


# ----------------------------------------------------------------------------- divergence


def test_divergence_monitor_warns_after_patience_and_on_a_bad_eval():
  monitor = guards.DivergenceMonitor(tiny_config(steps=6, **{'divergence.patience': 2}))
  assert [monitor.check_loss(s, v) for s, v in [(1, 1.0), (2, 0.5), (3, 6.0)]] == [None] * 3
  warning = monitor.check_loss(4, 60.0)
  assert 'step 4' in warning and 'loss_factor=10' in warning
  assert monitor.check_loss(5, 0.4) is None
  bad = {'model': {'psnr': 10.0}, 'identity': {'psnr': 20.0}}
  assert 'step 7' in monitor.check_eval(7, bad)
  assert monitor.check_eval(8, {'model': {'psnr': 19.0}, 'identity': {'psnr': 20.0}}) is None
  nan_eval = {'model': {'psnr': math.nan}, 'identity': {'psnr': 20.0}}
  assert 'worse than doing nothing' in monitor.check_eval(9, nan_eval)
  # A photo the edit leaves as it is gives the identity an infinite mean PSNR: no comparison.
  already_graded = {'model': {'psnr': 37.0}, 'identity': {'psnr': math.inf}}
  assert monitor.check_eval(10, already_graded) is None
  assert 'worse' in monitor.check_eval(
    11, {'model': {'psnr': math.nan}, 'identity': already_graded['identity']}
  )
  assert not monitor.stops


@pytest.mark.slow
def test_a_diverging_run_stops_naming_the_step_when_asked(tmp_path, monkeypatch):
  config = tiny_config(steps=6, **{'divergence.patience': 1, 'divergence.action': 'stop'})
  workdir = str(tmp_path / 'run')
  loop.train_and_evaluate(config, workdir, stop_at_step=2)
  real = steps.compute_loss

  def exploding(*args):
    loss, terms = real(*args)
    return loss * 1e6, terms

  monkeypatch.setattr(steps, 'compute_loss', exploding)
  with pytest.raises(guards.TrainingStopped, match='diverges at step 4'):
    loop.train_and_evaluate(config, workdir)
  assert saved_params(workdir)[1] == 4


# ----------------------------------------------------------------------------- workdir record


@pytest.mark.slow
def test_a_run_failing_before_its_first_checkpoint_does_not_block_the_fix(tmp_path):
  root = write_dataset(tmp_path / 'pairs')
  data_helpers.save(root / 'train' / 'input' / 'small.png', data_helpers.random_pixels(9, 20, 20))
  data_helpers.save(root / 'train' / 'target' / 'small.png', data_helpers.random_pixels(9, 20, 20))
  workdir = str(tmp_path / 'run')
  with pytest.raises(DataError, match='smaller than the crop'):
    loop.train_and_evaluate(pairs_config(root), workdir)
  assert not pathlib.Path(workdir, run_record.CONFIG_FILE).exists()
  # The fix the message suggests, in the same workdir.
  fixed = pairs_config(root, **{'data.bad_pair_policy': 'skip'})
  loop.train_and_evaluate(fixed, workdir, stop_at_step=2)
  assert saved_params(workdir)[1] == 2
  saved = json.loads(pathlib.Path(workdir, run_record.CONFIG_FILE).read_text())
  assert saved['data']['bad_pair_policy'] == 'skip'
  history = run_record.read_history(workdir)
  assert [entry['event'] for entry in history] == ['start']


@pytest.mark.slow
def test_resuming_on_other_training_data_is_refused_but_a_moved_copy_and_eval_changes_are_not(
  tmp_path,
):
  original = write_dataset(tmp_path / 'pairs')
  workdir = str(tmp_path / 'run')
  loop.train_and_evaluate(pairs_config(original), workdir, stop_at_step=2)

  other = write_dataset(tmp_path / 'other', seed=7, train_names=('a', 'b', 'c'))
  with pytest.raises(run_record.WorkdirError) as error:
    loop.train_and_evaluate(pairs_config(other), workdir)
  message = str(error.value)
  assert 'not what the run' in message
  assert 'train/input/a.png' in message and 'are gone' in message

  copy = tmp_path / 'copy'
  shutil.copytree(original, copy)  # new mtimes, same contents
  data_helpers.save(copy / 'test' / 'input' / 't.png', data_helpers.random_pixels(3, 40, 48))
  data_helpers.save(copy / 'test' / 'target' / 't.png', data_helpers.random_pixels(4, 40, 48))
  loop.train_and_evaluate(pairs_config(copy), workdir, stop_at_step=4)
  assert saved_params(workdir)[1] == 4
  [_, resume] = run_record.read_history(workdir)
  assert resume['changes']['data.dir'] == [str(original), str(copy)]


def test_resuming_with_a_different_config_is_refused(tmp_path):
  workdir = str(tmp_path / 'run')
  run = run_record.Run(tiny_config(steps=6), workdir, resuming=False)
  run.check_data({'kind': 'tfds'})
  run.commit(0)
  with pytest.raises(run_record.WorkdirError, match=r'config.model.base_channels: 8 -> 16'):
    run_record.Run(tiny_config(steps=6, **{'model.base_channels': 16}), workdir, resuming=True)
  with pytest.raises(run_record.WorkdirError, match='num_train_steps may only grow'):
    run_record.Run(tiny_config(steps=6, num_train_steps=3), workdir, resuming=True)
  longer = tiny_config(steps=6, log_every_steps=1, num_train_steps=9)
  accepted = run_record.Run(longer, workdir, resuming=True)
  assert accepted.changes == {'log_every_steps': (2, 1), 'num_train_steps': (6, 9)}
  # Not committed (no checkpoint): any config may start over.
  run_record.Run(tiny_config(steps=6, **{'model.base_channels': 16}), workdir, resuming=False)


# -------------------------------------------------------------------- train longer, fine-tune


@pytest.mark.slow
def test_train_longer_continues_and_matches_a_longer_run_under_a_constant_schedule(tmp_path):
  # Steps 5 and 6 of a 7-step run (stopped there, so no eval) against 4 steps then 7.
  constant = {'optimizer.end_learning_rate_factor': 1.0, 'eval_every_steps': 100}
  straight = str(tmp_path / 'straight')
  loop.train_and_evaluate(tiny_config(steps=7, **constant), straight, stop_at_step=6)
  longer = str(tmp_path / 'longer')
  loop.train_and_evaluate(tiny_config(steps=4, **constant), longer)
  assert saved_params(longer)[1] == 4
  loop.train_and_evaluate(tiny_config(steps=7, **constant), longer, stop_at_step=6)
  expected, _ = saved_params(straight)
  resumed, step = saved_params(longer)
  assert step == 6
  jax.tree.map(np.testing.assert_array_equal, resumed, expected)
  history = run_record.read_history(longer)
  assert history[-1]['event'] == 'resume' and history[-1]['step'] == 4
  assert history[-1]['changes'] == {'num_train_steps': [4, 7]}
  assert run_record.load_config(longer).num_train_steps == 7


@pytest.fixture(scope='module')
def source_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('source'))
  loop.train_and_evaluate(tiny_config(steps=6), workdir, stop_at_step=2)
  return workdir


@pytest.mark.slow
def test_init_from_starts_from_the_other_runs_weights(source_run, tmp_path):
  config = tiny_config(steps=6, seed=1)
  model = create_model(config.model, task=config.task)
  fresh = create_train_state(config, model, create_optimizer(config), jax.random.key(1))
  state, origin = finetune.load_weights(source_run, fresh)
  theirs, step = saved_params(source_run)
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(state.params), theirs)
  assert int(state.step) == 0 and origin['checkpoint'].endswith(f'checkpoints/{step}')
  jax.tree.map(np.testing.assert_array_equal, state.opt_state, fresh.opt_state)

  workdir = str(tmp_path / 'tuned')
  loop.train_and_evaluate(config, workdir, init_from=source_run, stop_at_step=2)
  [start] = run_record.read_history(workdir)
  assert start['init_from'] == source_run and start['step'] == 0
  other = tmp_path / 'other_source'
  shutil.copytree(source_run, other)
  refused = '--init_from=.*already holds a run started from'
  with pytest.raises(run_record.WorkdirError, match=refused):
    loop.train_and_evaluate(config, workdir, init_from=str(other))


@pytest.mark.slow
def test_init_from_refuses_a_model_of_other_shapes(source_run, tmp_path):
  config = tiny_config(steps=6, **{'model.base_channels': 16})
  model = create_model(config.model, task=config.task)
  fresh = jax.eval_shape(
    lambda: create_train_state(config, model, create_optimizer(config), jax.random.key(1))
  )
  refused = (
    r'--init_from=.*does not match config.model .*conv_0.kernel has shape \(3, 3, 16, 32\) there, '
    r'\(3, 3, 32, 64\) here'
  )
  with pytest.raises(run_record.WorkdirError, match=refused):
    finetune.load_weights(source_run, fresh)
  with pytest.raises(run_record.MissingRunError, match='--init_from='):
    loop.train_and_evaluate(config, str(tmp_path / 'x'), init_from=str(tmp_path / 'nowhere'))


def test_the_guard_message_names_what_went_nonfinite_and_what_causes_it():
  message = guards.nonfinite_step_message(
    {'loss': np.nan, 'grad_norm': np.nan, 'finite': False, 'loss_l1': 0.2, 'loss_ssim': np.nan},
    7,
  )
  assert 'non-finite at step 7: the loss (nan; non-finite terms: ssim)' in message
  assert 'config.loss.*' in message
  message = guards.nonfinite_step_message({'loss': 0.5, 'grad_norm': np.inf, 'finite': False}, 8)
  assert 'non-finite at step 8: the gradients (norm inf; loss 0.5 was finite)' in message
  assert 'config.optimizer.grad_clip_norm' in message
