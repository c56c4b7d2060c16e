"""ImGui panels of the viewer: scene, camera, render (with live stats), overlays, training, export.

Each function edits the viewer's settings dataclasses (app/settings.py) or calls a Viewer method; the
viewer reads the settings every frame, so the panels hold no state of their own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import imgui
import numpy as np

from app import widgets as w
from app.jobs import PRESETS, STAGES, JobHistory
from app.settings import VIEWS
from renderer.backends import BACKENDS

if TYPE_CHECKING:
    from app.viewer import Viewer

PANEL_WIDTH = 360
"""The side panel's width at start, in window pixels."""
MIN_PANEL_WIDTH, MAX_PANEL_WIDTH = 240, 900
"""How narrow and wide the user may drag the panel."""
LABEL_WIDTH = 110
"""Pixels left for a widget's label at its right."""
LOG_HEIGHT, LOG_LINES = 64, 8
"""The message box: pixels high (fixed, so it never moves other widgets) and messages kept in it."""
_seen: dict[str, int] = {"messages": 0}
MAX_SIDE = 8192
"""Largest screenshot or video side typed into the export panel."""
_path_buffer: dict[str, str] = {"open": ""}


def draw_panels(v: Viewer) -> None:
    """The side panel, docked on the left at full height (resizable by its right edge, collapsible by its
    title bar), and the help overlay when it is shown."""
    _, h = imgui.get_io().display_size
    imgui.set_next_window_position(0, 0, imgui.ALWAYS)
    imgui.set_next_window_size(v.panel_width, h, imgui.FIRST_USE_EVER)
    if not v.panel_collapsed:
        imgui.set_next_window_size_constraints((MIN_PANEL_WIDTH, h), (MAX_PANEL_WIDTH, h))
    expanded, _ = imgui.begin("KiloNeRF studio", flags=imgui.WINDOW_NO_MOVE)
    v.panel_collapsed = not expanded
    if expanded:
        v.panel_width = float(imgui.get_window_width())
        imgui.push_item_width(-LABEL_WIDTH)  # every widget leaves room for its label
        _guarded(v, _log)
        for name, sections in _SECTIONS:
            if _header(v, name):
                for section in sections:
                    _guarded(v, section)
        imgui.pop_item_width()
    imgui.end()
    if v.show_help:
        _guarded(v, _help_overlay)
    _guarded(v, _dialogs)


def _guarded(v: Viewer, section: Callable[[Viewer], None]) -> None:
    """Draw one section; an unexpected error becomes a red message and the other sections still draw (the
    last line of defence: the causes are fixed where they are found)."""
    try:
        section(v)
    except Exception as e:  # noqa: BLE001 - anything a panel raises must not close the viewer
        v.report_unexpected(e, f"the {section.__name__.strip('_').replace('_', ' ')}")


def _header(v: Viewer, name: str) -> bool:
    """A collapsing header, expanded on first show when listed in ``settings.open_panels``."""
    imgui.set_next_item_open(name in v.settings.open_panels, imgui.ONCE)
    return bool(imgui.collapsing_header(name)[0])


def _log(v: Viewer) -> None:
    """The last messages in a box of fixed height (it never moves the widgets below), newest at the
    bottom, errors in red; and the help button."""
    if imgui.button("?  help (F1)"):
        v.toggle_help()
    imgui.begin_child("messages", 0, LOG_HEIGHT, border=True)
    for _, text, level in list(v.messages)[-LOG_LINES:]:
        color = (1.0, 0.4, 0.4) if level == "error" else (0.7, 0.9, 1.0)
        imgui.push_text_wrap_pos(0)
        imgui.text_colored(text, *color)
        imgui.pop_text_wrap_pos()
    if len(v.messages) != _seen["messages"]:  # a new message: scroll to it
        _seen["messages"] = len(v.messages)
        imgui.set_scroll_here_y(1.0)
    imgui.end_child()


def _dialogs(v: Viewer) -> None:
    v.draw_dialogs()


