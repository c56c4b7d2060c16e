"""The dataset type shared by every loader, and the image pipeline: read, composite, area-downscale.

Every loader turns its layout into one :class:`Dataset`: float32 RGB composited on a background with the
alpha kept, camera-to-world matrices in the Blender/OpenGL convention (camera looks down -Z, +Y up), a pinhole
focal length in pixels (or each frame's own fx, fy, cx, cy and size), and the scene box / near-far when the
data has them.

Images are decoded in a thread pool (PIL releases the GIL while decoding) and each one is composited at full
resolution and area-averaged right away, so peak memory is the downscaled dataset plus a few full images.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from renderer.camera import Camera
from trainer.data.fields import (
    MAX_IMAGE_PIXELS,
    DatasetError,
    check_image_size,
)

#: Near and far planes of the NeRF synthetic (Blender) scenes: the dataset's convention, not stored in it.
SYNTHETIC_NEAR_FAR: tuple[float, float] = (2.0, 6.0)


@dataclass
class Dataset:
    """One split of a scene: images, alphas and cameras, in one convention whatever the layout on disk."""

    images: np.ndarray
    """[N, H, W, 3] float32 in [0, 1]: RGB composited on ``background``."""
    alphas: np.ndarray
    """[N, H, W] float32 in [0, 1]: coverage (1 where the image has no alpha channel)."""
    c2w: np.ndarray
    """[N, 4, 4] float32 camera-to-world, Blender/OpenGL convention (camera looks down -Z, +Y up)."""
    focal: float
    """Focal length in pixels (of the possibly downscaled images); frame 0's fx when ``frame_intrinsics``."""
    width: int
    """Image width W in pixels."""
    height: int
    """Image height H in pixels."""
    background: np.ndarray = field(default_factory=lambda: np.ones(3, dtype=np.float32))
    """[3] float32 background colour the images are composited on."""
    names: list[str] = field(default_factory=list)
    """Frame names (e.g. ``train/r_0``, ``0_0000``); filled with indices when left empty."""
    bbox_min: np.ndarray | None = None
    """[3] float32 scene box minimum (NSVF ``bbox.txt``), or None when the data has none."""
    bbox_max: np.ndarray | None = None
    """[3] float32 scene box maximum, or None."""
    near: float | None = None
    """Near plane when the data states one, else None (see :func:`default_near_far`)."""
    far: float | None = None
    """Far plane when the data states one, else None."""
    split: str = "train"
    """Split name: ``train``, ``val`` or ``test``."""
    root: str = ""
    """Folder the dataset was loaded from."""
    cx: float | None = None
    """Principal point x in pixels; None means ``width / 2``."""
    cy: float | None = None
    """Principal point y in pixels; None means ``height / 2``."""
    layout: str = ""
    """Layout on disk: ``blender``, ``ngp`` (transforms.json), ``nsvf``, or empty for one built in memory."""
    voxel_size: float | None = None
    """Initial voxel size from NSVF ``bbox.txt``, when given."""
    frame_intrinsics: np.ndarray | None = None
    """[N, 4] float64 (fx, fy, cx, cy) of each frame in pixels, when the frames differ (or fx != fy);
    None: every frame has (focal, focal, *principal_point)."""
    frame_sizes: np.ndarray | None = None
    """[N, 2] int64 (w, h) of each frame's own image, when they differ: its pixels are the top-left w x h
    of ``images[i]``, the rest padding (background colour, alpha 1) no ray is drawn from. None: all W x H."""
    bbox_loose: bool = False
    """True when ``bbox_min``/``bbox_max`` only bound the scene (estimated from the cameras, or instant-ngp's
    ``aabb_scale``): the teacher and the occupancy stage search inside it for the scene's own box. False: it
    is the scene's box (stated by the data, or by the user with ``--set data.bbox_min/max``)."""

    def __post_init__(self) -> None:
        n = len(self.images)
        if tuple(self.images.shape[1:]) != (self.height, self.width, 3):
            raise ValueError(
                f"images have shape {tuple(self.images.shape)}, expected [N, {self.height}, {self.width}, 3]"
            )
        if tuple(self.alphas.shape) != (n, self.height, self.width):
            expected = (n, self.height, self.width)
            raise ValueError(f"alphas have shape {tuple(self.alphas.shape)}, expected {expected}")
        if tuple(self.c2w.shape) != (n, 4, 4):
            raise ValueError(f"c2w has shape {tuple(self.c2w.shape)}, expected {(n, 4, 4)}")
        self.background = np.asarray(self.background, dtype=np.float32).reshape(3)
        if not self.names:
            self.names = [f"{i:04d}" for i in range(n)]
        if len(self.names) != n:
            raise ValueError(f"{len(self.names)} names for {n} images")
        if self.frame_intrinsics is not None:
            self.frame_intrinsics = np.asarray(self.frame_intrinsics, dtype=np.float64)
            if self.frame_intrinsics.shape != (n, 4) or not np.isfinite(self.frame_intrinsics).all():
                raise ValueError(
                    f"frame_intrinsics must be [{n}, 4] finite, got {self.frame_intrinsics.shape}"
                )
        if self.frame_sizes is not None:
            self.frame_sizes = np.asarray(self.frame_sizes, dtype=np.int64)
            sizes = self.frame_sizes
            if sizes.shape != (n, 2) or (sizes < 1).any() or (sizes > [self.width, self.height]).any():
                raise ValueError(f"frame_sizes must be [{n}, 2] within {self.width}x{self.height}")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def principal_point(self) -> tuple[float, float]:
        """(cx, cy) in pixels, defaulting to the image centre."""
        cx = self.width / 2.0 if self.cx is None else self.cx
        cy = self.height / 2.0 if self.cy is None else self.cy
        return cx, cy

    @property
    def uniform(self) -> bool:
        """Whether every frame is W x H with the same square-pixel intrinsics (``focal``, ``cx``, ``cy``)."""
        return self.frame_intrinsics is None and self.frame_sizes is None

    def all_intrinsics(self) -> np.ndarray:
        """[N, 4] float64 (fx, fy, cx, cy) of every frame."""
        if self.frame_intrinsics is not None:
            return np.array(self.frame_intrinsics, dtype=np.float64)
        cx, cy = self.principal_point
        return np.tile(np.array([self.focal, self.focal, cx, cy], dtype=np.float64), (len(self), 1))

    def all_sizes(self) -> np.ndarray:
        """[N, 2] int64 (w, h) of every frame's own image."""
        if self.frame_sizes is not None:
            return np.array(self.frame_sizes, dtype=np.int64)
        return np.tile(np.array([self.width, self.height], dtype=np.int64), (len(self), 1))

    def size_of(self, i: int) -> tuple[int, int]:
        """(w, h) of frame ``i``'s own image (the top-left of ``images[i]``)."""
        if self.frame_sizes is None:
            return int(self.width), int(self.height)
        w, h = self.frame_sizes[i]
        return int(w), int(h)

    def view_image(self, i: int) -> np.ndarray:
        """[h, w, 3] frame ``i``'s own pixels (without padding)."""
        w, h = self.size_of(i)
        return np.asarray(self.images[i])[:h, :w]

    def camera(self, i: int) -> Camera:
        """View ``i`` as a renderer ``Camera`` (its pose, this split's W x H, its focal and principal point):
        what evaluation and the viewer's compare mode render to match ``images[i]`` pixel for pixel (a frame
        smaller than W x H is the top-left of the picture). The renderer's cameras have square pixels: a
        frame whose fy differs from its fx gets focal fx (its rows are then off by (fy/fx - 1)(v - cy) pixels,
        so the student's scores on it are approximate; training rays use both, `trainer.data.cameras`)."""
        if self.frame_intrinsics is None:
            fx, cx, cy = float(self.focal), self.cx, self.cy
        else:
            fx, _, cx, cy = (float(v) for v in self.frame_intrinsics[i])
        return Camera(
            width=int(self.width),
            height=int(self.height),
            focal=fx,
            c2w=np.asarray(self.c2w[i], np.float64),
            cx=None if cx is None else float(cx),
            cy=None if cy is None else float(cy),
        )

    @property
    def intrinsics(self) -> np.ndarray:
        """[3, 3] float64 pinhole matrix K = [[f, 0, cx], [0, f, cy], [0, 0, 1]] (pixel y down) of the shared
        ``focal`` and principal point (a dataset whose frames differ: ``all_intrinsics``)."""
        cx, cy = self.principal_point
        return np.array([[self.focal, 0.0, cx], [0.0, self.focal, cy], [0.0, 0.0, 1.0]])


