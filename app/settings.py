"""Viewer settings edited by the panels (plain dataclasses, no glfw/imgui), and their RenderOptions."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

VIEWS = ("rgb", "depth", "network")


@dataclass
class RenderSettings:
    """The render panel."""

    backend: str = "auto"
    """One of ``renderer.backends.BACKENDS``; the name of the backend in use once the viewer runs."""
    res_scale: float = 1.0
    """Resolution of the still frame relative to the window."""
    dynamic_res: bool = True
    """Render small while the camera moves to hold target_fps."""
    target_fps: float = 12.0
    """Frame rate to hold while moving (set from the backend's profile when the backend changes)."""
    ess: bool = True
    """Empty space skipping through the occupancy grid."""
    ert: bool = True
    """Early ray termination."""
    ert_threshold: float = 0.01
    """ERT transmittance threshold ε."""
    step_multiplier: float = 1.0
    """Marching step relative to the scene's step size."""
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)
    """Background colour."""
    view: str = "rgb"
    """rgb, depth (debug) or network (debug: colour by network id)."""
    processes: int = 1
    """Render processes working on consecutive frames at once (torch backend; 2 measured slower than 1
    on a shared, busy 2-core machine, so 1 by default)."""

    def options(self) -> Any:
        """The renderer's RenderOptions for these settings."""
        from renderer.render import RenderOptions

        return RenderOptions(
            ess=self.ess,
            ert=self.ert,
            ert_threshold=float(self.ert_threshold),
            step_multiplier=float(self.step_multiplier),
            background=(float(self.background[0]), float(self.background[1]), float(self.background[2])),
            output=self.view,
        )

    def key(self) -> tuple[Any, ...]:
        """Everything that changes the rendered pixels."""
        return (
            self.ess,
            self.ert,
            round(float(self.ert_threshold), 6),
            round(float(self.step_multiplier), 6),
            tuple(round(float(c), 4) for c in self.background),
            self.view,
        )


@dataclass
class OverlaySettings:
    """The overlay panel."""

    box: bool = False
    """Scene bounding box."""
    grid: bool = False
    """Network grid lines."""
    voxels: bool = False
    """Occupied voxels of the occupancy grid (points)."""
    voxel_axis: int = 2
    """Slice axis for voxels (0 x, 1 y, 2 z)."""
    voxel_lo: float = 0.0
    """Slice start as a fraction of the axis."""
    voxel_hi: float = 1.0
    """Slice end as a fraction of the axis."""
    frusta: bool = False
    """Training camera frusta."""
    depth_aware: bool = True
    """Fade overlay parts hidden behind the rendered surface."""

    def any(self) -> bool:
        """Whether any overlay is on."""
        return self.box or self.grid or self.voxels or self.frusta


@dataclass
class ExportSettings:
    """The export panel."""

    folder: str = "exports"
    """Where screenshots and videos go."""
    shot_width: int = 800
    """Screenshot width in pixels."""
    shot_height: int = 800
    """Screenshot height in pixels."""
    frames: int = 60
    """Turntable frame count."""
    fps: int = 30
    """Turntable frames per second."""
    elevation: float = 30.0
    """Turntable elevation in degrees."""
    radius: float = 0.0
    """Turntable radius (0: from the scene box)."""
    video_width: int = 400
    """Turntable width (even)."""
    video_height: int = 400
    """Turntable height (even)."""
    video_path: str = "exports/turntable.mp4"
    """Turntable output file."""


@dataclass
class TrainSettings:
    """The training panel's form."""

    data: str = ""
    """Dataset folder."""
    preset: str = "tiny"
    """Trainer preset."""
    out: str = "exports/trained.kilo"
    """Output .kilo."""
    stage: str = ""
    """One stage, or empty for all."""
    auto_reload: bool = True
    """Load each new .kilo the trainer writes."""


@dataclass
class ViewerSettings:
    """All panel state."""

    render: RenderSettings = field(default_factory=RenderSettings)
    overlays: OverlaySettings = field(default_factory=OverlaySettings)
    export: ExportSettings = field(default_factory=ExportSettings)
    train: TrainSettings = field(default_factory=TrainSettings)
    show_ui: bool = True
    """Draw the ImGui panels (H toggles)."""
    open_panels: tuple[str, ...] = ("Scene", "Camera", "Render")
    """Panels expanded when the window opens."""