def _help_overlay(v: Viewer) -> None:
    """Every shortcut and mouse action (input.SHORTCUT_LIST and MOTION_HELP), centred over the image."""
    from app.input import MOTION_HELP, SHORTCUT_LIST

    w, h = imgui.get_io().display_size
    imgui.set_next_window_position(w / 2, h / 2, imgui.ALWAYS, 0.5, 0.5)
    _, opened = imgui.begin(
        "Keys and mouse", True, imgui.WINDOW_ALWAYS_AUTO_RESIZE | imgui.WINDOW_NO_COLLAPSE
    )
    for label, what in [(k.label, k.what) for k in SHORTCUT_LIST] + list(MOTION_HELP):
        imgui.text(label)
        imgui.same_line(170)
        imgui.text(what)
    imgui.separator()
    imgui.text("F1 or Esc closes this")
    imgui.end()
    if not opened:
        v.show_help = False


def _scene_panel(v: Viewer) -> None:
    s = v.scene
    imgui.text_wrapped(f"{v.scene_name}")
    imgui.text_wrapped(
        f"grid {tuple(s.grid_res)}, {s.num_networks} networks, occupancy {tuple(s.occupancy_res)}"
    )
    if v.loader.loading:
        imgui.text_colored(f"loading {v.loader.loading} ...", 1.0, 0.9, 0.4)
    _, _path_buffer["open"] = imgui.input_text("##open", _path_buffer["open"], 1024)
    imgui.same_line()
    if imgui.button("Open") and _path_buffer["open"].strip():
        v.open_scene(_path_buffer["open"].strip())
    imgui.same_line()
    if imgui.button("Browse...##scene"):
        v.browse("scene", _path_buffer["open"].strip())
    recent = v.remembered.recent_scenes
    if recent:
        changed, i = imgui.combo("recent", 0, ["(recent scenes)", *recent])
        if changed and i > 0:
            v.open_scene(recent[i - 1])


def _camera_panel(v: Viewer) -> None:
    c = v.camera
    if imgui.radio_button("orbit", c.mode == "orbit"):
        c.mode = "orbit"
    imgui.same_line()
    if imgui.radio_button("fly (F)", c.mode == "fly"):
        c.mode = "fly"
    c.settings.fov_y_deg = w.slider_float(imgui, "FOV (deg)", c.settings.fov_y_deg, 10.0, 120.0)
    c.settings.fly_speed = w.slider_float(imgui, "fly speed", c.settings.fly_speed, 0.05, 10.0, log=True)
    if imgui.button("reset (R)"):
        v.reset_view()
    cams = getattr(v.scene, "cameras", None)
    if cams is not None and len(cams.c2w):
        imgui.same_line()
        k = w.slider_int(imgui, "view k", v.view_k, 0, len(cams.c2w) - 1)
        if k != v.view_k:
            v.set_view(k)
    if imgui.button("copy pose (Ctrl+C)"):
        v.copy_pose()
    imgui.same_line()
    if imgui.button("paste pose (Ctrl+V)"):
        v.paste_pose_from_clipboard()


def _render_panel(v: Viewer) -> None:
    r = v.settings.render
    names = list(BACKENDS)
    cur = names.index(r.backend) if r.backend in names else 0
    changed, idx = imgui.combo("backend", cur, names)
    if changed and names[idx] != r.backend:
        v.switch_backend(names[idx])
    r.res_scale = w.slider_float(imgui, "resolution", r.res_scale, 0.1, 1.0)
    _, r.dynamic_res = imgui.checkbox("dynamic resolution", r.dynamic_res)
    imgui.same_line()
    imgui.push_item_width(80)
    r.target_fps = w.slider_float(imgui, "target FPS", r.target_fps, 2.0, 60.0, "%.1f")
    imgui.pop_item_width()
    _, r.ess = imgui.checkbox("ESS", r.ess)
    imgui.same_line()
    _, r.ert = imgui.checkbox("ERT", r.ert)
    imgui.same_line()
    imgui.push_item_width(120)
    r.ert_threshold = w.slider_float(imgui, "eps", r.ert_threshold, 1e-4, 0.2, "%.4f", log=True)
    imgui.pop_item_width()
    r.step_multiplier = w.slider_float(imgui, "step x", r.step_multiplier, 0.25, 4.0)
    changed, col = imgui.color_edit3("background", *r.background)
    if changed:
        r.background = tuple(col)  # type: ignore[assignment]
    views = list(VIEWS)
    changed, vi = imgui.combo("view", views.index(r.view) if r.view in views else 0, views)
    if changed:
        r.view = views[vi]
    if r.view == "depth":
        _depth_legend(v)


def depth_legend_text(depth_range: tuple[float, float] | None) -> str:
    """The depth view's scale in words: what white and dark grey stand for."""
    if depth_range is None:
        return "depth: nothing hit in this frame"
    near, far = depth_range
    return f"near {near:.3f} (white) .. far {far:.3f} (dark grey), scene units along the ray"