def default_near_far(dataset: Dataset) -> tuple[float, float]:
    """Near/far for ray sampling: the dataset's own where it states them, else a convention.

    Blender-layout scenes (the NeRF synthetic ones) use (2.0, 6.0). With a scene box (NSVF), near/far bound
    the box from every camera: near = the smallest camera-to-box distance (at least 1e-3 of the box
    diagonal), far = the largest camera-to-corner distance. Otherwise (2.0, 6.0).
    """
    near, far = SYNTHETIC_NEAR_FAR
    if dataset.layout != "blender" and dataset.bbox_min is not None and dataset.bbox_max is not None:
        lo = np.asarray(dataset.bbox_min, dtype=np.float64)
        hi = np.asarray(dataset.bbox_max, dtype=np.float64)
        eyes = np.asarray(dataset.c2w, dtype=np.float64)[:, :3, 3]  # [N, 3]
        gap = np.maximum(np.maximum(lo - eyes, eyes - hi), 0.0)  # [N, 3] per-axis distance outside the box
        near = max(float(np.linalg.norm(gap, axis=1).min()), 1e-3 * float(np.linalg.norm(hi - lo)))
        corners = np.stack(np.meshgrid(*zip(lo, hi), indexing="ij"), axis=-1).reshape(8, 3)  # [8, 3]
        far = float(np.linalg.norm(eyes[:, None, :] - corners[None], axis=2).max())
    return (
        float(dataset.near) if dataset.near is not None else near,
        float(dataset.far) if dataset.far is not None else far,
    )


