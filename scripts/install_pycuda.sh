#!/usr/bin/env bash
# Build pycuda (>= 2025.1.2) WITH CUDA-GL interop (CUDA_ENABLE_GL) and install it into a Python environment.
#
#   scripts/install_pycuda.sh [--python PY] [--find-links DIR] [--work DIR]
#
#   --python PY       the interpreter whose environment gets pycuda (default: the project's .venv/bin/python)
#   --find-links DIR  offline: take the pycuda sdist and every wheel from DIR, never the network (the GPU kit)
#   --work DIR        build folder (default: build/pycuda); the built wheel is cached there and reused while
#                     the sdist, the headers, the driver library and the interpreter are the same
#
# Needs g++ and the CUDA headers (cuda.h, cudaGL.h, cudaProfiler.h): the nvidia-cuda-runtime and
# nvidia-cuda-profiler-api wheels (pip install -e
# ".[cuda]") or a toolkit ($CUDA_HOME, /usr/local/cuda). Links against the driver's libcuda.so.1
# ($KILONERF_LIBCUDA, ldconfig, the usual driver folders, a toolkit's stubs); with no driver at all (a CI
# machine) against a stub generated from cuda.h, so the build can be checked anywhere. GL types come from a
# two-line shim (cudaGL.h needs only GLuint/GLenum), so no GL development package is needed.
# Exit status: 0 installed, 1 build failed, 2 bad usage or a missing prerequisite (one line).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PY="$ROOT/.venv/bin/python"
FIND_LINKS=""
WORK="$ROOT/build/pycuda"
MIN_VERSION="2025.1.2"

die() { echo "install_pycuda: $*" >&2; exit 2; }
say() { echo "install_pycuda: $*"; }

while [ $# -gt 0 ]; do
    case "$1" in
        --python) [ $# -ge 2 ] || die "--python needs a value"; PY="$2"; shift 2 ;;
        --find-links) [ $# -ge 2 ] || die "--find-links needs a value"; FIND_LINKS="$2"; shift 2 ;;
        --work) [ $# -ge 2 ] || die "--work needs a value"; WORK="$2"; shift 2 ;;
        -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
        *) die "unknown argument '$1' (see --help)" ;;
    esac
done

"$PY" -c 'import sys; assert sys.version_info >= (3, 9)' 2>/dev/null || die "no usable Python at '$PY'"
case "$PY" in */*) PY="$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")" ;; esac  # absolute: we cd below
command -v "${CXX:-g++}" >/dev/null 2>&1 || die "no C++ compiler (${CXX:-g++}) on PATH: pycuda is built from source"
PIP=("$PY" -m pip --disable-pip-version-check -q install)
if [ -n "$FIND_LINKS" ]; then
    [ -d "$FIND_LINKS" ] || die "--find-links folder '$FIND_LINKS' does not exist"
    FIND_LINKS="$(cd "$FIND_LINKS" && pwd)"
    PIP+=(--no-index --find-links "$FIND_LINKS")
fi
mkdir -p "$WORK"
WORK="$(cd "$WORK" && pwd)"

# --- CUDA headers: the wheels of the target environment first, then a toolkit --------------------------
CUDA_INC="$("$PY" - <<'EOF'
import importlib.util, os
from pathlib import Path
spec = importlib.util.find_spec("nvidia")
cands = []
for loc in (spec.submodule_search_locations if spec else []) or []:
    cands += sorted(Path(loc).glob("cu1[3-9]/include"), reverse=True) + [Path(loc) / "cuda_runtime/include"]
for env in ("CUDA_HOME", "CUDA_PATH"):
    if os.environ.get(env):
        cands.append(Path(os.environ[env]) / "include")
cands.append(Path("/usr/local/cuda/include"))
print(next((str(c) for c in cands if all((c / h).is_file() for h in ("cuda.h", "cudaGL.h", "cudaProfiler.h"))), ""))
EOF
)"
[ -n "$CUDA_INC" ] || die "cuda.h/cudaGL.h/cudaProfiler.h not found: pip install -e '.[cuda]' (the nvidia-cuda-runtime and nvidia-cuda-profiler-api wheels) or set CUDA_HOME"

# --- the driver library --------------------------------------------------------------------------------
find_libcuda() {
    if [ -n "${KILONERF_LIBCUDA:-}" ]; then
        [ -f "$KILONERF_LIBCUDA" ] || die "KILONERF_LIBCUDA='$KILONERF_LIBCUDA' is not a file"
        echo "$KILONERF_LIBCUDA"; return
    fi
    local p
    p="$( (ldconfig -p 2>/dev/null || true) | awk '/libcuda\.so\.1 .*x86-64|libcuda\.so\.1 .*AArch64/ {print $NF; exit}')"
    [ -n "$p" ] && [ -f "$p" ] && { echo "$p"; return; }
    for p in /usr/lib/x86_64-linux-gnu/libcuda.so.1 /usr/lib64/libcuda.so.1 /usr/lib/aarch64-linux-gnu/libcuda.so.1 \
             /usr/local/nvidia/lib64/libcuda.so.1 "${CUDA_HOME:-/usr/local/cuda}/lib64/stubs/libcuda.so" \
             /usr/local/cuda/lib64/stubs/libcuda.so; do
        [ -f "$p" ] && { echo "$p"; return; }
    done
    echo ""
}
LIBCUDA="$(find_libcuda)"
STUB_DIR=""
LINKDIR="$WORK/lib"
rm -rf "$LINKDIR" && mkdir -p "$LINKDIR"
if [ -z "$LIBCUDA" ]; then
    say "no libcuda.so.1 (no NVIDIA driver here): linking against a stub made from cuda.h; pycuda will import only where a driver is installed"
    "$PY" "$ROOT/scripts/pycuda_helper.py" stub "$CUDA_INC" "$WORK/stub.c" || die "cannot generate the libcuda stub"
    "${CC:-gcc}" -shared -fPIC -o "$LINKDIR/libcuda.so" -Wl,-soname,libcuda.so.1 "$WORK/stub.c" || exit 1
    ln -s libcuda.so "$LINKDIR/libcuda.so.1"
    STUB_DIR="$LINKDIR"
    LIBCUDA="stub"
else
    ln -s "$LIBCUDA" "$LINKDIR/libcuda.so"
fi

# --- GL shim: cudaGL.h includes <GL/gl.h> for GLuint / GLenum only ---------------------------------------
mkdir -p "$WORK/glshim/GL"
cat > "$WORK/glshim/GL/gl.h" <<'EOF'
/* The two GL types cudaGL.h needs (install_pycuda.sh); include guard of Mesa's and Khronos' gl.h. */
#ifndef __gl_h_
#define __gl_h_
typedef unsigned int GLenum;
typedef unsigned int GLuint;
#endif
EOF

