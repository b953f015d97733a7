"""The promises of README.md and docs/*.md that code can check.

Every command they show: its flags exist in `unet_jax.main` (or in the experiment script it
runs), `--config.X` keys exist in the config it names and take a value of the key's type, the
files and folders it names exist; `--help` runs. Every link to a file in the repository points
at one. And the parameter table of docs/models.md matches the code.
"""

import ast
import importlib
import importlib.util
import pathlib
import re
import shlex
import tomllib

import jax
import jax.numpy as jnp
import ml_collections
import pytest

from tests.helpers import run_main
from unet_jax.config import get_base_config
from unet_jax.models import count_params, create_model

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = (ROOT / 'README.md').read_text()
DOCS = [
  ROOT / 'README.md',
  ROOT / 'DEVELOPERS.md',
  *sorted((ROOT / 'docs').glob('*.md')),
  ROOT / 'experiments' / 'results' / 'README.md',
]
# Pages the README links that other branches of the same change write; the link check skips
# them only while they are absent.
WRITTEN_ELSEWHERE = {'docs/options.md', 'docs/code-tour.md', 'docs/gpu.md'}
README_MAX_LINES = 170
PICTURE = ROOT / 'docs' / 'readme_picture.jpg'


def _rel(path: pathlib.Path) -> str:
  return str(path.relative_to(ROOT))


