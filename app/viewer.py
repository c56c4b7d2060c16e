"""The interactive viewer: window, input, frame scheduling, overlays, panels, hot reload, export.

One :meth:`Viewer.step` is one UI frame: poll events, move the camera (key motion scaled by the frame
time), follow background work (render worker, scene loader, training job, export), submit a new render
request when the view changed (small while moving, refined to full resolution in bands when still),
upload the newest frame, draw it with overlays and the ImGui panels into an offscreen framebuffer, and
copy that to the window. Nothing in the loop waits for the renderer.
"""

from __future__ import annotations

import json
import math
import os
import sys
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass
from typing import Any

import glfw
import imgui
import moderngl
import numpy as np

from app.backend_control import BackendMixin, wrap_backend
from app.camera_control import CameraController
from app.compare_control import CompareMixin
from app.dialogs import DialogMixin
from app.dynres import DynamicResolution
from app.export import ExportTask, save_png, window_capture_path
from app.export_control import ExportMixin
from app.frame_scheduling import STILL_DELAY_S, FrameSchedulingMixin
from app.imgui_input import LatchedGlfwRenderer
from app.input import KEY_DT_CAP_S, InputMixin
from app.jobs import JobConfig, JobState, TrainingJob
from app.overlay_control import OverlayMixin
from app.overlays import OverlayRenderer
from app.panels import PANEL_WIDTH
from app.path_editor import PathEditor
from app.presenter import FramePresenter
from app.progress_events import one_line
from app.render_worker import FrameResult, RenderWorker, prepare_for_backend
from app.scene_source import SceneLoader
from app.settings import ViewerSettings
from app.window import create_window, destroy_window

_NO_WINDOW: Any = None
"""glfw's clipboard functions take no window any more (passing one is deprecated)."""
MAX_UI_HZ = 30.0
"""UI frame rate cap while the camera moves."""


@dataclass
class FrameTiming:
    """Per-frame breakdown of the UI thread, milliseconds."""

    frame_ms: float = 0.0
    upload_ms: float = 0.0
    ui_ms: float = 0.0
    draw_ms: float = 0.0
    max_frame_ms: float = 0.0
    fps: float = 0.0
    """Displayed render frames per second (new frames shown)."""
    ui_fps: float = 0.0


