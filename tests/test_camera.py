"""Cameras: hand-computed rays, look_at / orbit, the camera JSON."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from renderer.camera import (
    Camera,
    CameraFormatError,
    generate_rays,
    load_camera_json,
    look_at,
    orbit_pose,
    pixel_grid,
    pixel_rays,
    save_camera_json,
)


def test_identity_camera_hand_ray() -> None:
    cam = Camera(width=4, height=2, focal=2.0, c2w=np.eye(4))
    o, d = generate_rays(cam)
    assert o.shape == (8, 3) and d.shape == (8, 3)
    # pixel (px=3, py=0): ((3.5 − 2)/2, −(0.5 − 1)/2, −1) = (0.75, 0.25, −1)
    v = np.array([0.75, 0.25, -1.0])
    np.testing.assert_allclose(d[3].numpy(), v / np.linalg.norm(v), atol=1e-7)
    # pixel (px=0, py=1) is row-major index 4: ((0.5 − 2)/2, −(1.5 − 1)/2, −1)
    v = np.array([-0.75, -0.25, -1.0])
    np.testing.assert_allclose(d[4].numpy(), v / np.linalg.norm(v), atol=1e-7)
    np.testing.assert_allclose(np.linalg.norm(d.numpy(), axis=1), 1.0, atol=1e-6)


def test_rotated_translated_camera_and_principal_point() -> None:
    # camera at (1, 2, 3), rotated 90° about +Z: camera x → world y, camera y → world −x
    c2w = np.array([[0, -1, 0, 1], [1, 0, 0, 2], [0, 0, 1, 3], [0, 0, 0, 1]], dtype=float)
    cam = Camera(width=3, height=3, focal=1.0, c2w=c2w, cx=0.5, cy=0.5)
    o, d = generate_rays(cam)
    np.testing.assert_allclose(o.numpy(), np.tile([1.0, 2.0, 3.0], (9, 1)))
    # pixel (px=2, py=2): camera dir (2, −2, −1) → world (2, 2, −1)
    np.testing.assert_allclose(d[8].numpy(), np.array([2.0, 2.0, -1.0]) / 3.0, atol=1e-7)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_pixel_rays_identity_2x2_hand_computed(dtype: torch.dtype) -> None:
    # f = 1, (cx, cy) = (1, 1): pixel (px, py) → ((px + ½ − 1), −(py + ½ − 1), −1) / √1.5
    px, py = pixel_grid(2, 2)
    assert px.tolist() == [0, 1, 0, 1] and py.tolist() == [0, 0, 1, 1]
    s = 1.0 / math.sqrt(1.5)
    expected = torch.tensor(
        [[-0.5, 0.5, -1.0], [0.5, 0.5, -1.0], [-0.5, -0.5, -1.0], [0.5, -0.5, -1.0]], dtype=dtype
    )
    c2w = torch.eye(4, dtype=dtype)
    c2w[:3, 3] = torch.tensor([1.0, -2.0, 3.0])
    for cams in (c2w, c2w.expand(4, 4, 4)):  # one camera broadcast, or one per ray
        o, d = pixel_rays(cams, px, py, 1.0, 1.0, 1.0)
        assert o.dtype == dtype and d.dtype == dtype and o.shape == (4, 3) and d.shape == (4, 3)
        torch.testing.assert_close(d, expected * s, atol=1e-7, rtol=0)
        torch.testing.assert_close(o, torch.tensor([[1.0, -2.0, 3.0]] * 4, dtype=dtype))


def test_pixel_rays_float32_agrees_with_float64_and_generate_rays() -> None:
    poses = np.stack([orbit_pose((0.1, 0.2, 0.0), 3.0, az, 20.0 + az / 10) for az in (0.0, 75.0, 210.0)])
    gen = torch.Generator().manual_seed(0)
    cam_of_ray = torch.randint(0, 3, (500,), generator=gen)
    px, py = torch.randint(0, 640, (500,), generator=gen), torch.randint(0, 480, (500,), generator=gen)
    c2w64 = torch.as_tensor(poses)[cam_of_ray]
    o64, d64 = pixel_rays(c2w64, px, py, 555.5, 320.3, 239.7)
    o32, d32 = pixel_rays(c2w64.float(), px, py, 555.5, 320.3, 239.7)
    torch.testing.assert_close(o32.double(), o64, atol=1e-6, rtol=0)
    torch.testing.assert_close(d32.double(), d64, atol=1e-6, rtol=0)
    torch.testing.assert_close(torch.linalg.vector_norm(d64, dim=1), torch.ones(500, dtype=torch.float64))
    # generate_rays is pixel_rays in float64 over the row-major pixel grid, returned as float32
    cam = Camera(width=7, height=5, focal=6.5, c2w=poses[1], cx=3.2, cy=2.9)
    o, d = generate_rays(cam)
    gx, gy = pixel_grid(7, 5)
    o_ref, d_ref = pixel_rays(torch.as_tensor(poses[1]), gx, gy, 6.5, 3.2, 2.9)
    assert torch.equal(o, o_ref.float()) and torch.equal(d, d_ref.float())


def test_look_at_points_minus_z_at_target() -> None:
    c2w = look_at((4.0, 0.0, 0.0), (0.0, 0.0, 0.0), up=(0.0, 0.0, 1.0))
    np.testing.assert_allclose(c2w[:3, 2], [1.0, 0.0, 0.0], atol=1e-12)  # −Z looks along −x
    np.testing.assert_allclose(c2w[:3, 1], [0.0, 0.0, 1.0], atol=1e-12)  # camera up is world up
    np.testing.assert_allclose(c2w[:3, 0], [0.0, 1.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(c2w[:3, 3], [4.0, 0.0, 0.0])
    np.testing.assert_allclose(c2w[:3, :3] @ c2w[:3, :3].T, np.eye(3), atol=1e-12)
    # the centre pixel of an odd-sized image looks straight at the target
    cam = Camera(width=5, height=5, focal=3.0, c2w=look_at((1.0, 2.0, 3.0), (-1.0, 0.5, 0.0)))
    _, d = generate_rays(cam)
    want = np.array([-2.0, -1.5, -3.0])
    np.testing.assert_allclose(d[12].numpy(), want / np.linalg.norm(want), atol=1e-6)


def test_look_at_parallel_up_is_handled() -> None:
    c2w = look_at((0.0, 0.0, 5.0), (0.0, 0.0, 0.0))
    np.testing.assert_allclose(c2w[:3, 2], [0.0, 0.0, 1.0], atol=1e-12)
    assert abs(np.linalg.det(c2w[:3, :3]) - 1.0) < 1e-9


def test_orbit_pose_positions() -> None:
    c2w = orbit_pose((0.0, 0.0, 1.0), 2.0, 90.0, 30.0)
    el = math.radians(30)
    np.testing.assert_allclose(c2w[:3, 3], [0.0, 2 * math.cos(el), 1 + 2 * math.sin(el)], atol=1e-12)
    fwd = -c2w[:3, 2]
    np.testing.assert_allclose(fwd, (np.array([0, 0, 1.0]) - c2w[:3, 3]) / 2.0, atol=1e-12)
    # another up axis: +Y up, elevation 90 puts the eye on +Y
    c2w = orbit_pose((0.0, 0.0, 0.0), 3.0, 10.0, 90.0, up=(0.0, 1.0, 0.0))
    np.testing.assert_allclose(c2w[:3, 3], [0.0, 3.0, 0.0], atol=1e-12)


def test_json_roundtrip_and_scaled(tmp_path: Path) -> None:
    cam = Camera(
        width=40, height=30, focal=50.0, c2w=orbit_pose((0, 0, 0), 4.0, 20.0, 10.0), cx=21.0, cy=14.0
    )
    p = tmp_path / "cam.json"
    save_camera_json(cam, p)
    back = load_camera_json(p)
    assert (back.width, back.height, back.focal, back.cx, back.cy) == (40, 30, 50.0, 21.0, 14.0)
    np.testing.assert_array_equal(back.c2w, cam.c2w)
    half = cam.scaled(0.5)
    assert (half.width, half.height, half.focal, half.cx, half.cy) == (20, 15, 25.0, 10.5, 7.0)
    # same field of view: the corner ray directions agree
    o1, d1 = generate_rays(Camera(width=8, height=6, focal=10.0, c2w=np.eye(4)))
    o2, d2 = generate_rays(Camera(width=8, height=6, focal=10.0, c2w=np.eye(4)).scaled(2.0))
    # pixel (0,0) of the small image covers pixels (0..1, 0..1) of the big one; its centre is their corner
    v = np.array([(0.5 - 4) / 10, -(0.5 - 3) / 10, -1])
    np.testing.assert_allclose(d1[0].numpy(), v / np.linalg.norm(v), atol=1e-7)
    v2 = np.array([(1.0 - 8) / 20, -(1.0 - 6) / 20, -1])
    np.testing.assert_allclose(v2 / np.linalg.norm(v2), v / np.linalg.norm(v), atol=1e-12)
    assert d2.shape == (16 * 12, 3)


@pytest.mark.parametrize(
    "content, fragment",
    [
        ("{", "not valid JSON"),
        ("[1, 2]", "JSON object"),
        ('{"width": 4, "height": 4, "focal": 2}', "missing key 'c2w'"),
        ('{"width": 0, "height": 4, "focal": 2, "c2w": [[1,0,0,0],[0,1,0,0],[0,0,1,0],[0,0,0,1]]}', "width"),
        ('{"width": 4, "height": 4, "focal": -2, "c2w": [[1,0,0,0],[0,1,0,0],[0,0,1,0],[0,0,0,1]]}', "focal"),
        ('{"width": 4, "height": 4, "focal": 2, "c2w": [[1,0,0],[0,1,0],[0,0,1]]}', "4x4"),
        (
            '{"width": 4, "height": 4, "focal": 2, "c2w": [[0,0,0,0],[0,0,0,0],[0,0,0,0],[0,0,0,1]]}',
            "singular",
        ),
        ('{"width": 4, "height": 4, "focal": 2, "c2w": "abc"}', "c2w"),
    ],
)
def test_bad_camera_json(tmp_path: Path, content: str, fragment: str) -> None:
    p = tmp_path / "bad.json"
    p.write_text(content)
    with pytest.raises(CameraFormatError) as e:
        load_camera_json(p)
    msg = str(e.value)
    assert str(p) in msg and fragment in msg and "\n" not in msg


EYE = [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 4], [0, 0, 0, 1]]


def _cam_text(**fields: object) -> str:
    """A camera JSON (8x6, focal 10, EYE) with ``fields`` replaced; a str value is pasted in verbatim."""
    base: dict[str, object] = {"width": 8, "height": 6, "focal": 10, "c2w": EYE}
    base.update(fields)
    return (
        "{" + ", ".join(f'"{k}": {v if isinstance(v, str) else json.dumps(v)}' for k, v in base.items()) + "}"
    )


UNTRUSTED_CAMERAS: dict[str, tuple[str | bytes, str]] = {
    # name: (file content, fragment the one-line message must hold)
    "400-digit integer focal": (_cam_text(focal="1" + "0" * 400), "integer with 401 digits"),
    "focal 1e400": (_cam_text(focal="1e400"), "out of range"),
    "focal NaN": (_cam_text(focal="NaN"), "NaN is not a number"),
    "focal Infinity": (_cam_text(focal="Infinity"), "Infinity is not a number"),
    "focal 1e300": (_cam_text(focal=1e300), "focal must be in [0.008, 80000]"),
    "focal 1e-300": (_cam_text(focal=1e-300), "focal must be in"),
    "focal a string": (_cam_text(focal='"10"'), "focal must be a finite number"),
    "focal true": (_cam_text(focal="true"), "focal must be a finite number"),
    "cx 1e300": (_cam_text(cx=1e300), "cx must be within"),
    "cy -1e9": (_cam_text(cy=-1e9), "cy must be within"),
    "width 40000": (_cam_text(width=40000), "width must be an integer in 1..32768"),
    "width 8.0": (_cam_text(width=8.0), "width must be an integer"),
    "height true": (_cam_text(height="true"), "height must be an integer"),
    "translation 1e30": (
        _cam_text(c2w=[[1, 0, 0, 1e30], [0, 1, 0, 0], [0, 0, 1, 4], [0, 0, 0, 1]]),
        "c2w entries must be within ±1e+06",
    ),
    "rotation 1e300": (
        _cam_text(c2w=[[1e300, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 4], [0, 0, 0, 1]]),
        "c2w entries must be within",
    ),
    "c2w of strings": (_cam_text(c2w=[["1", 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 4], [0, 0, 0, 1]]), "c2w"),
    "c2w of bools": (_cam_text(c2w=[[True, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 4], [0, 0, 0, 1]]), "c2w"),
    "c2w nested deeper": (_cam_text(c2w=[[[1]] * 4] * 4), "c2w must be a 4x4 array"),
    "c2w ragged": (_cam_text(c2w=[[1, 0, 0, 0], [0, 1, 0], [0, 0, 1, 4], [0, 0, 0, 1]]), "row 1 with 3"),
    "deep JSON": ("[" * 100_000 + "]" * 100_000, "nested deeper than 64 levels"),
    "deep JSON under an unused key": (_cam_text(x="[" * 70 + "]" * 70), "nested deeper than 64 levels"),
    "duplicate key": ('{"focal": 1, ' + _cam_text()[1:], "duplicate key 'focal'"),
    "not UTF-8": (b'{"width": 8, "height": 6, "focal": 10, "c2w": "\xff"}', "not UTF-8"),
    "larger than 1 MiB": (
        _cam_text(note='"' + "x" * (1 << 20) + '"'),
        "larger than the limit of 1048576 bytes",
    ),
}


@pytest.mark.parametrize("case", sorted(UNTRUSTED_CAMERAS))
def test_untrusted_camera_json_is_one_line(tmp_path: Path, case: str) -> None:
    content, fragment = UNTRUSTED_CAMERAS[case]
    p = tmp_path / "cam.json"
    p.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(CameraFormatError) as e:
        load_camera_json(p)
    msg = str(e.value)
    assert msg.startswith(f"{p}: ") and fragment in msg and "\n" not in msg, msg
    assert len(msg) < 300, msg


def test_from_dict_takes_text_and_bounds_python_values() -> None:
    # the clipboard hands the JSON text itself: parsed with the same limits
    cam = Camera.from_dict(_cam_text(cx=3.5), name="clipboard")
    assert (cam.width, cam.height, cam.focal, cam.cx, cam.cy) == (8, 6, 10.0, 3.5, None)
    with pytest.raises(CameraFormatError, match=r"^clipboard: camera JSON is nested deeper"):
        Camera.from_dict("[" * 5000 + "]" * 5000, name="clipboard")
    # a dict built in Python may hold what JSON cannot: huge integers, NaN, numpy values
    good = {"width": 8, "height": 6, "focal": 10, "c2w": EYE}
    for key, value, fragment in [
        ("focal", 10**400, "focal must be a finite number, got an integer of 401 digits"),
        ("focal", float("nan"), "focal must be a finite number"),
        ("width", 10**400, "width must be an integer in 1..32768, got an integer of 401 digits"),
        ("c2w", [[10**400, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], "non-finite"),
        ("c2w", np.full((4, 4), np.nan), "non-finite"),
        ("c2w", np.eye(3), "shape [3, 3]"),
    ]:
        with pytest.raises(CameraFormatError) as e:
            Camera.from_dict({**good, key: value}, name="cam")
        assert str(e.value).startswith("cam: ") and fragment in str(e.value), str(e.value)
    cam = Camera.from_dict({**good, "width": np.int64(8), "focal": np.float32(10), "c2w": np.eye(4)})
    assert cam.width == 8 and isinstance(cam.width, int) and cam.focal == 10.0


def test_cameras_at_the_limits_give_finite_rays() -> None:
    # the widest, narrowest and farthest cameras a camera JSON may hold: every ray finite and unit
    pose = [[1e6, 0, 0, -1e6], [0, 1e6, 0, 1e6], [0, 0, 1e-2, 1e6], [0, 0, 0, 1]]
    for focal, cx in [(0.0091, 8.99e4), (8.99e4, -8.99e4), (0.0091, -8.99e4)]:
        cam = Camera.from_dict({"width": 9, "height": 5, "focal": focal, "c2w": pose, "cx": cx, "cy": cx})
        o, d = generate_rays(cam)
        assert torch.isfinite(o).all() and torch.isfinite(d).all()
        torch.testing.assert_close(d.norm(dim=1), torch.ones(45), atol=1e-5, rtol=0)


def test_missing_camera_file(tmp_path: Path) -> None:
    with pytest.raises(CameraFormatError, match="not found"):
        load_camera_json(tmp_path / "nope.json")
    with pytest.raises(CameraFormatError, match="directory"):
        load_camera_json(tmp_path)
    json.dumps(Camera(2, 2, 1.0, np.eye(4)).to_dict())
