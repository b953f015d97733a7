"""Runs the tests' Python commands in processes forked from one that has the CLI's modules loaded.

The suite starts `python -m unet_jax.main` some fifty times, and experiment scripts a few more;
each start first imports jax, flax, optax, orbax, grain and tensorflow-datasets: about 5
CPU-seconds here before the command does anything. This server pays for those imports once per
test worker; each command then runs in a child forked from it, which is still a process of its
own, as a user's is: the module or script runs afresh as `__main__` (as `-m` runs
`unet_jax.main`: new flags, new config), with its own JAX backend,
working folder, environment, stdin (empty), stdout and stderr, and its exit status comes back
as the process's. An exception nothing catches ends the child as it ends Python: a traceback on
stderr and status 1.

Forking is safe because the server has only imported modules: one thread, no JAX backend (the
backend, its thread pools and `XLA_FLAGS` come in the child). jax reads its `JAX_*` variables
when imported, so `tests/helpers.py` sends a command whose `JAX_*` variables differ from the
server's to a plain subprocess instead.

Protocol, one JSON object per line: the test sends `{argv, cwd, env, stdout, stderr, timeout}`
(`argv`: the interpreter's arguments, `-m MODULE ...`, `-c SOURCE ...` or `SCRIPT ...`), the
server answers `{"status": N}` or `{"timeout": true}` once the child has ended.
"""

import ast
import json
import os
import pathlib
import runpy
import signal
import sys
import time

_MAIN = pathlib.Path(__file__).resolve().parents[1] / 'unet_jax' / 'main.py'


def _preload() -> None:
  """Runs the import statements of `unet_jax/main.py` (not the module itself: it defines the
  command's flags, which each child must define once, as `-m` does)."""
  tree = ast.parse(_MAIN.read_text(), str(_MAIN))
  imports = [node for node in tree.body if isinstance(node, ast.Import | ast.ImportFrom)]
  exec(compile(ast.Module(imports, type_ignores=[]), str(_MAIN), 'exec'), {})


def _child(request: dict) -> None:
  """The forked command; it leaves by SystemExit or an uncaught exception, never returns."""
  signal.signal(signal.SIGTERM, signal.SIG_DFL)
  devnull = os.open(os.devnull, os.O_RDONLY)
  os.dup2(devnull, 0)
  for fd, path in ((1, request['stdout']), (2, request['stderr'])):
    os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), fd)
  os.chdir(request['cwd'])
  os.environ.clear()
  os.environ.update(request['env'])
  first, *rest = request['argv']
  if first == '-m':  # python -m MODULE ARGS
    module, *args = rest
    sys.argv, sys.path[0] = ['-m', *args], os.getcwd()
    runpy.run_module(module, run_name='__main__', alter_sys=True)
  elif first == '-c':  # python -c SOURCE ARGS
    source, *args = rest
    sys.argv, sys.path[0] = ['-c', *args], ''
    exec(compile(source, '<string>', 'exec'), {'__name__': '__main__'})
  else:  # python SCRIPT ARGS
    sys.argv, sys.path[0] = [first, *rest], os.path.dirname(os.path.abspath(first))
    runpy.run_path(first, run_name='__main__')
  sys.exit(0)


def _wait(pid: int, timeout: float) -> dict:
  deadline = time.monotonic() + timeout
  while True:
    done, status = os.waitpid(pid, os.WNOHANG)
    if done:
      return {'status': os.waitstatus_to_exitcode(status)}
    if time.monotonic() > deadline:
      os.kill(pid, signal.SIGKILL)
      os.waitpid(pid, 0)
      return {'timeout': True}
    time.sleep(0.02)


def serve() -> None:
  replies = os.fdopen(os.dup(1), 'w')
  for line in sys.stdin:
    request = json.loads(line)
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
      replies.close()
      _child(request)
    replies.write(json.dumps(_wait(pid, request['timeout'])) + '\n')
    replies.flush()


if __name__ == '__main__':
  _preload()
  serve()
