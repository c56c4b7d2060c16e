"""Dataset loaders: real lego data in both layouts, hand-computed downscaling, and every error case."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from trainer.data import Dataset, DatasetError, default_near_far, detect_layout, load_dataset
from trainer.data.common import area_downscale, composite_downscaled, composite_on_background

# ----------------------------------------------------------------------------------------------- helpers

#: A 4x4 RGBA image (uint8). The top-left 2x2 block holds opaque red, a fully transparent pixel whose
#: stored colour is black, opaque blue and opaque green; the other pixels are half-transparent grey.
TILE = np.zeros((4, 4, 4), dtype=np.uint8)
TILE[:, :] = (102, 102, 102, 51)  # rgb 0.4, alpha 0.2
TILE[0, 0] = (255, 0, 0, 255)
TILE[0, 1] = (0, 0, 0, 0)
TILE[1, 0] = (0, 0, 255, 255)
TILE[1, 1] = (0, 255, 0, 255)


def save_png(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def pose(tx: float) -> list[list[float]]:
    """A camera-to-world: a rotation about Z by tx radians, translated to (tx, 2 tx, 3 tx)."""
    c, s = math.cos(tx), math.sin(tx)
    return [[c, -s, 0.0, tx], [s, c, 0.0, 2 * tx], [0.0, 0.0, 1.0, 3 * tx], [0.0, 0.0, 0.0, 1.0]]


def make_blender(root: Path, n: int = 3, size: int = 4, split: str = "train") -> Path:
    """Blender layout with ``n`` frames; frame i is TILE with its red channel of pixel (3, 3) set to 10 i."""
    frames = []
    for i in range(n):
        img = np.zeros((size, size, 4), dtype=np.uint8)
        img[:4, :4] = TILE[: min(size, 4), : min(size, 4)]
        img[size - 1, size - 1] = (10 * i, 0, 0, 255)
        save_png(root / split / f"r_{i}.png", img)
        frames.append({"file_path": f"./{split}/r_{i}", "transform_matrix": pose(0.1 * i)})
    # camera_angle_x = 2 atan(1/2): focal = 0.5 W / tan(atan(1/2)) = W
    meta = {"camera_angle_x": 2 * math.atan(0.5), "frames": frames}
    (root / f"transforms_{split}.json").write_text(json.dumps(meta))
    return root


def make_nsvf(root: Path, n: int = 2, size: int = 4) -> Path:
    """NSVF layout with ``n`` train and 1 val frame; OpenCV poses from :func:`pose`."""
    (root / "pose").mkdir(parents=True)
    (root / "bbox.txt").write_text("-1 -2 -3 1 2 3 0.25\n")
    (root / "intrinsics.txt").write_text(f"5.5 1.5 2.5 0.\n0. 0. 0.\n0.\n1.\n{size} {size}\n")
    stems = [f"0_{i:04d}" for i in range(n)] + ["1_0000"]
    for i, stem in enumerate(stems):
        img = np.zeros((size, size, 4), dtype=np.uint8)
        img[..., 3] = 255
        img[0, 0, 0] = 20 * i
        save_png(root / "rgb" / f"{stem}.png", img)
        text = "\n".join(" ".join(repr(v) for v in row) for row in pose(0.1 * i))
        (root / "pose" / f"{stem}.txt").write_text(text + "\n")
    return root


def assert_one_line_error(excinfo: pytest.ExceptionInfo[DatasetError], name: str) -> None:
    message = str(excinfo.value)
    assert name in message, message
    assert "\n" not in message


# ------------------------------------------------------------------------------------------ real data


def test_blender_lego_loads(blender_lego: Path) -> None:
    ds = load_dataset(blender_lego, "train", downscale=8, limit=2)
    meta = json.loads((blender_lego / "transforms_train.json").read_text())
    assert ds.images.shape == (2, 100, 100, 3) and ds.images.dtype == np.float32
    assert ds.alphas.shape == (2, 100, 100) and ds.c2w.shape == (2, 4, 4) and ds.c2w.dtype == np.float32
    assert (ds.width, ds.height) == (100, 100)
    assert ds.focal == pytest.approx(0.5 * 800 / math.tan(0.5 * meta["camera_angle_x"]) / 8)
    np.testing.assert_allclose(ds.c2w[1], np.array(meta["frames"][1]["transform_matrix"]), atol=1e-7)
    assert ds.names == ["train/r_0", "train/r_1"]
    assert ds.bbox_min is None and ds.near is None and ds.far is None
    assert default_near_far(ds) == (2.0, 6.0)
    # reference: composite the PNG on white at full resolution, then average 8x8 blocks
    rgba = np.asarray(Image.open(blender_lego / "train" / "r_1.png"), dtype=np.float64) / 255.0
    comp = rgba[..., :3] * rgba[..., 3:] + (1.0 - rgba[..., 3:])
    ref = comp.reshape(100, 8, 100, 8, 3).mean(axis=(1, 3))
    np.testing.assert_allclose(ds.images[1], ref, atol=1e-5)
    ref_alpha = rgba[..., 3].reshape(100, 8, 100, 8).mean(axis=(1, 3))
    np.testing.assert_allclose(ds.alphas[1], ref_alpha, atol=1e-5)
    assert 0.05 < ds.alphas.mean() < 0.9  # the lego covers part of the frame


def test_nsvf_lego_loads(nsvf_lego: Path) -> None:
    ds = load_dataset(nsvf_lego, "val", downscale=16, limit=3)
    assert ds.images.shape == (3, 50, 50, 3)
    assert ds.names == ["1_0000", "1_0001", "1_0002"]
    values = np.array([float(v) for v in (nsvf_lego / "bbox.txt").read_text().split()])
    assert ds.bbox_min is not None and ds.bbox_max is not None
    np.testing.assert_allclose(ds.bbox_min, values[:3], rtol=1e-6)
    np.testing.assert_allclose(ds.bbox_max, values[3:6], rtol=1e-6)
    assert ds.voxel_size == pytest.approx(values[6])
    focal, cx, cy = (float(v) for v in (nsvf_lego / "intrinsics.txt").read_text().split()[:3])
    assert ds.focal == pytest.approx(focal / 16) and (ds.cx, ds.cy) == (cx / 16, cy / 16)
    opencv = np.loadtxt(nsvf_lego / "pose" / "1_0002.txt")
    np.testing.assert_allclose(ds.c2w[2], opencv * np.array([1.0, -1.0, -1.0, 1.0]), atol=1e-7)
    near, far = default_near_far(ds)
    eye = ds.c2w[:, :3, 3]
    assert 0 < near < np.linalg.norm(eye, axis=1).min() < far


def test_nsvf_0000_equals_blender_r0(blender_lego: Path, nsvf_lego: Path) -> None:
    blender = load_dataset(blender_lego, "train", limit=1)
    nsvf = load_dataset(nsvf_lego, "train", limit=1)
    assert nsvf.names == ["0_0000"] and blender.names == ["train/r_0"]
    assert np.abs(nsvf.c2w[0] - blender.c2w[0]).max() < 1e-5
    assert np.array_equal(nsvf.images[0], blender.images[0])
    assert np.array_equal(nsvf.alphas[0], blender.alphas[0])
    assert nsvf.focal == pytest.approx(blender.focal, rel=1e-6)
    assert nsvf.principal_point == pytest.approx(blender.principal_point)


def test_layout_detection(blender_lego: Path, nsvf_lego: Path) -> None:
    assert detect_layout(blender_lego) == "blender"
    assert detect_layout(nsvf_lego) == "nsvf"


# ------------------------------------------------------------------------------ hand-computed answers


def test_downscale_composites_before_averaging(tmp_path: Path) -> None:
    root = make_blender(tmp_path, n=1)
    ds = load_dataset(root, downscale=2)
    assert ds.images.shape == (1, 2, 2, 3) and (ds.width, ds.height) == (2, 2)
    # top-left block on white: red, white (transparent), blue, green -> (2, 2, 2) / 4
    np.testing.assert_allclose(ds.images[0, 0, 0], [0.5, 0.5, 0.5], atol=1e-6)
    assert ds.alphas[0, 0, 0] == pytest.approx(0.75)
    # top-right block: four pixels of grey 0.4 at alpha 0.2 -> 0.4 * 0.2 + 0.8 = 0.88
    np.testing.assert_allclose(ds.images[0, 0, 1], [0.88, 0.88, 0.88], atol=1e-6)
    assert ds.alphas[0, 0, 1] == pytest.approx(0.2)
    # bottom-right block: three grey pixels (0.88) and one opaque black pixel -> 0.66
    np.testing.assert_allclose(ds.images[0, 1, 1], [0.66, 0.66, 0.66], atol=1e-6)
    assert ds.alphas[0, 1, 1] == pytest.approx(0.4)
    assert ds.focal == pytest.approx(4.0 / 2)  # focal = W at full resolution
    assert ds.principal_point == (1.0, 1.0)


def test_downscale_on_black_background(tmp_path: Path) -> None:
    ds = load_dataset(make_blender(tmp_path, n=1), downscale=2, background=(0.0, 0.0, 0.0))
    np.testing.assert_allclose(ds.images[0, 0, 0], [0.25, 0.25, 0.25], atol=1e-6)
    np.testing.assert_allclose(ds.images[0, 0, 1], [0.08, 0.08, 0.08], atol=1e-6)
    np.testing.assert_array_equal(ds.background, [0.0, 0.0, 0.0])


def test_downscale_not_dividing_crops_bottom_right(tmp_path: Path) -> None:
    ds = load_dataset(make_blender(tmp_path, n=1, size=5), downscale=2)
    assert ds.images.shape == (1, 2, 2, 3)
    np.testing.assert_allclose(ds.images[0, 0, 0], [0.5, 0.5, 0.5], atol=1e-6)
    assert ds.focal == pytest.approx(2.5)  # 5 / 2
    assert ds.principal_point == (1.25, 1.25)  # (5 / 2) / 2: the same optical axis as at full resolution


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("factor", [1, 2, 3, 5])
def test_fast_composite_equals_reference(dtype: type[np.unsignedinteger], factor: int) -> None:
    rng = np.random.default_rng(factor)
    peak = np.iinfo(dtype).max
    rgba = rng.integers(0, peak, size=(11, 13, 4), endpoint=True).astype(dtype)
    rgba[0, 0, 3], rgba[0, 1, 3] = 0, peak
    background = np.array([0.2, 0.7, 1.0], dtype=np.float32)
    rgb, alpha = composite_downscaled(rgba, background, factor)
    ref_rgb, ref_alpha = composite_on_background(rgba.astype(np.float32) / peak, background)
    assert rgb.shape == (11 // factor, 13 // factor, 3) and alpha.shape == (11 // factor, 13 // factor)
    np.testing.assert_allclose(rgb, area_downscale(ref_rgb, factor), atol=2e-6)
    np.testing.assert_allclose(alpha, area_downscale(ref_alpha, factor), atol=2e-6)


def test_sixteen_bit_grey_png(tmp_path: Path) -> None:
    root = make_blender(tmp_path, n=1)
    grey = np.array([[0, 65535, 1000, 2000]] * 4, dtype=np.uint16)
    Image.fromarray(grey).save(root / "train" / "r_0.png")
    ds = load_dataset(root)
    np.testing.assert_allclose(ds.images[0, 2, :, 1], grey[2] / 65535.0, atol=1e-7)
    np.testing.assert_array_equal(ds.alphas[0], np.ones((4, 4)))


def test_full_resolution_and_frame_order(tmp_path: Path) -> None:
    ds = load_dataset(make_blender(tmp_path, n=6), num_workers=4)
    assert ds.names == [f"train/r_{i}" for i in range(6)]
    for i in range(6):
        assert ds.images[i, 3, 3, 0] == pytest.approx(10 * i / 255.0)
        np.testing.assert_allclose(ds.c2w[i], pose(0.1 * i), atol=1e-7)
    np.testing.assert_allclose(ds.images[0, 0, 1], [1.0, 1.0, 1.0])  # transparent pixel shows the background
    assert ds.alphas[0, 0, 1] == 0.0 and ds.alphas[0, 0, 0] == 1.0


def test_blender_optional_intrinsics_and_planes(tmp_path: Path) -> None:
    root = make_blender(tmp_path, n=2)
    edits(lambda m: m.update(fl_x=3.0, cx=1.0, cy=3.0, w=4, h=4, near=0.5, far=3.5))(root)
    ds = load_dataset(root, downscale=2)
    assert ds.focal == 1.5 and ds.principal_point == (0.5, 1.5)
    assert (ds.near, ds.far) == (0.5, 3.5) and default_near_far(ds) == (0.5, 3.5)
    edits(lambda m: m.update(w=8, h=8))(root)
    with pytest.raises(DatasetError) as excinfo:
        load_dataset(root)
    assert_one_line_error(excinfo, "r_0.png")
    assert "8x8" in str(excinfo.value)


def test_limit_keeps_first_frames(tmp_path: Path) -> None:
    ds = load_dataset(make_blender(tmp_path, n=5), limit=2)
    assert len(ds) == 2 and ds.names == ["train/r_0", "train/r_1"]


def test_nsvf_opencv_pose_becomes_opengl(tmp_path: Path) -> None:
    ds = load_dataset(make_nsvf(tmp_path, n=2), "train", downscale=2)
    assert ds.names == ["0_0000", "0_0001"]
    expected = np.array(pose(0.1)) @ np.diag([1.0, -1.0, -1.0, 1.0])  # negate the Y and Z columns
    np.testing.assert_allclose(ds.c2w[1], expected, atol=1e-7)
    # OpenCV looks down +Z: the OpenGL camera looks down -Z, so its -Z column is the OpenCV +Z column
    np.testing.assert_allclose(-ds.c2w[1, :3, 2], np.array(pose(0.1))[:3, 2], atol=1e-7)
    assert ds.focal == pytest.approx(5.5 / 2) and (ds.cx, ds.cy) == (0.75, 1.25)
    assert ds.bbox_min is not None and ds.bbox_max is not None
    np.testing.assert_array_equal(ds.bbox_min, np.array([-1.0, -2.0, -3.0]))
    np.testing.assert_array_equal(ds.bbox_max, np.array([1.0, 2.0, 3.0]))
    assert ds.voxel_size == 0.25 and ds.layout == "nsvf"
    assert ds.images[1, 0, 0, 0] == pytest.approx(20 / 255.0 / 4)  # one of 4 pixels in the block
    val = load_dataset(tmp_path, "val")
    assert val.names == ["1_0000"] and val.images[0, 0, 0, 0] == pytest.approx(40 / 255.0)


def test_default_near_far_from_bbox() -> None:
    c2w = np.eye(4, dtype=np.float32)[None].copy()
    c2w[0, :3, 3] = (0.0, 0.0, 5.0)
    ds = Dataset(
        images=np.zeros((1, 2, 2, 3), np.float32),
        alphas=np.zeros((1, 2, 2), np.float32),
        c2w=c2w,
        focal=1.0,
        width=2,
        height=2,
        bbox_min=np.array([-1.0, -1.0, -1.0]),
        bbox_max=np.array([1.0, 1.0, 1.0]),
    )
    near, far = default_near_far(ds)
    assert near == pytest.approx(4.0)
    assert far == pytest.approx(math.sqrt(1 + 1 + 36))
    ds.near, ds.far = 0.5, 9.0
    assert default_near_far(ds) == (0.5, 9.0)
    assert ds.names == ["0000"]


def test_dataset_rejects_inconsistent_shapes() -> None:
    with pytest.raises(ValueError, match="alphas"):
        Dataset(np.zeros((2, 3, 4, 3)), np.zeros((2, 4, 3)), np.zeros((2, 4, 4)), 1.0, 4, 3)


@pytest.mark.parametrize(
    "kwargs",
    [{"downscale": 0}, {"downscale": 1.5}, {"downscale": 5}, {"limit": 0}, {"background": (1.0, 2.0, 0.0)}],
)
@pytest.mark.parametrize("layout", ["blender", "nsvf"])
def test_bad_arguments(tmp_path: Path, kwargs: dict[str, object], layout: str) -> None:
    root = make_blender(tmp_path, n=1) if layout == "blender" else make_nsvf(tmp_path, n=1)
    with pytest.raises(DatasetError) as excinfo:
        load_dataset(root, **kwargs)  # type: ignore[arg-type]
    assert_one_line_error(excinfo, str(tmp_path))
    assert next(iter(kwargs)) in str(excinfo.value)


# -------------------------------------------------------------------------------------------- errors


def edits(edit: Callable[[dict], object]) -> Callable[[Path], None]:
    """A breakage that edits transforms_train.json in place."""

    def apply(root: Path) -> None:
        path = root / "transforms_train.json"
        meta = json.loads(path.read_text())
        edit(meta)
        path.write_text(json.dumps(meta))

    return apply


def writes(rel: str, data: str | bytes) -> Callable[[Path], None]:
    """A breakage that overwrites the file ``rel`` with ``data``."""

    def apply(root: Path) -> None:
        (root / rel).write_bytes(data if isinstance(data, bytes) else data.encode())

    return apply


TJ = "transforms_train.json"


BLENDER_BREAKAGES: dict[str, tuple[Callable[[Path], object], str, str]] = {
    # name: (how to break the dataset, split to load, file the message must name)
    "bad json": (writes(TJ, '{"frames": [}'), "train", TJ),
    "json without frames": (edits(lambda m: m.update(frames=[])), "train", TJ),
    "frames missing": (edits(lambda m: m.pop("frames")), "train", TJ),
    "frames not a list": (edits(lambda m: m.update(frames={"a": 1})), "train", TJ),
    "frame without file_path": (edits(lambda m: m["frames"][2].pop("file_path")), "train", TJ),
    "no field of view": (edits(lambda m: m.pop("camera_angle_x")), "train", TJ),
    "bad transform": (
        edits(lambda m: m["frames"][1].update(transform_matrix=[[1, 0], [0, 1]])),
        "train",
        TJ,
    ),
    "transform not numbers": (
        edits(lambda m: m["frames"][0].update(transform_matrix="eye")),
        "train",
        TJ,
    ),
    "missing split json": (lambda r: None, "val", "transforms_val.json"),
    "missing image": (lambda r: (r / "train" / "r_1.png").unlink(), "train", "r_1.png"),
    "unreadable image": (writes("train/r_2.png", b"not a png at all"), "train", "r_2.png"),
    "truncated image": (
        lambda r: (r / "train" / "r_1.png").write_bytes((r / "train" / "r_1.png").read_bytes()[:60]),
        "train",
        "r_1.png",
    ),
    "image of the wrong size": (
        lambda r: save_png(r / "train" / "r_2.png", np.zeros((4, 5, 4), np.uint8)),
        "train",
        "r_2.png",
    ),
}


@pytest.mark.parametrize("case", sorted(BLENDER_BREAKAGES))
def test_blender_errors_name_the_file(tmp_path: Path, case: str) -> None:
    breakage, split, name = BLENDER_BREAKAGES[case]
    root = make_blender(tmp_path)
    breakage(root)
    with pytest.raises(DatasetError) as excinfo:
        load_dataset(root, split)
    assert_one_line_error(excinfo, name)


NSVF_BREAKAGES: dict[str, tuple[Callable[[Path], object], str, str]] = {
    "pose with 3 numbers": (writes("pose/0_0001.txt", "1 2 3\n"), "train", "0_0001.txt"),
    "pose not numbers": (writes("pose/0_0000.txt", "a b c d\n" * 4), "train", "0_0000.txt"),
    "pose non-finite": (
        lambda r: (r / "pose" / "0_0000.txt").write_text("nan 0 0 0\n0 1 0 0\n0 0 1 0\n0 0 0 1\n"),
        "train",
        "0_0000.txt",
    ),
    "intrinsics short first line": (
        lambda r: (r / "intrinsics.txt").write_text("5.5 1.5\n4 4\n"),
        "train",
        "intrinsics.txt",
    ),
    "intrinsics not numbers": (
        lambda r: (r / "intrinsics.txt").write_text("focal cx cy 0\n"),
        "train",
        "intrinsics.txt",
    ),
    "intrinsics empty": (lambda r: (r / "intrinsics.txt").write_text(""), "train", "intrinsics.txt"),
    "intrinsics bad size line": (
        lambda r: (r / "intrinsics.txt").write_text("5.5 1.5 2.5 0\n4 4 4\n"),
        "train",
        "intrinsics.txt",
    ),
    "bbox too short": (lambda r: (r / "bbox.txt").write_text("0 0 0 1 1\n"), "train", "bbox.txt"),
    "bbox min above max": (lambda r: (r / "bbox.txt").write_text("0 0 0 1 -1 1 0.1\n"), "train", "bbox.txt"),
    "missing rgb": (lambda r: (r / "rgb" / "0_0001.png").unlink(), "train", "0_0001.png"),
    "rgb of the wrong size": (
        lambda r: save_png(r / "rgb" / "0_0000.png", np.zeros((3, 4, 3), np.uint8)),
        "train",
        "0_0000.png",
    ),
    "size differs from intrinsics": (
        lambda r: (r / "intrinsics.txt").write_text("5.5 1.5 2.5 0\n8 8\n"),
        "train",
        "0_0000.png",
    ),
    "no frames for split": (lambda r: None, "test", "/pose:"),
}


@pytest.mark.parametrize("case", sorted(NSVF_BREAKAGES))
def test_nsvf_errors_name_the_file(tmp_path: Path, case: str) -> None:
    breakage, split, name = NSVF_BREAKAGES[case]
    root = make_nsvf(tmp_path)
    breakage(root)
    with pytest.raises(DatasetError) as excinfo:
        load_dataset(root, split)
    assert_one_line_error(excinfo, name)


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(DatasetError) as excinfo:
        load_dataset(tmp_path / "no_such_scene")
    assert_one_line_error(excinfo, "no_such_scene")
    assert "not found" in str(excinfo.value)


def test_no_recognised_layout(tmp_path: Path) -> None:
    (tmp_path / "scene").mkdir()
    (tmp_path / "scene" / "notes.txt").write_text("hello")
    with pytest.raises(DatasetError) as excinfo:
        load_dataset(tmp_path / "scene")
    assert_one_line_error(excinfo, "scene")
    assert "layout" in str(excinfo.value)


def test_dataset_error_is_a_value_error() -> None:
    err = DatasetError("/x/y.json", "bad\njson")
    assert isinstance(err, ValueError) and str(err) == "/x/y.json: bad json"


# ------------------------------------------------------------------------------------ untrusted input


def patched(edit: Callable[[dict], object], raw: str) -> Callable[[Path], None]:
    """A breakage that edits transforms_train.json, then pastes ``raw`` where ``edit`` put "@RAW@"."""

    def apply(root: Path) -> None:
        path = root / TJ
        meta = json.loads(path.read_text())
        edit(meta)
        path.write_text(json.dumps(meta).replace('"@RAW@"', raw))

    return apply


def png_header(width: int, height: int) -> bytes:
    """A PNG holding only its signature, an IHDR chunk claiming ``width`` x ``height`` RGBA, and IEND."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def setting(key: str, value: object) -> Callable[[dict], object]:
    return lambda m: m.update({key: value})


