"""Quality and cost of a training run: teacher and student PSNR/SSIM, time and peak RAM per stage.

Reads a run's work folder (``<stage>.done`` records, ``elapsed.json``, ``run.json``) or, for a lone
``.kilo``, the provenance stored in it.

    python benchmarks/quality.py lego.kilo.work
    python benchmarks/quality.py assets/lego.kilo [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

STAGES = ("teacher", "occupancy", "distill", "finetune")


def _read(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def from_workdir(workdir: Path) -> dict[str, Any]:
    """Rows per stage from a work folder."""
    run = _read(workdir / "run.json") or {}
    elapsed = _read(workdir / "elapsed.json") or {}
    rows = []
    for stage in STAGES:
        rec = _read(workdir / f"{stage}.done")
        m = (rec or {}).get("metrics", {}) if rec else {}
        rows.append(
            {
                "stage": stage,
                "done": rec is not None,
                "steps": (rec or {}).get("steps"),
                "seconds": (rec or {}).get("seconds", elapsed.get(stage)),
                "peak_ram_mb": (rec or {}).get("peak_ram_mb"),
                "psnr": m.get("psnr") if isinstance(m, dict) else None,
                "ssim": m.get("ssim") if isinstance(m, dict) else None,
                "eval": f"{m.get('split')} views {m.get('views')}" if isinstance(m, dict) and m else "",
            }
        )
    return {"source": str(workdir), "preset": run.get("preset"), "data": run.get("data"), "rows": rows}


def from_scene(path: Path) -> dict[str, Any]:
    """Rows per stage from a .kilo's provenance."""
    from renderer.scene import load_scene

    prov = load_scene(path).provenance or {}
    secs = prov.get("stage_seconds", {})
    ram = prov.get("peak_ram_mb", {})
    steps = prov.get("steps", {})
    metrics = {
        "teacher": (prov.get("teacher_psnr"), prov.get("teacher_ssim")),
        "distill": (prov.get("distilled_student_psnr"), None),
        "finetune": (prov.get("student_psnr"), prov.get("student_ssim")),
    }
    rows = []
    for stage in STAGES:
        p, s = metrics.get(stage, (None, None))
        rows.append(
            {
                "stage": stage,
                "done": stage in secs,
                "steps": steps.get(stage),
                "seconds": secs.get(stage),
                "peak_ram_mb": ram.get(stage),
                "psnr": p,
                "ssim": s,
                "eval": f"{prov.get('eval_split', '')} split",
            }
        )
    return {"source": str(path), "preset": prov.get("preset"), "data": prov.get("dataset"), "rows": rows}


def _fmt(v: Any, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def format_table(result: dict[str, Any]) -> str:
    """The text table."""
    lines = [
        f"run: {result['source']}  preset: {result['preset']}  data: {result['data']}",
        f"{'stage':<11}{'steps':>8}{'time (s)':>10}{'peak RAM (MB)':>15}{'PSNR (dB)':>11}{'SSIM':>8}",
    ]
    total = 0.0
    for r in result["rows"]:
        total += float(r["seconds"] or 0)
        lines.append(
            f"{r['stage']:<11}{_fmt(r['steps'], 'd'):>8}{_fmt(r['seconds'], '.0f'):>10}"
            f"{_fmt(r['peak_ram_mb'], '.0f'):>15}{_fmt(r['psnr'], '.2f'):>11}{_fmt(r['ssim'], '.4f'):>8}"
        )
    lines.append(f"{'total':<11}{'':>8}{total:>10.0f}")
    lines.append("PSNR/SSIM: teacher after stage 1, student after distill and after finetune (same views)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Print the table (and write JSON when asked)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("source", type=Path, help="a work folder or a .kilo")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    if args.source.is_dir():
        result = from_workdir(args.source)
    elif args.source.exists():
        result = from_scene(args.source)
    else:
        print(f"error: {args.source}: not found", file=sys.stderr)
        return 2
    print(format_table(result))
    if args.json:
        from renderer.atomic import atomic_write_text

        try:
            atomic_write_text(args.json, json.dumps(result, indent=1) + "\n")
        except OSError as e:
            print(f"error: {args.json}: cannot write ({e.strerror or e})", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
