"""Image quality metrics: PSNR, SSIM (scikit-image) and LPIPS when its weights are already on disk."""

from __future__ import annotations

import math
import resource
from pathlib import Path
from typing import Any

import numpy as np


def psnr_from_mse(mse: float) -> float:
    """PSNR in dB of images in [0, 1] from their mean squared error: -10 log10(max(mse, 1e-12))."""
    return float(-10.0 * math.log10(max(mse, 1e-12)))


def psnr(pred: np.ndarray, target: np.ndarray) -> float:
    """PSNR in dB of images ``[H, W, 3]`` in [0, 1]: -10 log10(mean squared error)."""
    mse = float(np.mean((np.asarray(pred, np.float64) - np.asarray(target, np.float64)) ** 2))
    return psnr_from_mse(mse)


def ssim(pred: np.ndarray, target: np.ndarray) -> float:
    """Structural similarity of ``[H, W, 3]`` images in [0, 1] (skimage, channel_axis=-1, data_range=1)."""
    from skimage.metrics import structural_similarity

    p = np.asarray(pred, np.float64)
    t = np.asarray(target, np.float64)
    win = min(7, p.shape[0], p.shape[1])
    if win % 2 == 0:
        win -= 1
    return float(structural_similarity(p, t, channel_axis=-1, data_range=1.0, win_size=win))


class Lpips:
    """LPIPS (AlexNet) if the `lpips` package and every weight file are present locally; never downloads."""

    def __init__(self, model: Any) -> None:
        self.model = model

    @staticmethod
    def try_load() -> Lpips | None:
        """The metric, or None when the package or its weights are missing (nothing is fetched)."""
        try:
            import lpips  # type: ignore[import-not-found]
            import torch
        except Exception:
            return None
        try:
            hub = Path(torch.hub.get_dir()) / "checkpoints"
            if not any(hub.glob("alexnet-owt-*.pth")):
                return None
            lin = Path(lpips.__file__).parent / "weights" / "v0.1" / "alex.pth"
            if not lin.exists():
                return None
            model = lpips.LPIPS(net="alex", verbose=False)
            model.eval()
            return Lpips(model)
        except Exception:
            return None

    def __call__(self, pred: np.ndarray, target: np.ndarray) -> float:
        """LPIPS distance of ``[H, W, 3]`` images in [0, 1] (lower is better)."""
        import torch

        def prep(a: np.ndarray) -> torch.Tensor:
            return torch.as_tensor(np.asarray(a, np.float32)).permute(2, 0, 1)[None] * 2.0 - 1.0

        with torch.no_grad():
            return float(self.model(prep(pred), prep(target)).item())


def reset_peak_ram() -> bool:
    """Start a new peak-RAM window: Linux resets the process's high-water mark (``VmHWM``) to its current
    resident size when 5 is written to ``/proc/self/clear_refs``. False where that is not possible (then
    `peak_ram_mb` is the peak since the process started)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_ram_mb() -> float:
    """Peak resident memory of this process, MiB: since the last `reset_peak_ram` (``VmHWM``), else since
    it started (``ru_maxrss``)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return float(line.split()[1]) / 1024.0  # kB
    except (OSError, ValueError, IndexError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
