"""Helpers of scripts/install_pycuda.sh.

    python scripts/pycuda_helper.py stub CUDA_INCLUDE_DIR OUT.c   a libcuda stub: every cu* entry point of
                                                               cuda.h and cudaGL.h returning
                                                               CUDA_ERROR_STUB_LIBRARY (34), for linking
                                                               (and importing) pycuda without a driver
    python scripts/pycuda_helper.py check-gl [STUB_DIR]         the running interpreter's pycuda: version
                                                               >= 2025.1.2 and built with GL interop; with
                                                               STUB_DIR (holding libcuda.so.1) it also
                                                               imports pycuda.gl against that stub

Exit status 0 when all is well, 1 when a check fails, 2 on bad usage (one line each).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

MIN_VERSION = (2025, 1, 2)
GL_SYMBOLS = (b"cuGraphicsGLRegisterBuffer", b"cuGraphicsGLRegisterImage")
"""Driver entry points that only pycuda's GL wrapper (wrap_cudagl.cpp) references."""


def stub_source(include: Path) -> str:
    """C source defining every function cuda.h / cudaGL.h declare (after the _v2 renames) as a stub."""
    cc = shutil.which(os.environ.get("CC", "gcc")) or shutil.which("cc")
    if cc is None:
        raise SystemExit("pycuda_helper: no C compiler to preprocess cuda.h")
    text = (
        "#include <cuda.h>\ntypedef unsigned int GLuint;\ntypedef unsigned int GLenum;\n#define __gl_h_\n"
        "#include <cudaGL.h>\n#include <cudaProfiler.h>\n"
    )
    proc = subprocess.run(
        [cc, "-E", "-P", "-x", "c", f"-I{include}", "-"],
        input=text,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit("pycuda_helper: cannot preprocess cuda.h: " + proc.stderr.strip().splitlines()[-1])
    names = sorted(set(re.findall(r"\b(cu[A-Z]\w*)\s*\(", proc.stdout)))
    if len(names) < 100:
        raise SystemExit(f"pycuda_helper: only {len(names)} cu* functions found in {include}/cuda.h")
    body = "\n".join(f"int {n}(void) {{ return 34; }}" for n in names)
    return (
        f"/* libcuda stub made by scripts/pycuda_helper.py: CUDA_ERROR_STUB_LIBRARY everywhere */\n{body}\n"
    )


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", text)[:3])


def check_gl(stub_dir: str | None) -> int:
    """0 when this interpreter's pycuda is new enough and was compiled with GL interop; 1 otherwise."""
    spec = importlib.util.find_spec("pycuda")
    if spec is None or not spec.submodule_search_locations:
        print("pycuda_helper: pycuda is not installed in", sys.prefix, file=sys.stderr)
        return 1
    version = importlib.metadata.version("pycuda")
    if _version_tuple(version) < MIN_VERSION:
        print(f"pycuda_helper: pycuda {version} is older than 2025.1.2", file=sys.stderr)
        return 1
    pkg = Path(next(iter(spec.submodule_search_locations)))
    drivers = sorted(pkg.glob("_driver*.so"))
    if not drivers or not (pkg / "gl" / "__init__.py").is_file():
        print(f"pycuda_helper: {pkg} has no _driver extension or no gl package", file=sys.stderr)
        return 1
    blob = drivers[0].read_bytes()
    missing = [s.decode() for s in GL_SYMBOLS if s not in blob]
    if missing:
        print(
            f"pycuda_helper: {drivers[0].name} lacks {missing}: built without CUDA_ENABLE_GL", file=sys.stderr
        )
        return 1
    if stub_dir:
        code = (
            "import pycuda._driver as d, pycuda.gl; assert d.have_gl_ext(); print(pycuda.gl.RegisteredBuffer)"
        )
        env = {**os.environ, "LD_LIBRARY_PATH": stub_dir + os.pathsep + os.environ.get("LD_LIBRARY_PATH", "")}
        proc = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False
        )
        if proc.returncode != 0:
            print("pycuda_helper: import pycuda.gl failed: " + proc.stderr.strip()[-300:], file=sys.stderr)
            return 1
    print(f"pycuda_helper: pycuda {version} at {pkg} has GL interop ({drivers[0].name})")
    return 0


def main(argv: list[str]) -> int:
    if len(argv) == 3 and argv[0] == "stub":
        include = Path(argv[1])
        if not (include / "cuda.h").is_file():
            print(f"pycuda_helper: no cuda.h in {include}", file=sys.stderr)
            return 2
        Path(argv[2]).write_text(stub_source(include))
        return 0
    if argv[:1] == ["check-gl"] and len(argv) <= 2:
        return check_gl(argv[1] if len(argv) == 2 else None)
    print("usage: pycuda_helper.py stub CUDA_INCLUDE_DIR OUT.c | check-gl [STUB_DIR]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
