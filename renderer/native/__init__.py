"""The native CPU renderer: the steps of a frame as compiled C++ (``src/``; vectorised for AVX2 and
AVX-512 where the CPU has them, multi-threaded), loaded with ctypes. ``backend.CpuBackend`` is the
``cpu`` backend; ``steps`` exposes each step for its parity test against the torch twin.

Importing this package never compiles and never loads the library; ``renderer.native.library.status()``
says whether it can run here.
"""
