#!/usr/bin/env bash
# The GPU check, on a GPU machine with no network and no display (docs/cuda.md, "The offline GPU kit").
#
#   scripts/gpu_check.sh DIR OUTDIR
#
# DIR is a kit made by `scripts/gpu_kit.py prepare DIR`. Installs it into OUTDIR/venv, a venv that sees the
# system's packages (its CUDA torch is used, never replaced), builds pycuda with GL interop, then runs, each
# step time-boxed (about 9 minutes in all on one H100): the NVRTC build of the kernels for this GPU, the GPU
# tests, one frame under compute-sanitizer memcheck and racecheck, the render benchmark (lego 800x800 and
# 1920x1080, cuda vs torch on the same GPU) and 3 minutes of `--preset gpu` training on lego. Writes
# OUTDIR/report.json and OUTDIR/report.md (and one log per step); exits 1 when a check failed.
#
# Environment: PYTHON (default python3); KILONERF_DATA (datasets root, default ../shared/data);
# KILONERF_PYCUDA_WORK (pycuda build folder, default OUTDIR/pycuda); KILONERF_GPU_CHECK_SKIP_GPU=1 runs all
# but the GPU steps, which are recorded as skipped (what CI does on a machine without a GPU);
# KILONERF_GPU_CHECK_VIEWER=1 also builds imgui from the kit's source (the viewer; no check needs it).
set -uo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
die() { echo "gpu_check: $*" >&2; exit 2; }
[ $# -eq 2 ] || die "usage: scripts/gpu_check.sh DIR OUTDIR (DIR from scripts/gpu_kit.py prepare)"
DIR="$1"; OUT="$2"
[ -f "$DIR/kit.json" ] || die "$DIR has no kit.json (make it with scripts/gpu_kit.py prepare $DIR)"
PYTHON="${PYTHON:-python3}"
command -v "$PYTHON" >/dev/null 2>&1 || die "no Python at '$PYTHON' (set PYTHON)"
mkdir -p "$OUT" || die "cannot create $OUT"
DIR="$(cd "$DIR" && pwd)"; OUT="$(cd "$OUT" && pwd)"
VENV="$OUT/venv"; VPY="$VENV/bin/python"
DATA="${KILONERF_DATA:-$ROOT/../shared/data}"
PYCUDA_WORK="${KILONERF_PYCUDA_WORK:-$OUT/pycuda}"
: > "$OUT/steps.jsonl"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" KILONERF_CUDA_CACHE="$OUT/cuda-cache"
export PYOPENGL_PLATFORM=egl OMP_WAIT_POLICY=PASSIVE

# --- the GPU, or why there is none ------------------------------------------------------------------------
NO_GPU=""
if [ -n "${KILONERF_GPU_CHECK_SKIP_GPU:-}" ]; then
    NO_GPU="KILONERF_GPU_CHECK_SKIP_GPU is set"
elif ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
    NO_GPU="no GPU: nvidia-smi finds no device"
fi
ARCH="sm_90"
if [ -z "$NO_GPU" ]; then
    CC="$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -n 1 | tr -d ' .')"
    [ -n "$CC" ] && ARCH="sm_$CC"
fi

# --- steps ---------------------------------------------------------------------------------------------------
record() {  # name status milliseconds detail
    "$PYTHON" -c 'import json, sys; print(json.dumps({"name": sys.argv[1], "status": sys.argv[2],
        "seconds": round(int(sys.argv[3]) / 1000, 1), "detail": sys.argv[4][:300]}))' "$@" >> "$OUT/steps.jsonl"
}
FAILED_SETUP=""
step() {  # name timeout_s command... : runs it, logs to OUTDIR/name.log, records passed / failed
    local name="$1" limit="$2"; shift 2
    if [ -n "$FAILED_SETUP" ]; then record "$name" skipped 0 "not run: $FAILED_SETUP failed"; return 1; fi
    echo "gpu_check: $name (at most ${limit} s)"
    local t0 rc; t0="$(date +%s%N)"
    timeout --kill-after=15 "$limit" "$@" > "$OUT/$name.log" 2>&1; rc=$?
    local secs=$(( ($(date +%s%N) - t0) / 1000000 ))
    local last; last="$(grep -v '^\s*$' "$OUT/$name.log" | tail -n 1)"
    if [ "$rc" -eq 0 ]; then record "$name" passed "$secs" "$last"; return 0; fi
    [ "$rc" -eq 124 ] && last="timed out after ${limit} s; $last"
    record "$name" failed "$secs" "exit $rc: $last"; return "$rc"
}
gpu_step() {  # like step, skipped without a GPU
    if [ -n "$NO_GPU" ]; then record "$1" skipped 0 "$NO_GPU"; return 0; fi
    step "$@"
}
kit_list() { "$PYTHON" -c 'import json, sys; print(" ".join(json.load(open(sys.argv[1]))[sys.argv[2]]))' "$DIR/kit.json" "$1"; }
PIP=("$VPY" -m pip --disable-pip-version-check -q install --no-index --find-links "$DIR")

