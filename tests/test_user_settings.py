"""app/user_settings.py: remembered settings round-trip; a corrupt file is one line, never a crash."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.user_settings import (
    MAX_RECENT,
    Remembered,
    load_remembered,
    remember,
    save_remembered,
    settings_path,
)


def test_round_trip(tmp_path: Path) -> None:
    p = tmp_path / "cfg" / "settings.json"
    r = Remembered(
        recent_scenes=["/a.kilo", "/b.kilo"],
        recent_datasets=["/data/lego"],
        fly_speed=2.5,
        panel_width=400.0,
        panel_collapsed=True,
        export_folder="/tmp/exports",
        window_size=(1280, 800),
    )
    assert save_remembered(r, p) == ""
    assert load_remembered(p) == (r, "")
    assert [q.name for q in p.parent.iterdir()] == ["settings.json"]  # no temp file left


def test_missing_file_is_the_defaults_without_a_message(tmp_path: Path) -> None:
    assert load_remembered(tmp_path / "none.json") == (Remembered(), "")


@pytest.mark.parametrize(
    "text, says",
    [
        ("not json", "not valid JSON"),
        ("[" * 500 + "]" * 500, "nested deeper"),
        ("[1, 2]", "not a JSON object"),
        ('{"fly_speed": 1e400}', "out of range"),
        ('{"fly_speed": NaN}', "NaN"),
        ("\x00\xff", ""),
    ],
)
def test_a_corrupt_file_gives_defaults_and_one_line(tmp_path: Path, text: str, says: str) -> None:
    p = tmp_path / "settings.json"
    p.write_bytes(text.encode("latin-1"))
    got, problem = load_remembered(p)
    assert got == Remembered() and problem.startswith(str(p)) and "\n" not in problem and says in problem


def test_each_bad_field_is_dropped_on_its_own(tmp_path: Path) -> None:
    p = tmp_path / "settings.json"
    data = {
        "recent_scenes": ["/a.kilo", "/a.kilo", 3],
        "recent_datasets": ["/d"] * 3 + [f"/d{i}" for i in range(20)],
        "fly_speed": -1,
        "panel_width": 300,
        "window_size": [100000, 5],
        "panel_collapsed": "yes",
        "export_folder": "/x",
        "from_a_newer_viewer": {"x": 1},
    }
    p.write_text(json.dumps(data))
    got, problem = load_remembered(p)
    assert got.recent_scenes == [] and got.fly_speed is None and got.window_size is None
    assert got.recent_datasets == ["/d", *(f"/d{i}" for i in range(MAX_RECENT - 1))]
    assert got.panel_width == 300.0 and got.export_folder == "/x" and got.panel_collapsed is False
    for key in ("recent_scenes", "fly_speed", "window_size", "panel_collapsed"):
        assert key in problem
    assert "from_a_newer_viewer" not in problem and "\n" not in problem


def test_a_folder_or_an_unwritable_place(tmp_path: Path) -> None:
    (tmp_path / "settings.json").mkdir()
    assert load_remembered(tmp_path / "settings.json")[1].endswith("not a file; settings ignored")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert "settings not saved" in save_remembered(Remembered(), blocker / "sub" / "settings.json")


def test_recent_lists_and_the_default_place(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert remember(["/b", "/a"], "/a") == ["/a", "/b"]
    assert remember([f"/{i}" for i in range(MAX_RECENT)], "/new")[0] == "/new"
    assert len(remember([f"/{i}" for i in range(MAX_RECENT)], "/new")) == MAX_RECENT
    assert remember(["/a"], "") == ["/a"]
    monkeypatch.delenv("KILONERF_STUDIO_SETTINGS", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert settings_path() == tmp_path / "kilonerf-studio" / "settings.json"
    monkeypatch.setenv("KILONERF_STUDIO_SETTINGS", str(tmp_path / "x.json"))
    assert settings_path() == tmp_path / "x.json"
