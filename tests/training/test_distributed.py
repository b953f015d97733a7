"""Two processes x 2 CPU devices train the same parameters as one process x 4 devices."""

import json
import os
import pathlib
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from tests.helpers import saved_params

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def _launch(workdir, num_processes, local_devices):
  port = _free_port()
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
  processes = [
    subprocess.Popen(
      [
        sys.executable,
        '-m',
        'tests.training.distributed_worker',
        workdir,
        str(num_processes),
        str(i),
        str(port),
        str(local_devices),
      ],
      env=env,
      cwd=ROOT,
      stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT,
      text=True,
    )
    for i in range(num_processes)
  ]
  for process in processes:
    output, _ = process.communicate(timeout=400)
    assert process.returncode == 0, output[-3000:]


@pytest.mark.slow
def test_two_processes_match_one_process_with_the_same_device_count(tmp_path):
  single, multi = str(tmp_path / 'single'), str(tmp_path / 'multi')
  _launch(single, num_processes=1, local_devices=4)
  _launch(multi, num_processes=2, local_devices=2)
  expected, step = saved_params(single)
  got, multi_step = saved_params(multi)
  assert step == multi_step == 3
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), got, expected)
  # Eval scores averaged over both processes' shares of the images equal one process's.
  single_eval, multi_eval = (_logged_eval(workdir) for workdir in (single, multi))
  assert single_eval.keys() == multi_eval.keys() and 'eval/psnr' in single_eval
  for name, value in single_eval.items():
    np.testing.assert_allclose(multi_eval[name], value, rtol=1e-4, err_msg=name)


def _logged_eval(workdir: str) -> dict[str, float]:
  lines = pathlib.Path(workdir, 'metrics.jsonl').read_text().splitlines()
  logged = [json.loads(line) for line in lines]
  return {k: v for line in logged for k, v in line.items() if k.startswith('eval')}