# --- the sdist ---------------------------------------------------------------------------------------------
SDIST_DIR="${FIND_LINKS:-$WORK/sdist}"
newest_sdist() { ls "$SDIST_DIR"/pycuda-*.tar.gz 2>/dev/null | sort -V | tail -n 1; }
SDIST="$(newest_sdist || true)"
if [ -z "$SDIST" ] && [ -z "$FIND_LINKS" ]; then
    say "downloading the pycuda>=$MIN_VERSION sdist"
    mkdir -p "$SDIST_DIR"
    "$PY" -m pip --disable-pip-version-check -q download --no-deps --no-binary pycuda \
        "pycuda>=$MIN_VERSION" -d "$SDIST_DIR" || exit 1
    SDIST="$(newest_sdist || true)"
fi
[ -n "$SDIST" ] || die "no pycuda-*.tar.gz in '$SDIST_DIR'"
VERSION="$(basename "$SDIST" .tar.gz)"; VERSION="${VERSION#pycuda-}"
[ "$(printf '%s\n%s\n' "$MIN_VERSION" "$VERSION" | sort -V | head -n 1)" = "$MIN_VERSION" ] \
    || die "pycuda $VERSION is older than $MIN_VERSION (needed for CUDA 13 headers)"

# --- build (cached) and install ---------------------------------------------------------------------------
KEY="$( { cat "$SDIST" "$CUDA_INC/cuda.h" "$CUDA_INC/cudaGL.h" "$0" | sha256sum; echo "$LIBCUDA"; "$PY" -c 'import sys; print(sys.version)'; } | sha256sum | cut -c1-16)"
WHEELS="$WORK/wheels-$KEY"
WHEEL="$(ls "$WHEELS"/pycuda-*.whl 2>/dev/null | head -n 1 || true)"
"${PIP[@]}" "setuptools>=61" wheel "numpy>=1.24" "pytools>=2011.2" "platformdirs>=2.2.0" mako || exit 1
if [ -z "$WHEEL" ]; then
    say "building pycuda $VERSION with GL interop (headers $CUDA_INC, driver $LIBCUDA); a few minutes"
    SRC="$WORK/src"
    rm -rf "$SRC" && mkdir -p "$SRC" && tar xzf "$SDIST" -C "$SRC"
    SRC="$SRC/pycuda-$VERSION"
    (cd "$SRC" && "$PY" configure.py --cuda-root="$(dirname "$CUDA_INC")" \
        --cuda-inc-dir="$CUDA_INC,$WORK/glshim" --cuda-enable-gl --no-cuda-enable-curand \
        --cudadrv-lib-dir="$LINKDIR" >/dev/null)
    grep -q '^CUDA_ENABLE_GL = True' "$SRC/siteconf.py" || die "configure.py did not enable GL in siteconf.py"
    rm -rf "$WHEELS.tmp" && mkdir -p "$WHEELS.tmp"
    "$PY" -m pip --disable-pip-version-check -q wheel --no-deps --no-build-isolation -w "$WHEELS.tmp" "$SRC" \
        > "$WORK/build.log" 2>&1 || { tail -n 30 "$WORK/build.log" >&2; echo "install_pycuda: build failed (log: $WORK/build.log)" >&2; exit 1; }
    rm -rf "$WHEELS" && mv "$WHEELS.tmp" "$WHEELS"
    WHEEL="$(ls "$WHEELS"/pycuda-*.whl | head -n 1)"
else
    say "reusing the built wheel $WHEEL"
fi
"${PIP[@]}" --force-reinstall --no-deps "$WHEEL" || exit 1

# --- check: the installed extension carries the GL entry points ---------------------------------------------
"$PY" "$ROOT/scripts/pycuda_helper.py" check-gl ${STUB_DIR:+"$STUB_DIR"} || exit 1
say "pycuda $VERSION with GL interop installed into $("$PY" -c 'import sys; print(sys.prefix)')"
