"""The viewer's compare mode: a dataset view's ground truth | the render from that camera | the error,
side by side over the image, with the view's PSNR (``app/ground_truth.py``).

A mixin of :class:`app.viewer.Viewer`. Loading a split and rendering a view run on a background thread (the
first load of a split takes seconds; after it, switching views costs one render). The view is rendered by
``renderer.backends.get_backend("auto")`` with default options, like ``python -m trainer eval``, so the PSNR
shown is the one eval prints for that view.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from app.ground_truth import SPLITS, Comparison, GroundTruth, GroundTruthError, compare, dataset_of


@dataclass
class CompareState:
    """What the compare panel shows and edits."""

    enabled: bool = False
    """Show truth | render | error instead of the live view."""
    root: str = ""
    """Dataset folder (prefilled from the scene's provenance)."""
    split: str = "test"
    index: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    """Views per split of the loaded dataset."""
    gt: GroundTruth | None = None
    result: Comparison | None = None
    shown: tuple[str, int] | None = None
    """(split, index) of ``result``."""
    asked: tuple[str, int] | None = None
    """The view last asked for (shown, or failed: not asked again by itself)."""
    busy: str = ""
    """What the background thread is doing ("" when idle)."""
    uploaded: bool = False


class CompareMixin:
    """Compare mode of :class:`app.viewer.Viewer`."""

    scene: Any
    scene_version: int
    camera: Any
    cmp: CompareState
    compare_presenter: Any

    def notify(self, text: str, level: str = "info", echo: bool = True) -> None:
        raise NotImplementedError

    def init_compare(self) -> None:
        """Fresh compare state for the current scene (its provenance names the dataset, when it does)."""
        named = dataset_of(self.scene)
        self.cmp = CompareState(root=named[0] if named else "")
        self._cmp_lock = threading.Lock()
        self._cmp_backend: tuple[int, Any, Any] | None = None

    def compare_load(self) -> None:
        """Open the dataset folder ``cmp.root`` (on a thread); its splits' sizes when done."""
        self._compare_run("opening the dataset", self._load_dataset)

    def compare_show(self, split: str, index: int) -> None:
        """Render view ``index`` of ``split`` and compare it with its image (on a thread)."""
        c = self.cmp
        if c.gt is None:
            return
        c.split, c.index, c.asked = split, int(index), (split, int(index))
        self._compare_run(f"{split} view {index}", lambda: self._render_view(split, int(index)))

    def _compare_run(self, what: str, job: Any) -> None:
        with self._cmp_lock:
            if self.cmp.busy:
                return
            self.cmp.busy = what

        def run() -> None:
            try:
                job()
            except (GroundTruthError, ValueError, OSError) as e:
                self.notify(f"compare: {e}", "error")
            finally:
                self.cmp.busy = ""

        threading.Thread(target=run, name="compare", daemon=True).start()

    def _load_dataset(self) -> None:
        gt = GroundTruth.for_scene(self.scene, self.cmp.root.strip() or None)
        self.cmp.counts = {s: gt.count(s) for s in SPLITS}
        self.cmp.gt, self.cmp.result, self.cmp.shown, self.cmp.asked = gt, None, None, None
        self.notify(f"compare: {gt.root} at 1/{gt.downscale} size, {self.cmp.counts}")

    def _render_view(self, split: str, index: int) -> None:
        from renderer.backends import get_backend

        gt = self.cmp.gt
        assert gt is not None
        n = gt.count(split)
        if not 0 <= index < n:
            raise GroundTruthError(f"{gt.root}: {split} has views 0..{n - 1}, not {index}")
        cam = gt.camera(split, index)  # loads the split on first use
        if self._cmp_backend is None or self._cmp_backend[0] != self.scene_version:
            backend = get_backend("auto")
            self._cmp_backend = (self.scene_version, backend, backend.prepare(self.scene))  # type: ignore[attr-defined]
        _, backend, prepared = self._cmp_backend
        image = backend.render(prepared, cam).image.numpy()
        result = compare(image, gt.image(split, index))
        self.cmp.result, self.cmp.shown, self.cmp.uploaded = result, (split, index), False

    def draw_compare(self, viewport: tuple[int, int, int, int]) -> bool:
        """Draw the comparison over ``viewport`` (fitted, centred) when compare mode shows one."""
        c = self.cmp
        if not c.enabled or c.result is None:
            return False
        if not c.uploaded:
            self.compare_presenter.upload_image(c.result.side_by_side)
            c.uploaded = True
        h, w = c.result.side_by_side.shape[:2]
        x, y, vw, vh = viewport
        s = min(vw / w, vh / h)
        fw, fh = max(1, round(w * s)), max(1, round(h * s))
        self.compare_presenter.draw((x + (vw - fw) // 2, y + (vh - fh) // 2, fw, fh), smooth=s != 1.0)
        return True

    def compare_camera(self) -> Any:
        """The camera of the view shown in compare mode (None when none is shown)."""
        c = self.cmp
        return None if c.gt is None or c.shown is None else c.gt.camera(*c.shown)

    def compare_psnr(self) -> float | None:
        """PSNR of the shown comparison (dB)."""
        return None if self.cmp.result is None else float(np.float64(self.cmp.result.psnr))
