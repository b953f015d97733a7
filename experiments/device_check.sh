#!/usr/bin/env bash
# The prepared accelerator check: run once on a GPU machine (sized for an H100/H200, under 8
# minutes from a bare machine), then copy its figures into BENCHMARKS.md.
#
#   OUT=/tmp/device_check bash experiments/device_check.sh            # on the GPU machine
#   bash experiments/device_check.sh --dry-run                        # anywhere: CPU, tiny sizes
#
# Steps (each under its own time limit; a failing step is recorded and the next one runs):
#   install    CUDA builds of jax and torch (skipped where both already see a GPU), then the
#              project's requirements. Offline machines: PIP_NO_INDEX=1 PIP_FIND_LINKS=<wheels>.
#   tests      the tests whose code paths differ by backend, on the GPU (JAX_PLATFORMS=cuda)
#   benchmark  experiments/benchmark.py, res512 at 512 px in bfloat16 against PyTorch AMP:
#              images/s, ratio, MFU
#   train      500 steps of res256 through the library: images/s, final held-out PSNR
#   predict    a 24 MP photo graded file to file (experiments/predict_memory.py)
# Output: $OUT/device_check.json (every step's figures and status) and $OUT/device_check.log.
# --dry-run (or DRY_RUN=1) runs every step but the installs, on CPU with tiny sizes, so that
# the script is known to work before a device is at hand (tests/experiments/test_device_check.py).
set -uo pipefail
cd "$(dirname "$0")/.."

DRY_RUN=${DRY_RUN:-0}
for arg in "$@"; do
  case "$arg" in
    --dry-run) DRY_RUN=1 ;;
    *) echo "device_check.sh: unknown argument '$arg' (only --dry-run)" >&2; exit 2 ;;
  esac
done
OUT=${OUT:-/tmp/device_check}
mkdir -p "$OUT"
WORK=$(mktemp -d)
LOG="$OUT/device_check.log"
: >"$LOG"
PYTHON=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
STATUS="$WORK/status.tsv"
: >"$STATUS"

log() { echo "[$(date -u +%H:%M:%S)] $*" | tee -a "$LOG"; }

# run_step NAME SECONDS COMMAND...: runs COMMAND with a time limit, output to the log.
run_step() {
  local name=$1 limit=$2
  shift 2
  log "step $name (limit ${limit}s): $*"
  local start=$SECONDS
  timeout "$limit" "$@" >>"$LOG" 2>&1
  local rc=$?
  printf '%s\t%s\t%s\n' "$name" "$rc" "$((SECONDS - start))" >>"$STATUS"
  log "step $name: exit $rc after $((SECONDS - start)) s"
}

if [[ "$DRY_RUN" == 1 ]]; then
  export JAX_PLATFORMS=cpu
  CONFIG_BENCH=configs/tiny.py
  BENCH_ARGS=(--resolution=32 --batch=8 --steps=1 --warmup=0 --compare-predict-megapixels=0.01)
  CONFIG_TRAIN=configs/tiny.py TRAIN_ARGS=(--config.num_train_steps=2)
  CONFIG_PREDICT=configs/tiny.py PREDICT_ARGS=(--width=96 --height=64)
  TESTS=(tests/models/test_batch_norm.py -k 'implementation_by_backend')
  LIMIT=600
else
  CONFIG_BENCH=configs/res512.py
  BENCH_ARGS=(--resolution=512 --batch=16 --steps=20 --warmup=3 --compare-predict-megapixels=0)
  CONFIG_TRAIN=configs/res256.py
  TRAIN_ARGS=(--config.num_train_steps=500 --config.eval_every_steps=500
    --config.checkpoint_every_steps=500 --config.log_every_steps=50)
  CONFIG_PREDICT=configs/res256.py PREDICT_ARGS=(--width=6000 --height=4000)
  TESTS=(tests/models/test_batch_norm.py tests/models/test_unet.py tests/inference/test_predict.py
    tests/experiments/test_benchmark_reference.py)
  # Per-step limits that add up to 8 minutes with the install.
  LIMIT_INSTALL=150 LIMIT_TESTS=75 LIMIT_BENCHMARK=120 LIMIT_TRAIN=90 LIMIT_PREDICT=45
fi
LIMIT_TESTS=${LIMIT_TESTS:-$LIMIT} LIMIT_BENCHMARK=${LIMIT_BENCHMARK:-$LIMIT}
LIMIT_TRAIN=${LIMIT_TRAIN:-$LIMIT} LIMIT_PREDICT=${LIMIT_PREDICT:-$LIMIT}