def frame_setting(i: int, key: str, value: object) -> Callable[[dict], object]:
    return lambda m: m["frames"][i].update({key: value})


def translated(tz: float) -> list[list[float]]:
    return [[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, tz], [0.0, 0.0, 0.0, 1.0]]


UNTRUSTED_BLENDER: dict[str, tuple[Callable[[Path], object], str, str]] = {
    # name: (how to break the dataset, file the message must name, fragment it must hold)
    "deep json": (writes(TJ, "[" * 100_000 + "]" * 100_000), TJ, "nested deeper than 64 levels"),
    "deep json inside a frame": (
        patched(frame_setting(0, "extra", "@RAW@"), "[" * 70 + "]" * 70),
        TJ,
        "nested deeper than 64 levels",
    ),
    "400-digit camera_angle_x": (
        patched(setting("camera_angle_x", "@RAW@"), "1" + "0" * 400),
        TJ,
        "integer with 401 digits",
    ),
    "camera_angle_x 1e400": (patched(setting("camera_angle_x", "@RAW@"), "1e400"), TJ, "out of range"),
    "camera_angle_x NaN": (patched(setting("camera_angle_x", "@RAW@"), "NaN"), TJ, "NaN is not a number"),
    "Infinity in a transform": (
        patched(lambda m: m["frames"][1]["transform_matrix"][0].__setitem__(3, "@RAW@"), "Infinity"),
        TJ,
        "Infinity is not a number",
    ),
    "duplicate key": (writes(TJ, '{"frames": [], "frames": [1]}'), TJ, "duplicate key 'frames'"),
    "not UTF-8": (writes(TJ, b'{"frames": "\xff"}'), TJ, "not UTF-8"),
    "camera_angle_x 1e-300": (edits(setting("camera_angle_x", 1e-300)), TJ, "focal length"),
    "camera_angle_x above pi": (edits(setting("camera_angle_x", 3.5)), TJ, "below pi"),
    "camera_angle_x a string": (edits(setting("camera_angle_x", "0.69")), TJ, "is not a number: '0.69'"),
    "camera_angle_x true": (edits(setting("camera_angle_x", True)), TJ, "is not a number: True"),
    "fl_x 1e300": (edits(setting("fl_x", 1e300)), TJ, "focal length 1e+300 pixels is outside"),
    "cx 1e300": (edits(setting("cx", 1e300)), TJ, "principal point cx"),
    "w 0.5": (edits(lambda m: m.update(w=0.5, h=4)), TJ, "'w' must be an integer in 1..32768"),
    "w 40000": (edits(lambda m: m.update(w=40000, h=4)), TJ, "'w' must be an integer in 1..32768"),
    "w, h 20000": (
        edits(lambda m: m.update(w=20000, h=20000)),
        TJ,
        "image size 'w' x 'h' is 20000x20000, more than the limit of 67108864 pixels",
    ),
    "near negative": (edits(setting("near", -1.0)), TJ, "'near' must be a finite number > 0"),
    "far 1e300": (edits(setting("far", 1e300)), TJ, "'far' must be at most 1e+06"),
    "frame not an object": (
        edits(lambda m: m["frames"].__setitem__(1, 5)),
        TJ,
        "frame 1 is not a json object",
    ),
    "too many frames": (
        edits(lambda m: m.update(frames=m["frames"][:1] * 100_001)),
        TJ,
        "100001 frames, more than the limit of 100000",
    ),
    "file_path absolute": (edits(frame_setting(0, "file_path", "/etc/passwd")), TJ, "must be relative"),
    "file_path home": (edits(frame_setting(0, "file_path", "~/r_0")), TJ, "must be relative"),
    "file_path climbing out": (
        edits(frame_setting(2, "file_path", "../../../etc/passwd")),
        TJ,
        "frame 2 'file_path' '../../../etc/passwd' leaves the dataset folder",
    ),
    "file_path climbing out later": (
        edits(frame_setting(0, "file_path", "train/../../lego/train/r_0")),
        TJ,
        "leaves the dataset folder",
    ),
    "file_path a number": (edits(frame_setting(0, "file_path", 5)), TJ, "frame 0 has no 'file_path' string"),
    "file_path with a NUL": (edits(frame_setting(0, "file_path", "train/r_0\x00")), TJ, "control characters"),
    "file_path too long": (edits(frame_setting(0, "file_path", "a/" * 3000)), TJ, "longer than 4096"),
    "transform translated 1e30": (
        edits(frame_setting(1, "transform_matrix", translated(1e30))),
        TJ,
        "frame 1 transform_matrix has an entry of magnitude 1e+30, more than 1e+06",
    ),
    "transform of bools": (
        edits(frame_setting(0, "transform_matrix", [[True] * 4] * 4)),
        TJ,
        "not a matrix of numbers",
    ),
    "transform of strings": (
        edits(frame_setting(0, "transform_matrix", [["1"] * 4] * 4)),
        TJ,
        "not a matrix of numbers",
    ),
    "transform nested deeper": (
        edits(frame_setting(0, "transform_matrix", [[[[1.0]]] * 4] * 4)),
        TJ,
        "not a matrix of numbers",
    ),
    "image claiming 40000x40000": (writes("train/r_1.png", png_header(40000, 40000)), "r_1.png", "limit"),
    "image claiming 10000x10000": (
        writes("train/r_0.png", png_header(10000, 10000)),
        "r_0.png",
        "10000x10000, more than the limit of 67108864 pixels",
    ),
    "image claiming 9000x9000": (
        writes("train/r_2.png", png_header(9000, 9000)),
        "r_2.png",
        "9000x9000, more than the limit of 67108864 pixels",
    ),
}


