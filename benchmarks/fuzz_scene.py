"""Fuzzing the readers of untrusted files: `.kilo` scenes, camera JSON, Blender `transforms_*.json` and
instant-ngp / nerfstudio `transforms.json` (``ngp``: intrinsics global and per frame, lens keys, boxes,
split lists, paths, matrices).

Every case is a mutation of a valid file (byte flips, truncation, header and metadata edits: dtypes, shapes,
offsets, huge and negative dimensions, NaN/Inf and huge values, deep and long JSON, duplicate keys,
non-safetensors files), run in-process with a time and a memory limit. A case must end in one of two ways:
refused with the project's own one-line error (SceneFormatError, CameraFormatError, DatasetError), or
accepted — and then an accepted scene renders a small frame with every backend that runs here without a
NaN pixel. Anything else is a failure: a traceback (any other exception), a hang (past the time limit), a
NaN pixel, or memory past the limit.

    python benchmarks/fuzz_scene.py --cases 10000 [--seed 0] [--kinds scene,camera,transforms,ngp]
        [--json OUT]

CI runs a fixed-seed sample (tests/test_fuzz.py). Exit code 1 when any case failed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import struct
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

TIME_LIMIT_S = 20
"""A case running longer than this is a hang."""
MEMORY_SLACK_MB = 256
"""A case may raise the process's peak RSS by at most 2 × its file size plus this much (the frame, the
interpreter's and torch's own allocations). Nothing per occupancy voxel and nothing per weight beyond the
file: the renderer keeps the occupancy packed, its tables within the file's own size and float16 weights
in float16 (docs/scene-format.md, memory)."""
FRAME = (16, 12)
"""The frame an accepted scene must render without a NaN pixel."""


@dataclass
class Outcome:
    """How one case ended."""

    kind: str
    """"accepted", "refused", or a failure: "traceback", "hang", "nan", "memory", "multi-line"."""
    mutation: str
    detail: str = ""
    seconds: float = 0.0
    peak_mb: float = 0.0

    @property
    def failed(self) -> bool:
        return self.kind not in ("accepted", "refused")


@dataclass
class Summary:
    """Counts of a run."""

    cases: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    failures: list[Outcome] = field(default_factory=list)
    slowest_s: float = 0.0
    peak_mb: float = 0.0

    def add(self, o: Outcome) -> None:
        self.cases += 1
        self.outcomes[o.kind] += 1
        self.slowest_s = max(self.slowest_s, o.seconds)
        self.peak_mb = max(self.peak_mb, o.peak_mb)
        if o.failed:
            self.failures.append(o)


# ---------------------------------------------------------------------------------------------------------
# Limits on a case: time (SIGALRM) and memory (the rise of VmHWM, reset before each case)


class _Timeout(Exception):
    pass


def _alarm(signum: int, frame: Any) -> None:
    raise _Timeout()


def _reset_peak() -> float:
    """Reset Linux's peak-RSS mark (when allowed) and return the current RSS in MB."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    return _status_mb("VmRSS")


def _status_mb(key: str) -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return 0.0


def run_limited(
    mutation: str,
    size: int,
    fn: Callable[[], str],
    errors: tuple[type[BaseException], ...],
) -> Outcome:
    """Run ``fn`` (returns "accepted" or a failure kind) under the limits; classify how it ended."""
    base = _reset_peak()
    start = time.perf_counter()
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(TIME_LIMIT_S)
    try:
        kind, detail = fn(), ""
    except _Timeout:
        kind, detail = "hang", f"over {TIME_LIMIT_S} s"
    except errors as e:
        msg = str(e)
        kind, detail = ("refused", msg) if msg and "\n" not in msg else ("multi-line", msg[:300])
    except Exception as e:  # anything else is a traceback a user would see
        kind, detail = "traceback", f"{type(e).__name__}: {str(e)[:300]}"
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    secs = time.perf_counter() - start
    rise = max(0.0, _status_mb("VmHWM") - base)
    limit = 2 * size / 2**20 + MEMORY_SLACK_MB
    if rise > limit and kind in ("accepted", "refused"):
        kind, detail = "memory", f"peak RSS rose by {rise:.0f} MB for a {size} B file"
    return Outcome(kind, mutation, detail, secs, rise)


# ---------------------------------------------------------------------------------------------------------
# Scene mutations


