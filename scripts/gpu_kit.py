"""The offline GPU kit: what a GPU machine without network needs for ``scripts/gpu_check.sh``.

    python scripts/gpu_kit.py prepare DIR [--python 3.12] [--platform TAG ...] [--skip NAME ...]
        (on a machine with pip access) downloads into DIR the wheels of every package the GPU run needs for
        the target Python (wheels for the target's tags; the source of pycuda, of imgui (viewer only), and of
        any package without a wheel there), never torch (the target's own is used) and none that --skip names
        (e.g. from the target's `pip list`). Writes DIR/kit.json. Without the nvidia wheels DIR must stay
        under 40 MiB.
    python scripts/gpu_kit.py report OUTDIR
        (called by gpu_check.sh) turns OUTDIR/steps.jsonl into OUTDIR/report.json and OUTDIR/report.md;
        exit 1 when a step failed.

Bad input: one line, exit 2. A failed download or an oversized kit: one line, exit 1.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import subprocess
import sys
import time
from pathlib import Path

WHEELS = (
    "numpy>=1.24",
    "safetensors>=0.4",
    "pyrr>=0.10",
    "moderngl>=5.8",
    "glcontext",
    "glfw>=2.5",
    "pillow>=9",
    "imageio>=2.31",
    "tqdm>=4.60",
    "pytest>=7",
    "pytools>=2011.2",
    "platformdirs>=2.2",
    "mako",
    "setuptools>=61",
    "wheel",
    "PyOpenGL",
)
"""Needed by the GPU tests, the benchmark, the trainer and pycuda's build (their dependencies come along)."""
NVIDIA = ("nvidia-cuda-nvrtc>=13,<14", "nvidia-cuda-runtime>=13,<14", "nvidia-cuda-profiler-api>=13,<14")
"""NVRTC and the CUDA headers (often already there beside a CUDA build of torch: --skip them)."""
OPTIONAL = ("imgui>=2.0",)
"""Only the viewer needs it, and no check: carried as source (1.5 MiB; its wheel, where one exists, is 7.6),
built on the target only when asked (``KILONERF_GPU_CHECK_VIEWER=1`` or by hand)."""
SOURCE_ONLY = ("pycuda>=2025.1.2",)
"""Built on the target by scripts/install_pycuda.sh (GL interop enabled)."""
NEVER = ("torch",)
LIMIT_MIB = 40
PLATFORMS = (
    "manylinux2014_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux_2_28_x86_64",
    "manylinux_2_34_x86_64",
    "linux_x86_64",
)


class KitError(Exception):
    """A failure after the input was accepted (exit 1)."""


def canonical(name: str) -> str:
    """PEP 503 name: lower case, runs of -_. as one -."""
    return re.sub(r"[-_.]+", "-", name).lower()


def req_name(req: str) -> str:
    return canonical(re.split(r"[<>=!~\[;\s]", req, maxsplit=1)[0])


def dist_name(filename: str) -> str:
    """Distribution name of a wheel (``name-ver-...whl``) or sdist (``name-ver.tar.gz``) file name."""
    if filename.endswith(".whl"):
        return canonical(filename.split("-", 1)[0])
    stem = re.sub(r"\.(tar\.gz|zip|tar\.bz2)$", "", filename)
    return canonical(stem.rsplit("-", 1)[0])


def _pip(args: list[str]) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", "download", *args]
    return subprocess.run(cmd, capture_output=True, text=True, check=False)


def _missing(stderr: str) -> str | None:
    m = re.search(r"No matching distribution found for ([^\s]+)", stderr)
    return req_name(m.group(1)) if m else None


def download_wheels(reqs: list[str], dest: Path, python: str, platforms: list[str]) -> list[str]:
    """Wheels (with dependencies) of ``reqs`` for the target; returns the requirements that have none."""
    target = [
        "--only-binary=:all:",
        "--python-version",
        python,
        "--implementation",
        "cp",
        "--abi",
        "cp" + python.replace(".", ""),
    ] + [a for p in platforms for a in ("--platform", p)]
    pending, no_wheel = list(reqs), []
    while pending:
        proc = _pip([*target, "-d", str(dest), *pending])
        if proc.returncode == 0:
            break
        name = _missing(proc.stderr)
        hit = [r for r in pending if req_name(r) == name]
        if not hit:
            raise KitError("pip download failed: " + _last_line(proc.stderr))
        pending.remove(hit[0])
        no_wheel.append(hit[0])
    return no_wheel


def download_sdists(reqs: list[str], dest: Path) -> None:
    for req in reqs:
        args = ["--no-deps", "--no-binary", req_name(req), "-d", str(dest), req]
        proc = _pip(["--no-build-isolation", *args])  # seconds instead of half a minute, given setuptools
        if proc.returncode != 0:
            proc = _pip(args)
        if proc.returncode != 0:
            raise KitError(f"cannot download the source of {req}: " + _last_line(proc.stderr))


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and "is ignored" not in ln]
    return lines[-1] if lines else "(no output)"


def _mib(paths: list[Path]) -> float:
    return sum(p.stat().st_size for p in paths) / 2**20