@pytest.mark.parametrize("case", sorted(UNTRUSTED_BLENDER))
def test_untrusted_blender_is_one_line(tmp_path: Path, case: str) -> None:
    import warnings

    breakage, name, fragment = UNTRUSTED_BLENDER[case]
    root = make_blender(tmp_path / "lego")
    breakage(root)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # PIL's decompression-bomb warning would be a second line
        with pytest.raises(DatasetError) as excinfo:
            load_dataset(root, "train")
    assert_one_line_error(excinfo, name)
    message = str(excinfo.value)
    assert fragment in message and len(message) < 400, message


def test_file_path_that_stays_inside_loads(tmp_path: Path) -> None:
    root = make_blender(tmp_path, n=2)
    edits(frame_setting(1, "file_path", "./train/../train/./r_1.png"))(root)
    ds = load_dataset(root)
    assert len(ds) == 2 and ds.names[1] == "train/../train/r_1"


def test_integral_float_size_and_counting_frames(tmp_path: Path) -> None:
    from trainer.data import count_frames

    root = make_blender(tmp_path, n=2)
    edits(lambda m: m.update(w=4.0, h=4.0))(root)
    assert load_dataset(root).width == 4
    assert count_frames(root, "train") == 2
    writes(TJ, "[" * 100_000 + "]" * 100_000)(root)
    with pytest.raises(DatasetError, match="nested deeper"):
        count_frames(root, "train")


