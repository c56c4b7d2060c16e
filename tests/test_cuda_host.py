"""Host side of the CUDA renderer, on the CPU: launch geometry, 64-bit index maths, the kernels' binary
interface and weight packing, the kernels' per-ray maths (host build of common.cuh) against the torch
renderer, interop fallback selection and backend selection without pycuda / a GPU."""

from __future__ import annotations

import contextlib
import logging
import subprocess
import sys
import types

import numpy as np
import pytest
import torch

from renderer import kernel_params
from renderer.camera import Camera, generate_rays, look_at
from renderer.cuda import cuda_available, kernels
from renderer.cuda.emulator import HostEmulator
from renderer.cuda.interop import CudaGLPixelBuffer, InteropError, select_transfer
from renderer.cuda.scene_data import frame_render_params, prepare_cuda_scene
from renderer.frame import resolve_options
from renderer.kernel_params import camera_params
from renderer.networks import NetworkSpec, evaluate_networks
from renderer.render import RenderOptions, render_image
from renderer.synthetic import random_scene

needs_nvcc = pytest.mark.skipif(
    kernels.find_nvcc() is None, reason="nvcc not found (builds the CPU emulator)"
)


@pytest.fixture(scope="module")
def emulator() -> HostEmulator:
    if kernels.find_nvcc() is None:
        pytest.skip("nvcc not found (builds the CPU emulator)")
    return HostEmulator()


# ---------------------------------------------------------------------------------------------------------
# Launch geometry and 64-bit sizes


def test_blocks_for_covers_items_and_caps() -> None:
    assert kernels.blocks_for(0, 256) == 1
    assert kernels.blocks_for(1, 256) == 1
    assert kernels.blocks_for(256, 256) == 1
    assert kernels.blocks_for(257, 256) == 2
    assert kernels.blocks_for(800 * 800, 256) == 2500
    # 4K x 384 samples: far past 2^31 items, still a legal grid (grid-stride loops cover the rest)
    n = 3840 * 2160 * 384
    assert n > 2**31
    assert kernels.blocks_for(n, 256) == 65536
    assert kernels.blocks_for(n, 256, max_blocks=2**40) == 12_441_600
    assert kernels.blocks_for(2**40, 1, max_blocks=2**40) == kernels.MAX_GRID_X
    with pytest.raises(ValueError):
        kernels.blocks_for(10, 2048)
    with pytest.raises(ValueError):
        kernels.blocks_for(-1, 128)


