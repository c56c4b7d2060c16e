"""Building the native CPU renderer: one C++ shared library, ``renderer/native/_kilocpu.so``, loaded with
ctypes by ``renderer.native.library``.

It is built when the project is installed (``setup.py``'s build_ext, ``make view`` / ``make test``'s set-up
through ``python -m renderer.native.build``), never when Python imports it and never on the viewer's
thread. The library carries every instruction-set variant (generic, AVX2, AVX-512); the CPU's best one is
chosen when a frame is rendered. This module imports only the standard library (setup.py loads it).

    python -m renderer.native.build [--force] [--out PATH]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
SOURCE_DIR = PACKAGE_DIR / "src"
"""C++ sources of the native kernels."""
CUDA_DIR = PACKAGE_DIR.parent / "cuda"
"""``common.cuh``, the per-sample maths shared with the CUDA kernels."""
LIBRARY_NAME = "_kilocpu.so"
DIGEST_MARKER = b"KILOCPU_SOURCE_DIGEST="
"""The library carries the digest of its sources after this marker (``kc_source_digest`` in kilocpu.cpp)."""
FLAGS = ["-std=c++17", "-O3", "-ffp-contract=off", "-fno-math-errno", "-fPIC", "-shared", "-pthread",
         "-fvisibility=hidden", "-Wall", "-Wextra"]  # fmt: skip
"""No FMA contraction: the geometry (points, lattice, voxel indices) must round exactly as torch does;
the network maths uses explicit FMA intrinsics."""


class BuildError(RuntimeError):
    """The compiler is missing or failed (one line naming the source folder)."""


def sources() -> list[Path]:
    """Every file the library is built from (translation units, headers and common.cuh), sorted."""
    return sorted([*SOURCE_DIR.glob("*.cpp"), *SOURCE_DIR.glob("*.h"), CUDA_DIR / "common.cuh"])


def compiler() -> str | None:
    """``$CXX`` (None when it does not run), else the first of g++, clang++, c++ on ``PATH``."""
    env = os.environ.get("CXX")
    if env:
        return shutil.which(env)
    for name in ("g++", "clang++", "c++"):
        found = shutil.which(name)
        if found:
            return found
    return None


def command(cxx: str, output: Path) -> list[str]:
    """The compiler command line that builds ``output`` (with the sources' digest compiled in)."""
    units = sorted(str(p) for p in SOURCE_DIR.glob("*.cpp"))
    digest = f'-DKC_SOURCE_DIGEST="{source_digest()}"'
    return [cxx, *FLAGS, digest, f"-I{SOURCE_DIR}", f"-I{CUDA_DIR}", "-o", str(output), *units]


def source_digest() -> str:
    """Hash of the sources and flags (compiled into the library, see ``built_digest``)."""
    h = hashlib.sha256()
    for p in sources():
        h.update(p.name.encode())
        h.update(p.read_bytes())
    h.update(" ".join(FLAGS).encode())
    return h.hexdigest()[:24]


def default_output() -> Path:
    """``renderer/native/_kilocpu.so`` beside this module."""
    return PACKAGE_DIR / LIBRARY_NAME


def built_digest(library: Path) -> str | None:
    """The source digest compiled into a library file (None: missing, unreadable or not ours)."""
    try:
        data = Path(library).read_bytes()
    except OSError:
        return None
    at = data.find(DIGEST_MARKER)
    if at < 0:
        return None
    return data[at + len(DIGEST_MARKER) : at + len(DIGEST_MARKER) + 24].decode("ascii", "replace")


def up_to_date(output: Path) -> bool:
    """Whether ``output`` exists and was built from the current sources."""
    return built_digest(output) == source_digest()


def build(output: Path | None = None, force: bool = False) -> Path:
    """Compile the library into ``output`` (atomically, with its stamp); skipped when up to date.

    Raises:
        BuildError: no C++ compiler, or the compiler failed.
    """
    out = Path(output) if output is not None else default_output()
    if not force and up_to_date(out):
        return out
    cxx = compiler()
    if cxx is None:
        raise BuildError(f"{SOURCE_DIR}: no C++ compiler found (set CXX or install g++)")
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    try:
        try:
            proc = subprocess.run(command(cxx, Path(tmp)), capture_output=True, text=True)
        except OSError as e:
            raise BuildError(f"{SOURCE_DIR}: cannot run {cxx} ({e.strerror or e})") from None
        if proc.returncode != 0:
            lines = [ln for ln in (proc.stderr + proc.stdout).splitlines() if "error" in ln.lower()]
            raise BuildError(f"{SOURCE_DIR}: {Path(cxx).name} failed: " + " | ".join(lines[:5]))
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Build the native CPU renderer library.")
    p.add_argument("--force", action="store_true", help="rebuild even when up to date")
    p.add_argument("--out", default=None, help=f"output path (default: {default_output()})")
    args = p.parse_args(argv)
    try:
        out = build(Path(args.out) if args.out else None, force=args.force)
    except BuildError as e:
        print(f"renderer.native.build: {e}", file=sys.stderr)
        return 2
    print(f"native CPU renderer: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