def test_json_size_limit(tmp_path: Path) -> None:
    from trainer.data.fields import read_json

    path = tmp_path / "t.json"
    path.write_text(json.dumps({"frames": ["x" * 200]}))
    with pytest.raises(DatasetError) as excinfo:
        read_json(path, "transforms json", max_bytes=100)
    assert str(excinfo.value) == f"{path}: transforms json file is larger than the limit of 100 bytes"
    assert read_json(path, max_bytes=1000) == {"frames": ["x" * 200]}


@pytest.mark.parametrize("layout", ["blender", "nsvf"])
def test_dataset_larger_than_memory_is_refused_before_allocating(
    tmp_path: Path, layout: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import trainer.data.common as common

    root = make_blender(tmp_path, n=3) if layout == "blender" else make_nsvf(tmp_path, n=3)
    monkeypatch.setattr(common, "physical_memory", lambda: 500)  # 3 images of 4x4 need 768 bytes
    with pytest.raises(DatasetError) as excinfo:
        load_dataset(root)
    assert_one_line_error(excinfo, str(tmp_path))
    assert "more than this machine's" in str(excinfo.value)


INTRINSICS = "intrinsics.txt"
POSE = "pose/0_0000.txt"
UNTRUSTED_NSVF: dict[str, tuple[Callable[[Path], object], str, str]] = {
    "size infinite": (
        writes(INTRINSICS, "5.5 1.5 2.5 0\ninf 4\n"),
        INTRINSICS,
        "line 2 has a non-finite number",
    ),
    "size NaN": (writes(INTRINSICS, "5.5 1.5 2.5 0\nnan 4\n"), INTRINSICS, "non-finite"),
    "size fractional": (
        writes(INTRINSICS, "5.5 1.5 2.5 0\n4.5 4\n"),
        INTRINSICS,
        "image width must be an integer",
    ),
    "size 40000": (
        writes(INTRINSICS, "5.5 1.5 2.5 0\n4 40000\n"),
        INTRINSICS,
        "image height must be an integer",
    ),
    "size 10000x10000": (
        writes(INTRINSICS, "5.5 1.5 2.5 0\n10000 10000\n"),
        INTRINSICS,
        "image size is 10000x10000, more than the limit of 67108864 pixels",
    ),
    "focal 1e300": (writes(INTRINSICS, "1e300 1.5 2.5 0\n4 4\n"), INTRINSICS, "focal length"),
    "focal 1e-300": (writes(INTRINSICS, "1e-300 1.5 2.5 0\n4 4\n"), INTRINSICS, "focal length"),
    "focal 1e400": (writes(INTRINSICS, "1e400 1.5 2.5 0\n4 4\n"), INTRINSICS, "non-finite"),
    "cx 1e300": (writes(INTRINSICS, "5.5 1e300 2.5 0\n4 4\n"), INTRINSICS, "principal point cx"),
    "K matrix fx 1e300": (
        writes(INTRINSICS, "1e300 0 2 0\n0 1e300 2 0\n0 0 1 0\n0 0 0 1\n"),
        INTRINSICS,
        "focal length",
    ),
    "intrinsics not UTF-8": (writes(INTRINSICS, b"5.5 1.5 \xff 0\n"), INTRINSICS, "not UTF-8"),
    "intrinsics over 1 MiB": (
        writes(INTRINSICS, "5.5 1.5 2.5 0\n" + "0 " * 600_000 + "\n4 4\n"),
        INTRINSICS,
        "larger than the limit of 1048576 bytes",
    ),
    "number with underscores": (
        writes(POSE, "1_0 0 0 0\n0 1 0 0\n0 0 1 0\n0 0 0 1\n"),
        "0_0000.txt",
        "not numbers",
    ),
    "pose translated 1e30": (
        writes(POSE, "1 0 0 1e30\n0 1 0 0\n0 0 1 0\n0 0 0 1\n"),
        "0_0000.txt",
        "magnitude 1e+30",
    ),
    "pose 1e400": (writes(POSE, "1 0 0 1e400\n0 1 0 0\n0 0 1 0\n0 0 0 1\n"), "0_0000.txt", "non-finite"),
    "bbox 1e30": (writes("bbox.txt", "-1e30 0 0 1 1 1\n"), "bbox.txt", "magnitude 1e+30"),
    "bbox flat": (writes("bbox.txt", "0 0 0 1e-9 1 1\n"), "bbox.txt", "not below max"),
    "rgb claiming 40000x40000": (writes("rgb/0_0001.png", png_header(40000, 40000)), "0_0001.png", "limit"),
}


@pytest.mark.parametrize("case", sorted(UNTRUSTED_NSVF))
def test_untrusted_nsvf_is_one_line(tmp_path: Path, case: str) -> None:
    breakage, name, fragment = UNTRUSTED_NSVF[case]
    root = make_nsvf(tmp_path / "lego")
    breakage(root)
    with pytest.raises(DatasetError) as excinfo:
        load_dataset(root, "train")
    assert_one_line_error(excinfo, name)
    message = str(excinfo.value)
    assert fragment in message and len(message) < 400, message