def _load_config(path: pathlib.Path):
  spec = importlib.util.spec_from_file_location(path.stem, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


# ---------------------------------------------------------------------------------------------
# Commands: fenced shell blocks (continuation lines joined, comments dropped) and inline code.

_FENCE = re.compile(r'^```(\w*)\n(.*?)^```', re.MULTILINE | re.DOTALL)
_PROGRAMS = ('python ', 'python3 ', 'pip ', 'bash ', 'OUT=')


def _commands(text: str) -> list[str]:
  commands = []
  for language, body in _FENCE.findall(text):
    if language not in ('', 'bash', 'sh'):
      continue
    for line in body.replace('\\\n', ' ').splitlines():
      for part in line.split(' && '):
        part = part.split(' # ')[0].strip()
        if part.startswith(_PROGRAMS):
          commands.append(' '.join(part.split()))
  outside = _FENCE.sub('', text)
  for span in re.findall(r'`([^`]+)`', outside):
    span = ' '.join(span.split())
    if span.startswith(('python -m unet_jax.main', 'python3 -m unet_jax.main', 'python experim')):
      commands.append(span)
  return commands


def _all_commands() -> list[tuple[str, str]]:
  return [(_rel(doc), command) for doc in DOCS for command in _commands(doc.read_text())]


def _main_flags() -> dict[str, list[str] | None]:
  """The flags `unet_jax/main.py` defines, each with its enum values (None for other kinds).

  Read from the source rather than by importing it: importing would define them in the test
  process's global absl FLAGS, beside other modules' flags of the same names.
  """
  found = {}
  tree = ast.parse((ROOT / 'unet_jax' / 'main.py').read_text())
  for node in ast.walk(tree):
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
      continue
    if not node.func.attr.startswith('DEFINE') or not node.args:
      continue
    name = ast.literal_eval(node.args[0])
    found[name] = ast.literal_eval(node.args[2]) if node.func.attr == 'DEFINE_enum' else None
  return found


# Defined by absl.app.run, not at import.
_ABSL_HELP = ('help', 'helpshort', 'helpfull', 'helpxml')


def _config_key(config, dotted: str):
  """The value at `dotted` in `config`; KeyError names the first missing part."""
  node = config
  for part in dotted.split('.'):
    if part not in node:
      raise KeyError(f'{dotted}: no {part!r}')
    node = node[part]
  return node


def _check_value(dotted: str, current, value: str) -> None:
  if isinstance(current, bool):
    assert value.lower() in ('true', 'false'), f'--config.{dotted}={value}: not a bool'
  elif isinstance(current, (int, float)):
    float(value)  # raises for a non-number


def _check_main_command(args: list[str]) -> None:
  known = _main_flags()
  options = {}
  for arg in args:
    assert arg.startswith('--'), f'{arg}: not a flag'
    name, _, value = arg[2:].partition('=')
    options[name] = value
    if name.startswith('config.'):
      continue
    bare = name.removeprefix('no') if name.removeprefix('no') in known else name
    assert bare in known or bare in _ABSL_HELP, f'--{name} is not a flag of unet_jax.main'
  if 'mode' in options:
    assert options['mode'] in known['mode'], f'--mode={options["mode"]}'
  if 'config' in options:
    assert (ROOT / options['config']).is_file(), f'--config={options["config"]}: no such file'
    config = _load_config(ROOT / options['config'])
  else:
    config = get_base_config()
  for name, value in options.items():
    if name.startswith('config.'):
      dotted = name.removeprefix('config.')
      assert 'config' in options, f'--{name} without --config'
      _check_value(dotted, _config_key(config, dotted), value)


def _check_script(script: str, args: list[str]) -> None:
  path = ROOT / script
  assert path.is_file(), f'{script}: no such file'
  source = path.read_text()
  for arg in args:
    name = arg.removeprefix('--').partition('=')[0]
    if name.startswith('config'):
      continue
    assert re.search(rf"DEFINE_\w+\(\s*'{re.escape(name.replace('-', '_'))}'", source) or (
      f"'--{name}'" in source
    ), f'{script} defines no --{name}'


def _check_python_c(code: str) -> None:
  for node in ast.walk(ast.parse(code)):
    if isinstance(node, ast.ImportFrom):
      module = importlib.import_module(node.module)
      for alias in node.names:
        assert hasattr(module, alias.name), f'{node.module} has no {alias.name}'


def _check_pip(args: list[str]) -> None:
  extras = tomllib.loads((ROOT / 'pyproject.toml').read_text())['project']['optional-dependencies']
  for index, arg in enumerate(args):
    if args[index - 1] == '-r':
      assert (ROOT / arg).is_file(), f'pip install -r {arg}: no such file'
    elif arg.startswith('.['):
      assert arg[2:-1] in extras, f'pyproject.toml has no extra {arg[2:-1]!r}'
    elif arg.startswith('torch=='):
      assert arg in (ROOT / 'requirements-torch.txt').read_text()


@pytest.mark.parametrize(('doc', 'command'), _all_commands(), ids=lambda x: x[:70])
def test_every_command_is_true(doc, command):
  words = shlex.split(command)
  while words and '=' in words[0] and not words[0].startswith('-'):  # OUT=dir bash ...
    words = words[1:]
  program, args = words[0], words[1:]
  if program in ('python', 'python3') and args[:2] == ['-m', 'unet_jax.main']:
    _check_main_command(args[2:])
  elif program in ('python', 'python3') and args[:1] == ['-c']:
    _check_python_c(args[1])
  elif program in ('python', 'python3') and args[0].endswith('.py'):
    _check_script(args[0], args[1:])
  elif program == 'pip':
    _check_pip(args)
  elif program == 'bash':
    assert (ROOT / args[0]).is_file(), f'{args[0]}: no such file'


@pytest.mark.parametrize('doc', DOCS, ids=_rel)
def test_every_config_key_named_in_the_text_exists(doc):
  """Inline `--config.a.b=v` outside commands: a key of the base config every config extends."""
  base = get_base_config()
  for span in re.findall(r'`([^`]+)`', _FENCE.sub('', doc.read_text())):
    for word in span.split():
      if word.startswith('--config.'):
        dotted, _, value = word.removeprefix('--config.').partition('=')
        if dotted == '*':  # any key
          continue
        if dotted.endswith('.*'):  # a whole section, e.g. --config.predict.*
          assert isinstance(_config_key(base, dotted[:-2]), ml_collections.ConfigDict), dotted
          continue
        current = _config_key(base, dotted)
        if value and not value.isupper():  # KEY=VALUE placeholders stay as they are
          _check_value(dotted, current, value)


def test_the_command_check_catches_a_wrong_flag_key_and_file():
  with pytest.raises(AssertionError, match='--lut_sise'):
    _check_main_command(['--mode=export_lut', '--lut_sise=17'])
  with pytest.raises(KeyError, match='data.working_spcae'):
    _check_main_command(['--config=configs/photo.py', '--config.data.working_spcae=srgb'])
  with pytest.raises(AssertionError, match='no such file'):
    _check_main_command(['--config=configs/photos.py'])
  with pytest.raises(ValueError):
    _check_main_command(['--config=configs/photo.py', '--config.num_train_steps=many'])
  assert _commands(
    '```bash\npython -m unet_jax.main --mode=eval \\\n  --workdir=x  # c\n```\n'
  ) == ['python -m unet_jax.main --mode=eval --workdir=x']


@pytest.mark.slow
def test_help_says_the_modes_and_an_example_per_mode():
  text = run_main('--help').stdout
  head = text.split('flags:')[0]
  for mode in _main_flags()['mode']:
    assert re.search(rf'^  {mode} ', head, flags=re.MULTILINE), f'--help does not explain {mode}'
    if mode != 'train':
      assert f'--mode={mode} ' in head, f'--help has no example of --mode={mode}'
  assert '--config=configs/default.py' in head and '--config.KEY=VALUE' in head
  assert '--workdir:' in text and 'skip_existing:' in text  # the flag list follows
  assert len(text.splitlines()) <= 60, 'more than a screen'
  examples = [line.strip() for line in head.splitlines() if 'unet_jax.main' in line]
  for example in examples:  # each example is itself a true command
    _check_main_command(shlex.split(example.rstrip('\\'))[3:])


# ---------------------------------------------------------------------------------------------
# Links, named files, the README's shape.


def _links(text: str) -> list[str]:
  return [
    target
    for target in re.findall(r'\]\(([^)\s]+)\)', text)
    if not target.startswith(('http://', 'https://', 'mailto:'))
  ]


def _slug(heading: str) -> str:
  return re.sub(r'[^\w\- ]', '', heading.strip().lower()).replace(' ', '-')


@pytest.mark.parametrize('doc', DOCS, ids=_rel)
def test_links_and_named_files_exist(doc):
  text = doc.read_text()
  for link in _links(text):
    path, _, anchor = link.partition('#')
    target = (doc.parent / path).resolve() if path else doc
    if _rel(target) in WRITTEN_ELSEWHERE and not target.exists():
      continue
    assert target.exists(), f'{_rel(doc)} links {link}: no such file'
    if anchor:
      headings = re.findall(r'^#+ (.+)$', target.read_text(), flags=re.MULTILINE)
      assert anchor in {_slug(h) for h in headings}, f'{_rel(doc)} links {link}: no such heading'
  for span in re.findall(r'`((?:configs|experiments|unet_jax|tests|docs|\.ci)/[\w./-]*)`', text):
    assert (ROOT / span).exists(), f'{_rel(doc)} names {span}: no such file'


def test_readme_is_a_front_door():
  lines = README.splitlines()
  assert len(lines) <= README_MAX_LINES
  sections = re.findall(r'^## (.+)$', README, flags=re.MULTILINE)
  assert sections[0] == 'Your own photos'
  assert f']({_rel(PICTURE)})' in README.split('## ')[0]
  assert PICTURE.stat().st_size < 200_000
  own = README.split('## Your own photos')[1].split('\n## ')[0]
  assert '--config=configs/photo.py' in own and '--mode=predict' in own
  assert '--mode=export_lut' in own and 'minutes on 2 CPU cores' in own


def test_readme_opens_with_the_main_job_and_the_ci_test_command():
  commands = re.findall(r'^(pip install .+)$', README.split('## ')[0], flags=re.MULTILINE)
  assert commands[0] == (
    'pip install -r requirements.txt && python -m unet_jax.main '
    '--config=configs/default.py --workdir=runs/demo'
  )
  install, test_command = commands[1].split(' && ')
  ci = (ROOT / '.ci' / 'run').read_text()
  assert test_command in ci
  assert install.removeprefix('pip install ') in ci


# ---------------------------------------------------------------------------------------------
# The parameter table of docs/models.md.

MODELS = (ROOT / 'docs' / 'models.md').read_text()


def _table_rows():
  table = MODELS.split('<!-- param-table -->')[1].split('<!-- /param-table -->')[0]
  rows = []
  for line in table.strip().splitlines():
    cells = [cell.strip() for cell in line.strip('|').split('|')]
    config_file = re.search(r'`(configs/\w+\.py)`', cells[0]).group(1)
    levels, base, crop, batch = (int(cell) for cell in cells[1:5])
    rows.append((config_file, levels, base, crop, batch, int(cells[5].replace(',', ''))))
  return rows


def test_table_lists_every_config():
  listed = {row[0] for row in _table_rows()}
  assert listed == {f'configs/{path.name}' for path in (ROOT / 'configs').glob('*.py')}


@pytest.mark.parametrize('row', _table_rows(), ids=lambda row: row[0])
def test_parameter_table_matches_the_code(row):
  config_file, levels, base, crop, batch, params = row
  config = _load_config(ROOT / config_file)
  assert (config.model.levels, config.model.base_channels) == (levels, base)
  assert (config.data.crop_size, config.batch_size) == (crop, batch)
  model = create_model(config.model, task=config.task)
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3))))
  assert count_params(variables['params']) == params