def prepare(dest: Path, python: str, platforms: list[str], skip: set[str]) -> dict:
    """Fill ``dest``; returns the kit description (also written to ``dest/kit.json``)."""
    skip = skip | set(NEVER)
    keep = lambda reqs: [r for r in reqs if req_name(r) not in skip]  # noqa: E731
    dest.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    no_wheel = download_wheels(keep(WHEELS) + keep(NVIDIA), dest, python, platforms)
    download_sdists(keep(SOURCE_ONLY) + keep(OPTIONAL) + no_wheel, dest)
    for f in dest.iterdir():  # dependencies of what we asked for that the target already has, and torch
        if f.is_file() and f.name != "kit.json" and dist_name(f.name) in skip:
            f.unlink()
    files = sorted(f for f in dest.iterdir() if f.is_file() and f.name != "kit.json")
    lean = [f for f in files if not dist_name(f.name).startswith("nvidia-")]
    size = _mib(lean)
    if size > LIMIT_MIB:
        raise KitError(f"{dest}: {size:.1f} MiB without the nvidia wheels, over the {LIMIT_MIB} MiB limit")
    kit = {
        "python": python,
        "platforms": platforms,
        "install": [req_name(r) for r in keep(WHEELS) + keep(NVIDIA)],
        "optional": [req_name(r) for r in keep(OPTIONAL)],
        "build": [req_name(r) for r in keep(SOURCE_ONLY)],
        "source_only": sorted(req_name(r) for r in no_wheel),
        "skipped": sorted(skip),
        "files": {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in files},
        "mib": round(_mib(files), 2),
        "mib_without_nvidia": round(size, 2),
        "seconds": round(time.monotonic() - t0, 1),
    }
    (dest / "kit.json").write_text(json.dumps(kit, indent=1) + "\n")
    return kit


# ---------------------------------------------------------------------------------------------------------
# report


def load_steps(outdir: Path) -> list[dict]:
    path = outdir / "steps.jsonl"
    if not path.is_file():
        raise KitError(f"{path} not found (run scripts/gpu_check.sh)")
    steps = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                steps.append(json.loads(line))
            except json.JSONDecodeError:
                raise KitError(f"{path}:{n}: not a JSON line") from None
    return steps


def training_rates(progress: Path) -> dict[str, float]:
    """Steps per second of each training stage from a ``progress.jsonl`` (last progress event per stage)."""
    rates: dict[str, float] = {}
    if not progress.is_file():
        return rates
    for line in progress.read_text().splitlines():
        try:
            ev = json.loads(line)
        except json.JSONDecodeError:
            continue
        if ev.get("event") == "progress" and ev.get("elapsed"):
            rates[str(ev.get("stage"))] = round(float(ev["step"]) / float(ev["elapsed"]), 2)
    return rates


def report(outdir: Path) -> int:
    steps = load_steps(outdir)
    for s in steps:
        extra = outdir / f"{s['name']}.json"
        if extra.is_file():
            try:
                s["result"] = json.loads(extra.read_text())
            except json.JSONDecodeError:
                s["result"] = {"error": f"{extra.name} is not JSON"}
        if s["name"] == "train":
            s["steps_per_second"] = training_rates(outdir / "train" / "progress.jsonl")
    failed = [s["name"] for s in steps if s["status"] == "failed"]
    doc = {"ok": not failed, "failed": failed, "steps": steps}
    (outdir / "report.json").write_text(json.dumps(doc, indent=1) + "\n")
    lines = [
        "# GPU check",
        "",
        f"**{'all checks passed' if not failed else 'FAILED: ' + ', '.join(failed)}**",
        "",
        "| step | status | seconds | detail |",
        "|---|---|---|---|",
    ]
    for s in steps:
        detail = str(s.get("detail", "")).replace("|", "/")
        lines.append(f"| {s['name']} | {s['status']} | {s.get('seconds', '')} | {detail} |")
    for s in steps:
        if "result" in s or s.get("steps_per_second"):
            lines += [
                "",
                f"## {s['name']}",
                "",
                "```json",
                json.dumps(s.get("result", s.get("steps_per_second")), indent=1),
                "```",
            ]
    (outdir / "report.md").write_text("\n".join(lines) + "\n")
    print(
        f"gpu_check: {'all checks passed' if not failed else 'failed: ' + ', '.join(failed)}; "
        f"{outdir / 'report.md'}"
    )
    return 1 if failed else 0


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="gpu_kit.py", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    pr = sub.add_parser("prepare", help="download the kit into DIR")
    pr.add_argument("dir", type=Path)
    pr.add_argument("--python", default=f"{sys.version_info.major}.{sys.version_info.minor}")
    pr.add_argument("--platform", action="append", default=None, help="wheel platform tag (repeatable)")
    pr.add_argument("--skip", nargs="+", action="extend", default=[], help="packages the target already has")
    rp = sub.add_parser("report", help="write OUTDIR/report.json and report.md from OUTDIR/steps.jsonl")
    rp.add_argument("outdir", type=Path)
    try:
        args = p.parse_args(argv)
    except SystemExit as e:
        return 2 if e.code else 0
    try:
        if args.cmd == "report":
            return report(args.outdir)
        if not re.fullmatch(r"3\.\d{1,2}", args.python):
            print(f"gpu_kit: --python must look like 3.12, not {args.python!r}", file=sys.stderr)
            return 2
        if args.dir.exists() and not args.dir.is_dir():
            print(f"gpu_kit: {args.dir} exists and is not a folder", file=sys.stderr)
            return 2
        kit = prepare(
            args.dir, args.python, args.platform or list(PLATFORMS), {canonical(s) for s in args.skip}
        )
    except KitError as e:
        print(f"gpu_kit: {e}", file=sys.stderr)
        return 1
    print(
        f"gpu_kit: {len(kit['files'])} files, {kit['mib']} MiB ({kit['mib_without_nvidia']} MiB without the "
        f"nvidia wheels) in {args.dir} for Python {kit['python']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
