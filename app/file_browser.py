"""A file browser drawn in ImGui, for scene files and dataset folders.

The listing (:func:`list_folder`) and the browser's state (:class:`FileBrowser`: folder, filter, selection,
navigation) are plain Python and tested without a window; :meth:`FileBrowser.draw` is the only ImGui code.
A folder that cannot be read (no permission, gone, a symlink loop) is shown as a one-line message in the
browser, never raised.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MAX_ENTRIES = 5000
"""Entries listed per folder (the rest are counted)."""


@dataclass(frozen=True)
class Entry:
    """One listed item."""

    name: str
    is_dir: bool
    size: int = 0
    """Bytes (files only)."""


@dataclass
class Listing:
    """The readable contents of a folder: folders first, then the files that pass the filter, by name."""

    folder: Path
    entries: list[Entry] = field(default_factory=list)
    problem: str = ""
    """Why the folder could not be listed (empty when it could)."""
    more: int = 0
    """Entries left out past MAX_ENTRIES."""


def list_folder(folder: Path, suffixes: tuple[str, ...] = (), show_hidden: bool = False) -> Listing:
    """List ``folder``: sub-folders, and files whose suffix is in ``suffixes`` (all files when empty)."""
    out = Listing(folder)
    try:
        with os.scandir(folder) as it:
            items = []
            for e in it:
                if not show_hidden and e.name.startswith("."):
                    continue
                try:
                    st = e.stat()  # follows links: a link to a folder is a folder
                except OSError:
                    continue  # a dangling link or a loop: not listed
                is_dir = stat.S_ISDIR(st.st_mode)
                if is_dir or (
                    stat.S_ISREG(st.st_mode) and (not suffixes or e.name.lower().endswith(suffixes))
                ):
                    items.append(Entry(e.name, is_dir, 0 if is_dir else st.st_size))
    except OSError as e:
        out.problem = f"{folder}: cannot list ({e.strerror or e})"
        return out
    items.sort(key=lambda x: (not x.is_dir, x.name.lower()))
    out.entries, out.more = items[:MAX_ENTRIES], max(0, len(items) - MAX_ENTRIES)
    return out


class FileBrowser:
    """A modal browser: pick a file with one of ``suffixes`` (``pick="file"``) or a folder (``"folder"``)."""

    def __init__(self, title: str, pick: str = "file", suffixes: tuple[str, ...] = ()) -> None:
        if pick not in ("file", "folder"):
            raise ValueError(f"pick must be 'file' or 'folder', got {pick!r}")
        self.title, self.pick, self.suffixes = title, pick, tuple(s.lower() for s in suffixes)
        self.folder = Path.cwd()
        self.selected: str | None = None
        self.typed = ""
        """The path field at the top (a path typed there is opened with Enter)."""
        self.listing = Listing(self.folder)
        self.want_open = False
        self.want_close = False
        self.is_open = False
        """Whether the modal was showing at its last draw (safe to read between frames)."""

    def open(self, start: str | os.PathLike[str] | None = None) -> None:
        """Show the browser at ``start`` (its folder when it is a file; the working folder when unset)."""
        p = Path(start).expanduser() if start else Path.cwd()
        p = p if p.is_absolute() else Path.cwd() / p
        self.go(p if p.is_dir() else p.parent)
        if start and p.is_file():
            self.selected = p.name
        self.want_open = True

    def close(self) -> None:
        """Close the browser at its next draw (Esc)."""
        self.want_close = True

    def go(self, folder: Path) -> None:
        """List ``folder`` (it stays current even when it cannot be listed, with the problem shown)."""
        self.folder = Path(os.path.normpath(folder))
        self.selected, self.typed = None, str(self.folder)
        self.listing = list_folder(self.folder, () if self.pick == "folder" else self.suffixes)
        if self.pick == "folder":
            self.listing.entries = [e for e in self.listing.entries if e.is_dir]

    def up(self) -> None:
        """Go to the parent folder."""
        self.go(self.folder.parent)

    def activate(self, entry: Entry) -> str | None:
        """A double click: enter a folder (or, picking folders, nothing more); choose a file."""
        if entry.is_dir:
            self.go(self.folder / entry.name)
            return None
        return str(self.folder / entry.name) if self.pick == "file" else None

    def choice(self) -> str | None:
        """What the OK button returns: the selected file, or (picking folders) the selected or current
        folder; None when nothing suitable is selected."""
        if self.pick == "folder":
            return str(self.folder / self.selected) if self.selected else str(self.folder)
        if self.selected and not (self.folder / self.selected).is_dir():
            return str(self.folder / self.selected)
        return None

    def draw(self, imgui: Any) -> str | None:
        """Draw the modal (call every frame); the chosen path on the frame it is chosen, else None."""
        if self.want_open:
            imgui.open_popup(self.title)
            self.want_open = False
        imgui.set_next_window_size(560, 420, condition=imgui.FIRST_USE_EVER)
        opened, _ = imgui.begin_popup_modal(self.title, True)
        self.is_open = bool(opened)
        if not opened:
            self.want_close = False
            return None
        chosen = self._draw_body(imgui)
        if chosen is not None or self.want_close:
            imgui.close_current_popup()
        self.want_close = False
        imgui.end_popup()
        return chosen

    def _draw_body(self, imgui: Any) -> str | None:
        if imgui.button("Up"):
            self.up()
        imgui.same_line()
        entered, self.typed = imgui.input_text(
            "##path", self.typed, 4096, imgui.INPUT_TEXT_ENTER_RETURNS_TRUE
        )
        if entered:
            self.open(self.typed)
        if self.listing.problem:
            imgui.text_colored(self.listing.problem, 1.0, 0.4, 0.4)
        chosen = None
        imgui.begin_child("entries", 0, -32, border=True)
        for e in self.listing.entries:
            label = f"[{e.name}]" if e.is_dir else f"{e.name}  ({e.size / 2**20:.1f} MiB)"
            clicked, _ = imgui.selectable(label, self.selected == e.name, imgui.SELECTABLE_ALLOW_DOUBLE_CLICK)
            if clicked:
                self.selected = e.name
                if imgui.is_mouse_double_clicked(0):
                    chosen = self.activate(e)
                    break
        if self.listing.more:
            imgui.text(f"... and {self.listing.more} more")
        imgui.end_child()
        if imgui.button("OK") and chosen is None:
            chosen = self.choice()
        imgui.same_line()
        if imgui.button("Cancel"):
            imgui.close_current_popup()
        return chosen