def split_safetensors(data: bytes) -> tuple[dict[str, Any], bytes]:
    (n,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8 : 8 + n]), data[8 + n :]


def join_safetensors(header_text: str, buffer: bytes) -> bytes:
    raw = header_text.encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + buffer


HOSTILE_NUMBERS = [0, -1, -(2**40), 2**31, 2**63, 10**30, "1e400", "-1e400", "NaN", "Infinity", 1e-30, 1e30,
                   3.4e38, 0.5, "\"x\"", "[]", "{}", "null", "true", "9" * 400]  # fmt: skip


def _num_text(v: Any) -> str:
    return v if isinstance(v, str) else json.dumps(v)


def _mutate_header(rng: random.Random, header: dict[str, Any], meta: dict[str, Any]) -> tuple[str, str]:
    """One edit of the header or metadata, as header JSON text; returns (description, text)."""
    keys = [k for k in header if k != "__metadata__"]
    choice = rng.randrange(7)
    if choice == 0:  # a tensor's dtype
        k = rng.choice(keys)
        header[k]["dtype"] = rng.choice(["F16", "F32", "F64", "I32", "I64", "U8", "BOOL", "x", ""])
        return f"dtype of {k}", json.dumps(header)
    if choice == 1:  # a tensor's shape
        k = rng.choice(keys)
        header[k]["shape"] = rng.choice([[], [-1], [2**40], [0], [1, 2, 3, 4, 5, 6], ["a"], [2**31, 2**31]])
        return f"shape of {k}", json.dumps(header)
    if choice == 2:  # a tensor's offsets
        k = rng.choice(keys)
        a, b = header[k]["data_offsets"]
        header[k]["data_offsets"] = rng.choice([[b, a], [a, b + 8], [-8, b], [a, 2**62], [a + 1, b + 1]])
        return f"offsets of {k}", json.dumps(header)
    if choice == 3:  # a metadata value, as raw JSON text (hostile numbers included)
        key = rng.choice(list(meta))
        text = json.dumps(meta).replace(json.dumps(key) + ":", json.dumps(key) + ': __V__,  "__old":', 1)
        text = text.replace("__V__", _num_text(rng.choice(HOSTILE_NUMBERS + [[2**20] * 3, [0.1, 0.2]])))
        header["__metadata__"]["kilonerf"] = text
        return f"metadata {key}", json.dumps(header)
    if choice == 4:  # deep or long JSON in the metadata or the header
        depth = rng.choice([65, 200, 1000, 5000])
        deep = "[" * depth + "]" * depth
        if rng.random() < 0.5:
            header["__metadata__"]["kilonerf"] = json.dumps(meta)[:-1] + ', "provenance_x": ' + deep + "}"
            return f"metadata nested {depth}", json.dumps(header)
        return f"header nested {depth}", json.dumps(header)[:-1] + ', "zz": ' + deep + "}"
    if choice == 5:  # duplicate keys
        text = json.dumps(meta)
        k = rng.choice(list(meta))
        header["__metadata__"]["kilonerf"] = text[:-1] + f", {json.dumps(k)}: {json.dumps(meta[k])}" + "}"
        return f"duplicate metadata key {k}", json.dumps(header)
    k = rng.choice(keys + ["__metadata__"])  # a missing entry
    header.pop(k)
    return f"missing {k}", json.dumps(header)


