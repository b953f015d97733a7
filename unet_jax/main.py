r"""Train a U-Net on photo pairs, or grade, score and export with a trained run.

Modes (--mode):
  train       the default: train --config into --workdir, or resume it; ends with held-out scores
  eval        score the best checkpoint of --workdir on its held-out photos, next to doing nothing
  predict     grade --input (a photo or a folder) into the folder --output, full size, files
              written like their inputs (format, bits, profile, EXIF); never overwrites
  export      write the new folder --output: weights (safetensors), a jax.export program,
              model.onnx (with pip install '.[export]'), MODEL.md and look.cube
  export_lut  write the model's global colour mapping to --output, a new .cube 3D LUT

Examples, one per mode:
  python -m unet_jax.main --config=configs/default.py --workdir=runs/demo
  python -m unet_jax.main --config=configs/photo.py --workdir=runs/photo \
      --config.data.name=paired_folders --config.data.dir=pairs
  python -m unet_jax.main --mode=eval --workdir=runs/photo
  python -m unet_jax.main --mode=predict --workdir=runs/photo --input=shoot/ --output=graded/
  python -m unet_jax.main --mode=export --workdir=runs/photo --output=runs/photo_export
  python -m unet_jax.main --mode=export_lut --workdir=runs/photo --output=look.cube

Config values: --config.KEY=VALUE (e.g. --config.num_train_steps=2000); rerun with a larger
num_train_steps to train longer, --init_from=WORKDIR to fine-tune. Exit statuses: 0 done,
1 a bug, 2 command line, 3 config, 4 data, 5 the workdir refuses, 6 training stopped,
7 some photos failed in predict, 75 interrupted (rerun to resume). More: README.md, docs/.
"""

import logging
import os

from absl import app, flags
from ml_collections import config_flags

from unet_jax import cli_errors
from unet_jax.inference import export, lut_export, predict_options, restore
from unet_jax.training import loop, run_record, workdir_lock

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
  'config', None, 'Training config file (configs/*.py); eval and predict read the workdir.'
)
flags.DEFINE_string(
  'workdir',
  None,
  'Folder for checkpoints, logs, the config and eval output (default with --config: '
  'runs/<config file name>).',
)
flags.DEFINE_enum(
  'mode', 'train', ['train', 'eval', 'predict', 'export', 'export_lut'], 'What to do.'
)
flags.DEFINE_string(
  'input', None, 'predict: a photo or a folder of photos; export, export_lut: photos for the LUT.'
)
flags.DEFINE_string(
  'output',
  None,
  'predict: the folder for graded photos (not the input folder); export: a new folder; '
  'export_lut: a new .cube file.',
)
flags.DEFINE_integer('lut_size', 33, 'export, export_lut: grid points per axis of the .cube LUT.')
flags.DEFINE_bool('skip_existing', False, 'predict: skip photos whose output already exists.')
flags.DEFINE_bool('recursive', False, 'predict: also grade sub-folders, mirrored in --output.')
flags.DEFINE_string(
  'init_from', None, 'train: start a new run from the weights of this trained --workdir.'
)
flags.DEFINE_bool('verbose', False, 'Print the traceback of expected errors too.')


def _workdir() -> str:
  """--workdir, or `runs/<config file name>` when only --config is given (printed, so the
  eval, predict and export commands that follow know where the run is)."""
  if FLAGS.workdir:
    return FLAGS.workdir
  if FLAGS.config is None:
    raise cli_errors.UsageError(
      f'--mode={FLAGS.mode} needs --workdir=DIR (or --config=FILE, whose default workdir is '
      'runs/<config file name>).'
    )
  name = os.path.splitext(os.path.basename(config_flags.get_config_filename(FLAGS['config'])))[0]
  workdir = os.path.join('runs', name)
  print(f'Workdir: {workdir} (the default for this --config; choose one with --workdir=DIR)')
  return workdir


def _train() -> None:
  if FLAGS.config is None:
    raise cli_errors.UsageError('--mode=train needs --config (e.g. --config=configs/default.py).')
  FLAGS.workdir = _workdir()
  results = loop.train_and_evaluate(FLAGS.config, FLAGS.workdir, init_from=FLAGS.init_from)
  loop.log_final_comparison(results)
  graded = run_record.eval_dir(FLAGS.workdir, FLAGS.config.num_train_steps)
  if os.path.isdir(graded):
    print(f'Graded held-out photos (input | output | target, and *_graded.png): {graded}')


