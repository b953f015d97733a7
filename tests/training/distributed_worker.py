"""One process of a short tiny-config training run; started by test_distributed.py.

Usage:
  python -m tests.training.distributed_worker WORKDIR NUM_PROCESSES PROCESS_ID PORT LOCAL_DEVICES

(from the repository root).
"""

import os
import sys

from tests import xla_flags

workdir, num_processes, process_id, port, local_devices = sys.argv[1:6]
# The suite's compile flags (tests/xla_flags.py), its own device count.
os.environ['XLA_FLAGS'] = xla_flags.with_devices(int(local_devices))
os.environ['JAX_PLATFORMS'] = 'cpu'

from configs import tiny  # noqa: E402
from unet_jax.training import loop  # noqa: E402

config = tiny.get_config()
config.num_train_steps = 3
config.checkpoint_every_steps = 3
config.eval_every_steps = 3
if int(num_processes) > 1:
  config.distributed.coordinator_address = f'localhost:{port}'
  config.distributed.num_processes = int(num_processes)
  config.distributed.process_id = int(process_id)
loop.train_and_evaluate(config, workdir)
