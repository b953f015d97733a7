"""experiments/colab_tpu.ipynb runs end to end on CPU: tiny config, install cell skipped.

The notebook's `parameters` cell is replaced (as papermill would) and the notebook runs in a
kernel of this test's Python, from the repository root. The kernel inherits this process's
environment: 8 fake CPU devices (conftest.py) and the session's private cache.
"""

import json
import pathlib
import sys

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = pathlib.Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / 'experiments' / 'colab_tpu.ipynb'
KERNEL = 'unet-jax-test'


def read_notebook() -> nbformat.NotebookNode:
  notebook = nbformat.read(NOTEBOOK, as_version=4)
  nbformat.validate(notebook)
  return notebook


def parameters_cell(notebook: nbformat.NotebookNode) -> nbformat.NotebookNode:
  tagged = [c for c in notebook.cells if 'parameters' in c.metadata.get('tags', [])]
  assert len(tagged) == 1, 'the notebook needs exactly one cell tagged "parameters"'
  return tagged[0]


def cell_with(notebook: nbformat.NotebookNode, text: str) -> nbformat.NotebookNode:
  (cell,) = [c for c in notebook.cells if c.cell_type == 'code' and text in c.source]
  return cell


def images(cell: nbformat.NotebookNode) -> int:
  return sum('image/png' in output.get('data', {}) for output in cell.outputs)


def text(cell: nbformat.NotebookNode) -> str:
  streams = [output for output in cell.outputs if output.output_type == 'stream']
  return ''.join(output.text for output in streams)


def this_python_kernel(jupyter_dir: pathlib.Path) -> None:
  """A kernel spec that runs ipykernel with sys.executable, whatever `python3` means here."""
  spec_dir = jupyter_dir / 'kernels' / KERNEL
  spec_dir.mkdir(parents=True)
  spec = {
    'argv': [sys.executable, '-m', 'ipykernel_launcher', '-f', '{connection_file}'],
    'display_name': 'unet_jax test kernel',
    'language': 'python',
  }
  (spec_dir / 'kernel.json').write_text(json.dumps(spec))


def test_committed_notebook_is_clean_and_parametrised():
  notebook = read_notebook()
  source = parameters_cell(notebook).source
  for name in ('INSTALL', 'CONFIG', 'OVERRIDES', 'NUM_TRAIN_STEPS', 'WORKDIR', 'PHOTO'):
    assert f'\n{name} = ' in f'\n{source}', name
  for cell in notebook.cells:
    if cell.cell_type == 'code':
      assert cell.outputs == [] and cell.execution_count is None, 'commit the notebook clean'


@pytest.mark.slow
def test_notebook_trains_shows_and_grades_on_cpu(tmp_path, monkeypatch):
  notebook = read_notebook()
  workdir = tmp_path / 'run'
  parameters_cell(notebook).source = '\n'.join(
    [
      'INSTALL = False',
      "REPO_URL = ''",
      "CONFIG = 'configs/tiny.py'",
      'OVERRIDES = {}',
      'NUM_TRAIN_STEPS = 2',
      f'WORKDIR = {str(workdir)!r}',
      'PHOTO = None',
    ]
  )
  this_python_kernel(tmp_path / 'jupyter')
  monkeypatch.setenv('JUPYTER_PATH', str(tmp_path / 'jupyter'))
  client = NotebookClient(
    notebook,
    kernel_name=KERNEL,
    timeout=600,
    resources={'metadata': {'path': str(ROOT)}},
  )
  client.execute()  # raises CellExecutionError with the traceback if a cell fails

  assert 'INSTALL is False' in text(cell_with(notebook, '%pip install'))
  assert '8 CPU device(s)' in text(cell_with(notebook, 'jax.devices()'))
  rows = [json.loads(line) for line in (workdir / 'metrics.jsonl').read_text().splitlines()]
  assert [row['step'] for row in rows if 'train/loss' in row] == [2]
  assert [row['step'] for row in rows if 'eval/psnr' in row] == [2]
  # Loss and PSNR plot; one panel per held-out photo; the graded photo before and after.
  assert images(cell_with(notebook, "'metrics.jsonl'")) == 1
  panels = sorted(p.name for p in (workdir / 'eval' / 'step_2').glob('*.png'))
  shown = [p for p in panels if not p.endswith('_graded.png')]
  assert len(shown) >= 1 and images(cell_with(notebook, 'eval_dirs')) == len(shown)
  assert images(cell_with(notebook, 'grade_folder')) == 1
  assert sorted(p.name for p in (workdir / 'graded').iterdir()) == [
    'chelsea.png',
    'predict_summary.json',
  ]
