"""The CUDA backend on a GPU: parity with the torch renderer (reference on the CPU), stats, capacity
deferral, and the CUDA-GL pixel-buffer round trip in an EGL context. Skipped without a GPU and pycuda."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from renderer.camera import Camera, generate_rays, look_at, orbit_pose
from renderer.render import RenderOptions, prepare_scene, render_image, render_rays_full
from renderer.synthetic import make_lego_like_scene, random_scene

pytestmark = pytest.mark.gpu

ROOT = Path(__file__).resolve().parents[1]
TRAINED_LEGO = ROOT / "assets" / "lego.kilo"
TOL = {"float32": 1e-3, "float16": 4e-3}


@pytest.fixture(scope="module")
def backend():  # type: ignore[no-untyped-def]
    from renderer.cuda.backend import CudaBackend

    b = CudaBackend()
    yield b
    b.close()


def _max_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max())


SCENES = [
    # grid, occupancy factor, hidden, dtype
    ((3, 2, 4), (2, 3, 2), 16, "float32"),
    ((2, 5, 3), (4, 2, 3), 32, "float16"),
    ((5, 4, 3), (2, 2, 2), 32, "float32"),
    ((4, 1, 2), (3, 5, 2), 64, "float16"),
]
SIZES = [(37, 29), (64, 48), (1, 1), (101, 7)]


@pytest.mark.parametrize(("grid", "factor", "hidden", "dtype"), SCENES)
@pytest.mark.parametrize("ess", [True, False])
@pytest.mark.parametrize("ert", [True, False])
def test_parity_random_scenes(backend, grid, factor, hidden, dtype, ess, ert) -> None:  # type: ignore[no-untyped-def]
    sc = random_scene(
        grid_res=grid,
        occupancy_factor=factor,
        hidden=hidden,
        dtype=dtype,
        seed=hidden + sum(grid),
        density_bias=6.0,
    )
    for i, (w, h) in enumerate(SIZES):
        eye = [(2.5, -2.0, 1.5), (0.1, 0.05, -0.1), (-2.2, 1.4, -1.9), (0.0, -3.0, 0.2)][i]
        cam = Camera(width=w, height=h, focal=max(w, h) * 0.9, c2w=look_at(eye, (0.1, 0.0, 0.05)))
        opts = RenderOptions(ess=ess, ert=ert, samples_per_pass=4, grow_passes=False)
        ref = render_image(sc, cam, opts)
        got = backend.render(sc, cam, opts)
        assert got.image.shape == (h, w, 3) and got.image.dtype == torch.float32
        err = _max_err(got.image, ref.image)
        assert err <= TOL[dtype], f"{w}x{h} ess={ess} ert={ert}: max abs error {err}"
        assert got.stats.rays_hit_box == ref.stats.rays_hit_box
        if not ert:  # sample positions are exact: the same samples on both renderers
            assert got.stats.samples_evaluated == ref.stats.samples_evaluated
            assert got.stats.networks_touched == ref.stats.networks_touched


def test_ert_saves_samples_on_gpu(backend) -> None:  # type: ignore[no-untyped-def]
    sc = random_scene(grid_res=(3, 3, 3), hidden=32, seed=9, density_bias=25.0)
    cam = Camera(width=64, height=64, focal=60.0, c2w=look_at((2.0, 2.0, 1.0), (0.0, 0.0, 0.0)))
    off = backend.render(sc, cam, RenderOptions(ert=False))
    on = backend.render(sc, cam, RenderOptions(ert=True))
    assert on.stats.samples_evaluated < off.stats.samples_evaluated
    assert on.stats.rays_terminated_early > 0
    assert _max_err(on.image, off.image) < sc.ert_threshold


def test_capacity_overflow_defers_rays_without_changing_the_image(backend) -> None:  # type: ignore[no-untyped-def]
    from renderer.cuda.backend import CudaBackend, CudaBackendConfig

    sc = random_scene(grid_res=(3, 2, 4), hidden=16, seed=4, density_bias=6.0)
    cam = Camera(width=40, height=30, focal=36.0, c2w=look_at((2.5, -2.0, 1.5), (0.0, 0.0, 0.0)))
    small = CudaBackend(config=CudaBackendConfig(max_samples_per_pass=257, tile=64))
    try:
        for ert in (True, False):
            opts = RenderOptions(ert=ert)
            a = backend.render(sc, cam, opts)
            b = small.render(sc, cam, opts)
            assert _max_err(a.image, b.image) <= 1e-6
            assert a.stats.samples_evaluated == b.stats.samples_evaluated
            assert b.stats.passes > a.stats.passes
    finally:
        small.close()


def test_render_rays_and_outputs(backend) -> None:  # type: ignore[no-untyped-def]
    sc = random_scene(grid_res=(3, 2, 4), hidden=32, seed=1, density_bias=6.0)
    cam = Camera(width=33, height=21, focal=30.0, c2w=look_at((2.0, -2.0, 1.0), (0.0, 0.0, 0.0)))
    o, d = generate_rays(cam)
    rs = prepare_scene(sc, "cpu")
    opts = RenderOptions(output="network")  # the torch renderer tracks the dominant network only then
    rgb, depth, net, trans, _ = render_rays_full(rs, o, d, opts)
    got = backend.render_rays(sc, o, d, opts)
    assert _max_err(got.rgb, rgb) <= 1e-3
    assert _max_err(got.trans, trans) <= 1e-3
    hit = trans < 0.99
    assert int(hit.sum()) > 50
    assert _max_err(got.depth[hit], depth[hit]) <= 1e-2
    assert (got.network[hit] == net[hit]).float().mean() > 0.99
    for mode in ("depth", "network"):
        ref = render_image(sc, cam, RenderOptions(output=mode))
        res = backend.render(sc, cam, RenderOptions(output=mode))
        assert (res.image - ref.image).abs().gt(1e-2).float().mean() < 0.01, mode


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_parity_lego_like(backend, dtype: str) -> None:  # type: ignore[no-untyped-def]
    sc = make_lego_like_scene(dtype=dtype)
    cam = Camera(width=81, height=67, focal=100.0, c2w=orbit_pose((0.0, 0.0, 0.3), 4.0, 30.0, 30.0))
    for ert in (True, False):
        opts = RenderOptions(ert=ert)
        err = _max_err(backend.render(sc, cam, opts).image, render_image(sc, cam, opts).image)
        assert err <= TOL[dtype], f"ert={ert}: {err}"


def test_parity_float16_weights_kept_on_the_device() -> None:
    """device_weights="source": the float16 MLP kernels (weights converted at use) against torch."""
    from renderer.cuda.backend import CudaBackend, CudaBackendConfig

    b = CudaBackend(config=CudaBackendConfig(device_weights="source"))
    try:
        for hidden in (16, 32, 64):
            sc = (
                make_lego_like_scene(dtype="float16")
                if hidden == 32
                else random_scene(
                    grid_res=(3, 2, 4), hidden=hidden, dtype="float16", seed=hidden, density_bias=8.0
                )
            )
            cam = Camera(width=61, height=47, focal=70.0, c2w=orbit_pose((0.0, 0.0, 0.3), 4.0, 30.0, 30.0))
            opts = RenderOptions()
            err = _max_err(b.render(sc, cam, opts).image, render_image(sc, cam, opts).image)
            assert err <= TOL["float16"], f"hidden {hidden}: {err}"
    finally:
        b.close()


def test_parity_trained_lego(backend) -> None:  # type: ignore[no-untyped-def]
    if not TRAINED_LEGO.is_file():
        pytest.skip(f"no trained lego at {TRAINED_LEGO}")
    from renderer.scene import load_scene

    sc = load_scene(TRAINED_LEGO)
    dtype = "float16" if sc.weights["l0.weight"].dtype == torch.float16 else "float32"
    cam = Camera(width=100, height=100, focal=138.9, c2w=orbit_pose((0.0, 0.0, 0.0), 4.0, 45.0, 30.0))
    for ess in (True, False):
        for ert in (True, False):
            opts = RenderOptions(ess=ess, ert=ert)
            err = _max_err(backend.render(sc, cam, opts).image, render_image(sc, cam, opts).image)
            assert err <= TOL[dtype], f"ess={ess} ert={ert}: {err}"


@pytest.fixture(scope="module")
def gl_ctx():  # type: ignore[no-untyped-def]
    moderngl = pytest.importorskip("moderngl", reason="moderngl is not installed (the PBO tests need it)")
    try:
        ctx = moderngl.create_context(standalone=True, backend="egl", require=330)
    except Exception as e:
        pytest.skip(f"no EGL OpenGL context ({e})")
    yield ctx
    ctx.release()


@pytest.mark.parametrize("prefer", ["auto", "host"])
def test_pixel_buffer_round_trip(backend, gl_ctx, prefer: str) -> None:  # type: ignore[no-untyped-def]
    """Kernel → GL buffer (mapped PBO, or the host fallback) → texture equals the float image in RGBA8."""
    sc = random_scene(grid_res=(3, 2, 4), hidden=32, seed=2, density_bias=6.0)
    cam = Camera(width=45, height=31, focal=40.0, c2w=look_at((2.5, -2.0, 1.5), (0.0, 0.0, 0.0)))
    pbo = backend.pixel_buffer(gl_ctx, 8, 8, prefer=prefer)
    if prefer == "host":
        assert pbo.mode == "host"
    stats = backend.render_to_pixel_buffer(sc, cam, pbo)
    assert stats.rays == 45 * 31
    tex = gl_ctx.texture((45, 31), 4)
    pbo.upload(tex)
    got = np.frombuffer(tex.read(), np.uint8).reshape(31, 45, 4)
    ref = backend.render(sc, cam).image.numpy()
    expected = (np.clip(ref, 0.0, 1.0) * 255.0 + 0.5).astype(np.int32)
    assert np.abs(got[..., :3].astype(np.int32) - expected).max() <= 1, f"mode {pbo.mode}"
    assert (got[..., 3] == 255).all()
    pbo.release()


def test_interop_maps_the_gl_buffer_when_gl_runs_on_the_gpu(backend, gl_ctx) -> None:  # type: ignore[no-untyped-def]
    renderer_name = gl_ctx.info.get("GL_RENDERER", "")
    if "NVIDIA" not in renderer_name.upper():
        pytest.skip(f"GL runs on {renderer_name!r}, not the NVIDIA driver: interop cannot share it")
    pbo = backend.pixel_buffer(gl_ctx, 16, 16, prefer="interop")
    assert pbo.mode == "interop"
    pbo.release()