def _depth_legend(v: Viewer) -> None:
    """A grey ramp as the depth view draws it (``renderer.pixels.shade_depth``: 1 at the nearest hit, 0.15
    at the farthest) with the frame's range."""
    rng = v.frame.depth_range if v.frame is not None and v.frame.request.options.output == "depth" else None
    x, y = imgui.get_cursor_screen_pos()
    width = imgui.get_content_region_available_width()
    white, dark = imgui.get_color_u32_rgba(1, 1, 1, 1), imgui.get_color_u32_rgba(0.15, 0.15, 0.15, 1)
    imgui.get_window_draw_list().add_rect_filled_multicolor(x, y, x + width, y + 10, white, dark, dark, white)
    imgui.dummy(width, 12)
    imgui.text_wrapped(depth_legend_text(rng))


def per_ray_stats(stats: dict[str, float]) -> dict[str, float]:
    """Derived per-ray figures of renderer stats: samples marched/evaluated per ray, % skipped by ESS,
    % rays stopped early (of rays that hit the box)."""
    rays = max(stats.get("rays", 0), 1)
    marched = stats.get("samples_marched", 0)
    evaluated = stats.get("samples_evaluated", 0)
    hit = max(stats.get("rays_hit_box", rays), 1)
    return {
        "marched_per_ray": marched / rays,
        "evaluated_per_ray": evaluated / rays,
        "ess_skipped_pct": 100.0 * (1 - evaluated / marched) if marched else 0.0,
        "early_pct": 100.0 * stats.get("rays_terminated_early", 0) / hit,
    }


def network_stats_line(stats: dict[str, float]) -> str:
    """Networks touched and passes of the whole frame, saying how a frame rendered in bands counts them:
    networks are the union over the bands (the largest band's count where a backend gave no mask), passes
    the most of any band, as a one-call render reports the most of any ray chunk."""
    bands = int(stats.get("bands", 1))
    nets, passes = int(stats.get("networks_touched", 0)), int(stats.get("passes", 0))
    if bands <= 1:
        return f"networks touched {nets}, passes {passes}"
    if stats.get("networks_exact", 0):
        return f"networks touched {nets} (all {bands} bands), passes {passes} (most in one band)"
    return f"networks touched {nets}, passes {passes} (largest of {bands} bands)"


def _stats_panel(v: Viewer) -> None:
    f = v.frame
    tm = v.timing
    imgui.separator()
    if f is None:
        imgui.text("rendering ...")
        return
    st = f.stats
    d = per_ray_stats(st)
    w, h = f.size
    state = "" if f.complete else f" (refining {100 * f.rows_done // max(h, 1)}%)"
    path = " (CUDA -> GL buffer)" if v.pbo_path_active() else ""
    rate = "still" if v.is_idle() and f.complete else f"{tm.fps:.1f} FPS"  # FPS of the frames while moving
    imgui.text_wrapped(f"{f.ms:.0f} ms/frame, {rate}, {w}x{h}{state}{path}")
    imgui.text_wrapped(
        f"samples/ray marched {d['marched_per_ray']:.1f}, evaluated {d['evaluated_per_ray']:.1f}"
    )
    req = f.request.options
    skipped = f"{d['ess_skipped_pct']:.1f}%"
    ess = f"ESS skipped {skipped}" if req.ess else f"ESS off (samples in cells without a network: {skipped})"
    ert = f"stopped early {d['early_pct']:.1f}%" if req.ert else "ERT off"
    imgui.text_wrapped(f"{ess}, {ert}")
    imgui.text_wrapped(network_stats_line(st))
    imgui.text_wrapped(
        f"UI {tm.frame_ms:.1f} ms (upload {tm.upload_ms:.1f}, UI {tm.ui_ms:.1f}), {tm.ui_fps:.0f} Hz"
    )
    hist = np.asarray(v.worker.timing.history[-100:], np.float32)
    if len(hist) > 1:  # scaled to the last 100 frames, a slow first frame clipped (95th percentile)
        top = max(float(np.percentile(hist, 95)), 1.0)
        imgui.plot_lines(
            "##ms",
            hist,
            scale_min=0.0,
            scale_max=top,
            graph_size=(v.panel_width - 30, 40),
            overlay_text=f"render ms, last {len(hist)} frames (top {top:.0f})",
        )