def _predict() -> int:
  if not FLAGS.input or not FLAGS.output:
    raise cli_errors.UsageError('--mode=predict needs --input=FILE_OR_DIR and --output=DIR.')
  summary = restore.run_predict(
    FLAGS.workdir,
    FLAGS.input,
    FLAGS.output,
    skip_existing=FLAGS.skip_existing,
    recursive=FLAGS.recursive,
    predict_overrides=_predict_overrides(),
  )
  print(summary, flush=True)
  return cli_errors.EXIT_PREDICT_FAILED if summary['failed'] else cli_errors.EXIT_OK


def _export() -> None:
  if not FLAGS.output:
    raise cli_errors.UsageError('--mode=export needs --output=DIR (a new or empty folder).')
  summary = export.export_workdir(
    FLAGS.workdir,
    FLAGS.output,
    input_path=FLAGS.input,
    lut_size=FLAGS.lut_size,
    predict_overrides=_predict_overrides(),
  )
  if 'lut' in summary:
    print(lut_export.fidelity_line(summary['lut']))
  print(f'Exported {FLAGS.workdir} to {FLAGS.output}: {", ".join(summary["files"])}', flush=True)


def _export_lut() -> None:
  if not FLAGS.output:
    raise cli_errors.UsageError('--mode=export_lut needs --output=FILE.cube.')
  fidelity = lut_export.export_lut(
    FLAGS.workdir,
    FLAGS.output,
    input_path=FLAGS.input,
    size=FLAGS.lut_size,
    predict_overrides=_predict_overrides(),
  )
  print(lut_export.fidelity_line(fidelity))
  print(f'Wrote {fidelity["output"]}', flush=True)


def _predict_overrides() -> dict:
  """The `--config.predict.*` values given to eval/predict/export (others refused). A bare
  --config=FILE is refused beside --workdir (it would be ignored); alone it names the workdir."""
  if FLAGS.config is None:
    return {}
  overrides = dict(config_flags.get_override_values(FLAGS['config']))
  refused = predict_options.refused_keys(overrides)
  if refused:
    raise cli_errors.UsageError(
      f'--config.{refused[0]}: --mode={FLAGS.mode} uses the model and config saved in '
      '--workdir; only --config.predict.* options can be given to it.'
    )
  if not overrides:
    if not FLAGS['workdir'].present:
      return {}  # --config only named the default workdir, runs/<config file name>
    raise cli_errors.UsageError(
      f'--config is for --mode=train: --mode={FLAGS.mode} reads the config saved in --workdir '
      '(give --config.predict.* options with it to change how this command grades).'
    )
  logging.info(
    'This command grades with %s.', ', '.join(f'config.{k}={v!r}' for k, v in overrides.items())
  )
  return overrides


def _dispatch() -> int | None:
  if FLAGS.mode == 'train':
    return _train()
  if FLAGS.init_from:
    raise cli_errors.UsageError('--init_from is for --mode=train.')
  FLAGS.workdir = _workdir()
  # Refused while a training holds the workdir (status 5, naming it); see workdir_lock.py.
  with workdir_lock.hold(FLAGS.workdir, exclusive=False, purpose=f'--mode={FLAGS.mode}'):
    return _read_workdir()


def _read_workdir() -> int | None:
  if FLAGS.mode == 'eval':
    loop.log_final_comparison(
      restore.run_eval(FLAGS.workdir, predict_overrides=_predict_overrides())
    )
    return None
  if FLAGS.mode == 'export':
    return _export()
  if FLAGS.mode == 'export_lut':
    return _export_lut()
  return _predict()


def main(argv: list[str]) -> int:
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}', exitcode=cli_errors.EXIT_USAGE)
  logging.getLogger().setLevel(logging.INFO)
  # Orbax and tfds log every save step through absl at INFO; keep their warnings only.
  logging.getLogger('absl').setLevel(logging.WARNING)
  logging.getLogger('jax._src.xla_bridge').setLevel(logging.WARNING)
  return cli_errors.run(_dispatch, verbose=FLAGS.verbose)


if __name__ == '__main__':
  app.run(main, flags_parser=cli_errors.parse_flags)