def test_tile_blocks_bounds_the_real_tile_count() -> None:
    rng = np.random.default_rng(0)
    for _ in range(200):
        m = int(rng.integers(1, 50))
        tile = int(rng.choice([1, 7, 128, 512]))
        counts = rng.integers(0, 2000, size=m) * (rng.random(m) < 0.6)
        real = int(sum(-(-int(c) // tile) for c in counts))
        bound = kernels.tile_blocks(int(counts.sum()), m, tile)
        assert real <= bound
        assert bound <= real + m + 1
    with pytest.raises(ValueError, match="grid limit"):
        kernels.tile_blocks(2**40, 10, 1)


def test_sample_capacity_is_exact_past_int32() -> None:
    rays = 3840 * 2160
    assert kernels.sample_capacity(rays, 384, 2**62) == rays * 384 == 3_185_049_600
    assert np.int64(kernels.sample_capacity(rays, 384, 2**62)) == np.int64(rays) * np.int64(384)
    assert kernels.sample_capacity(rays, 8, 1 << 24) == 1 << 24
    assert kernels.sample_capacity(1, 32, 4) == 32  # always room for one ray's pass: progress guaranteed


def test_flat_index_is_64_bit(emulator: HostEmulator) -> None:
    res = (2048, 2048, 1024)
    for g in [(0, 0, 1), (1, 0, 0), (2047, 2047, 1023), (1500, 3, 999)]:
        expected = (g[0] * res[1] + g[1]) * res[2] + g[2]
        assert emulator.flat_index(g, res) == expected
    assert emulator.flat_index((2047, 2047, 1023), res) == 2**32 - 1


def test_tile_segments_partition_the_sorted_samples(emulator: HostEmulator) -> None:
    """Every sorted sample lies in exactly one work tile, of its own network (empty networks own none)."""
    rng = np.random.default_rng(2)
    for tile in (1, 3, 64):
        counts = rng.integers(0, 200, size=37) * (rng.random(37) < 0.5)
        counts[0] = 0
        counts[-1] = 0
        tiles = -(-counts // tile)
        tile_start = np.concatenate(([0], np.cumsum(tiles))).astype(np.int32)
        offsets = np.concatenate(([0], np.cumsum(counts))).astype(np.int64)
        covered = np.zeros(int(counts.sum()), np.int32)
        for b in range(int(tile_start[-1])):
            m, begin, end = emulator.tile_segment(tile_start, offsets, tile, b)
            assert counts[m] > 0 and offsets[m] <= begin < end <= offsets[m + 1]
            assert end - begin <= tile
            covered[begin:end] += 1
        assert (covered == 1).all()


def test_kernel_indices_are_computed_in_64_bit() -> None:
    """Every global thread index and grid stride in kilonerf.cu is widened before the multiply."""
    src = kernels.KERNEL_SOURCE.read_text()
    assert "(i64)blockIdx.x * blockDim.x" in src and "(i64)gridDim.x * blockDim.x" in src
    for line in src.splitlines():
        if "blockIdx.x * " in line or "gridDim.x * " in line:
            assert "(i64)" in line, f"32-bit index product in kilonerf.cu: {line.strip()}"
        if "for (int " in line:
            assert "< n_rays" not in line and "< n_active" not in line, line.strip()


def test_evaluate_kernel_names_and_shared_memory() -> None:
    assert kernels.evaluate_kernel_name(32, True) == "evaluate_networks_h32_f16"
    with pytest.raises(ValueError, match="hidden widths"):
        kernels.evaluate_kernel_name(48, False)
    lay = kernels.weight_layout(32, 10, 4)
    # H=32 F32: 24.6 KiB of weights + 16 KiB of activations for 128 threads
    assert kernels.evaluate_shared_bytes(32, lay.stride, 4, 128) == lay.stride * 4 + 32 * 128 * 4
    assert lay.stride * 4 < 48 * 1024


# ---------------------------------------------------------------------------------------------------------
# Binary interface: structs and packed weights


def test_struct_layouts_match_the_compiled_code(emulator: HostEmulator) -> None:
    assert emulator.struct_sizes() == (
        kernel_params.RENDER_PARAMS_DTYPE.itemsize,
        kernel_params.CAMERA_PARAMS_DTYPE.itemsize,
    )
    for h, p, d in [(16, 10, 4), (32, 10, 4), (64, 6, 2), (32, 0, 0)]:
        assert emulator.weight_layout(h, p, d) == kernels.layout_tuple(kernels.weight_layout(h, p, d))


def test_density_activation_codes_match_the_cuda_enum() -> None:
    """``kernel_params.DENSITY_ACTIVATIONS`` is ``kn::DensityActivation`` of common.cuh, name for name."""
    import re

    src = (kernels.SOURCE_DIR / "common.cuh").read_text()
    enum = re.search(r"enum DensityActivation \{(.*?)\};", src, re.S)
    assert enum is not None, "kn::DensityActivation not found in common.cuh"
    codes = {name.lower(): int(value) for name, value in re.findall(r"\bk(\w+)\s*=\s*(\d+)", enum.group(1))}
    assert codes == kernel_params.DENSITY_ACTIVATIONS == {"relu": 0, "softplus": 1, "exp": 2}
    sc = random_scene(grid_res=(2, 2, 2), hidden=16, density_activation="exp", seed=0)
    data = prepare_cuda_scene(sc)
    assert int(frame_render_params(data, resolve_options(data))["density_activation"]) == codes["exp"]


@pytest.mark.parametrize("hidden", [16, 32, 64])
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_pack_weights_round_trip(hidden: int, dtype: type) -> None:
    spec = NetworkSpec((-1.0, -1.0, -1.0), (1.0, 1.0, 1.0), (2, 2, 2), 10, 4, hidden)
    rng = np.random.default_rng(hidden)
    tdt = torch.float16 if dtype == np.float16 else torch.float32
    w = {
        k: torch.from_numpy(rng.standard_normal((5, *s[1:])).astype(np.float32)).to(tdt)
        for k, s in spec.weight_shapes(5).items()
    }
    packed = kernels.pack_weights(w, hidden, 10, 4, dtype)
    lay = kernels.weight_layout(hidden, 10, 4)
    assert packed.shape == (5, lay.stride) and packed.dtype == dtype and packed.flags.c_contiguous
    assert lay.stride % 8 == 0
    assert all(v % 8 == 0 for v in kernels.layout_tuple(lay))
    back = kernels.unpack_weights(packed, hidden, 10, 4)
    for k, v in w.items():
        np.testing.assert_array_equal(back[k], v.numpy().astype(dtype), err_msg=k)  # bit for bit
    # density column apart from the feature columns
    np.testing.assert_array_equal(packed[:, lay.w2d : lay.w2d + hidden], w["l2.weight"][:, :, 0].numpy())
    # the padding (4th colour column) is zero
    w4 = packed[:, lay.w4 : lay.w4 + 4 * hidden].reshape(5, hidden, 4)
    assert not w4[:, :, 3].any()
    assert not packed[:, lay.b4 + 3 : lay.stride].any()


def test_prepare_cuda_scene_keeps_f16_and_packs_occupancy() -> None:
    sc = random_scene(grid_res=(3, 2, 4), hidden=16, dtype="float16", seed=3)
    data = prepare_cuda_scene(sc)
    assert data.half and data.weights.dtype == np.float16
    assert data.network_index.dtype == np.int32 and data.network_index.shape == (24,)
    bits = np.unpackbits(data.occupancy_bits, bitorder="little")[: sc.occupancy.size].astype(bool)
    np.testing.assert_array_equal(bits, np.asarray(sc.occupancy).ravel())
    assert data.occupancy_bits.ctypes.data == sc.occupancy.bits.ctypes.data  # the scene's own bits, no copy
    assert prepare_cuda_scene(sc, np.float32).weights.dtype == np.float32
    opts = RenderOptions(ert=False, samples_per_pass=4, step_multiplier=0.5)
    p = frame_render_params(data, resolve_options(data, opts))
    assert (
        int(p["ert"]) == 0 and int(p["samples_per_pass"]) == 32
    )  # ERT off: big passes, as the torch renderer
    assert float(p["step"]) == np.float32(np.float32(sc.step_size) * 0.5)
    assert tuple(p["occ_res"]) == tuple(sc.occupancy_res)
    assert int(p["weight_stride"]) == data.weight_stride == data.weights.shape[1]
    big = frame_render_params(data, resolve_options(data, RenderOptions(samples_per_pass=100)))
    assert int(big["samples_per_pass"]) == kernels.MAX_SAMPLES_PER_PASS  # the marcher's limit on K
    assert int(big["ert"]) == 1 and float(big["ert_threshold"]) == np.float32(sc.ert_threshold)
    cam = Camera(width=7, height=5, focal=3.0, c2w=np.eye(4), cx=None, cy=2.0)
    c = camera_params(cam)
    assert float(c["cx"]) == 3.5 and float(c["cy"]) == 2.0 and int(c["width"]) == 7


# ---------------------------------------------------------------------------------------------------------
# The kernels' maths (host build) against the torch renderer


def test_camera_rays_match_generate_rays(emulator: HostEmulator) -> None:
    cam = Camera(width=31, height=17, focal=25.0, c2w=look_at((1.5, -2.0, 0.7), (0.1, 0.2, 0.0)), cx=14.2)
    o_ref, d_ref = generate_rays(cam)
    o, d = emulator.camera_rays(cam)
    assert torch.equal(o, o_ref)
    assert (d - d_ref).abs().max().item() <= 1e-7


def test_lattice_rounding_matches_torch(emulator: HostEmulator) -> None:
    from renderer.march import lattice_t

    rng = np.random.default_rng(1)
    t0 = rng.random(50).astype(np.float32) * 3
    k = rng.integers(0, 5000, 50)
    s = float(np.float32(0.0071))
    ref = lattice_t(torch.from_numpy(t0), torch.from_numpy(k), s).numpy()
    got = np.array([emulator.lattice_t(float(a), int(b), s) for a, b in zip(t0, k)], np.float32)
    np.testing.assert_array_equal(got, ref)


@pytest.mark.parametrize(
    ("hidden", "dtype", "activation"),
    [(16, "float32", "relu"), (32, "float16", "softplus"), (64, "float32", "exp")],
)
def test_network_maths_match_evaluate_networks(
    emulator: HostEmulator, hidden: int, dtype: str, activation: str
) -> None:
    sc = random_scene(
        grid_res=(2, 3, 2), hidden=hidden, dtype=dtype, density_activation=activation, seed=hidden
    )
    rng = np.random.default_rng(0)
    lo, hi = np.array(sc.bbox_min), np.array(sc.bbox_max)
    x = (lo + (hi - lo) * rng.random((300, 3))).astype(np.float32)
    d = rng.standard_normal((300, 3)).astype(np.float32)
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    net, sigma, rgb = emulator.evaluate_points(sc, x, d)
    assert (net >= 0).sum() > 100
    ok = net >= 0
    spec = NetworkSpec.from_scene(sc)
    params = {k: v.float() for k, v in sc.weights.items()}
    s_ref, c_ref = evaluate_networks(
        params,
        torch.from_numpy(x[ok]),
        torch.from_numpy(d[ok]),
        torch.from_numpy(net[ok]).long(),
        scene_meta=spec,
    )
    np.testing.assert_allclose(sigma[ok], s_ref.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(rgb[ok], c_ref.numpy(), rtol=0, atol=1e-5)
    assert not sigma[~ok].any()


CASES = [
    # grid, hidden, dtype, eye, size
    ((3, 2, 4), 16, "float32", (2.5, -2.0, 1.5), (37, 29)),
    ((2, 5, 3), 32, "float16", (0.1, 0.05, -0.1), (23, 31)),  # camera inside the box
    ((4, 1, 2), 64, "float32", (-2.2, 1.4, -1.9), (16, 9)),
]


@pytest.mark.parametrize(("grid", "hidden", "dtype", "eye", "size"), CASES)
def test_emulated_kernels_match_torch_renderer(
    emulator: HostEmulator, grid: tuple, hidden: int, dtype: str, eye: tuple, size: tuple
) -> None:
    sc = random_scene(grid_res=grid, hidden=hidden, dtype=dtype, seed=sum(grid), density_bias=6.0)
    cam = Camera(width=size[0], height=size[1], focal=size[0] * 0.9, c2w=look_at(eye, (0.1, 0.0, 0.05)))
    for ess in (True, False):
        for ert in (False, True):
            opts = RenderOptions(ess=ess, ert=ert, samples_per_pass=4, grow_passes=False)
            ref = render_image(sc, cam, opts)
            got = emulator.render(sc, cam, opts)
            err = (ref.image - got.image).abs().max().item()
            assert err <= 1e-5, f"ess={ess} ert={ert}: max abs error {err}"
            assert got.depth is not None and ref.depth is not None
            assert (ref.depth - got.depth).abs().max().item() <= 1e-4
            assert got.network is None and ref.network is None  # only the network view fills it
            for key in ("rays_hit_box", "samples_marched", "samples_evaluated", "networks_touched"):
                assert getattr(got.stats, key) == getattr(ref.stats, key), key
            assert got.stats.rays_terminated_early == ref.stats.rays_terminated_early
            if ert:
                assert got.stats.rays_terminated_early > 0  # dense enough that ERT retires rays


def test_emulated_ert_saves_samples_and_output_modes(emulator: HostEmulator) -> None:
    sc = random_scene(grid_res=(3, 3, 3), hidden=16, seed=9, density_bias=25.0)
    cam = Camera(width=21, height=15, focal=20.0, c2w=look_at((2.0, 2.0, 1.0), (0.0, 0.0, 0.0)))
    off = emulator.render(sc, cam, RenderOptions(ert=False))
    on = emulator.render(sc, cam, RenderOptions(ert=True))
    assert on.stats.samples_evaluated < off.stats.samples_evaluated
    assert (on.image - off.image).abs().max().item() < sc.ert_threshold
    for mode in ("depth", "network"):
        ref = render_image(sc, cam, RenderOptions(output=mode))
        got = emulator.render(sc, cam, RenderOptions(output=mode))
        assert (ref.image - got.image).abs().max().item() <= 1e-4, mode
        if mode == "network":  # the dominant network: first sample with the largest weight
            assert got.network is not None and ref.network is not None
            assert (got.network >= 0).any()
            assert torch.equal(got.network, ref.network)


# ---------------------------------------------------------------------------------------------------------
# Interop fallback selection


def _fails() -> None:
    raise RuntimeError("cudaErrorInvalidGraphicsContext")


def test_select_transfer() -> None:
    ok = lambda: (True, "")  # noqa: E731
    no = lambda: (False, "pycuda is not installed")  # noqa: E731
    assert select_transfer("auto", ok, lambda: None).mode == "interop"
    assert select_transfer("interop", ok, lambda: None).mode == "interop"
    c = select_transfer("auto", no, lambda: None)
    assert (c.mode, c.reason) == ("host", "pycuda is not installed")
    c = select_transfer("auto", ok, _fails)
    assert c.mode == "host" and "cudaErrorInvalidGraphicsContext" in c.reason
    assert select_transfer("host", ok, lambda: None).mode == "host"
    with pytest.raises(InteropError, match="pycuda is not installed"):
        select_transfer("interop", no, None)
    with pytest.raises(InteropError, match="register"):
        select_transfer("interop", ok, _fails)
    with pytest.raises(ValueError):
        select_transfer("pbo")


@pytest.fixture(scope="module")
def gl_ctx():  # type: ignore[no-untyped-def]
    import moderngl

    try:
        ctx = moderngl.create_context(standalone=True, backend="egl", require=330)
    except Exception as e:  # pragma: no cover - no EGL here
        pytest.skip(f"no EGL OpenGL context ({e})")
    yield ctx
    ctx.release()


def test_pixel_buffer_falls_back_to_host_and_round_trips(gl_ctx, caplog) -> None:  # type: ignore[no-untyped-def]
    ok, _ = cuda_available()
    if ok:
        pytest.skip("CUDA works here: the fallback is chosen only without interop")
    with caplog.at_level(logging.INFO, logger="renderer.cuda.interop"):
        pbo = CudaGLPixelBuffer(gl_ctx, 5, 3)
    assert pbo.mode == "host" and pbo.reason
    lines = [r for r in caplog.records if r.name == "renderer.cuda.interop"]
    assert len(lines) == 1 and "interop unavailable" in lines[0].getMessage()
    img = np.random.default_rng(0).integers(0, 256, (3, 5, 4), dtype=np.uint8)
    pbo.write_host(img)
    tex = gl_ctx.texture((5, 3), 4)
    pbo.upload(tex)
    np.testing.assert_array_equal(np.frombuffer(tex.read(), np.uint8).reshape(3, 5, 4), img)
    # float RGB input, odd size: resized buffer, alpha 255, rounding to nearest
    rgb = np.array([[[0.0, 0.5, 1.0], [0.2, 0.8, 0.4], [1.0, 1.0, 0.0]]], np.float32)
    pbo.write_host(rgb)
    assert (pbo.width, pbo.height) == (3, 1) and pbo.buffer.size >= 12
    tex2 = gl_ctx.texture((3, 1), 4)
    pbo.upload(tex2)
    got = np.frombuffer(tex2.read(), np.uint8).reshape(1, 3, 4)
    np.testing.assert_array_equal(got[..., :3], (rgb * 255 + 0.5).astype(np.uint8))
    assert (got[..., 3] == 255).all()
    with pytest.raises(ValueError, match="RGBA8"):
        pbo.upload(tex)  # wrong size
    with pytest.raises(InteropError, match="no CUDA"):
        with pbo.map():
            pass
    pbo.release()


# ---------------------------------------------------------------------------------------------------------
# Backend selection without pycuda / GPU


def test_imports_never_load_pycuda_or_compile() -> None:
    code = (
        "import sys, renderer.cuda, renderer.cuda.backend, renderer.cuda.kernels, renderer.cuda.interop, "
        "renderer.cuda.emulator, renderer.cuda.scene_data, renderer.cuda.device_buffers; "
        "assert not any(m == 'pycuda' or m.startswith('pycuda.') for m in sys.modules), 'pycuda imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_backend_and_emulator_do_not_import_each_other() -> None:
    """The host side (scene_data, kernels) is shared; the GPU backend and the CPU emulator stay apart."""
    for module, other in (("backend", "emulator"), ("emulator", "backend")):
        code = (
            f"import sys, renderer.cuda.{module}; "
            f"assert 'renderer.cuda.{other}' not in sys.modules, 'renderer.cuda.{module} imports {other}'"
        )
        subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_cuda_unavailable_here_falls_back_to_the_cpu_backends() -> None:
    ok, why = cuda_available()
    if ok:
        pytest.skip("CUDA and pycuda work on this machine")
    assert why and "\n" not in why
    from renderer.backends import BackendError, cpu_backend_status, get_backend

    assert get_backend("auto").name == ("cpu" if cpu_backend_status()[0] else "torch")
    with pytest.raises(BackendError, match="CUDA backend unavailable"):
        get_backend("cuda")


def test_cuda_available_reports_missing_pycuda(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    import renderer.cuda as rc

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "pycuda" else real(name, *a)
    )
    rc.cuda_available.cache_clear()
    try:
        ok, why = rc.cuda_available()
        assert not ok and "pycuda is not installed" in why
    finally:
        rc.cuda_available.cache_clear()


# ---------------------------------------------------------------------------------------------------------
# CudaBackend's launches against the kernels' signatures, with a recording stand-in for pycuda


def _kernel_signatures() -> dict[str, list[str]]:
    """Parameter kinds of each extern "C" kernel in kilonerf.cu (the backend prepares its launches from
    the same reading)."""
    return kernels.kernel_parameter_kinds()


class _Alloc:
    def __init__(self, n: int) -> None:
        self.n = n

    def __int__(self) -> int:
        return 0x7000_0000 + self.n

    __index__ = __int__

    def free(self) -> None:
        pass


class _FakeFunction:
    """pycuda's Function as the backend uses it: prepared once, then launched by ``prepared_call`` only
    (there is no unprepared ``__call__``). Each launch's arguments are packed with the prepared format by
    Python's ``struct`` (pycuda packs with a copy of it) and logged with structs as numpy records."""

    def __init__(self, name: str, log: list) -> None:
        self.name, self.log = name, log
        self.attrs: dict[object, int] = {}
        self.format: str | None = None

    def prepare(self, fmt: str) -> None:
        self.format = fmt

    def prepared_call(self, grid: tuple, block: tuple, *args: object, shared_size: int = 0) -> None:
        import struct

        assert self.format is not None, f"{self.name} launched unprepared"
        struct.pack(self.format, *args)  # every argument packs with the kernel's format
        structs = (kernel_params.RENDER_PARAMS_DTYPE, kernel_params.CAMERA_PARAMS_DTYPE)
        records = {d.itemsize: d for d in structs}
        logged = tuple(np.frombuffer(a, records[len(a)])[0] if isinstance(a, bytes) else a for a in args)
        self.log.append((self.name, logged, block, grid, shared_size))

    def set_attribute(self, attr: object, value: int) -> None:
        self.attrs[attr] = value


class _FakeDriver:
    """The parts of pycuda.driver that CudaBackend uses; pass counters count active rays down 5 → 2 → 0."""

    class Error(Exception):
        pass

    class device_attribute:  # noqa: N801
        MAX_SHARED_MEMORY_PER_BLOCK_OPTIN = "optin"

    class function_attribute:  # noqa: N801
        MAX_DYNAMIC_SHARED_SIZE_BYTES = "dyn"

    def __init__(self) -> None:
        self.active = [5, 2, 0]
        self.launches: list = []
        self.functions: dict[str, _FakeFunction] = {}
        self.syncs: list[str] = []  # the kernel launched last at each Context.synchronize()
        self.Context = types.SimpleNamespace(synchronize=lambda: self.syncs.append(self.last_launch()))

    def init(self) -> None:
        pass

    def Device(self, i: int):  # noqa: N802, ANN201
        drv = self

        class _Dev:
            def retain_primary_context(self):  # type: ignore[no-untyped-def]
                class _Ctx:
                    def push(self) -> None:
                        pass

                    def pop(self) -> None:
                        pass

                return _Ctx()

            def compute_capability(self) -> tuple[int, int]:
                return (9, 0)

            def get_attribute(self, attr: object) -> int:
                assert attr == drv.device_attribute.MAX_SHARED_MEMORY_PER_BLOCK_OPTIN
                return 227 * 1024

        return _Dev()

    def Event(self):  # noqa: N802, ANN201
        class _Ev:
            def record(self) -> None:
                pass

            def synchronize(self) -> None:
                pass

            def time_since(self, other: object) -> float:
                return 1.5

        return _Ev()

    def mem_alloc(self, n: int) -> _Alloc:
        assert n > 0
        return _Alloc(n)

    def to_device(self, a: np.ndarray) -> _Alloc:
        return _Alloc(a.nbytes)

    def memset_d8(self, dest: object, value: int, count: int) -> None:
        assert isinstance(dest, _Alloc) and count <= dest.n

    def memset_d32(self, dest: object, value: int, count: int) -> None:
        assert isinstance(dest, _Alloc) and 4 * count <= dest.n

    def memcpy_htod(self, dest: object, src: np.ndarray) -> None:
        assert isinstance(dest, _Alloc) and src.nbytes <= dest.n

    def memcpy_dtoh(self, dest: np.ndarray, src: object) -> None:
        assert isinstance(src, _Alloc) and dest.nbytes <= src.n
        if (
            dest.dtype == np.uint64
            and dest.size == kernels.NUM_COUNTERS
            and self.last_launch() != "write_pixels"
        ):
            dest[:] = 0
            dest[kernels.PASS_ACTIVE_NEXT] = self.active.pop(0) if self.active else 0
        else:
            dest[...] = 0

    def last_launch(self) -> str:
        return self.launches[-1][0] if self.launches else ""


@pytest.fixture
def fake_backend(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    return _make_fake_backend(monkeypatch)


def _make_fake_backend(monkeypatch: pytest.MonkeyPatch, config=None):  # type: ignore[no-untyped-def]
    import types

    drv = _FakeDriver()
    pkg = types.ModuleType("pycuda")
    mod = types.ModuleType("pycuda.driver")
    for name in dir(drv):
        if not name.startswith("__"):
            setattr(mod, name, getattr(drv, name))
    pkg.driver = mod  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pycuda", pkg)
    monkeypatch.setitem(sys.modules, "pycuda.driver", mod)

    class _Module:
        def get_function(self, name: str) -> _FakeFunction:
            drv.functions[name] = _FakeFunction(name, drv.launches)
            return drv.functions[name]

    monkeypatch.setattr(kernels, "load_module", lambda arch: _Module())
    from renderer.cuda.backend import CudaBackend

    return CudaBackend(config=config), drv


def _check_launches(launches: list, signatures: dict[str, list[str]]) -> None:
    import struct

    for name, args, block, grid, shared in launches:
        kinds = signatures[name]
        assert len(args) == len(kinds), f"{name}: {len(args)} arguments for {len(kinds)} parameters"
        fmt = ""
        for a, kind in zip(args, kinds):
            if kind == "ptr":
                assert isinstance(a, _Alloc) or (isinstance(a, np.uintp)), f"{name}: {a!r} is not a pointer"
                fmt += "P"
            elif kind == "i64":
                assert isinstance(a, np.int64), f"{name}: {a!r} is not an int64"
                fmt += "q"
            elif kind == "i32":
                assert isinstance(a, np.int32), f"{name}: {a!r} is not an int32"
                fmt += "i"
            else:
                dt = (
                    kernel_params.RENDER_PARAMS_DTYPE
                    if kind == "RenderParams"
                    else kernel_params.CAMERA_PARAMS_DTYPE
                )
                assert isinstance(a, np.void) and a.dtype == dt, f"{name}: {a!r} is not a {kind}"
                assert fmt == "", f"{name}: struct parameters must come first (pycuda packs them unaligned)"
                fmt += f"{dt.itemsize}s"
        struct.calcsize(fmt)
        assert 1 <= block[0] <= 1024 and block[1:] == (1, 1), name
        assert 1 <= grid[0] <= kernels.MAX_GRID_X and grid[1] == 1, name
        assert 0 <= shared <= 227 * 1024, name


def test_float16_weights_reach_the_device_as_float32_unless_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 28: f16 -> f32 conversions were about half the fused MLP's instructions; a float16 file is
    converted once at upload (exactly), and device_weights="source" keeps float16 (half the memory)."""
    from renderer.cuda.backend import CudaBackendConfig

    sc = random_scene(grid_res=(3, 2, 4), hidden=32, dtype="float16", seed=0)
    cam = Camera(width=13, height=7, focal=10.0, c2w=look_at((2.0, -2.0, 1.0), (0.0, 0.0, 0.0)))
    for weights, kernel, itemsize in (("float32", "h32_f32", 4), ("source", "h32_f16", 2)):
        backend, drv = _make_fake_backend(monkeypatch, CudaBackendConfig(device_weights=weights))
        backend.render(sc, cam, RenderOptions())
        mlp = {name for name, *_ in drv.launches if name.startswith("evaluate_networks")}
        assert mlp == {f"evaluate_networks_{kernel}"}, weights
        data = backend.prepare(sc)
        assert data.weights.itemsize == itemsize
        f16 = prepare_cuda_scene(sc).weights  # the file's own values: the conversion is exact
        np.testing.assert_array_equal(data.weights.astype(np.float32), f16.astype(np.float32))
    with pytest.raises(ValueError, match="device_weights"):
        _make_fake_backend(monkeypatch, CudaBackendConfig(device_weights="bf16"))


def test_pass_samples_grow_as_rays_retire() -> None:
    """K doubles per earlier pass while active rays × 2K fit the slots the frame was sized for."""
    k = kernels.pass_samples_per_ray
    cap = 100 * 8  # a frame of 100 rays at K = 8
    assert [k(8, p, 100, cap, True) for p in range(3)] == [8, 8, 8]  # nobody retired: no room
    assert [k(8, p, 50, cap, True) for p in range(3)] == [8, 16, 16]  # half retired: twice the samples
    assert [k(8, p, 3, cap, True) for p in range(4)] == [8, 16, 32, 32]  # at most the kernels' 32
    assert k(8, 3, 3, cap, False) == 8  # grow_passes off: K in every pass
    assert k(32, 2, 1, cap, True) == 32


def test_the_backend_sends_each_pass_its_k(fake_backend) -> None:  # type: ignore[no-untyped-def]
    """The march of a pass gets that pass's K in its parameter struct (5 → 2 → 0 active rays of 6)."""
    backend, drv = fake_backend
    sc = random_scene(grid_res=(3, 2, 4), hidden=32, seed=0)
    cam = Camera(width=3, height=2, focal=3.0, c2w=look_at((2.0, -2.0, 1.0), (0.0, 0.0, 0.0)))
    for grow, want in ((True, [4, 8]), (False, [4, 4])):
        drv.launches.clear()
        drv.active = [5, 2, 0]
        backend.render(sc, cam, RenderOptions(samples_per_pass=4, grow_passes=grow))
        ks = [int(launch[1][0]["samples_per_pass"]) for launch in drv.launches if launch[0] == "march_rays"]
        assert ks == want, grow


def test_backend_launches_match_kernel_signatures(fake_backend) -> None:  # type: ignore[no-untyped-def]
    backend, drv = fake_backend
    sigs = _kernel_signatures()
    assert set(backend.fn) <= set(sigs)
    sc = random_scene(grid_res=(3, 2, 4), hidden=32, dtype="float16", seed=0)
    cam = Camera(width=13, height=7, focal=10.0, c2w=look_at((2.0, -2.0, 1.0), (0.0, 0.0, 0.0)))
    res = backend.render(sc, cam, RenderOptions())
    assert res.image.shape == (7, 13, 3) and res.stats.passes == 2
    order = [launch[0] for launch in drv.launches]
    assert order[:2] == ["generate_rays", "init_rays"]
    per_pass = [
        "march_rays",
        "scan_network_counts",
        "scatter_samples",
        "evaluate_networks_h32_f32",
        "composite_front_to_back",
    ]  # fmt: skip  (float16 weights converted once at upload)
    assert order[2:12] == per_pass * 2
    assert order[12:] == ["write_pixels", "count_touched"]
    _check_launches(drv.launches, sigs)
    assert {name: fn.format for name, fn in drv.functions.items()} == {
        name: kernels.launch_format(sigs[name]) for name in drv.functions
    }  # every kernel prepared once, with the format of its signature
    with pytest.raises(TypeError, match="march_rays takes 21 arguments, got 1"):
        backend.fn["march_rays"](np.int64(1), block=(256, 1, 1), grid=(1, 1))
    march = drv.launches[2]
    assert march[3][0] == kernels.blocks_for(5, backend.config.block)  # sized by the active-ray count
    # rays given by the caller (uploaded), then straight into a pixel buffer
    drv.launches.clear()
    drv.active = [3, 0]
    o, d = generate_rays(cam)
    backend.render_rays(sc, o, d, RenderOptions(ert=False))
    assert drv.launches[0][0] == "init_rays"
    _check_launches(drv.launches, sigs)

    class _Target:
        def resize(self, w: int, h: int) -> None:
            self.size = (w, h)

        @contextlib.contextmanager
        def map(self):  # type: ignore[no-untyped-def]
            yield 0x1234

    drv.launches.clear()
    drv.active = [1, 0]
    target = _Target()
    stats = backend.render_to_pixel_buffer(sc, cam, target)
    assert target.size == (13, 7) and stats.rays == 91
    write = [launch for launch in drv.launches if launch[0] == "write_pixels"][0]
    assert int(write[1][-2]) == 0x1234  # the RGBA8 pointer
    _check_launches(drv.launches, sigs)


def test_backend_h64_f32_asks_for_large_shared_memory(fake_backend) -> None:  # type: ignore[no-untyped-def]
    backend, drv = fake_backend
    sc = random_scene(grid_res=(2, 2, 2), hidden=64, dtype="float32", seed=1)
    cam = Camera(width=4, height=3, focal=4.0, c2w=look_at((2.0, -2.0, 1.0), (0.0, 0.0, 0.0)))
    backend.render(sc, cam)
    mlp = [launch for launch in drv.launches if launch[0].startswith("evaluate_networks")]
    lay = kernels.weight_layout(64, sc.pos_freqs, sc.dir_freqs)
    smem = lay.stride * 4 + 64 * backend.config.mlp_block * 4
    assert smem > 48 * 1024
    assert mlp and mlp[0][4] == smem
    assert backend.fn["evaluate_networks_h64_f32"].attrs == {"dyn": smem}  # opted in past the 48 KiB default
    data = backend.prepare(sc)  # the render worker's hook: packed once, reused
    assert backend.prepare(sc) is data and backend.prepare(data) is data
    drv.launches.clear()
    drv.active = [1, 0]
    assert backend.render(data, cam).image.shape == (3, 4, 3)


def test_debug_mode_synchronises_every_launch_and_names_the_failing_kernel(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KILONERF_CUDA_DEBUG", "1")
    backend, drv = _make_fake_backend(monkeypatch)
    sc = random_scene(grid_res=(3, 2, 4), hidden=32, dtype="float32", seed=0)
    cam = Camera(width=13, height=7, focal=10.0, c2w=look_at((2.0, -2.0, 1.0), (0.0, 0.0, 0.0)))
    backend.render(sc, cam, RenderOptions())
    assert drv.syncs == [launch[0] for launch in drv.launches] and len(drv.syncs) == 14
    fault = RuntimeError("an illegal memory access was encountered")
    monkeypatch.setattr(drv.Context, "synchronize", lambda: (_ for _ in ()).throw(fault))
    drv.launches.clear()
    drv.active = [5, 0]
    with pytest.raises(
        kernels.KernelLaunchError, match="kernel generate_rays failed: RuntimeError: an illegal"
    ):
        backend.render(sc, cam, RenderOptions())
    monkeypatch.setenv("KILONERF_CUDA_DEBUG", "0")
    plain, drv2 = _make_fake_backend(monkeypatch)
    plain.render(sc, cam, RenderOptions())
    assert drv2.syncs == [] and not isinstance(plain.fn["march_rays"], kernels.SyncedKernel)