class Viewer(
    InputMixin, OverlayMixin, DialogMixin, CompareMixin, ExportMixin, FrameSchedulingMixin, BackendMixin
):
    """The viewer window. ``scene`` is a renderer Scene; ``backend`` a renderer backend."""

    def __init__(
        self,
        scene: Any,
        scene_name: str,
        backend: Any,
        size: tuple[int, int] = (1280, 800),
        notice: str = "",
        settings: ViewerSettings | None = None,
        title: str = "KiloNeRF studio",
        render_process: bool = True,
    ) -> None:
        self.settings = settings or ViewerSettings()
        self.title = title
        self.window, self.ctx = create_window(size[0], size[1], title)
        # a context of its own, made current at every step: another viewer in this process (or one closed
        # earlier) never lends this one its windows, open sections or sizes
        self.imgui_context = imgui.create_context()
        imgui.set_current_context(self.imgui_context)
        imgui.get_io().ini_file_name = None  # type: ignore[assignment]
        self.imgui = LatchedGlfwRenderer(self.window)
        self.init_input()
        self.presenter = FramePresenter(self.ctx)
        self.compare_presenter = FramePresenter(self.ctx)
        self.overlays = OverlayRenderer(self.ctx)
        self.fbo: moderngl.Framebuffer | None = None
        backend = wrap_backend(backend, self.settings, render_process)
        self.render_process = render_process
        parallel = len(getattr(backend, "children", [])) or 1
        self.worker = RenderWorker(backend, on_publish=glfw.post_empty_event, threads=parallel)
        self.loader = SceneLoader(prepare=lambda s: prepare_for_backend(self.worker.backend, s))
        self.camera = CameraController()
        self.dynres = DynamicResolution()
        self.apply_profile(backend)
        self.messages: deque[tuple[float, str, str]] = deque(maxlen=8)
        self.job: TrainingJob | None = None
        self.export: ExportTask | None = None
        self.frame: FrameResult | None = None
        self.timing = FrameTiming()
        self.scene: Any = None
        self.scene_name = ""
        self.scene_version = 0
        self.view_k = 0
        self._pixel_buffer: Any = None
        self._draw_key: Any = None
        self._input_seen = False
        self._reported: set[str] = set()
        self.tapped: set[int] = set()
        """Keys pressed since the last frame (a tap shorter than a frame still moves the camera once)."""
        self.show_help = False
        self.path_editor = PathEditor()
        """The camera-path editor (Camera path panel)."""
        self.panel_width = float(PANEL_WIDTH)
        """Width of the side panel in window pixels (the user resizes it by its right edge)."""
        self.panel_collapsed = False
        """The panel folded to its title bar: the image takes the whole window."""
        self._last_draw = 0.0
        self._pbo_failed = False
        self._transfer_said: tuple[str, str] | None = None
        """The CUDA-to-GL transfer last announced (mode, why): said once, not at every resize."""
        self.held: set[int] = set()
        self._buttons: set[int] = set()
        self._drag_on_scene = False
        self._cursor: tuple[float, float] | None = None
        self._press_at: tuple[float, float] | None = None
        self._last_time = time.perf_counter()
        self._view_key: Any = None
        self._last_change = 0.0
        self._submitted: Any = None
        self._overlay_key: Any = None
        self._shown_frames: deque[float] = deque(maxlen=30)
        self._ui_frames: deque[float] = deque(maxlen=30)
        self.init_dialogs()
        self.set_scene(scene, scene_name)
        if os.path.isfile(scene_name):
            self.remember_scene(os.path.abspath(scene_name))
        self.reset_view()
        self.notify(f"rendering with the {self.settings.render.backend} backend", echo=False)
        if notice:
            self.notify(notice)

    # ---- messages ------------------------------------------------------------------------------------
    def notify(self, text: str, level: str = "info", echo: bool = True) -> None:
        """Show ``text`` in the status area (and print it once, unless ``echo`` is False)."""
        self.messages.append((time.time(), text, level))
        if echo:
            print(f"[viewer] {text}", flush=True)

    # ---- scene ---------------------------------------------------------------------------------------
    def set_scene(self, scene: Any, name: str, prepared: Any = None) -> None:
        """Show ``scene`` from now on (``prepared`` = the backend's prepared form, made here if None)."""
        if prepared is None:
            prepared = prepare_for_backend(self.worker.backend, scene)
        self.scene, self.scene_name = scene, name
        self.scene_version = self.worker.set_scene(prepared)
        self.init_compare()
        r = self.settings.render
        r.ert_threshold = float(getattr(scene, "ert_threshold", r.ert_threshold))
        r.background = tuple(float(c) for c in getattr(scene, "background", r.background))  # type: ignore[assignment]
        self._overlay_key = None

    def open_scene(self, path: str) -> None:
        """Load ``path`` in the background; on failure the current scene stays and the error is shown."""
        self.loader.request(path)
        self.notify(f"loading {path} ...")

    def scene_center(self) -> np.ndarray:
        """Centre of the scene box [3]."""
        return 0.5 * (np.asarray(self.scene.bbox_min, float) + np.asarray(self.scene.bbox_max, float))

    def scene_radius(self) -> float:
        """Half the diagonal of the scene box."""
        return 0.5 * float(np.linalg.norm(np.asarray(self.scene.bbox_max) - np.asarray(self.scene.bbox_min)))

    # ---- camera --------------------------------------------------------------------------------------
    def reset_view(self) -> None:
        """Training view 0 when the scene stores cameras, else a view of the whole box from the front-left."""
        cams = getattr(self.scene, "cameras", None)
        if cams is not None and len(cams.c2w) > 0:
            self.set_view(0)
            return
        fov = math.radians(self.camera.settings.fov_y_deg)
        dist = self.scene_radius() / math.sin(fov / 2) * 1.05
        c = self.scene_center()
        el, az = math.radians(25.0), math.radians(-60.0)
        eye = c + dist * np.array([math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)])
        self.camera.look_at(eye, c)

    def set_view(self, k: int) -> None:
        """Jump to stored training camera ``k`` (its pose exactly, its vertical field of view)."""
        cams = self.scene.cameras
        k = int(k) % len(cams.c2w)
        self.view_k = k
        self.camera.settings.fov_y_deg = math.degrees(2 * math.atan(0.5 * cams.height / cams.focal))
        self.camera.set_c2w(np.asarray(cams.c2w[k], np.float64), pivot=self.scene_center())

    def viewport(self) -> tuple[int, int, int, int]:
        """Where the image goes, (x, y, w, h) in framebuffer pixels from the bottom-left: the window less the
        side panel (docked on the left; the whole window when the panel is hidden or collapsed)."""
        fbw, fbh = glfw.get_framebuffer_size(self.window)
        ww = max(1, glfw.get_window_size(self.window)[0])
        panel = self.settings.show_ui and not self.panel_collapsed
        x = min(round(self.panel_width * fbw / ww), max(0, fbw - 64)) if panel else 0
        return x, 0, max(1, fbw - x), max(1, fbh)

    def render_camera(self, scale: float = 1.0, size: tuple[int, int] | None = None) -> Any:
        """The renderer Camera for the current view at ``scale`` × the image viewport (or ``size``)."""
        from renderer.camera import Camera

        w, h = size if size is not None else self.viewport()[2:]
        w, h = max(1, round(w * scale)), max(1, round(h * scale))
        return Camera(width=w, height=h, focal=self.camera.focal(h), c2w=self.camera.c2w())

    def pose_json(self) -> str:
        """The current view as camera JSON (framebuffer size)."""
        return json.dumps(self.render_camera().to_dict(), indent=2)

    def copy_pose(self) -> None:
        """Put the current view's camera JSON on the clipboard."""
        glfw.set_clipboard_string(_NO_WINDOW, self.pose_json())
        self.notify("camera pose copied to the clipboard")

    def paste_pose_from_clipboard(self) -> bool:
        """Jump to the camera JSON on the clipboard."""
        text = glfw.get_clipboard_string(_NO_WINDOW)
        return self.paste_pose(text if isinstance(text, bytes | str) else b"")

    def paste_pose(self, text: str | bytes) -> bool:
        """Jump to a camera JSON pose (vertical field of view from its focal); False with one red status
        line if the text is not a usable camera (untrusted: ``app.camera_json.camera_from_json``)."""
        from app.camera_json import camera_from_json
        from renderer.camera import CameraFormatError

        try:
            cam = camera_from_json(text, name="clipboard")
        except (CameraFormatError, OverflowError, ValueError) as e:
            self.notify(f"paste: not a camera JSON ({one_line(str(e), 300)})", "error")
            return False
        self.camera.settings.fov_y_deg = math.degrees(2 * math.atan(0.5 * cam.height / cam.focal))
        self.camera.set_c2w(cam.c2w, pivot=self.scene_center())
        return True

    # ---- background work -----------------------------------------------------------------------------
    def poll_background(self) -> None:
        """Follow the scene loader, the training job (hot reload) and the export task."""
        for res in self.loader.poll():
            if res.error is not None:
                self.notify(f"could not load scene: {res.error} (keeping {self.scene_name})", "error")
            else:
                self.set_scene(res.scene, res.path, res.prepared)
                self.remember_scene(os.path.abspath(res.path))
                self.notify(f"loaded {res.path}")
        if self.job is not None:
            was_running = self.job.running
            self.job.poll()
            for problem in self.job.pop_problems():  # malformed progress lines: logged once by the job
                self.notify(f"training: {problem}", "error", echo=False)
            new = self.job.pop_new_scenes()
            if new and self.settings.train.auto_reload:
                self.open_scene(new[-1])
            if was_running and not self.job.running:
                level = "error" if self.job.state.value == "failed" else "info"
                self.notify(f"training: {self.job.message}", level)
        if self.export is not None and self.export.finished and not self.export.reported:
            self.export.reported = True
            self.notify(self.export.message, "error" if self.export.error else "info")
        if self.worker.error:
            err, self.worker.error = self.worker.error, None
            if not self.fall_back_from_gpu(err):
                self.notify(err, "error")

    def start_training(self) -> None:
        """Start (or resume) a training job from the training panel's form."""
        t = self.settings.train
        if self.job is not None and self.job.running:
            self.notify("a training job is already running", "error")
            return
        cfg = JobConfig(data=t.data, out=t.out, preset=t.preset, stage=t.stage)
        if t.data.strip():
            self.remember_dataset(cfg.absolute().data)
        if self.job is None or self.job.config != cfg:
            self.job = TrainingJob(cfg)
        self.job.start()
        for problem in self.job.pop_problems():
            self.notify(f"training: {problem}", "error", echo=False)
        if self.job.state == JobState.FAILED:
            self.notify(f"training: {self.job.message}", "error")
            return
        self.notify(f"training started: {' '.join(self.job.last_command)}".strip())

    def render_options(self) -> Any:
        """RenderOptions of the render panel."""
        return self.settings.render.options()

    # ---- overlays ------------------------------------------------------------------------------------
    # ---- drawing -------------------------------------------------------------------------------------
    def _ensure_fbo(self, w: int, h: int) -> moderngl.Framebuffer:
        """The offscreen frame (w × h) everything is drawn into, and the window's framebuffer at that size."""
        if self.fbo is None or self.fbo.size != (w, h):
            self.ctx.screen.use()  # never release the bound framebuffer (moderngl rebinds it afterwards)
            if self.fbo is not None:
                for tex in self.fbo.color_attachments:
                    tex.release()
                self.fbo.release()
            self.fbo = self.ctx.framebuffer(color_attachments=[self.ctx.texture((w, h), 4)])
        return self.fbo

    def step(self, dt: float | None = None) -> None:
        """One UI frame (``dt`` overrides the measured frame time, for tests)."""
        t0 = time.perf_counter()
        imgui.set_current_context(self.imgui_context)
        glfw.make_context_current(self.window)
        glfw.poll_events()
        self.imgui.process_inputs()
        measured, self._last_time = t0 - self._last_time, t0
        self.apply_held_keys(min(measured, KEY_DT_CAP_S) if dt is None else dt)
        pose = self.path_editor.advance(measured if dt is None else dt)  # the path preview plays
        if pose is not None:
            self.camera.set_c2w(pose[0])
            self.camera.settings.fov_y_deg = pose[1]
        self.poll_background()
        fbw, fbh = glfw.get_framebuffer_size(self.window)
        if fbw <= 0 or fbh <= 0:  # minimised
            time.sleep(0.02)
            return
        fbo = self._ensure_fbo(fbw, fbh)
        viewport = self.viewport()
        vw, vh = viewport[2:]
        if self.pbo_path_active() and not self._pbo_failed:
            t1 = time.perf_counter()
            self.render_into_pixel_buffer(t0, vw, vh)
        else:
            self.schedule_render(t0, vw, vh)
            t1 = time.perf_counter()
            self.take_frame()
        t2 = time.perf_counter()
        if not self._needs_redraw(t2, fbw, fbh, viewport[0]):
            # nothing visible changed (the camera may move, but the shown frame is the last render):
            # skip drawing; on a CPU-only machine the GL work is software and competes with the renderer
            self.timing.frame_ms = (time.perf_counter() - t0) * 1e3
            return
        fbo.use()
        bg = self.settings.render.background
        self.ctx.clear(bg[0], bg[1], bg[2], 1.0)
        if not self.draw_compare(viewport):  # compare mode: truth | render | error instead of the view
            self._draw_view(viewport)
        t3 = time.perf_counter()
        if self.settings.show_ui:
            from app.panels import draw_panels

            imgui.new_frame()
            try:
                draw_panels(self)
            finally:  # an ImGui frame is always closed, or the next one cannot start
                imgui.render()
            self.update_cursor()
            _ = self.ctx.error  # PyOpenGL (ImGui's renderer) raises on any stale GL error: clear it first
            self.imgui.render(imgui.get_draw_data())
        t4 = time.perf_counter()
        # to the window: a textured quad (moderngl's screen object keeps its first size, so no blit)
        self.ctx.screen.use()
        self.presenter.draw_texture(fbo.color_attachments[0], (0, 0, fbw, fbh))  # type: ignore[arg-type]
        glfw.swap_buffers(self.window)
        t5 = time.perf_counter()
        tm = self.timing
        tm.upload_ms, tm.draw_ms, tm.ui_ms = (t2 - t1) * 1e3, (t3 - t2) * 1e3, (t4 - t3) * 1e3
        tm.frame_ms = (t5 - t0) * 1e3
        tm.max_frame_ms = max(tm.max_frame_ms, tm.frame_ms)
        self._ui_frames.append(t5)
        tm.ui_fps = _rate(self._ui_frames)
        tm.fps = _rate(self._shown_frames)

    def _draw_view(self, viewport: tuple[int, int, int, int]) -> None:
        """The rendered frame over ``viewport`` and the overlays on it."""
        self.presenter.draw(viewport)
        if self.settings.overlays.any() and self.frame is not None:
            self.update_overlays()
            fc = self.frame.request.camera  # the shown frame's camera, scaled to the viewport
            self.overlays.draw(np.asarray(fc.c2w), fc.focal * viewport[3] / fc.height, viewport)

    def _needs_redraw(self, now: float, fbw: int, fbh: int, panel_x: int = 0) -> bool:
        """Whether this step must draw: a new frame or layout, panels in use, or stats older than 0.25 s."""
        o, f = self.settings.overlays, self.frame
        key = (
            id(f),
            f.rows_done if f is not None else -1,
            fbw,
            fbh,
            panel_x,
            (self.cmp.enabled, self.cmp.shown, id(self.cmp.result), self.show_help),
            self.settings.show_ui,
            o.box,
            o.grid,
            o.voxels,
            o.voxel_axis,
            o.voxel_lo,
            o.voxel_hi,
            o.frusta,
            o.depth_aware,
            self.scene_version,
            self.settings.render.background,
            len(self.messages),
        )
        on_scene = (self._buttons and self._drag_on_scene) or bool(self.held)  # moves only the camera
        ui_input = self._input_seen and not on_scene
        active = self.settings.show_ui and (ui_input or self._ui_wants("mouse") or self._ui_wants("keyboard"))
        stale = self.settings.show_ui and now - self._last_draw > 0.25
        if key == self._draw_key and not active and not stale:
            return False
        self._draw_key, self._last_draw, self._input_seen = key, now, False
        return True

    def read_frame(self) -> np.ndarray:
        """The last drawn frame (panels included when shown) as uint8 [H, W, 3], row 0 at the top."""
        assert self.fbo is not None
        w, h = self.fbo.size
        data = np.frombuffer(self.fbo.read(components=3, alignment=1), np.uint8).reshape(h, w, 3)
        return np.ascontiguousarray(data[::-1])

    def save_window(self) -> None:
        """Save the window as last drawn (panels included) as ``exports/window-YYYYmmdd-HHMMSS.png`` (F11);
        the PNG is encoded off the UI thread."""
        png = window_capture_path(self.settings.export.folder)
        image = self.read_frame()
        threading.Thread(target=save_png, args=(image, png), name="save-window").start()  # exit waits for it
        self.notify(f"saving the window as {png}")

    def is_idle(self) -> bool:
        """No input in progress and the view settled (the renderer may still be refining)."""
        settled = time.perf_counter() - self._last_change > STILL_DELAY_S
        return settled and not self._buttons and not self.held

    def pace(self, t0: float) -> None:
        """After a step that began at ``t0``: wait for events when settled (the worker posts an empty event
        per published frame, background progress polls at 10 Hz), else hold at most MAX_UI_HZ so the rest
        of the CPU goes to the renderer (on a CPU-only machine the GL drawing itself is software)."""
        if self.is_idle():
            busy = (self.job is not None and self.job.running) or (
                self.export is not None and not self.export.finished
            )
            glfw.wait_events_timeout(0.1 if busy or self.loader.loading else 0.5)
            return
        rest = 1.0 / MAX_UI_HZ - (time.perf_counter() - t0)
        if rest > 0:
            time.sleep(rest)

    def should_close(self) -> bool:
        """Whether the user closed the window."""
        return bool(glfw.window_should_close(self.window))

    def run(self) -> None:
        """The main loop, until the window closes. An unexpected error in a frame becomes a red message and
        the loop goes on (the last line of defence; the causes are fixed where they are found)."""
        try:
            while not self.should_close():
                t0 = time.perf_counter()
                try:
                    self.step()
                except Exception as e:  # noqa: BLE001 - nothing a user does may close the window
                    self.report_unexpected(e, "a frame")
                    time.sleep(0.05)  # a fault that repeats every frame must not spin
                self.pace(t0)
        finally:
            self.close()

    def report_unexpected(self, e: BaseException, where: str) -> None:
        """Show an unexpected error as one red line (its traceback printed once per distinct error)."""
        text = one_line(f"unexpected error in {where}: {type(e).__name__}: {e} (the viewer keeps running)")
        if text not in self._reported:
            self._reported.add(text)
            traceback.print_exception(e, file=sys.stderr)
            self.notify(text, "error", echo=False)

    def close(self) -> None:
        """Stop background work, remember the settings and close the window."""
        glfw.make_context_current(self.window)
        self.save_remembered_settings()
        if self.export is not None:
            self.export.cancel()
        if self.job is not None and self.job.running:
            self.job.cancel()
        self.worker.stop()
        if hasattr(self.worker.backend, "close"):
            self.worker.backend.close()
        self.release_pixel_buffer()
        try:
            _ = self.ctx.error
            imgui.set_current_context(self.imgui_context)
            self.imgui.shutdown()
            imgui.destroy_context(self.imgui_context)
        except Exception as e:  # a GL error while freeing ImGui's objects must not mask the real exit
            print(f"[viewer] ImGui shutdown: {type(e).__name__}", file=sys.stderr)
        destroy_window(self.window)


def _rate(stamps: deque[float]) -> float:
    """Events per second over the recorded time stamps."""
    if len(stamps) < 2 or stamps[-1] <= stamps[0]:
        return 0.0
    return (len(stamps) - 1) / (stamps[-1] - stamps[0])
