"""Loading a run for inference reads its weights only: no optimizer is built, the optimizer
state stays on disk, and the variables are the saved EMA weights and BatchNorm statistics."""

import jax
import numpy as np
import optax
import pytest

from tests.helpers import tiny_config
from unet_jax.inference import restore
from unet_jax.models import create_model
from unet_jax.training import checkpoint, run_record, train_state


@pytest.mark.parametrize('norm', ['batch', 'none'])
def test_load_reads_the_weights_without_building_an_optimizer(tmp_path, monkeypatch, norm):
  config = tiny_config(
    **{'model.norm': norm, 'data.name': 'paired_folders', 'data.dir': '/nowhere'}
  )
  model = create_model(config.model, task=config.task)
  # An optimizer with more state than the default, so a restore that needed it would fail.
  optimizer = optax.chain(optax.adam(1e-3), optax.scale_by_rms())
  state = train_state.create_train_state(config, model, optimizer, jax.random.key(3))
  state = state.replace(
    step=state.step + 7,
    ema_params=jax.tree.map(lambda p: p + 0.5, state.params),
    batch_stats=jax.tree.map(lambda s: s + 0.25, state.batch_stats),
  )
  saver = checkpoint.Checkpointer(str(tmp_path), config)
  saver.save_best(state, {'psnr': 30.0})
  saver.wait()
  saver.close()
  (tmp_path / run_record.CONFIG_FILE).write_text(config.to_json_best_effort(indent=2))

  def refuse(*args, **kwargs):
    raise AssertionError('inference built an optimizer or a train state')

  monkeypatch.setattr(train_state, 'create_optimizer', refuse)
  monkeypatch.setattr(train_state, 'create_train_state', refuse)
  loaded_config, loaded_model, variables, path = restore.load_trained_model(str(tmp_path))

  assert path.endswith(f'{checkpoint.BEST_DIR}/7') and loaded_model == model
  assert set(variables) == {'params', 'batch_stats'}
  for got, want in (
    (variables['params'], state.ema_params),
    (variables['batch_stats'], state.batch_stats),
  ):
    assert jax.tree.structure(got) == jax.tree.structure(want)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
      np.testing.assert_array_equal(a, b)
  assert (norm == 'none') == (not jax.tree.leaves(variables['batch_stats']))
