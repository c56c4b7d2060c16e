"""GL drawing of overlays (lines and points) over the frame, occluded by the render's depth where available.

Layers are named vertex sets uploaded once (:meth:`OverlayRenderer.set_layer`) and drawn per frame with the
viewer camera's projection (the renderer's exact pinhole, see ``overlay_geometry.projection_matrix``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import moderngl
import numpy as np

from app.overlay_geometry import projection_matrix, view_matrix
from app.presenter import load_program


@dataclass
class Layer:
    """One uploaded vertex set."""

    vao: moderngl.VertexArray
    vbo: moderngl.Buffer
    count: int
    mode: int
    point_size: float
    visible: bool = True


class OverlayRenderer:
    """Draws named line/point layers with depth-aware fading."""

    def __init__(self, ctx: moderngl.Context) -> None:
        self.ctx = ctx
        self.program = load_program(ctx, "overlay")
        self.layers: dict[str, Layer] = {}
        self.depth_texture: moderngl.Texture | None = None
        self.hidden_alpha = 0.2

    def set_layer(
        self,
        name: str,
        points: np.ndarray,
        color: tuple[float, float, float, float],
        lines: bool = True,
        point_size: float = 2.0,
    ) -> None:
        """Upload ``points`` [N, 3] (segment pairs when ``lines``) in one RGBA colour as layer ``name``."""
        self.remove_layer(name)
        pts = np.asarray(points, np.float32).reshape(-1, 3)
        if len(pts) == 0:
            return
        data = np.c_[pts, np.tile(np.asarray(color, np.float32), (len(pts), 1))].astype("f4")
        vbo = self.ctx.buffer(data.tobytes())
        vao = self.ctx.vertex_array(self.program, [(vbo, "3f 4f", "in_pos", "in_color")])
        mode = moderngl.LINES if lines else moderngl.POINTS
        self.layers[name] = Layer(vao, vbo, len(pts), mode, point_size)

    def remove_layer(self, name: str) -> None:
        """Free layer ``name`` if present."""
        layer = self.layers.pop(name, None)
        if layer is not None:
            layer.vao.release()
            layer.vbo.release()

    def clear(self) -> None:
        """Free all layers."""
        for name in list(self.layers):
            self.remove_layer(name)

    def set_depth(self, depth: Any | None) -> None:
        """Occlude by ``depth`` [H, W] (expected distance along the unit ray; 0 = no surface), or None."""
        if depth is None:
            if self.depth_texture is not None:
                self.depth_texture.release()
            self.depth_texture = None
            return
        if hasattr(depth, "detach"):
            depth = depth.detach().cpu().numpy()
        d = np.ascontiguousarray(np.nan_to_num(np.asarray(depth, np.float32), nan=0.0, posinf=0.0))
        h, w = d.shape
        if self.depth_texture is None or self.depth_texture.size != (w, h):
            if self.depth_texture is not None:
                self.depth_texture.release()
            self.depth_texture = self.ctx.texture((w, h), 1, dtype="f4")
            self.depth_texture.filter = (moderngl.NEAREST, moderngl.NEAREST)
        self.depth_texture.write(d.tobytes())

    def draw(
        self,
        c2w: np.ndarray,
        focal: float,
        viewport: tuple[int, int, int, int],
        cx: float | None = None,
        cy: float | None = None,
    ) -> None:
        """Draw the visible layers for a camera (``focal`` in pixels of the viewport) over ``viewport``."""
        if not any(layer.visible for layer in self.layers.values()):
            return
        x, y, w, h = viewport
        mvp = projection_matrix(w, h, focal, cx, cy) @ view_matrix(c2w)
        prog: Any = self.program  # uniform access: moderngl's member union has no common type
        prog["mvp"].write(mvp.T.astype("f4").tobytes())
        prog["eye"].value = tuple(float(v) for v in np.asarray(c2w)[:3, 3])
        prog["viewport"].value = (float(x), float(y), float(w), float(h))
        prog["hidden_alpha"].value = self.hidden_alpha
        use_depth = self.depth_texture is not None
        prog["use_depth"].value = use_depth
        if use_depth:
            assert self.depth_texture is not None
            self.depth_texture.use(1)
            prog["scene_depth"].value = 1
        self.ctx.viewport = viewport
        self.ctx.disable(moderngl.DEPTH_TEST)
        self.ctx.enable(moderngl.BLEND | moderngl.PROGRAM_POINT_SIZE)
        self.ctx.blend_func = moderngl.SRC_ALPHA, moderngl.ONE_MINUS_SRC_ALPHA
        for layer in self.layers.values():
            if layer.visible:
                prog["point_size"].value = layer.point_size
                layer.vao.render(layer.mode, vertices=layer.count)
        self.ctx.disable(moderngl.BLEND | moderngl.PROGRAM_POINT_SIZE)
