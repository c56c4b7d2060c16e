"""Frame presenter: shows a rendered image as a textured quad in a moderngl framebuffer.

Two ways in, one texture out:

- :meth:`FramePresenter.upload_image` takes an ``[H, W, 3]`` float (0..1) or uint8 image, numpy or torch
  (the torch backend's CPU tensor), and uploads it with ``texture.write``;
- :meth:`FramePresenter.upload_pbo` takes a moderngl ``Buffer`` holding ``H·W`` RGBA8 pixels (row 0 = top)
  and copies it into the texture on the GPU (``texture.write(pbo)``) — the CUDA-GL interop path writes
  that buffer directly, so no pixel crosses the host. :meth:`FramePresenter.pixel_buffer` makes one.

Works with any moderngl context (window or offscreen EGL); nothing here knows about glfw.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import moderngl
import numpy as np

SHADER_DIR = Path(__file__).resolve().parents[1] / "shaders"


def load_program(ctx: moderngl.Context, name: str) -> moderngl.Program:
    """Compile ``shaders/NAME.vert`` + ``shaders/NAME.frag``."""
    return ctx.program(
        vertex_shader=(SHADER_DIR / f"{name}.vert").read_text(),
        fragment_shader=(SHADER_DIR / f"{name}.frag").read_text(),
    )


def image_to_numpy(image: Any) -> np.ndarray:
    """``[H, W, 3|4]`` torch or numpy image → contiguous numpy array (float32 or uint8, 3 channels)."""
    if hasattr(image, "detach"):
        image = image.detach().cpu().numpy()
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise ValueError(f"expected an [H, W, 3] image, got shape {arr.shape}")
    arr = arr[:, :, :3]
    if arr.dtype != np.uint8:
        arr = arr.astype(np.float32, copy=False)
    return np.ascontiguousarray(arr)


def to_uint8(image: Any) -> np.ndarray:
    """``[H, W, 3]`` float image in [0, 1] → uint8 (round to nearest, clipped), as PNG files store it."""
    arr = image_to_numpy(image)
    if arr.dtype == np.uint8:
        return arr
    return (np.clip(arr, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def resize_linear(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """``[h, w, C]`` image → ``[height, width, C]`` float32, bilinear with pixel centres aligned and edges
    clamped: the picture GL's linear filter draws of a small frame stretched over a larger viewport (so the
    rows a refine has not reached yet look like the moving frame did, not like nearest-neighbour blocks)."""

    def axis(n_out: int, n_in: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        s = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0.0, n_in - 1)
        i0 = np.floor(s).astype(np.int64)
        return i0, np.minimum(i0 + 1, n_in - 1), (s - i0).astype(np.float32)

    src = np.asarray(image, np.float32)
    y0, y1, fy = axis(int(height), src.shape[0])
    x0, x1, fx = axis(int(width), src.shape[1])
    rows = src[y0] * (1 - fy)[:, None, None] + src[y1] * fy[:, None, None]
    return np.ascontiguousarray(rows[:, x0] * (1 - fx)[None, :, None] + rows[:, x1] * fx[None, :, None])


class FramePresenter:
    """Holds the frame texture and draws it over a viewport."""

    def __init__(self, ctx: moderngl.Context) -> None:
        self.ctx = ctx
        self.program = load_program(ctx, "frame")
        quad = np.array([-1, -1, 1, -1, -1, 1, 1, 1], dtype="f4")
        self.vbo = ctx.buffer(quad.tobytes())
        self.vao = ctx.vertex_array(self.program, [(self.vbo, "2f", "in_pos")])
        self.texture: moderngl.Texture | None = None
        self._tex_key: tuple[int, int, int, str] | None = None
        self.size: tuple[int, int] = (0, 0)
        """(width, height) of the frame last uploaded."""

    def _texture(self, width: int, height: int, components: int, dtype: str) -> moderngl.Texture:
        key = (width, height, components, dtype)
        if self.texture is None or self._tex_key != key:
            if self.texture is not None:
                self.texture.release()
            self.texture = self.ctx.texture((width, height), components, dtype=dtype)
            self._tex_key = key
        return self.texture

    def upload_image(self, image: Any) -> None:
        """Upload an ``[H, W, 3]`` image (float32 in [0, 1] or uint8; numpy or torch)."""
        arr = image_to_numpy(image)
        h, w = arr.shape[:2]
        dtype = "f1" if arr.dtype == np.uint8 else "f4"  # f1: normalised bytes (u1 is integer)
        tex = self._texture(w, h, 3, dtype)
        # rows of 3 float32 or 3 bytes: GL's default 4-byte row alignment breaks odd widths of uint8
        tex.write(arr, alignment=1)  # the array itself (buffer protocol): no bytes copy of the frame
        self.size = (w, h)

    def pixel_buffer(self, width: int, height: int) -> moderngl.Buffer:
        """A buffer sized for a ``width × height`` RGBA8 frame (the interop writes into it)."""
        return self.ctx.buffer(reserve=width * height * 4)

    def upload_pbo(self, pbo: moderngl.Buffer, width: int, height: int) -> None:
        """Copy ``width × height`` RGBA8 pixels from ``pbo`` into the frame texture, on the GPU."""
        tex = self._texture(width, height, 4, "f1")
        tex.write(pbo)
        self.size = (width, height)

    def draw(self, viewport: tuple[int, int, int, int], smooth: bool | None = None) -> None:
        """Draw the frame over ``viewport`` = (x, y, w, h) of the bound framebuffer.

        ``smooth`` picks linear filtering; by default linear when the frame is smaller than the viewport
        (dynamic resolution) and nearest when it matches (pixel-exact display).
        """
        if self.texture is None:
            return
        if smooth is None:
            smooth = self.size != (viewport[2], viewport[3])
        self.draw_texture(self.texture, viewport, smooth, flip_y=True)

    def draw_texture(
        self,
        texture: moderngl.Texture,
        viewport: tuple[int, int, int, int],
        smooth: bool = False,
        flip_y: bool = False,
    ) -> None:
        """Draw any RGB(A) texture over ``viewport``; ``flip_y`` for images stored top row first."""
        f = moderngl.LINEAR if smooth else moderngl.NEAREST
        texture.filter = (f, f)
        self.ctx.disable(moderngl.DEPTH_TEST | moderngl.BLEND)
        self.ctx.viewport = viewport
        texture.use(0)
        self.program["frame"] = 0
        self.program["flip_y"] = flip_y
        self.vao.render(moderngl.TRIANGLE_STRIP)

    def release(self) -> None:
        """Free the GL objects."""
        for obj in (self.texture, self.vao, self.vbo, self.program):
            if obj is not None:
                obj.release()
        self.texture = None
