"""The viewer's overlay layers (scene box, network grid, occupied voxels, training cameras) and clicks on
them: a click on a training camera's frustum moves the view to that camera, and the camera the view is at is
drawn highlighted. Geometry in ``app/overlay_geometry.py``, GL drawing in ``app/overlays.py``."""

from __future__ import annotations

from typing import Any

import numpy as np

from app import overlay_geometry as og
from app.settings import ViewerSettings

FRUSTUM_DEPTH = 0.16
"""Depth of a drawn camera frustum, as a fraction of the scene radius (half the box diagonal)."""
CLICK_RADIUS_PX = 12.0
"""How near a click must land to a frustum's apex or centre to pick it."""
FRUSTUM_COLOR = (1.0, 0.2, 0.8, 0.9)
CURRENT_COLOR = (1.0, 1.0, 0.2, 1.0)


class OverlayMixin:
    """Overlay layers of :class:`app.viewer.Viewer` (which provides the attributes declared here)."""

    settings: ViewerSettings
    scene: Any
    scene_version: int
    overlays: Any
    camera: Any
    frame: Any
    _overlay_key: Any

    def scene_radius(self) -> float:
        raise NotImplementedError

    def set_view(self, k: int) -> None:
        raise NotImplementedError

    def viewport(self) -> tuple[int, int, int, int]:
        raise NotImplementedError

    def _frustum_depth(self) -> float:
        return FRUSTUM_DEPTH * self.scene_radius()

    def current_camera(self) -> int | None:
        """The stored training camera the view is at (None when elsewhere or the scene has none)."""
        cams = getattr(self.scene, "cameras", None)
        if cams is None or len(cams.c2w) == 0:
            return None
        return og.matching_camera(cams.c2w, self.camera.c2w())

    def update_overlays(self) -> None:
        """(Re)build overlay layers when the scene, the overlay settings or the highlighted camera changed."""
        o = self.settings.overlays
        current = self.current_camera() if o.frusta else None
        key = (
            self.scene_version,
            o.box,
            o.grid,
            o.voxels,
            o.voxel_axis,
            o.voxel_lo,
            o.voxel_hi,
            o.frusta,
            current,
        )
        if key == self._overlay_key:
            return
        self._overlay_key = key
        s = self.scene
        self.overlays.clear()
        if o.box:
            self.overlays.set_layer("box", og.box_lines(s.bbox_min, s.bbox_max), (1.0, 0.6, 0.0, 1.0))
        if o.grid:
            self.overlays.set_layer(
                "grid", og.grid_lines(s.bbox_min, s.bbox_max, s.grid_res), (0.3, 0.6, 1.0, 0.5)
            )
        if o.voxels:
            pts = og.occupied_voxel_centers(
                s.occupancy, s.bbox_min, s.bbox_max, o.voxel_axis, o.voxel_lo, o.voxel_hi
            )
            self.overlays.set_layer("voxels", pts, (0.1, 0.9, 0.3, 0.6), lines=False, point_size=2.0)
        if o.frusta and getattr(s, "cameras", None) is not None:
            self._frusta_layers(s.cameras, current)

    def _frusta_layers(self, cams: Any, current: int | None) -> None:
        depth = self._frustum_depth()
        segs = [og.frustum_lines(c, cams.width, cams.height, cams.focal, depth) for c in cams.c2w]
        if segs:
            self.overlays.set_layer("frusta", np.concatenate(segs), FRUSTUM_COLOR)
        if current is not None:  # drawn after the others: on top
            self.overlays.set_layer("frusta-current", segs[current], CURRENT_COLOR)

    def click_scene(self, x: float, y: float) -> bool:
        """A click on the image at window pixel (x, y): with the training-camera overlay on, go to the
        camera whose frustum it lands on. Returns whether it picked one."""
        cams = getattr(self.scene, "cameras", None)
        if not self.settings.overlays.frusta or cams is None or len(cams.c2w) == 0 or self.frame is None:
            return False
        vx, _, vw, vh = self.viewport()
        fc = self.frame.request.camera  # what is shown, scaled to the viewport
        k = og.pick_camera(
            cams.c2w,
            np.asarray(fc.c2w),
            vw,
            vh,
            fc.focal * vh / fc.height,
            (x - vx, y),
            self._frustum_depth(),
            CLICK_RADIUS_PX,
        )
        if k is None:
            return False
        self.set_view(k)
        return True