def image_header_size(path: Path) -> tuple[int, int]:
    """(width, height) from an image file's header, without decoding it; DatasetError when unreadable or
    past MAX_IMAGE_SIDE / MAX_IMAGE_PIXELS (PIL's own decompression-bomb warning is not printed)."""
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise DatasetError(path, "image file not found")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                width, height = int(im.size[0]), int(im.size[1])
    except Image.DecompressionBombError:
        raise DatasetError(path, f"image is larger than the limit of {MAX_IMAGE_PIXELS} pixels") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise DatasetError(path, f"cannot read image ({e})") from None
    check_image_size(width, height, path)
    return width, height


def read_image(path: Path) -> np.ndarray:
    """Decode an image file to integer RGBA [H, W, 4], uint8 or uint16 (alpha at full scale when absent).

    8- and 16-bit grey, grey+alpha, RGB, RGBA and palette images are accepted. Divide by 255 (uint8) or
    65535 (uint16) for values in [0, 1]. Images past MAX_IMAGE_SIDE / MAX_IMAGE_PIXELS are refused before
    they are decoded.
    """
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise DatasetError(path, "image file not found")
    try:
        with Image.open(path) as im:
            check_image_size(int(im.size[0]), int(im.size[1]), path)
            im.load()
            if im.mode.startswith("I"):  # 16-bit (or 32-bit integer) grey
                grey = np.clip(np.asarray(im), 0, 65535).astype(np.uint16)
                full = np.full_like(grey, 65535)
                return np.stack([grey, grey, grey, full], axis=2)
            if im.mode in ("RGB", "RGBA"):
                arr = np.asarray(im)
            else:
                has_alpha = "A" in im.mode or "transparency" in im.info
                arr = np.asarray(im.convert("RGBA" if has_alpha else "RGB"))
    except Image.DecompressionBombError:
        raise DatasetError(path, f"image is larger than the limit of {MAX_IMAGE_PIXELS} pixels") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise DatasetError(path, f"cannot read image ({e})") from None
    if arr.dtype != np.uint8 or arr.ndim != 3:
        raise DatasetError(path, f"unsupported image data {arr.dtype} {list(arr.shape)}")
    if arr.shape[2] == 3:
        arr = np.concatenate([arr, np.full(arr.shape[:2] + (1,), 255, dtype=np.uint8)], axis=2)
    return arr


