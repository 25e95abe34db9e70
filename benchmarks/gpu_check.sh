#!/usr/bin/env bash
# The GPU check: the CUDA tests and a short benchmark on one CUDA GPU, one table, within 5 minutes.
#
#   bash benchmarks/gpu_check.sh --prepare   # on a machine with pip access: wheels + built-in networks into .gpu/
#   bash benchmarks/gpu_check.sh             # on the GPU machine, from the repo root (carry .gpu/ along)
#
# The GPU machine is assumed to hold python3 with a CUDA build of torch, torchvision, pytest and scikit-image but
# not Beam, and to reach no network: --prepare downloads the wheels that are missing there (Beam and what it needs
# that such an image lacks) and builds the built-in stylizers (magenta26, magenta_arbitrary) into .gpu/cache, so
# nothing is fetched or converted on the GPU's time. Without --prepare's folder the script runs on what is installed.
#
# Environment: PHOTOS (default 1000) photos per size, SIZES (default "256 512"), PYTHON (default python3), DEVICE
# (default cuda; DEVICE=cpu PHOTOS=8 SIZES=64 runs the same steps on a CPU, to try the script).
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
PHOTOS=${PHOTOS:-1000}
SIZES=${SIZES:-256 512}
GPU_DIR=.gpu
DEVICE=${DEVICE:-cuda}

# Packages such an image already holds (the device machine's list); their wheels are not carried.
PRESENT="certifi charset_normalizer grpcio idna numpy packaging pillow protobuf pyarrow pyparsing python_dateutil
pyyaml requests six sortedcontainers typing_extensions urllib3 cloudpickle fsspec"

if [[ "${1:-}" == "--prepare" ]]; then
  set -e
  mkdir -p "$GPU_DIR/wheels" "$GPU_DIR/cache"
  exclude=$(git rev-parse --git-path info/exclude)
  mkdir -p "$(dirname "$exclude")"
  grep -qxF "/$GPU_DIR/" "$exclude" 2>/dev/null || echo "/$GPU_DIR/" >>"$exclude"
  beam=$($PYTHON -c "import apache_beam; print(apache_beam.__version__)")
  download=$(mktemp -d)
  $PYTHON -m pip download --quiet --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux1_x86_64 --platform any -d "$download" "apache-beam==$beam"
  for wheel in "$download"/*.whl; do
    name=$(basename "$wheel" | cut -d- -f1 | tr '[:upper:]-' '[:lower:]_')
    [[ " $(echo $PRESENT) " == *" $name "* ]] || cp "$wheel" "$GPU_DIR/wheels/"
  done
  rm -rf "$download"
  STYLEBEAM_CACHE="$PWD/$GPU_DIR/cache" $PYTHON -c \
    "from models.style.registry import resolve; [print(resolve(n)) for n in ('magenta26', 'magenta_arbitrary')]"
  du -sh "$GPU_DIR"
  echo "prepared: carry $GPU_DIR along (device tool: carry=[\"$GPU_DIR\"]) and run: bash benchmarks/gpu_check.sh"
  exit 0
fi

if ! $PYTHON -c "import apache_beam" 2>/dev/null && compgen -G "$GPU_DIR/wheels/*.whl" >/dev/null; then
  $PYTHON -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/gpu-site \
    "$GPU_DIR"/wheels/*.whl || exit 1
  export PYTHONPATH=/tmp/gpu-site:$PWD
else
  export PYTHONPATH=$PWD
fi
[[ -d "$GPU_DIR/cache" ]] && export STYLEBEAM_CACHE="$PWD/$GPU_DIR/cache"
export PYTHONUNBUFFERED=1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

nvidia-smi -L 2>/dev/null || echo "nvidia-smi: not found"
DEVICE=$DEVICE $PYTHON - <<'EOF' || exit 1
import os
import torch
if os.environ["DEVICE"] == "cpu":
    print(f"torch {torch.__version__}, on CPU")
elif not torch.cuda.is_available():
    raise SystemExit("error: no CUDA GPU is visible to torch: this check runs on a GPU machine")
else:
    print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.get_device_name(0)}")
EOF

echo "== CUDA tests"
$PYTHON -m pytest -q -n0 -p no:cacheprovider tests/models/style/test_runner.py tests/models/style/test_stylizer.py \
  tests/transforms/test_stylize.py 2>&1 | tail -5

echo "== model only (magenta26, channels-last, inference mode)"
$PYTHON -m benchmarks.stylizer --checkpoint magenta26 --devices "$DEVICE" --sizes "$(echo $SIZES | tr ' ' ,)" \
  --batch-sizes 8,16,32,64 --no-gatys --reps 5

echo "== the augment job end to end (--device $DEVICE, --styles random:1, $PHOTOS photos per size)"
if ! $PYTHON -c "import apache_beam" 2>/dev/null; then
  echo "apache_beam is not installed: run with --prepare first where pip works, and carry $GPU_DIR"
  exit 1
fi
rows=()
for size in $SIZES; do
  $PYTHON -c "from pathlib import Path; from benchmarks.augment import make_photos; \
make_photos(Path('$work/photos$size/a'), $PHOTOS, $size)" || exit 1
  for setting in "auto 32" "fp32 32" "auto 8" "auto 64"; do
    read -r precision batch <<<"$setting"
    out="$work/out$size-$precision-$batch"
    start=$(date +%s.%N)
    if $PYTHON -m pipelines.augment --input "$work/photos$size" --output "$out" --device "$DEVICE" --styles random:1 \
      --image-size 0 --precision "$precision" --batch-size "$batch" --no-progress >"$out.log" 2>&1; then
      wall=$(echo "$(date +%s.%N) - $start" | bc)
      rows+=("$($PYTHON -c "import json; s = json.load(open('$out/summary.json')); n = s['counts']['rows_written']; \
print(f'{$size:>5} {\"$precision\":>9} {$batch:>6} {n:>6} {$wall:>8.1f} {n / $wall:>9.1f} {n / s[\"elapsed_s\"]:>10.1f}')")")
    else
      rows+=("$(printf '%5s %9s %6s failed: %s' "$size" "$precision" "$batch" "$(tail -1 "$out.log")")")
    fi
  done
done
printf '%5s %9s %6s %6s %8s %9s %10s\n' size precision batch images wall_s img/s in-job/s
printf '%s\n' "${rows[@]}"