def _overlay_panel(v: Viewer) -> None:
    o = v.settings.overlays
    _, o.box = imgui.checkbox("scene box", o.box)
    imgui.same_line()
    _, o.grid = imgui.checkbox("network grid", o.grid)
    _, o.frusta = imgui.checkbox("training cameras", o.frusta)
    imgui.same_line()
    _, o.depth_aware = imgui.checkbox("hide behind scene", o.depth_aware)
    _, o.voxels = imgui.checkbox("occupied voxels", o.voxels)
    if o.voxels:
        _, o.voxel_axis = imgui.combo("slice axis", o.voxel_axis, ["x", "y", "z"])
        o.voxel_lo = w.slider_float(imgui, "slice from", o.voxel_lo, 0.0, 1.0)
        o.voxel_hi = w.slider_float(imgui, "slice to", o.voxel_hi, 0.0, 1.0)
        o.voxel_hi = max(o.voxel_hi, o.voxel_lo)
    imgui.text("debug views: Render > view = depth | network")


def _training_panel(v: Viewer) -> None:
    t = v.settings.train
    _, t.data = imgui.input_text("dataset", t.data, 1024)
    imgui.same_line()
    if imgui.button("...##data"):
        v.browse("data", t.data)
    presets = list(PRESETS)
    _, pi = imgui.combo("preset", presets.index(t.preset) if t.preset in presets else 0, presets)
    t.preset = presets[pi]
    _, t.out = imgui.input_text("output", t.out, 1024)
    stages = ["all stages", *STAGES]
    _, si = imgui.combo("run", stages.index(t.stage) if t.stage in stages else 0, stages)
    t.stage = "" if si == 0 else stages[si]
    _, t.auto_reload = imgui.checkbox("load new .kilo files (hot reload)", t.auto_reload)
    job = v.job
    running = job is not None and job.running
    if not running:
        if imgui.button("Run"):
            v.start_training()
        if job is not None and job.can_resume:
            imgui.same_line()
            if imgui.button("Resume"):
                v.start_training()
    elif imgui.button("Cancel"):
        assert job is not None
        job.cancel()
    if job is None:
        return
    imgui.text_wrapped(f"state: {job.state.value}  {job.message}")
    imgui.text_wrapped(f"output {job.paths.out}, work folder {job.workdir}")
    for st in job.stages.values():
        eta = f", ETA {st.eta:.0f}s" if st.eta and st.status == "running" else ""
        label = f"{st.name}: {st.status} {st.step}/{st.total}{eta}"
        imgui.progress_bar(st.fraction, (v.panel_width - 30, 0), label)
    hist = JobHistory.from_points(job.history, job.current_stage())
    if len(hist.loss) > 1:
        imgui.plot_lines(
            "##loss",
            np.log10(np.maximum(np.asarray(hist.loss, np.float32), 1e-12)),
            graph_size=(v.panel_width - 30, 50),
            overlay_text=f"loss {hist.loss[-1]:.4g} (plotted as log10)",
        )
    if len(hist.psnr) > 1:
        imgui.plot_lines(
            "##psnr",
            np.asarray(hist.psnr, np.float32),
            graph_size=(v.panel_width - 30, 50),
            overlay_text=f"PSNR {hist.psnr[-1]:.2f} dB",
        )
    imgui.begin_child("log", v.panel_width - 30, 120, border=True)
    for line in list(job.log_tail)[-40:]:
        imgui.text_unformatted(line[:200])
    imgui.set_scroll_here_y(1.0)
    imgui.end_child()


def _compare_panel(v: Viewer) -> None:
    """Ground truth: a dataset view | the render from its camera | the error, with the view's PSNR."""
    c = v.cmp
    _, c.root = imgui.input_text("dataset##cmp", c.root, 1024)
    imgui.same_line()
    if imgui.button("Load##cmp") and not c.busy:
        v.compare_load()
    if c.busy:
        imgui.text_colored(f"{c.busy} ...", 1.0, 0.9, 0.4)
    if c.gt is None:
        imgui.text_wrapped("the scene's own dataset when its provenance names one; Load to open it")
        return
    splits = [s for s in ("train", "test") if c.counts.get(s, 0) > 0]
    if not splits:
        return
    split = c.split if c.split in splits else splits[0]
    _, si = imgui.combo("split##cmp", splits.index(split), splits)
    index = w.slider_int(imgui, "view##cmp", c.index, 0, c.counts[splits[si]] - 1)
    if (splits[si], index) != c.asked and not c.busy:
        v.compare_show(splits[si], index)
    _, c.enabled = imgui.checkbox("compare: truth | render | error", c.enabled)
    if c.result is not None and c.shown is not None:
        imgui.text(f"{c.shown[0]} view {c.shown[1]}: PSNR {c.result.psnr:.2f} dB")