step venv 120 "$PYTHON" -m venv --system-site-packages "$VENV" || FAILED_SETUP="venv"
# shellcheck disable=SC2046
step install 300 "${PIP[@]}" $(kit_list install) || FAILED_SETUP="${FAILED_SETUP:-install}"
if [ -n "${KILONERF_GPU_CHECK_VIEWER:-}" ]; then
    # shellcheck disable=SC2046
    step viewer-deps 600 "${PIP[@]}" --no-build-isolation $(kit_list optional)
fi
step pycuda 600 "$ROOT/scripts/install_pycuda.sh" --python "$VPY" --find-links "$DIR" --work "$PYCUDA_WORK" \
    || FAILED_SETUP="${FAILED_SETUP:-pycuda}"
step nvrtc 120 "$VPY" "$ROOT/scripts/gpu_bench.py" nvrtc --arch "$ARCH" --out "$OUT/nvrtc.json"
step environment 60 "$VPY" "$ROOT/scripts/gpu_bench.py" env --out "$OUT/environment.json"
cd "$ROOT" || exit 1
gpu_step gpu-tests 150 env KILONERF_REQUIRE_GPU=1 "$VPY" -m pytest -q -p no:cacheprovider -m gpu \
    tests/test_cuda_gpu.py --junitxml "$OUT/gpu-tests.xml"
SANITIZER="$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null || true)"
FRAME=("$VPY" -m renderer render "$ROOT/assets/lego.kilo" --backend cuda --size 200x200 --out "$OUT/frame.png")
for tool in memcheck racecheck; do
    if [ -z "$SANITIZER" ] && [ -z "$NO_GPU" ]; then record "$tool" failed 0 "compute-sanitizer not found"; continue; fi
    gpu_step "$tool" 90 "$SANITIZER" --tool "$tool" --error-exitcode 3 "${FRAME[@]}"
done
gpu_step benchmark 120 "$VPY" "$ROOT/scripts/gpu_bench.py" render --out "$OUT/benchmark.json"
LEGO="$DATA/nerf_synthetic/lego"
if [ -n "$NO_GPU" ]; then
    record train skipped 0 "$NO_GPU"
elif [ ! -d "$LEGO" ]; then
    record train failed 0 "lego data not found at $LEGO (set KILONERF_DATA)"
else  # 3 minutes of training, then stopped: a run that was still training when stopped passed
    step train 200 bash -c 'timeout -s INT 180 "$1" -m trainer run --data "$2" --preset gpu --device cuda \
        --workdir "$3/train" --out "$3/train.kilo" --no-bar; rc=$?; [ $rc -eq 124 ] || [ $rc -eq 130 ] \
        && grep -q "\"event\": *\"progress\"" "$3/train/progress.jsonl" && exit 0; exit $rc' _ "$VPY" "$LEGO" "$OUT"
fi
"$PYTHON" "$ROOT/scripts/gpu_kit.py" report "$OUT"
