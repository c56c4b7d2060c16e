"""app/file_browser.py: the listing and navigation of the ImGui file browser (no window needed)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from app.file_browser import FileBrowser, list_folder


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    (tmp_path / "scenes").mkdir()
    (tmp_path / "scenes" / "b.kilo").write_bytes(b"x" * 2048)
    (tmp_path / "scenes" / "A.KILO").write_bytes(b"")
    (tmp_path / "scenes" / "notes.txt").write_text("x")
    (tmp_path / "scenes" / ".hidden.kilo").write_text("x")
    (tmp_path / "scenes" / "sub").mkdir()
    (tmp_path / "scenes" / "loop").symlink_to(tmp_path / "scenes" / "loop")
    (tmp_path / "scenes" / "to_sub").symlink_to(tmp_path / "scenes" / "sub")
    return tmp_path


def test_folders_first_then_matching_files_by_name(tree: Path) -> None:
    got = list_folder(tree / "scenes", (".kilo",))
    assert [(e.name, e.is_dir) for e in got.entries] == [
        ("sub", True),
        ("to_sub", True),  # a link to a folder is a folder; the symlink loop is left out
        ("A.KILO", False),
        ("b.kilo", False),
    ]
    assert got.entries[-1].size == 2048 and got.problem == "" and got.more == 0
    everything = list_folder(tree / "scenes", (), show_hidden=True)
    assert {e.name for e in everything.entries} >= {"notes.txt", ".hidden.kilo"}


def test_an_unreadable_folder_is_one_line(tree: Path) -> None:
    got = list_folder(tree / "missing")
    assert got.entries == [] and got.problem.startswith(f"{tree / 'missing'}: cannot list")
    if os.geteuid() != 0:  # root reads anything
        locked = tree / "locked"
        locked.mkdir(mode=0)
        assert "cannot list" in list_folder(locked).problem


def test_navigation_and_choosing_a_file(tree: Path) -> None:
    b = FileBrowser("Open scene", "file", (".kilo",))
    b.open(tree / "scenes" / "b.kilo")
    assert b.folder == tree / "scenes" and b.selected == "b.kilo" and b.want_open
    assert b.choice() == str(tree / "scenes" / "b.kilo")
    sub = next(e for e in b.listing.entries if e.name == "sub")
    assert b.activate(sub) is None and b.folder == tree / "scenes" / "sub" and b.choice() is None
    b.up()
    assert b.folder == tree / "scenes"
    kilo = next(e for e in b.listing.entries if e.name == "A.KILO")
    assert b.activate(kilo) == str(tree / "scenes" / "A.KILO")


def test_choosing_a_folder(tree: Path) -> None:
    b = FileBrowser("Dataset", "folder")
    b.open(tree)
    assert [e.name for e in b.listing.entries] == ["scenes"]  # folders only
    assert b.choice() == str(tree)  # nothing selected: the current folder
    b.selected = "scenes"
    assert b.choice() == str(tree / "scenes")
    with pytest.raises(ValueError, match="pick must be"):
        FileBrowser("x", "both")


def test_draw_runs_in_an_imgui_frame_and_shows_the_popup(tree: Path) -> None:
    """The drawing code against a real ImGui context (no window: ImGui renders to draw lists only)."""
    imgui = pytest.importorskip("imgui")
    ctx = imgui.create_context()
    try:
        io = imgui.get_io()
        io.ini_file_name = None  # no imgui.ini written into the working folder
        io.display_size = (900, 700)
        io.fonts.get_tex_data_as_rgba32()
        b = FileBrowser("Open scene", "file", (".kilo",))
        b.open(tree / "scenes")
        b.listing.problem = "a problem line"  # drawn too
        seen_open = False
        for _ in range(3):
            io.delta_time = 1 / 60
            imgui.new_frame()
            assert b.draw(imgui) is None  # nothing chosen without input
            seen_open = seen_open or imgui.is_popup_open("Open scene")
            imgui.render()
        assert seen_open and not b.want_open
    finally:
        imgui.destroy_context(ctx)