log "device_check.sh: dry_run=$DRY_RUN out=$OUT"
if [[ "$DRY_RUN" == 1 ]]; then
  log 'step install: skipped (dry run)'
  printf 'install\tskipped\t0\n' >>"$STATUS"
else
  install() {
    if "$PYTHON" -c 'import jax, sys; sys.exit(jax.default_backend() != "gpu")' 2>/dev/null \
      && "$PYTHON" -c 'import torch, sys; sys.exit(not torch.cuda.is_available())' 2>/dev/null; then
      echo 'CUDA jax and torch already see the GPU: no CUDA install.'
    else
      # PyPI's Linux torch wheels are CUDA builds; jax's CUDA build is its cuda12 extra.
      "$PYTHON" -m pip install --quiet "${JAX_PIP_SPEC:-jax[cuda12]>=0.8,<0.11}" \
        "${TORCH_PIP_SPEC:-torch}" || return 1
    fi
    # Everything else the project needs, keeping the CUDA jax just installed or found.
    grep -v '^jax' requirements.txt >"$WORK/requirements.txt"
    "$PYTHON" -m pip install --quiet -r "$WORK/requirements.txt" pytest || return 1
    "$PYTHON" -c 'import jax, torch; print(jax.__version__, jax.devices(), torch.__version__,
torch.cuda.is_available())'
    "$PYTHON" -c 'import jax, sys; sys.exit(jax.default_backend() != "gpu")'
  }
  run_step install "$LIMIT_INSTALL" bash -c "$(declare -f install); PYTHON=$PYTHON WORK=$WORK install"
  export JAX_PLATFORMS=cuda
fi
nvidia-smi >>"$LOG" 2>&1 || true

# The suite's conftest asks for 8 CPU devices; JAX_PLATFORMS above puts these tests on the GPU.
# One process (`-o addopts=` drops pyproject's `-n auto`: one GPU, and no pytest-xdist installed).
run_step tests "$LIMIT_TESTS" "$PYTHON" -m pytest -q -o addopts= -p no:cacheprovider "${TESTS[@]}"
run_step benchmark "$LIMIT_BENCHMARK" "$PYTHON" -m experiments.benchmark --config="$CONFIG_BENCH" \
  "${BENCH_ARGS[@]}" --compare-torch --predict-size=0 --pipeline-seconds=0 \
  --json-out="$WORK/benchmark.json"
run_step train "$LIMIT_TRAIN" "$PYTHON" -m experiments.train_check --config="$CONFIG_TRAIN" \
  "${TRAIN_ARGS[@]}" --workdir="$WORK/train" --json-out="$WORK/train.json"
run_step predict "$LIMIT_PREDICT" "$PYTHON" -m experiments.predict_memory --config="$CONFIG_PREDICT" \
  "${PREDICT_ARGS[@]}" --json-out="$WORK/predict.json"

"$PYTHON" - "$WORK" "$OUT/device_check.json" "$DRY_RUN" <<'EOF'
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
for name in ('benchmark', 'train', 'predict'):
  path = work / f'{name}.json'
  report[name] = json.loads(path.read_text()) if path.exists() else None
bench = report['benchmark']
if bench:
  row = bench['train'][0]
  report['summary'] = {
    'device': bench['environment']['device_kind'],
    'jax_images_per_second': row['jax']['images_per_second'],
    'torch_images_per_second': row.get('torch', {}).get('images_per_second'),
    'jax_over_torch': row.get('jax_over_torch'),
    'mfu': row['jax'].get('mfu'),
  }
if report['train']:
  report.setdefault('summary', {}).update(
    train_images_per_second=report['train']['images_per_second'],
    held_out_psnr=report['train']['eval'].get('psnr'),
    identity_psnr=report['train']['eval_identity'].get('psnr'),
  )
if report['predict']:
  report.setdefault('summary', {}).update(
    predict_seconds=report['predict']['seconds_with_compile'],
    predict_megapixels=report['predict']['megapixels'],
    predict_device_peak_bytes=report['predict']['device_peak_bytes'],
  )
out.write_text(json.dumps(report, indent=2, default=str))
print(json.dumps(report.get('summary', {}), indent=2))
failed = [n for n, s in steps.items() if s['exit'] not in ('0', 'skipped')]
if failed:
  print('failed steps:', ', '.join(failed))
sys.exit(1 if failed else 0)
EOF
rc=$?
log "wrote $OUT/device_check.json (exit $rc)"
rm -rf "$WORK"
exit $rc
