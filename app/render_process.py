"""The torch renderer in a child process, behind the backend interface (``name``, ``prepare``, ``render``).

Why: the torch renderer issues thousands of small tensor operations per frame, and every one of them
re-acquires the GIL. In the viewer's process the UI thread holds the GIL for most of each frame, so a
render thread waits behind it on every operation: measured on a 2-core machine, a 64×48 frame took
~1 s in a thread beside the UI against ~0.07 s alone. A child process has its own interpreter, so the
UI and the renderer no longer take turns. The calling thread blocks in ``recv`` (GIL released).

Scenes are sent once (pickled) and prepared in the child; frames come back as numpy arrays.
"""

from __future__ import annotations

import itertools
import multiprocessing as mp
import queue
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class RemoteScene:
    """A scene prepared in the child process."""

    key: int
    scene: Any
    """The Scene it was made from (kept for the parent's own use)."""


@dataclass
class RemoteResult:
    """A frame rendered in the child: the RenderResult fields the viewer uses."""

    image: np.ndarray
    """[H, W, 3] float32."""
    depth: np.ndarray | None
    """[H, W] float32 expected ray distance (0: no surface)."""
    stats: dict[str, Any]
    """RenderStats.to_dict()."""
    touched: np.ndarray | None = None
    """[num_networks] bool: the networks evaluated."""


def _serve(conn: Any, device: str, threads: int) -> None:
    """Child main loop: ("scene", key, Scene) → prepare; ("render", key, camera, options) → RemoteResult."""
    import torch

    from renderer.backends import get_backend

    if threads > 0:
        torch.set_num_threads(threads)
    backend = get_backend("torch", device)
    prepared: dict[int, Any] = {}
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError, KeyboardInterrupt):
            return
        try:
            if msg[0] == "stop":
                return
            if msg[0] == "scene":
                prepared[msg[1]] = backend.prepare(msg[2])  # type: ignore[attr-defined]
                for old in sorted(prepared)[:-2]:  # the newest two (current + hot-reloaded) stay
                    del prepared[old]
                conn.send(("ok", None))
            elif msg[0] == "render":
                rs = prepared.get(msg[1])
                if rs is None:
                    conn.send(("missing", None))
                    continue
                res = backend.render(rs, msg[2], msg[3])
                depth = res.depth.numpy() if res.depth is not None else None
                touched = res.touched.numpy() if res.touched is not None else None
                conn.send(("ok", RemoteResult(res.image.numpy(), depth, res.stats.to_dict(), touched)))
        except KeyboardInterrupt:
            return
        except Exception as e:
            conn.send(("error", f"{type(e).__name__}: {e}".splitlines()[0]))


class ProcessBackend:
    """The torch backend running in a spawned child process (thread-safe: calls are serialised)."""

    name = "torch"
    threads_fixed = True
    """The child keeps the torch thread count it was started with."""

    def __init__(self, device: str = "cpu", threads: int = 1) -> None:
        ctx = mp.get_context("spawn")  # never fork a process holding GL contexts and threads
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(
            target=_serve, args=(child, str(device), threads), daemon=True, name="kilonerf-render"
        )
        self._proc.start()
        child.close()
        self.device = device
        self._lock = threading.Lock()
        self._keys = itertools.count(1)
        self._current: RemoteScene | None = None

    @property
    def pids(self) -> list[int]:
        """Process id of the child (for its peak RAM)."""
        return [self._proc.pid] if self._proc.pid is not None else []

    def _call(self, msg: tuple[Any, ...]) -> Any:
        with self._lock:
            try:
                self._conn.send(msg)
                status, payload = self._conn.recv()
            except (EOFError, OSError, BrokenPipeError) as e:
                code = self._proc.exitcode
                raise RuntimeError(
                    f"the render process died (exit code {code}): {type(e).__name__}"
                ) from None
        if status == "error":
            raise RuntimeError(payload)
        return status, payload

    def prepare(self, scene: Any) -> RemoteScene:
        """Send ``scene`` to the child and prepare it there (a RemoteScene passes through unchanged)."""
        if isinstance(scene, RemoteScene):
            return scene
        if self._current is not None and self._current.scene is scene:
            return self._current
        remote = RemoteScene(next(self._keys), scene)
        self._call(("scene", remote.key, scene))
        self._current = remote
        return remote

    def render(self, scene_or_rs: Any, camera: Any, options: Any = None) -> RemoteResult:
        """Render ``camera`` in the child; image [H, W, 3] float32, depth, stats."""
        remote = self.prepare(scene_or_rs)
        status, payload = self._call(("render", remote.key, camera, options))
        if status == "missing":  # the child holds a newer scene: send this one again
            self._current = None
            remote = self.prepare(remote.scene)
            status, payload = self._call(("render", remote.key, camera, options))
        return payload  # type: ignore[no-any-return]

    def close(self) -> None:
        """Stop the child."""
        try:
            with self._lock:
                self._conn.send(("stop",))
        except (OSError, BrokenPipeError):
            pass
        self._proc.join(timeout=5)
        if self._proc.is_alive():
            self._proc.kill()
        self._conn.close()


class ProcessPoolBackend:
    """Several render processes behind one backend: concurrent ``render`` calls run in parallel (each
    process renders with one torch thread, so two processes use both cores of a 2-core machine)."""

    name = "torch"
    threads_fixed = True

    def __init__(self, device: str = "cpu", threads: int = 1, processes: int = 2) -> None:
        self.device = device
        self.children = [ProcessBackend(device, threads) for _ in range(max(1, processes))]
        self._free: queue.Queue[ProcessBackend] = queue.Queue()
        for c in self.children:
            self._free.put(c)

    @property
    def pids(self) -> list[int]:
        """Process ids of the children (for their peak RAM)."""
        return [p for c in self.children for p in c.pids]

    def prepare(self, scene: Any) -> Any:
        """Send ``scene`` to every process (in parallel); returns the scene (each process caches it)."""
        if isinstance(scene, RemoteScene):
            scene = scene.scene
        errors: list[BaseException] = []

        def send(c: ProcessBackend) -> None:
            try:
                c.prepare(scene)
            except BaseException as e:  # re-raised below in the calling thread
                errors.append(e)

        threads = [threading.Thread(target=send, args=(c,), daemon=True) for c in self.children]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]
        return scene

    def render(self, scene_or_rs: Any, camera: Any, options: Any = None) -> RemoteResult:
        """Render on the first free process."""
        child = self._free.get()
        try:
            return child.render(scene_or_rs, camera, options)
        finally:
            self._free.put(child)

    def close(self) -> None:
        """Stop every process."""
        for c in self.children:
            c.close()
