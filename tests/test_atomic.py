"""Killing a writer mid-write never leaves a half-written file: renderer.atomic's writes (scenes, work-folder
records) under SIGKILL at random moments, then the trainer's clean-up of the stray temp files."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from renderer.scene import load_scene
from trainer.files import read_json, remove_stale_temp_files

ROOT = Path(__file__).resolve().parents[1]

WRITER = """
import sys
from pathlib import Path
from renderer.scene import save_scene
from renderer.synthetic import random_scene
from trainer.files import write_json
folder = Path(sys.argv[1])
scene = random_scene((6, 6, 6), (8, 8, 8), seed=0, hidden=32)
print("ready", flush=True)
i = 0
while True:
    i += 1
    scene.provenance = {"version": i}
    save_scene(scene, folder / "out.kilo")
    write_json(folder / "run.json", {"version": i, "pad": "x" * 200000})
"""


@pytest.mark.slow
def test_sigkill_during_writes_leaves_whole_files_and_the_temp_files_are_removed(tmp_path: Path) -> None:
    rng = random.Random(0)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    versions: list[int] = []
    for _ in range(8):
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(tmp_path)], env=env, stdout=subprocess.PIPE, text=True
        )
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.05, 0.6))  # somewhere inside a write of one of the two files
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        if (tmp_path / "out.kilo").exists():
            versions.append(int(load_scene(tmp_path / "out.kilo").provenance["version"]))  # whole, or raises
        record = read_json(tmp_path / "run.json")
        assert record is None or len(record["pad"]) == 200000
    assert versions, "the writer never finished a scene before being killed"
    strays = sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp"))
    removed = remove_stale_temp_files(tmp_path, ["out.kilo", "run.json"], before=time.time() + 1)
    assert strays, "no kill landed inside a write: the test proved nothing"
    assert sorted(p.name for p in removed) == strays
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.kilo", "run.json"]
    json.loads((tmp_path / "run.json").read_text())  # still valid after the clean-up