def _mutate_values(rng: random.Random, header: dict[str, Any], buffer: bytearray) -> str:
    """Overwrite some tensor values in the data buffer with hostile ones."""
    k = rng.choice([k for k in header if k != "__metadata__"])
    dt, (a, b) = header[k]["dtype"], header[k]["data_offsets"]
    fmt = {"F16": "<e", "F32": "<f", "I32": "<i", "U8": "<B"}[dt]
    width = struct.calcsize(fmt)
    values = {"F16": [65504.0, -65504.0, float("nan"), float("inf"), 1e4],
              "F32": [3.4e38, -3.4e38, float("nan"), float("-inf"), 1e20, 1e4],
              "I32": [2**31 - 1, -(2**31), -2, 10**6], "U8": [255, 128, 1]}[dt]  # fmt: skip
    for _ in range(rng.randint(1, 16)):
        if b - a >= width:
            pos = a + width * rng.randrange((b - a) // width)
            struct.pack_into(fmt, buffer, pos, rng.choice(values))
    return f"values of {k}"


def scene_mutations(valid: bytes, rng: random.Random) -> Iterator[tuple[str, bytes]]:
    """An endless stream of mutated scene files."""
    header, buffer = split_safetensors(valid)
    meta = json.loads(header["__metadata__"]["kilonerf"])
    while True:
        r = rng.random()
        h = json.loads(json.dumps(header))
        if r < 0.2:  # byte flips
            data = bytearray(valid)
            for _ in range(rng.randint(1, 8)):
                data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
            yield "byte flips", bytes(data)
        elif r < 0.3:
            cut = rng.randrange(len(valid))
            yield f"truncated at {cut}", valid[:cut]
        elif r < 0.65:
            what, text = _mutate_header(rng, h, json.loads(json.dumps(meta)))
            yield what, join_safetensors(text, buffer)
        elif r < 0.9:
            buf = bytearray(buffer)
            what = _mutate_values(rng, h, buf)
            yield what, join_safetensors(json.dumps(h), bytes(buf))
        elif r < 0.91:
            yield _large_grid(rng)
        else:
            yield from _foreign(rng)


def _large_grid(rng: random.Random) -> tuple[str, bytes]:
    """A valid scene with a large occupancy grid (up to the format's voxel limit) and few networks: what a
    small file may ask of a renderer's memory."""
    from renderer.bit_grid import BitGrid
    from renderer.scene import MAX_OCCUPANCY_VOXELS, save_scene
    from renderer.synthetic import random_scene

    grid = [rng.randint(1, 4) for _ in range(3)]
    budget = rng.choice([2**20, 2**24, MAX_OCCUPANCY_VOXELS])
    side = max(1, int((budget / np.prod(grid)) ** (1 / 3)))
    factor = [max(1, side - rng.randrange(0, 1 + side // 8)) for _ in range(3)]
    scene = random_scene(grid, (1, 1, 1), seed=rng.randrange(2**31), empty_cell_fraction=0.5)
    scene.occupancy_res = tuple(g * f for g, f in zip(grid, factor))
    bits = np.random.default_rng(rng.randrange(2**31)).integers(
        0, 256, -(-int(np.prod(scene.occupancy_res)) // 8), np.uint8
    )
    n = int(np.prod(scene.occupancy_res))
    if n % 8:
        bits[-1] &= (1 << (n % 8)) - 1  # the format's padding bits are zero
    scene.occupancy = BitGrid(bits, scene.occupancy_res)  # type: ignore[arg-type]
    del bits
    with tempfile.TemporaryDirectory(prefix="kilonerf-fuzz-grid-") as tmp:
        path = Path(tmp) / "grid.kilo"
        save_scene(scene, path)
        return f"large grid {list(scene.occupancy_res)}", path.read_bytes()


def _foreign(rng: random.Random) -> Iterator[tuple[str, bytes]]:
    kinds = {
        "empty": b"",
        "random bytes": bytes(rng.randrange(256) for _ in range(rng.randint(1, 4096))),
        "pickle": b"\x80\x04\x95" + bytes(64),
        "zip": b"PK\x03\x04" + bytes(64),
        "json": b'{"a": 1}',
        "huge header length": struct.pack("<Q", 2**63) + b"{}",
        "npy": b"\x93NUMPY\x01\x00" + bytes(64),
    }
    name = rng.choice(sorted(kinds))
    yield name, kinds[name]


# ---------------------------------------------------------------------------------------------------------
# Cases


def _check_scene(path: Path, backends: list[str]) -> str:
    """Load a scene; an accepted one must render a small frame without NaN on every backend. Each backend is
    made for this case alone, so its prepared scene (which a backend keeps between frames) is freed before
    the next one renders: the peak is one render's."""
    from renderer.backends import get_backend
    from renderer.camera import Camera, look_at
    from renderer.scene import load_scene

    scene = load_scene(path)
    lo, hi = np.asarray(scene.bbox_min, np.float64), np.asarray(scene.bbox_max, np.float64)
    centre, radius = (lo + hi) / 2, float(np.linalg.norm(hi - lo))
    cam = Camera(
        FRAME[0], FRAME[1], FRAME[0] * 1.2, look_at(centre + radius * np.array([1.0, -0.8, 0.6]), centre)
    )
    for name in backends:
        img = get_backend(name).render(scene, cam).image
        if not bool(np.isfinite(img.numpy()).all()):
            return "nan"
    return "accepted"


def fuzz_scenes(n: int, seed: int, folder: Path) -> Iterator[Outcome]:
    """``n`` mutated scenes, each loaded and (when accepted) rendered."""
    from renderer.backends import BackendError, get_backend
    from renderer.scene import SceneFormatError, save_scene
    from renderer.synthetic import random_scene

    backends = ["torch"]
    try:
        get_backend("cpu")
        backends.append("cpu")
    except BackendError:
        pass
    valid_path = folder / "valid.kilo"
    save_scene(random_scene((3, 2, 4), (2, 3, 2), seed=seed, hidden=16, dtype="float16"), valid_path)
    stream = scene_mutations(valid_path.read_bytes(), random.Random(seed))
    for i in range(n):
        what, data = next(stream)
        path = folder / f"case{i % 4}.kilo"
        path.write_bytes(data)
        del data
        check = lambda p=path: _check_scene(p, backends)  # noqa: E731
        yield run_limited(f"scene: {what}", path.stat().st_size, check, (SceneFormatError,))


def camera_mutations(rng: random.Random) -> Iterator[tuple[str, str]]:
    """Mutated camera JSON texts."""
    c2w = [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 4], [0, 0, 0, 1]]
    base = {"width": 64, "height": 48, "focal": 60.0, "c2w": c2w, "cx": 32.0, "cy": 24.0}
    keys = list(base)
    while True:
        d = json.loads(json.dumps(base))
        k = rng.choice(keys)
        r = rng.random()
        if r < 0.5:
            text = json.dumps(d).replace(json.dumps(k) + ":", json.dumps(k) + ': __V__, "_o":', 1)
            yield f"camera {k}", text.replace("__V__", _num_text(rng.choice(HOSTILE_NUMBERS)))
        elif r < 0.7:
            i, j = rng.randrange(4), rng.randrange(4)
            d["c2w"][i][j] = rng.choice([1e30, -1e30, 1e6, 0.0, 1e-30])
            yield f"camera c2w[{i}][{j}]", json.dumps(d)
        elif r < 0.8:
            depth = rng.choice([70, 1000, 10000])
            yield f"camera nested {depth}", json.dumps(d)[:-1] + ', "x": ' + "[" * depth + "]" * depth + "}"
        elif r < 0.9:
            d.pop(k)
            yield f"camera without {k}", json.dumps(d)
        else:
            text = json.dumps(d)
            cut = rng.randrange(len(text))
            yield f"camera truncated at {cut}", text[:cut]


def _check_camera(path: Path) -> str:
    from renderer.camera import generate_rays, load_camera_json

    cam = load_camera_json(path)
    o, d = generate_rays(cam.with_size(8, 6) if cam.width * cam.height > 4096 else cam)
    return "accepted" if bool(np.isfinite(o.numpy()).all() and np.isfinite(d.numpy()).all()) else "nan"


def fuzz_cameras(n: int, seed: int, folder: Path) -> Iterator[Outcome]:
    """``n`` mutated camera files, each loaded and turned into rays."""
    from renderer.camera import CameraFormatError

    stream = camera_mutations(random.Random(seed))
    for i in range(n):
        what, text = next(stream)
        path = folder / f"cam{i % 4}.json"
        path.write_text(text)
        yield run_limited(what, len(text), lambda p=path: _check_camera(p), (CameraFormatError,))


def _dataset(folder: Path) -> dict[str, Any]:
    """A 2-view Blender-layout dataset of 4×4 images; returns its transforms."""
    import imageio.v3 as iio

    (folder / "img").mkdir(parents=True, exist_ok=True)
    frames = []
    for i in range(2):
        iio.imwrite(folder / "img" / f"r_{i}.png", np.full((4, 4, 4), 200, np.uint8))
        c2w = np.eye(4)
        c2w[:3, 3] = [0.0, -4.0 + i, 0.5]
        frames.append({"file_path": f"./img/r_{i}", "transform_matrix": c2w.tolist()})
    return {"camera_angle_x": 0.69, "frames": frames}


def fuzz_transforms(n: int, seed: int, folder: Path) -> Iterator[Outcome]:
    """``n`` mutated ``transforms_train.json`` of a tiny dataset, each loaded."""
    from trainer.data import DatasetError, load_dataset

    base = _dataset(folder)
    rng = random.Random(seed)
    for _ in range(n):
        d = json.loads(json.dumps(base))
        r = rng.random()
        if r < 0.3:
            key = rng.choice(["camera_angle_x", "frames"])
            text = json.dumps(d).replace(json.dumps(key) + ":", json.dumps(key) + ': __V__, "_o":', 1)
            what, text = f"transforms {key}", text.replace("__V__", _num_text(rng.choice(HOSTILE_NUMBERS)))
        elif r < 0.55:
            f = d["frames"][rng.randrange(2)]
            f["file_path"] = rng.choice(
                ["/etc/passwd", "../../x", "", 7, "./img/missing", "./img/" + "a" * 5000]
            )
            what, text = "transforms file_path", json.dumps(d)
        elif r < 0.8:
            m = d["frames"][rng.randrange(2)]["transform_matrix"]
            m[rng.randrange(4)][rng.randrange(4)] = rng.choice([1e30, -1e30, 0.0, 1e300])
            what, text = "transforms matrix", json.dumps(d)
        else:
            depth = rng.choice([100, 2000])
            what, text = (
                f"transforms nested {depth}",
                json.dumps(d)[:-1] + ', "x": ' + "[" * depth + "]" * depth + "}",
            )
        (folder / "transforms_train.json").write_text(text)
        yield run_limited(what, len(text), lambda: _load_ok(load_dataset, folder), (DatasetError,))


NGP_KEYS = ("fl_x", "fl_y", "cx", "cy", "w", "h", "k1", "p2", "aabb_scale", "scale", "offset", "camera_model")


def _ngp_dataset(folder: Path) -> dict[str, Any]:
    """A 3-view instant-ngp / nerfstudio dataset (images of two sizes in a subfolder, per-frame intrinsics on
    one frame, an ``aabb``); returns its ``transforms.json`` content."""
    import imageio.v3 as iio

    (folder / "images").mkdir(parents=True, exist_ok=True)
    frames = []
    for i in range(3):
        size = (6, 8) if i == 2 else (4, 4)
        iio.imwrite(folder / "images" / f"f{i}.png", np.full((*size, 3), 90 + 40 * i, np.uint8))
        c2w = np.eye(4)
        c2w[:3, 3] = [0.3 * i, -4.0, 0.5]
        frame: dict[str, Any] = {"file_path": f"images/f{i}" + (".png" if i else ""),
                                 "transform_matrix": c2w.tolist()}  # fmt: skip
        if i == 2:
            frame.update({"w": 8, "h": 6, "fl_x": 9.0, "fl_y": 9.0, "cx": 4.2, "cy": 2.9})
        frames.append(frame)
    return {"fl_x": 5.0, "fl_y": 5.0, "cx": 2.0, "cy": 2.0, "w": 4, "h": 4, "camera_model": "OPENCV",
            "k1": 0.0, "p2": 0.0, "aabb": [[-1, -1, -1], [1, 1, 1]], "frames": frames}  # fmt: skip


def _ngp_mutation(rng: random.Random, d: dict[str, Any]) -> tuple[str, str]:
    """One hostile edit of an instant-ngp ``transforms.json``: a key (global or a frame's) set to a hostile
    number or value, a bad box, split lists naming what is not there, a bad path or matrix, deep nesting."""
    r = rng.random()
    if r < 0.35:
        key = rng.choice(NGP_KEYS)
        target = d if rng.random() < 0.5 else d["frames"][rng.randrange(3)]
        target[key] = "__V__"
        value = rng.choice(HOSTILE_NUMBERS + ['"FISHEYE"', '"EQUIRECTANGULAR"', "0.1"])
        return f"ngp {key}", json.dumps(d).replace('"__V__"', _num_text(value))
    if r < 0.5:
        boxes = [[[1, 1, 1], [-1, -1, -1]], [[0, 0, 0]], [[0, 0], [1, 1]], "box", [[-1e30] * 3, [1e30] * 3],
                 [[0, 0, 0], [0, 0, 0]], [[None, 0, 0], [1, 1, 1]]]  # fmt: skip
        d["aabb"] = rng.choice(boxes)
        return "ngp aabb", json.dumps(d)
    if r < 0.65:
        d[rng.choice(["train_filenames", "test_filenames"])] = rng.choice(
            [[], ["images/nope.png"], ["images/f0"] * 3, "images/f0", [7], ["../../etc/passwd"]]
        )
        return "ngp split lists", json.dumps(d)
    if r < 0.8:
        f = d["frames"][rng.randrange(3)]
        f["file_path"] = rng.choice(
            ["/etc/passwd", "../../x", "", 7, "images/missing", "images/" + "a" * 5000]
        )
        return "ngp file_path", json.dumps(d)
    if r < 0.92:
        m = d["frames"][rng.randrange(3)]["transform_matrix"]
        m[rng.randrange(4)][rng.randrange(4)] = rng.choice([1e30, -1e30, 0.0, 1e300])
        return "ngp matrix", json.dumps(d)
    depth = rng.choice([100, 2000])
    return f"ngp nested {depth}", json.dumps(d)[:-1] + ', "x": ' + "[" * depth + "]" * depth + "}"


def fuzz_ngp(n: int, seed: int, folder: Path) -> Iterator[Outcome]:
    """``n`` mutated instant-ngp / nerfstudio ``transforms.json`` of a tiny dataset, each loaded."""
    from trainer.data import DatasetError, load_dataset

    base = _ngp_dataset(folder)
    rng = random.Random(seed)
    for _ in range(n):
        what, text = _ngp_mutation(rng, json.loads(json.dumps(base)))
        (folder / "transforms.json").write_text(text)
        yield run_limited(what, len(text), lambda: _load_ok(load_dataset, folder), (DatasetError,))


def _load_ok(load: Callable[..., Any], folder: Path) -> str:
    ds = load(folder, "train")
    return "accepted" if bool(np.isfinite(ds.c2w).all() and np.isfinite(ds.images).all()) else "nan"


KINDS = {"scene": fuzz_scenes, "camera": fuzz_cameras, "transforms": fuzz_transforms, "ngp": fuzz_ngp}


def run(kinds: dict[str, int], seed: int, progress: bool = False) -> dict[str, Summary]:
    """Fuzz every kind with its number of cases; a Summary per kind."""
    out: dict[str, Summary] = {}
    with tempfile.TemporaryDirectory(prefix="kilonerf-fuzz-") as tmp:
        for kind, n in kinds.items():
            folder = Path(tmp) / kind
            folder.mkdir()
            s = out[kind] = Summary()
            for o in KINDS[kind](n, seed, folder):
                s.add(o)
                if progress and s.cases % 500 == 0:
                    print(f"  {kind}: {s.cases}/{n} {dict(s.outcomes)}", flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--cases", type=int, default=10000, help="scene cases (cameras, transforms, ngp: a fifth each)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--kinds", default="scene,camera,transforms,ngp")
    p.add_argument("--json", default=None, help="write the counts and failures here")
    args = p.parse_args(argv)
    fifth = max(1, args.cases // 5)
    share = {"scene": args.cases, "camera": fifth, "transforms": fifth, "ngp": fifth}
    kinds = {k: share[k] for k in args.kinds.split(",") if k in share}
    start = time.perf_counter()
    result = run(kinds, args.seed, progress=True)
    report: dict[str, Any] = {"seed": args.seed, "seconds": round(time.perf_counter() - start, 1)}
    for kind, s in result.items():
        print(f"{kind}: {s.cases} cases, {dict(s.outcomes)}, slowest {s.slowest_s:.2f} s, "
              f"largest peak-RSS rise {s.peak_mb:.0f} MB, {len(s.failures)} failures")  # fmt: skip
        for f in s.failures[:20]:
            print(f"  FAIL {f.kind}: {f.mutation}: {f.detail}")
        report[kind] = {
            "cases": s.cases,
            "outcomes": dict(s.outcomes),
            "slowest_s": s.slowest_s,
            "peak_rss_rise_mb": s.peak_mb,
            "failures": [vars(f) for f in s.failures[:100]],
        }
    if args.json:
        from renderer.atomic import atomic_write_text

        atomic_write_text(args.json, json.dumps(report, indent=1) + "\n")
    return 1 if any(s.failures for s in result.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
