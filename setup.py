"""Builds the native CPU renderer (``renderer/native/_kilocpu.so``) when the project is installed.

Everything else is declared in pyproject.toml. The library is a plain shared object loaded with ctypes
(not a Python extension module), compiled by ``renderer/native/build.py``, the one build recipe that
``make`` and ``python -m renderer.native.build`` also use. Without a C++ compiler the install still
succeeds: the ``cpu`` backend then reports why it is unavailable and ``auto`` uses the torch renderer.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent


def _native_build():  # type: ignore[no-untyped-def]
    """renderer/native/build.py, loaded by path (the package itself needs torch, absent at build time)."""
    spec = importlib.util.spec_from_file_location("_kilocpu_build", ROOT / "renderer" / "native" / "build.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class BuildNative(build_ext):
    """Compile the native library with renderer/native/build.py instead of the Python extension rules."""

    def get_ext_filename(self, fullname: str) -> str:
        return fullname.replace(".", "/") + ".so"

    def build_extension(self, ext: Extension) -> None:
        native = _native_build()
        out = Path(self.get_ext_fullpath(ext.name))
        try:
            native.build(out)
            print(f"native CPU renderer: {out}")
        except native.BuildError as e:
            print(f"WARNING: {e}; the cpu backend will be unavailable (auto uses the torch renderer)")


setup(
    ext_modules=[Extension("renderer.native._kilocpu", sources=[], optional=True)],
    cmdclass={"build_ext": BuildNative},
)
