"""The native CPU renderer against its torch twins: one parity test per step of a frame (renderer/steps.py),
on every instruction set this CPU runs, then whole frames (same pictures, same stats), the library's
interface, and what happens when it cannot run.

The library is built by `make test`'s set-up; these tests fail (not skip) when a C++ compiler exists but
the library is missing, and skip only on a machine without a compiler.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from renderer import steps as twins
from renderer.camera import Camera, look_at
from renderer.frame import RenderOptions, prepare_scene, resolve_options
from renderer.march import RayBatch
from renderer.native import build
from renderer.native import library as L
from renderer.render import render_image
from renderer.scene import Scene, load_scene
from renderer.synthetic import random_scene

ROOT = Path(__file__).resolve().parents[1]

if build.compiler() is None and not L.status()[0]:  # pragma: no cover - machines without g++/clang++
    pytest.skip("no C++ compiler here, so the native CPU renderer cannot be built", allow_module_level=True)

from renderer.native import steps as native  # noqa: E402
from renderer.native.backend import CpuBackend  # noqa: E402
from renderer.native.scene import NativeScene, encoding_rows, pack_weights, weight_offsets  # noqa: E402


def isas() -> list[str]:
    ok, why = L.status()
    assert ok, why
    return L.available_isas()


ISAS = isas()
ACTIVATIONS = ("relu", "softplus", "exp")


def scene_for(seed: int = 0, activation: str = "relu", hidden: int = 16, **kw: Any) -> Scene:
    """A random scene with a native kernel width (hidden 16), 4 position and 2 direction octaves."""
    kw.setdefault("density_bias", 1.0 if activation == "exp" else 2.0)
    grid, factor = (3, 2, 4), (3, 4, 3)
    return random_scene(
        grid, factor, seed=seed, hidden=hidden, pos_freqs=4, dir_freqs=2, density_activation=activation, **kw
    )


def outside(w: int = 24, h: int = 17) -> Camera:
    return Camera(w, h, 18.0 * w / 24, look_at((2.6, -1.9, 1.5), (0.0, 0.05, 0.05)))


def inside(w: int = 24, h: int = 17) -> Camera:
    return Camera(w, h, 9.0 * w / 24, look_at((0.15, 0.1, 0.2), (-0.9, -0.4, -0.6)), cx=10.3, cy=9.1)


# ---------------------------------------------------------------------------------------------------------
# The library itself


def test_struct_sizes_match_the_compiled_code() -> None:
    from renderer.kernel_params import CAMERA_PARAMS_DTYPE, RENDER_PARAMS_DTYPE

    sizes = L.abi_sizes()
    assert sizes == (
        RENDER_PARAMS_DTYPE.itemsize,
        CAMERA_PARAMS_DTYPE.itemsize,
        ctypes.sizeof(L.CpuScene),
        ctypes.sizeof(L.CpuFrame),
        ctypes.sizeof(L.FrameIO),
        ctypes.sizeof(L.WeightOffsets),
    )


def test_generic_is_always_there_and_the_cap_variable_limits_the_isas(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert ISAS[0] == "generic"
    monkeypatch.setenv(L.ISA_ENV, "generic")
    assert L.available_isas() == ["generic"]
    with pytest.raises(ValueError, match="not available"):
        L.isa_code("avx512" if "avx512" not in ISAS else "nonsense")


def test_importing_never_loads_or_builds_the_library() -> None:
    code = (
        "import sys, renderer.native, renderer.native.library as L, renderer.native.backend, renderer.steps, "
        "renderer.backends; assert L._loaded is None; "
        "assert not any(m.startswith('subprocess') and 'build' in m for m in sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_the_library_carries_the_digest_of_its_sources(tmp_path: Path) -> None:
    lib = build.default_output()
    assert build.built_digest(lib) == build.source_digest() and build.up_to_date(lib)
    fake = tmp_path / build.LIBRARY_NAME
    assert not build.up_to_date(fake)
    fake.write_bytes(b"\0elf" + build.DIGEST_MARKER + b"0" * 24)
    assert build.built_digest(fake) == "0" * 24 and not build.up_to_date(fake)
    cmd = build.command("g++", fake)
    assert "-ffp-contract=off" in cmd and f'-DKC_SOURCE_DIGEST="{build.source_digest()}"' in cmd


def test_weight_packing_places_every_tensor() -> None:
    scene = scene_for(hidden=16)
    packed = pack_weights(scene.weights, 16, 4, 2)
    off = weight_offsets(16, 4, 2)
    assert packed.shape[1] == off["stride"] and all(v % 16 == 0 for v in off.values())
    w0 = scene.weights["l0.weight"].float().numpy()
    rows = encoding_rows(4)
    assert rows[:3] == [3, 4, 5] and rows[12:15] == [6, 7, 8] and rows[-3:] == [0, 1, 2]
    np.testing.assert_array_equal(packed[:, off["w0"] : off["w0"] + 27 * 16].reshape(-1, 27, 16), w0[:, rows])
    l4 = scene.weights["l4.weight"].float().numpy()
    np.testing.assert_array_equal(
        packed[:, off["w4t"] : off["w4t"] + 48].reshape(-1, 3, 16), l4.transpose(0, 2, 1)
    )


# ---------------------------------------------------------------------------------------------------------
# One parity test per step


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("cam", [outside(31, 23), inside(20, 11)])
def test_rays_for_pixels(isa: str, cam: Camera) -> None:
    o, d = native.rays_for_pixels(cam, isa)
    o2, d2 = twins.rays_for_pixels(cam)
    torch.testing.assert_close(o, o2, rtol=0, atol=0)
    torch.testing.assert_close(d, d2, rtol=0, atol=2e-7)


@pytest.mark.parametrize("isa", ISAS)
def test_clip_to_box(isa: str) -> None:
    ns = NativeScene(scene_for())
    fp = resolve_options(ns, RenderOptions())
    g = torch.Generator().manual_seed(3)
    o = torch.randn(500, 3, generator=g) * 1.5
    aim = torch.rand(500, 3, generator=g) * 3.0 - 1.5  # about half the rays cross the box
    d = torch.nn.functional.normalize(aim - o, dim=1)
    d[:20, 0] = 0.0  # axis-parallel rays: the slab test's d = 0 rule
    d[:20] = torch.nn.functional.normalize(d[:20], dim=1)
    t0, n = native.clip_to_box(ns, fp, o, d, isa)
    rs = ns.rs
    t0_ref, n_ref = twins.clip_to_box(o, d, rs.bbox_min_t, rs.bbox_max_t, fp.step)
    assert int((n_ref > 0).sum()) > 100 and int((n_ref == 0).sum()) > 50
    torch.testing.assert_close(n, n_ref, rtol=0, atol=0)
    hit = n_ref > 0
    torch.testing.assert_close(t0[hit], t0_ref[hit], rtol=0, atol=0)


_HYP_SCENE = NativeScene(scene_for(seed=3))
_coord = st.floats(-3.0, 3.0, allow_nan=False, width=32)


@settings(max_examples=60, deadline=None)
@given(
    o=st.tuples(_coord, _coord, _coord),
    aim=st.tuples(_coord, _coord, _coord),
    axis=st.sampled_from([None, 0, 1, 2]),
    step=st.floats(0.003, 0.3),
)
def test_clip_to_box_on_any_ray(
    o: tuple[float, ...], aim: tuple[float, ...], axis: int | None, step: float
) -> None:
    """The slab test and lattice count agree exactly on arbitrary rays (axis-parallel ones too), every ISA."""
    d = torch.tensor(aim) - torch.tensor(o)
    if axis is not None:
        d[axis] = 0.0
    if float(d.norm()) < 1e-3:
        return
    origins, dirs = torch.tensor([o], dtype=torch.float32), torch.nn.functional.normalize(d[None], dim=1)
    ns = _HYP_SCENE
    fp = resolve_options(ns, RenderOptions(step_multiplier=step / ns.step_size))
    t0_ref, n_ref = twins.clip_to_box(origins, dirs, ns.rs.bbox_min_t, ns.rs.bbox_max_t, fp.step)
    for isa in ISAS:
        t0, n = native.clip_to_box(ns, fp, origins, dirs, isa)
        assert torch.equal(n, n_ref)
        if int(n_ref[0]) > 0:
            assert torch.equal(t0, t0_ref)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("ess", [True, False])
def test_march_pass(isa: str, ess: bool) -> None:
    scene = scene_for(seed=2, occupied_fraction=0.15, step_size=0.013)
    ns = NativeScene(scene)  # packs the scene's own weights
    rs = prepare_scene(scene, "cpu")  # the torch twin's float32 weights
    fp = resolve_options(ns, RenderOptions(ess=ess))
    o, d = twins.rays_for_pixels(inside(40, 30))
    ref = RayBatch.start(rs, o, d, fp.step)
    k = torch.zeros_like(ref.n)
    live = torch.nonzero(ref.n > 0).squeeze(1)
    for k_pass in (5, 3, 8, 1, 64):  # passes of several sizes over the same rays, as a frame runs them
        s = twins.march_pass(rs, ref, fp.step, fp.ess, k_pass, live)
        sk, snet, cnt = native.march_pass(ns, fp, o, d, ref.t0, ref.n, k, live, k_pass, isa)
        keep = snet >= 0
        rows = torch.arange(live.numel())[:, None].expand(-1, k_pass)
        assert torch.equal(live[rows[keep]], s.ray) and torch.equal(sk[keep], s.k)
        assert torch.equal(snet[keep].long(), s.net)
        assert torch.equal(k, ref.k)
        live = live[k[live] < ref.n[live]]
        if live.numel() == 0:
            break
    assert int(k.sum()) > 0


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("hidden, freqs", [(16, (4, 2)), (32, (10, 4)), (64, (0, 0))])
def test_evaluate_networks(isa: str, activation: str, hidden: int, freqs: tuple[int, int]) -> None:
    scene = random_scene((3, 2, 4), (1, 1, 1), seed=hidden, hidden=hidden, pos_freqs=freqs[0],
                         dir_freqs=freqs[1], density_activation=activation, density_scale=1.7)  # fmt: skip
    ns = NativeScene(scene)  # packs the scene's own weights
    rs = prepare_scene(scene, "cpu")  # the torch twin's float32 weights
    g = torch.Generator().manual_seed(1)
    lo, hi = rs.bbox_min_t, rs.bbox_max_t
    x = lo + torch.rand(3000, 3, generator=g) * (hi - lo)
    d = torch.nn.functional.normalize(torch.randn(3000, 3, generator=g), dim=1)
    from renderer.grid import cell_index, flat_index

    net = rs.network_index_flat[flat_index(cell_index(x, lo, hi, rs.grid_res), rs.grid_res)]
    x, d, net = x[net >= 0], d[net >= 0], net[net >= 0]
    sigma, rgb = native.evaluate_networks(ns, x, d, net, isa)
    with torch.no_grad():
        sigma_ref, rgb_ref = twins.evaluate_networks(rs.params, x, d, net, scene_meta=rs.spec)
    torch.testing.assert_close(sigma, sigma_ref, rtol=2e-5, atol=2e-5)
    torch.testing.assert_close(rgb, rgb_ref, rtol=0, atol=2e-6)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("eps", [None, 0.05])
def test_composite_pass(isa: str, eps: float | None) -> None:
    ns = NativeScene(scene_for())
    fp = resolve_options(ns, RenderOptions(ert=eps is not None, ert_threshold=eps, samples_per_pass=6))
    g = torch.Generator().manual_seed(5)
    a, kp = 300, fp.samples_per_pass
    cnt = torch.randint(0, kp + 1, (a,), generator=g, dtype=torch.int32)
    slot = torch.arange(kp)[None, :].expand(a, -1)
    net = torch.where(slot < cnt[:, None].long(), torch.randint(0, 5, (a, kp), generator=g), -1).to(
        torch.int32
    )
    net[::7, 1] = -1  # a sample dropped at a cell face leaves its slot empty
    sk = torch.sort(torch.randint(0, 400, (a, kp), generator=g), dim=1).values
    sigma = torch.rand(a, kp, generator=g) * 60.0
    rgb = torch.rand(a, kp, 3, generator=g)
    t0 = torch.rand(a, generator=g)
    trans_in = 0.02 + torch.rand(a, generator=g)
    trans_in = trans_in.clamp(max=1.0)
    accum = {
        "trans": trans_in.clone(),
        "color": torch.rand(a, 3, generator=g),
        "depth": torch.rand(a, generator=g),
        "best_w": torch.rand(a, generator=g) * 0.2,
        "best_net": torch.full((a,), 9, dtype=torch.int32),
    }
    before = {k: v.clone() for k, v in accum.items()}
    stopped = native.composite_pass(ns, fp, (sk, net, cnt), t0, sigma, rgb, accum, isa)
    real = net >= 0
    row, sl = torch.nonzero(real, as_tuple=True)
    c_add, t_out, w = twins.composite_pass(
        sigma[real], rgb[real], row, sl, trans_in, fp.step, kp, fp.ert_threshold
    )
    # the same arithmetic but for exp (libm's or the kernel's polynomial against torch's): a few ulp
    torch.testing.assert_close(accum["trans"], t_out, rtol=1e-5, atol=1e-9)
    torch.testing.assert_close(accum["color"], before["color"] + c_add, rtol=0, atol=2e-6)
    t = t0[row] + (sk[real].float() + 0.5) * fp.step
    depth = before["depth"].index_add(0, row, w * t)
    torch.testing.assert_close(accum["depth"], depth, rtol=1e-6, atol=1e-6)
    assert torch.equal(stopped, (t_out < eps) if eps is not None else torch.zeros(a, dtype=torch.bool))
    best = torch.zeros(a).scatter_reduce(0, row, w, "amax")
    better = best > before["best_w"]
    torch.testing.assert_close(accum["best_w"][better], best[better], rtol=1e-5, atol=0)
    w_table = torch.zeros(a, kp).index_put((row, sl), w)
    best_net = net.gather(1, w_table.argmax(dim=1, keepdim=True)).squeeze(1)
    assert torch.equal(accum["best_net"][better], best_net[better])
    assert torch.equal(accum["best_net"][~better], before["best_net"][~better])
    assert int(better.sum()) > 50


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("output", ["rgb", "depth", "network"])
def test_write_pixels(isa: str, output: str) -> None:
    ns = NativeScene(scene_for())
    fp = resolve_options(ns, RenderOptions(output=output, background=(0.1, 0.5, 0.9)))
    g = torch.Generator().manual_seed(9)
    n = 400
    color, depth = torch.rand(n, 3, generator=g), torch.rand(n, generator=g) * 3
    trans = torch.where(torch.rand(n, generator=g) < 0.3, torch.ones(n), torch.rand(n, generator=g))
    best = torch.where(trans < 1, torch.randint(0, 700, (n,), generator=g), -1)
    out = native.write_pixels(ns, fp, color, trans, depth, best.to(torch.int32), isa)
    ref = twins.write_pixels(color, trans, depth, best, fp.background, output)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-7)


# ---------------------------------------------------------------------------------------------------------
# Whole frames: same picture (≤ 1e-3 per pixel), same stats


def _compare(scene: object, cam: Camera, opts: RenderOptions, isa: str) -> None:
    ref = render_image(scene, cam, opts)
    res = CpuBackend(isa).render(scene, cam, opts)
    assert float((res.image - ref.image).abs().max()) <= 1e-3
    if opts.output != "network":
        assert res.depth is not None and ref.depth is not None
        assert float((res.depth - ref.depth).abs().max()) <= 1e-3
    else:
        assert res.network is not None and ref.network is not None
        assert float((res.network != ref.network).float().mean()) <= 1e-3
    a, b = res.stats.to_dict(), ref.stats.to_dict()
    a.pop("ms"), b.pop("ms")
    assert a == b


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("ess, ert", [(True, True), (True, False), (False, True), (False, False)])
def test_frames_match_the_torch_renderer(isa: str, activation: str, ess: bool, ert: bool) -> None:
    scene = scene_for(seed=11, activation=activation, dtype="float16")
    for cam in (outside(), inside()):
        _compare(scene, cam, RenderOptions(ess=ess, ert=ert, samples_per_pass=3), isa)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("output", ["depth", "network"])
def test_frame_outputs_match(isa: str, output: str) -> None:
    scene = scene_for(seed=4, activation="softplus", density_bias=5.0)
    _compare(scene, outside(40, 30), RenderOptions(output=output, chunk_size=333), isa)


@pytest.mark.parametrize("isa", ISAS)
def test_bundled_scene_frames(isa: str) -> None:
    scene = load_scene(ROOT / "assets" / "lego.kilo")
    cams = scene.cameras
    assert cams is not None
    cam = Camera(cams.width, cams.height, cams.focal, np.asarray(cams.c2w[0], np.float64)).with_size(96, 96)
    rs = prepare_scene(scene)
    for opts in (
        RenderOptions(),
        RenderOptions(ess=False),
        RenderOptions(ert=False),
        RenderOptions(output="depth"),
    ):
        _compare(rs, cam, opts, isa)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", ["float16", "float32"])
@pytest.mark.parametrize("octaves", [None, (2, 1)], ids=["all", "first"])
def test_networks_are_unpacked_from_the_scene_s_own_tensors(
    isa: str, dtype: str, octaves: tuple[int, int] | None
) -> None:
    """The kernels read the scene's tensors in place (no copy of the weights: issue 31's memory bound) and
    unpack each network just before it runs: exactly ``pack_weights``' layout, from float32 or from float16
    (subnormal halves and negative zeros included: the generic build widens them bit by bit), also when
    only the first octaves are read (higher ones all zero)."""
    scene = scene_for(seed=12, hidden=32, dtype=dtype)
    w1 = scene.weights["l1.weight"]
    w1[:, 0, :3] = torch.tensor([6e-8, -3e-6, -0.0], dtype=w1.dtype)  # float16: subnormal, subnormal, -0
    if octaves is not None:
        scene.weights["l0.weight"][:, 3 + 6 * octaves[0] :] = 0.0
        scene.weights["l3.weight"][:, 32 + 3 + 6 * octaves[1] :] = 0.0
    ns = NativeScene(scene)
    assert (ns.pos_freqs, ns.dir_freqs) == (octaves or (4, 2))
    for k, a in zip(("l0.weight", "l4.bias"), (ns.sources[0], ns.sources[-1])):
        assert np.shares_memory(a, scene.weights[k].numpy()) and a.dtype == np.dtype(dtype)
    ref = pack_weights(scene.weights, 32, ns.pos_freqs, ns.dir_freqs)
    assert ref.shape[1] == ns.weight_stride
    for m in (0, 1, ns.num_networks - 1):
        np.testing.assert_array_equal(native.unpack_network(ns, m, isa), ref[m])
    with pytest.raises(RuntimeError):
        native.unpack_network(ns, ns.num_networks, isa)


@pytest.mark.parametrize("isa", ISAS)
def test_float16_frames_equal_the_same_weights_in_float32(isa: str) -> None:
    import copy

    half = scene_for(seed=12, activation="softplus", dtype="float16")
    wide = copy.copy(half)
    wide.weights = {k: v.float() for k, v in half.weights.items()}
    for cam in (outside(), inside()):
        for opts in (RenderOptions(), RenderOptions(output="depth", ess=False)):
            a = CpuBackend(isa).render(half, cam, opts)
            b = CpuBackend(isa).render(wide, cam, opts)
            assert torch.equal(a.image, b.image)
            assert a.stats.samples_evaluated == b.stats.samples_evaluated > 0


def test_octaves_whose_weights_are_all_zero_are_skipped() -> None:
    lego = NativeScene(load_scene(ROOT / "assets" / "lego.kilo"))
    assert (lego.pos_freqs, lego.dir_freqs) == (8, 4)  # cpu-hd distils its first 8 of 10 position octaves
    scene = scene_for(seed=8)
    scene.weights["l0.weight"][:, 3 + 6 * 2 :] = 0.0  # octaves 2 and 3 never trained
    ns = NativeScene(scene)
    assert (ns.pos_freqs, ns.dir_freqs) == (2, 2)
    assert ns.weight_stride < weight_offsets(16, 4, 2)["stride"]
    _compare(scene, outside(), RenderOptions(), ISAS[-1])


def test_scene_without_a_kernel_width_falls_back_to_torch() -> None:
    scene = random_scene((2, 2, 2), (2, 2, 2), seed=1, hidden=8)
    res = CpuBackend().render(scene, outside())
    torch.testing.assert_close(res.image, render_image(scene, outside()).image)


# ---------------------------------------------------------------------------------------------------------
# When the library cannot run


def test_auto_falls_back_to_torch_and_cpu_is_refused(monkeypatch: pytest.MonkeyPatch, caplog) -> None:  # type: ignore[no-untyped-def]
    import renderer.backends as B

    monkeypatch.setattr(B, "cpu_backend_status", lambda: (False, "the native CPU renderer is not built"))
    monkeypatch.setattr(B, "cuda_backend_status", lambda: (False, "no GPU"))
    monkeypatch.setattr(B, "_announced", set())
    with caplog.at_level("INFO", logger="renderer.backends"):
        assert B.get_backend("auto").name == "torch"
    assert any("not built" in r.getMessage() and "torch renderer" in r.getMessage() for r in caplog.records)
    with pytest.raises(B.BackendError, match="cpu backend unavailable: the native CPU renderer is not built"):
        B.get_backend("cpu")


def test_cli_backend_cpu_without_the_library_exits_2(tmp_path: Path) -> None:
    env = {**os.environ, L.LIBRARY_ENV: str(tmp_path / "missing.so")}
    cmd = [sys.executable, "-m", "renderer", "render", str(ROOT / "assets" / "lego.kilo"), "--out",
           str(tmp_path / "x.png"), "--size", "8x8", "--backend", "cpu"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "cpu backend unavailable" in lines[0] and "missing.so" in lines[0]
    proc = subprocess.run([*cmd[:-1], "auto"], capture_output=True, text=True, env=env, cwd=ROOT)
    assert proc.returncode == 0 and (tmp_path / "x.png").is_file()
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "native CPU backend unavailable" in lines[0] and "torch renderer" in lines[0]