def _path_panel(v: Viewer) -> None:
    """The camera-path editor: keyframes from the current view, their times and order, preview, export."""
    ed = v.path_editor
    if imgui.button("Add view"):
        ed.add(v.camera.c2w(), v.camera.settings.fov_y_deg)
    imgui.same_line()
    if imgui.button("Stop" if ed.playing else "Play"):
        if ed.playing:
            ed.playing = False
        else:
            ed.play()
    imgui.same_line()
    imgui.text(
        f"{len(ed.keyframes)} keyframes, {ed.path().seconds:.1f} s" if ed.keyframes else "no keyframes"
    )
    for i, k in enumerate(list(ed.keyframes)):
        imgui.push_id(f"key{i}")
        if imgui.button(f"k{i}"):
            v.camera.set_c2w(k.c2w)
            v.camera.settings.fov_y_deg = k.fov_deg
        imgui.same_line()
        imgui.push_item_width(80)
        t = w.input_float(imgui, "s", k.time, 0.0, 1e6, "%.2f")
        imgui.pop_item_width()
        if t != k.time:
            ed.set_time(i, t)
        for label, step in (("^", -1), ("v", 1)):
            imgui.same_line()
            if imgui.button(label):
                ed.move(i, step)
        imgui.same_line()
        if imgui.button("x"):
            ed.delete(i)
        imgui.pop_id()
    ed.fps = w.input_float(imgui, "path fps", ed.fps, 1.0, 240.0, "%.0f")
    ed.width, ed.height = w.input_int2(imgui, "path WxH", (ed.width, ed.height), 16, MAX_SIDE)
    _, ed.file = imgui.input_text("path file", ed.file, 1024)
    if imgui.button("Save path"):
        v.notify(ed.save())
    imgui.same_line()
    if imgui.button("Load path"):
        v.notify(ed.load())
    _, ed.video = imgui.input_text("path video", ed.video, 1024)
    if imgui.button("Export video"):
        v.export_path_video()


def _export_panel(v: Viewer) -> None:
    e = v.settings.export
    e.shot_width, e.shot_height = w.input_int2(imgui, "shot WxH", (e.shot_width, e.shot_height), 16, MAX_SIDE)
    if imgui.button("Screenshot (F12)"):
        v.screenshot()
    imgui.text_wrapped(f"into {e.folder}/ (PNG + camera JSON)")
    imgui.separator()
    e.frames = w.input_int(imgui, "frames", e.frames, 1, 100_000)
    e.fps = w.input_int(imgui, "fps", e.fps, 1, 240)
    e.elevation = w.slider_float(imgui, "elevation", e.elevation, -80.0, 80.0)
    e.radius = w.input_float(imgui, "radius (0 auto)", e.radius, 0.0, 1e6)
    e.video_width, e.video_height = w.input_int2(
        imgui, "video WxH", (e.video_width, e.video_height), 16, MAX_SIDE
    )
    _, e.video_path = imgui.input_text("video", e.video_path, 1024)
    task: Any = v.export
    if task is not None and not task.finished:
        imgui.progress_bar(task.fraction, (v.panel_width - 110, 0), f"{task.kind} {task.done}/{task.total}")
        imgui.same_line()
        if imgui.button("Cancel##export"):
            task.cancel()
    elif imgui.button("Turntable"):
        try:
            v.turntable()
        except ValueError as err:
            v.notify(str(err), "error")


_SECTIONS: tuple[tuple[str, tuple[Callable[[Viewer], None], ...]], ...] = (
    ("Scene", (_scene_panel,)),
    ("Camera", (_camera_panel,)),
    ("Render", (_render_panel, _stats_panel)),
    ("Overlays", (_overlay_panel,)),
    ("Camera path", (_path_panel,)),
    ("Compare", (_compare_panel,)),
    ("Training", (_training_panel,)),
    ("Export", (_export_panel,)),
)
"""The panel's collapsing sections, in order, and what each draws."""
