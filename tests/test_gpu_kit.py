"""The CUDA path's install and the offline GPU kit, proven without a GPU: scripts/gpu_kit.py (prepare,
report), scripts/install_pycuda.sh and its helper (libcuda stub, the GL check), scripts/gpu_check.sh with
the GPU steps skipping, scripts/gpu_bench.py's CPU-checkable parts. The end-to-end test downloads the kit
from the package registry, installs it into a fresh venv, builds pycuda there with GL interop and checks
the report."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "scripts"
BASE_PYTHON = getattr(sys, "_base_executable", None) or shutil.which("python3") or sys.executable


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


kit = _load("gpu_kit")


def _run(
    *cmd: str | Path, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(c) for c in cmd],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        check=False,
    )


# ---------------------------------------------------------------------------------------------------------
# gpu_kit.py prepare, with pip stood in for


def test_names() -> None:
    assert kit.req_name("nvidia-cuda-nvrtc>=13,<14") == "nvidia-cuda-nvrtc"
    assert kit.req_name("imgui[glfw]>=2.0") == "imgui"
    assert kit.dist_name("PyOpenGL-3.1.10-py3-none-any.whl") == "pyopengl"
    assert (
        kit.dist_name("nvidia_cuda_runtime-13.5.37-py3-none-manylinux2014_x86_64.whl")
        == "nvidia-cuda-runtime"
    )
    assert kit.dist_name("pycuda-2026.1.tar.gz") == "pycuda"


class _FakePip:
    """pip download: wheels exist for everything but the names in ``no_wheel``; deps may drag in others."""

    def __init__(self, dest: Path, no_wheel: set[str], deps: dict[str, str], size: int = 1000) -> None:
        self.dest, self.no_wheel, self.deps, self.size, self.calls = dest, no_wheel, deps, size, []

    def __call__(self, args: list[str]) -> subprocess.CompletedProcess[str]:
        self.calls.append(args)
        known = {kit.req_name(x) for x in (*kit.WHEELS, *kit.NVIDIA, *kit.OPTIONAL, *kit.SOURCE_ONLY)}
        reqs = [a for a in args if not a.startswith("-") and kit.req_name(a) in known]
        if "--only-binary=:all:" in args:
            for r in reqs:
                if kit.req_name(r) in self.no_wheel:
                    return subprocess.CompletedProcess(
                        args, 1, "", f"ERROR: No matching distribution found for {r}"
                    )
            for r in reqs:
                name = kit.req_name(r)
                (self.dest / f"{name.replace('-', '_')}-1.0-py3-none-any.whl").write_bytes(b"w" * self.size)
                if name in self.deps:
                    (self.dest / f"{self.deps[name]}-1.0-py3-none-any.whl").write_bytes(b"d")
        else:
            for r in reqs:
                (self.dest / f"{kit.req_name(r)}-1.0.tar.gz").write_bytes(b"s")
        return subprocess.CompletedProcess(args, 0, "", "")


def test_prepare_falls_back_to_source_and_honours_skip(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = _FakePip(tmp_path, no_wheel={"glcontext"}, deps={"pyrr": "numpy", "moderngl": "torch"})
    monkeypatch.setattr(kit, "_pip", fake)
    doc = kit.prepare(tmp_path, "3.12", ["manylinux2014_x86_64"], {"numpy", "nvidia-cuda-nvrtc"})
    names = {kit.dist_name(f.name) for f in tmp_path.iterdir() if f.name != "kit.json"}
    assert "numpy" not in names and "torch" not in names, "skipped names and torch never stay in the kit"
    assert "nvidia-cuda-nvrtc" not in names and "nvidia-cuda-runtime" in names
    assert (tmp_path / "glcontext-1.0.tar.gz").exists() and doc["source_only"] == ["glcontext"]
    assert (tmp_path / "pycuda-1.0.tar.gz").exists() and (tmp_path / "imgui-1.0.tar.gz").exists()
    assert "numpy" not in doc["install"] and "glcontext" in doc["install"] and doc["build"] == ["pycuda"]
    binary = [c for c in fake.calls if "--only-binary=:all:" in c]
    assert binary and all(c[c.index("--python-version") + 1] == "3.12" and "cp312" in c for c in binary)
    assert json.loads((tmp_path / "kit.json").read_text())["files"].keys() == {
        f.name for f in tmp_path.iterdir() if f.name != "kit.json"
    }


def test_prepare_refuses_an_oversized_kit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kit, "_pip", _FakePip(tmp_path, set(), {}, size=3 * 2**20))  # 17 wheels x 3 MiB
    with pytest.raises(kit.KitError, match="over the 40 MiB limit"):
        kit.prepare(tmp_path, "3.12", ["manylinux2014_x86_64"], set())


def test_prepare_bad_input_is_one_line_exit_2(tmp_path: Path) -> None:
    for args, msg in ((["--python", "312"], "--python must look like 3.12"), ([], "is not a folder")):
        target = tmp_path / "file"
        target.write_text("x")
        p = _run(sys.executable, SCRIPTS / "gpu_kit.py", "prepare", target, *args)
        assert p.returncode == 2 and msg in p.stderr and len(p.stderr.strip().splitlines()) == 1
    assert _run(sys.executable, SCRIPTS / "gpu_kit.py", "unpack").returncode == 2


# ---------------------------------------------------------------------------------------------------------
# gpu_kit.py report


def test_report_marks_failures_and_reads_training_rates(tmp_path: Path) -> None:
    steps = [
        {"name": "install", "status": "passed", "seconds": 3.0, "detail": "ok"},
        {"name": "gpu-tests", "status": "skipped", "seconds": 0, "detail": "no GPU"},
        {"name": "train", "status": "passed", "seconds": 181.0, "detail": ""},
    ]
    (tmp_path / "steps.jsonl").write_text("".join(json.dumps(s) + "\n" for s in steps))
    (tmp_path / "train").mkdir()
    events = [
        {"event": "progress", "stage": "distill", "step": 100, "elapsed": 20.0},
        {"event": "progress", "stage": "distill", "step": 300, "elapsed": 30.0},
        {"event": "stage_done"},
    ]
    (tmp_path / "train" / "progress.jsonl").write_text(
        "".join(json.dumps(e) + "\n" for e in events) + "{bad\n"
    )
    assert kit.main(["report", str(tmp_path)]) == 0
    doc = json.loads((tmp_path / "report.json").read_text())
    assert doc["ok"] and doc["steps"][2]["steps_per_second"] == {"distill": 10.0}
    assert "all checks passed" in (tmp_path / "report.md").read_text()
    with open(tmp_path / "steps.jsonl", "a") as f:
        f.write(
            json.dumps({"name": "memcheck", "status": "failed", "seconds": 9, "detail": "exit 3: 1 error"})
            + "\n"
        )
    assert kit.main(["report", str(tmp_path)]) == 1
    assert json.loads((tmp_path / "report.json").read_text())["failed"] == ["memcheck"]
    assert "FAILED: memcheck" in (tmp_path / "report.md").read_text()
    assert kit.main(["report", str(tmp_path / "nowhere")]) == 1


# ---------------------------------------------------------------------------------------------------------
# install_pycuda.sh, pycuda_helper.py, gpu_check.sh, gpu_bench.py: their own logic


def test_scripts_refuse_bad_input_in_one_line(tmp_path: Path) -> None:
    cases = [
        ([SCRIPTS / "install_pycuda.sh", "--frobnicate"], "unknown argument"),
        ([SCRIPTS / "install_pycuda.sh", "--find-links", tmp_path / "none"], "does not exist"),
        ([SCRIPTS / "install_pycuda.sh", "--python", tmp_path / "nopython"], "no usable Python"),
        ([SCRIPTS / "gpu_check.sh"], "usage"),
        ([SCRIPTS / "gpu_check.sh", tmp_path, tmp_path / "out"], "has no kit.json"),
        ([sys.executable, SCRIPTS / "pycuda_helper.py", "stub", tmp_path, tmp_path / "s.c"], "no cuda.h"),
        (
            [
                sys.executable,
                SCRIPTS / "gpu_bench.py",
                "render",
                "--sizes",
                "0x3",
                "--out",
                tmp_path / "b.json",
            ],
            "size must look like",
        ),
    ]
    for cmd, msg in cases:
        p = _run(*cmd)
        assert p.returncode == 2, (cmd, p.stdout, p.stderr)
        assert msg in p.stderr and len(p.stderr.strip().splitlines()) == 1, (cmd, p.stderr)


def _cuda_include() -> Path:
    from renderer.cuda import nvrtc

    for d in nvrtc.include_dirs():
        if (d / "cudaGL.h").is_file() and (d / "cudaProfiler.h").is_file():
            return d
    pytest.skip("no cuda.h/cudaGL.h/cudaProfiler.h (pip install -e '.[cuda-wheels]')")


def test_libcuda_stub_exports_the_driver_api(tmp_path: Path) -> None:
    if shutil.which("gcc") is None or shutil.which("nm") is None:
        pytest.skip("no gcc/nm")
    src, lib = tmp_path / "stub.c", tmp_path / "libcuda.so"
    p = _run(sys.executable, SCRIPTS / "pycuda_helper.py", "stub", _cuda_include(), src)
    assert p.returncode == 0, p.stderr
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", lib, "-Wl,-soname,libcuda.so.1", src], check=True)
    symbols = set(
        subprocess.run(
            ["nm", "-D", "--defined-only", lib], capture_output=True, text=True, check=True
        ).stdout.split()
    )
    assert {"cuInit", "cuMemAlloc_v2", "cuGraphicsGLRegisterBuffer", "cuProfilerStart"} <= symbols


def test_check_gl_fails_without_pycuda(tmp_path: Path) -> None:
    venv = tmp_path / "v"
    subprocess.run([BASE_PYTHON, "-m", "venv", "--without-pip", venv], check=True, timeout=120)
    p = _run(venv / "bin" / "python", SCRIPTS / "pycuda_helper.py", "check-gl")
    assert p.returncode == 1 and "pycuda is not installed" in p.stderr


def test_render_benchmark_compares_backends_on_the_cpu(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    p = _run(
        sys.executable,
        SCRIPTS / "gpu_bench.py",
        "render",
        "--backends",
        "torch,torch",
        "--device",
        "cpu",
        "--sizes",
        "24x16",
        "--reps",
        "1",
        "--out",
        out,
        timeout=300,
    )
    assert p.returncode == 0, p.stderr
    doc = json.loads(out.read_text())
    assert [r["backend"] for r in doc["rows"]] == ["torch", "torch"] and doc["rows"][0]["size"] == "24x16"
    assert doc["rows"][1]["max_abs_diff_to_first"] == 0.0 and doc["rows"][0]["wall_ms"] > 0
    assert doc["rows"][0]["gpu_ms"] is None  # no CUDA events on a CPU


def test_pixel_buffer_timing_reads_the_texture_back() -> None:
    """The benchmark's GL path on a real EGL context: a stand-in backend writes a known frame into the
    texture through its "pixel buffer"; the row reports the transfer, times and the level difference of
    what reached the texture against the host-read frame."""
    import numpy as np
    import torch

    bench = _load("gpu_bench")
    ctx, why = bench._gl_context()
    if ctx is None:
        pytest.skip(f"no EGL context here: {why}")
    host = torch.rand(6, 10, 3)
    from renderer.cuda.interop import rgba8

    class _Pbo:
        mode, reason = "host", "stand-in"

        def __init__(self, frame: np.ndarray) -> None:
            self.frame = frame

        def upload(self, texture) -> None:  # type: ignore[no-untyped-def]
            texture.write(self.frame.tobytes())

        def release(self) -> None:
            pass

    class _Backend:
        last_gpu_ms = 0.25

        def __init__(self, frame: np.ndarray) -> None:
            self.frame, self.frames = frame, 0

        def pixel_buffer(self, ctx, w: int, h: int) -> _Pbo:  # type: ignore[no-untyped-def]
            return _Pbo(self.frame)

        def render_to_pixel_buffer(self, scene, cam, pbo) -> None:  # type: ignore[no-untyped-def]
            self.frames += 1

    cam = type("Cam", (), {"width": 10, "height": 6})()
    exact = _Backend(rgba8(host))
    row = bench._time_pixel_buffer(exact, ctx, None, cam, 3, host)
    assert exact.frames == 4 and row["transfer"] == "host" and row["gpu_ms"] == 0.25
    assert row["max_level_diff_to_host_frame"] == 0 and row["wall_ms"] > 0
    off = rgba8(host).copy()
    off[2, 3, 1] = off[2, 3, 1] ^ 0x40  # one channel of one pixel off by 64 levels
    assert (
        bench._time_pixel_buffer(_Backend(off), ctx, None, cam, 1, host)["max_level_diff_to_host_frame"] == 64
    )
    ctx.release()


# ---------------------------------------------------------------------------------------------------------
# End to end: prepare -> install into a fresh venv -> pycuda built with GL -> GPU steps skipped -> report


@pytest.mark.slow
def test_kit_prepare_install_and_check_without_gpu(tmp_path: Path) -> None:
    kit_dir = ROOT / "build" / "ci-gpu-kit"
    shutil.rmtree(kit_dir, ignore_errors=True)
    p = _run(sys.executable, SCRIPTS / "gpu_kit.py", "prepare", kit_dir, "--skip", "torch", timeout=600)
    assert p.returncode == 0, p.stderr
    doc = json.loads((kit_dir / "kit.json").read_text())
    assert doc["mib_without_nvidia"] < kit.LIMIT_MIB, (
        "the kit without torch and the nvidia wheels is < 40 MiB"
    )
    names = {kit.dist_name(f) for f in doc["files"]}
    assert "torch" not in names and {"pycuda", "imgui", "moderngl", "nvidia-cuda-nvrtc"} <= names
    assert any(f.startswith("pycuda-") and f.endswith(".tar.gz") for f in doc["files"])

    out = tmp_path / "out"
    env = {
        "KILONERF_GPU_CHECK_SKIP_GPU": "1",
        "PYTHON": BASE_PYTHON,
        "KILONERF_PYCUDA_WORK": str(ROOT / "build" / "ci-pycuda"),
    }
    p = _run(SCRIPTS / "gpu_check.sh", kit_dir, out, env=env, timeout=900)
    assert p.returncode == 0, p.stdout + p.stderr
    report = json.loads((out / "report.json").read_text())
    status = {s["name"]: s["status"] for s in report["steps"]}
    assert report["ok"] and all(
        status[n] == "passed" for n in ("venv", "install", "pycuda", "nvrtc", "environment")
    )
    for name in ("gpu-tests", "memcheck", "racecheck", "benchmark", "train"):
        step = next(s for s in report["steps"] if s["name"] == name)
        assert step["status"] == "skipped" and "KILONERF_GPU_CHECK_SKIP_GPU" in step["detail"]
    nvrtc_step = next(s for s in report["steps"] if s["name"] == "nvrtc")
    assert nvrtc_step["result"]["arch"] == "sm_90" and nvrtc_step["result"]["bytes"] > 10**6
    assert (out / "report.md").read_text().startswith("# GPU check")
    vpy = out / "venv" / "bin" / "python"
    assert _run(vpy, SCRIPTS / "pycuda_helper.py", "check-gl").returncode == 0  # pycuda >= 2025.1.2 with GL
    listed = _run(vpy, "-m", "pip", "list", "--local", "--format=json").stdout
    local = {kit.canonical(d["name"]) for d in json.loads(listed)}
    assert {"pycuda", "moderngl", "nvidia-cuda-nvrtc"} <= local and "torch" not in local