def block_sum(x: np.ndarray, factor: int, dtype: type[np.generic]) -> np.ndarray:
    """Sum ``factor`` x ``factor`` blocks: [H, W] -> [H // factor, W // factor], accumulated in ``dtype``.

    Rows and columns past the last whole block (bottom and right edges) are dropped. Summing strided slices
    keeps numpy's inner loops long (a reshape + sum over the block axes is ~30x slower here).
    """
    h, w = x.shape[0] // factor, x.shape[1] // factor
    rows = x[0 : h * factor : factor, : w * factor].astype(dtype)
    for i in range(1, factor):
        rows += x[i : h * factor : factor, : w * factor]
    out = np.ascontiguousarray(rows[:, 0::factor])
    for j in range(1, factor):
        out += rows[:, j::factor]
    return out


def composite_downscaled(
    rgba: np.ndarray, background: np.ndarray, factor: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Integer straight-alpha RGBA [H, W, 4] -> area-averaged composite (rgb [h, w, 3], alpha [h, w]) float32.

    Equal to ``area_downscale`` of ``composite_on_background(rgba / peak)`` (composite at full resolution,
    then average N x N blocks), computed by linearity: the premultiplied colour rgb·a and the alpha are
    block-summed exactly in integers, then pixel = mean(rgb·a) + background·(1 - mean(a)).
    Channels are processed one plane at a time (an inner numpy loop over 3 channels is slow).
    """
    product: type[np.unsignedinteger[Any]]
    acc: type[np.unsignedinteger[Any]]
    if rgba.dtype == np.uint8:  # 255 * 255 fits uint16; a sum of 256² of those fits uint32
        peak, product, acc = 255, np.uint16, np.uint32 if factor <= 256 else np.uint64
    elif rgba.dtype == np.uint16:
        peak, product, acc = 65535, np.uint32, np.uint64
    else:
        raise TypeError(f"rgba must be uint8 or uint16, got {rgba.dtype}")
    bg = [np.float32(v) for v in np.asarray(background, dtype=np.float32).reshape(3)]
    height, width = rgba.shape[0] // factor, rgba.shape[1] // factor
    rgb = np.empty((height, width, 3), dtype=np.float32)
    if factor == 1:
        alpha = rgba[..., 3].astype(np.float32)
        alpha *= np.float32(1.0 / peak)
        for c in range(3):
            plane = rgb[..., c]
            np.multiply(rgba[..., c], np.float32(1.0 / peak), out=plane, dtype=np.float32)
            plane -= bg[c]
            plane *= alpha
            plane += bg[c]
        return np.clip(rgb, 0.0, 1.0, out=rgb), alpha
    a = rgba[..., 3].astype(product)
    alpha = block_sum(a, factor, acc).astype(np.float32)
    alpha *= np.float32(1.0 / (peak * factor * factor))
    uncovered = 1.0 - alpha
    premultiplied = np.empty_like(a)
    scale = np.float32(1.0 / (float(peak) * peak * factor * factor))
    for c in range(3):
        np.multiply(rgba[..., c], a, out=premultiplied, dtype=product)
        plane = rgb[..., c]
        np.multiply(block_sum(premultiplied, factor, acc), scale, out=plane, dtype=np.float32)
        plane += bg[c] * uncovered
    return np.clip(rgb, 0.0, 1.0, out=rgb), np.clip(alpha, 0.0, 1.0, out=alpha)


def composite_on_background(rgba: np.ndarray, background: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Straight-alpha RGBA [H, W, 4] -> (rgb·a + background·(1 - a) [H, W, 3], a [H, W]), float32."""
    alpha = rgba[..., 3]
    rgb = rgba[..., :3] * alpha[..., None] + background.astype(np.float32) * (1.0 - alpha[..., None])
    return rgb.astype(np.float32, copy=False), alpha


def area_downscale(image: np.ndarray, factor: int) -> np.ndarray:
    """Average ``factor`` x ``factor`` pixel blocks: [H, W, ...] -> [H // factor, W // factor, ...].

    Rows and columns past the last whole block (bottom and right edges) are dropped, which keeps the
    principal point exactly at cx / factor, cy / factor.
    """
    if factor == 1:
        return image
    h, w = image.shape[0] // factor, image.shape[1] // factor
    cropped = image[: h * factor, : w * factor]
    blocks = cropped.reshape((h, factor, w, factor) + image.shape[2:])
    return blocks.mean(axis=(1, 3), dtype=np.float32)


def downscaled_size(width: int, height: int, factor: int) -> tuple[int, int]:
    """(W // factor, H // factor): the size :func:`area_downscale` produces."""
    return width // factor, height // factor


def load_images(
    paths: Sequence[Path],
    width: int,
    height: int,
    background: np.ndarray,
    downscale: int,
    size_source: str | None = None,
    num_workers: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Read, composite and area-downscale images in a thread pool.

    Every image must be ``width`` x ``height`` at full resolution (``size_source`` names where that size came
    from, for the error message). Returns (images [N, H/N, W/N, 3], alphas [N, H/N, W/N]) float32.
    """
    n = len(paths)
    return load_frame_images(
        paths, [(width, height)] * n, background, downscale, [size_source] * n, num_workers
    )


def load_frame_images(
    paths: Sequence[Path],
    sizes: Sequence[tuple[int, int]],
    background: np.ndarray,
    downscale: int,
    size_sources: Sequence[str | None],
    num_workers: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`load_images` with each frame's own full-resolution size ``sizes[i]`` = (w, h).

    Frame i becomes the top-left (w // N) x (h // N) of arrays as large as the largest frame; the rest is
    padding: ``background`` with alpha 1. Every header is read (and checked against its size) before any
    image is decoded.
    """
    for path, (width, height), source in zip(paths, sizes, size_sources, strict=True):
        check_image_size(width, height, path, f"image size ({source})" if source else "image size")
        w, h = downscaled_size(width, height, downscale)
        if w < 1 or h < 1:
            raise DatasetError(path, f"downscale {downscale} leaves no pixels of a {width}x{height} image")
    small = [downscaled_size(width, height, downscale) for width, height in sizes]
    w, h = max(s[0] for s in small), max(s[1] for s in small)
    need, have = len(paths) * h * w * 16, physical_memory()  # 3 colour + 1 alpha float32 per pixel
    if have is not None and need > have:
        raise DatasetError(
            paths[0].parent,
            f"{len(paths)} images of {w}x{h} need {need / 2**30:.1f} GiB decoded, more than this machine's "
            f"{have / 2**30:.1f} GiB of memory (downscale more or keep fewer frames)",
        )

    def expected(i: int) -> str:
        source = size_sources[i]
        return f"{sizes[i][0]}x{sizes[i][1]}" + (f" ({source})" if source else "")

    for i, path in enumerate(paths):  # every header before any decoding: a wrong or huge image fails fast
        size = image_header_size(path)
        if size != tuple(sizes[i]):
            raise DatasetError(path, f"image is {size[0]}x{size[1]}, expected {expected(i)}")
    images = np.empty((len(paths), h, w, 3), dtype=np.float32)
    alphas = np.empty((len(paths), h, w), dtype=np.float32)
    if any(s != (w, h) for s in small):
        images[:] = np.asarray(background, dtype=np.float32).reshape(3)
        alphas[:] = 1.0

    def load_one(i: int) -> None:
        rgba = read_image(paths[i])
        if rgba.shape[:2] != (sizes[i][1], sizes[i][0]):
            raise DatasetError(paths[i], f"image is {rgba.shape[1]}x{rgba.shape[0]}, expected {expected(i)}")
        fw, fh = small[i]
        images[i, :fh, :fw], alphas[i, :fh, :fw] = composite_downscaled(rgba, background, downscale)

    run_parallel(load_one, len(paths), num_workers)
    return images, alphas


def run_parallel(fn: Callable[[int], None], n: int, num_workers: int | None = None) -> None:
    """Call ``fn(i)`` for i in 0..n-1 in a thread pool; the first exception (in index order) is raised."""
    workers = num_workers if num_workers is not None else min(8, (os.cpu_count() or 1) + 2)
    workers = max(1, min(workers, n))
    if workers == 1:
        for i in range(n):
            fn(i)
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="kilonerf-load") as pool:
        try:
            for _ in pool.map(fn, range(n)):
                pass
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)  # do not decode the rest after a failure
            raise


def physical_memory() -> int | None:
    """Bytes of physical memory of this machine, or None when unknown."""
    try:
        pages, page = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, OSError, ValueError):
        return None
    return pages * page if pages > 0 and page > 0 else None
