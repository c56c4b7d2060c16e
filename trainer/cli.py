"""`python -m trainer`: run the whole pipeline, one stage, or evaluate a scene.

User errors (missing folder, bad dataset file, unwritable output, mismatched work folder, invalid setting,
malformed teacher or checkpoint, full disk) exit with code 2 and one line on stderr, never a traceback;
SIGINT / SIGTERM checkpoint and exit with 130 / 143.
"""

from __future__ import annotations

import argparse
import errno
import sys
from pathlib import Path
from typing import Any

from trainer.preset_names import PRESET_NAMES
from trainer.progress import STAGES, Cancelled


def _add_common(p: argparse.ArgumentParser, *, need_data: bool) -> None:
    p.add_argument(
        "--data",
        type=Path,
        required=need_data,
        help="dataset folder (Blender, transforms.json or NSVF layout)",
    )
    p.add_argument("--out", type=Path, default=None, help="output .kilo (run: default from the work folder)")
    p.add_argument(
        "--preset", default=None, help=f"training preset: {' | '.join(PRESET_NAMES)} (default cpu)"
    )
    p.add_argument("--workdir", type=Path, default=None, help="work folder (default OUT.work/)")
    p.add_argument(
        "--downscale", type=int, default=None, help="image downscale factor (default: the preset's)"
    )
    p.add_argument("--device", default="cpu", help="torch device: cpu or cuda")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--no-bar", action="store_true", help="no tqdm progress bars")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a preset field when the run starts, e.g. --set distill.steps=3000 (repeatable)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(prog="python -m trainer", description="KiloNeRF trainer")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="teacher -> occupancy -> distill -> finetune (resumable)")
    _add_common(run, need_data=True)
    for stage in STAGES:
        sp = sub.add_parser(stage, help=f"run only the {stage} stage in a work folder")
        _add_common(sp, need_data=False)
    ev = sub.add_parser("eval", help="PSNR / SSIM / LPIPS / ms per frame of a .kilo on a dataset split")
    ev.add_argument("scene", type=Path, help="the .kilo file (or a teacher file, W/teacher.pt)")
    ev.add_argument("--data", type=Path, required=True, help="dataset folder")
    ev.add_argument("--split", default="test", help="split (default test)")
    ev.add_argument("--downscale", type=int, default=1, help="image downscale factor")
    ev.add_argument("--limit", type=int, default=None, help="evaluate K evenly spaced views")
    ev.add_argument("--json", type=Path, default=None, help="write the results here as JSON")
    ev.add_argument("--save-dir", type=Path, default=None, help="save rendered PNGs here")
    ev.add_argument("--device", default="cpu", help="torch device: cpu or cuda")
    ev.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    return parser


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["distill.steps=3000", "teacher.grid_res=[64,128]"]`` -> nested dict (values parsed as JSON by
    `renderer.safe_json.parse_json`; a value that is not JSON is taken as a string)."""
    from renderer.safe_json import JsonLimitError, parse_json

    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        parts = key.strip().split(".")
        if not sep or not all(p.strip() for p in parts):
            raise ValueError(f"--set {item!r}: expected KEY=VALUE (KEY like distill.steps)")
        try:
            value = parse_json(raw, f"--set {key}", max_bytes=2**16)
        except JsonLimitError:
            value = raw
        node = out
        for part in parts[:-1]:
            nxt = node.setdefault(part, {})
            if not isinstance(nxt, dict):
                raise ValueError(f"--set {item!r}: {part} was given a value and fields")
            node = nxt
        if isinstance(node.get(parts[-1]), dict):
            raise ValueError(f"--set {item!r}: {parts[-1]} was given a value and fields")
        node[parts[-1]] = value
    return out


def _fail(message: str, code: int = 2) -> int:
    print(f"error: {' '.join(str(message).split())}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    args = build_parser().parse_args(argv)
    if args.threads is not None:
        if args.threads < 1:
            return _fail(f"--threads must be >= 1, got {args.threads}")
        from renderer.backends import set_cpu_threads

        set_cpu_threads(args.threads)
    from renderer.scene import SceneFormatError
    from trainer.data import DatasetError
    from trainer.errors import PipelineError
    from trainer.settings import PresetError

    user_errors: tuple[type[Exception], ...] = (DatasetError, SceneFormatError, PipelineError, PresetError)
    try:
        from trainer.workdir import resolve_device

        resolve_device(args.device)  # before anything is read or written
        if args.command == "eval":
            from trainer.eval import EvalError, run_eval

            try:
                run_eval(
                    args.scene,
                    args.data,
                    split=args.split,
                    downscale=args.downscale,
                    limit=args.limit,
                    json_out=args.json,
                    save_dir=args.save_dir,
                    device=args.device,
                )
            except EvalError as e:
                return _fail(str(e))
            return 0
        from trainer.pipeline import RunConfig, open_context, run_pipeline, run_stages

        if args.workdir is None:
            if args.out is None:
                return _fail(f"{args.command}: give --workdir W or --out SCENE.kilo")
            workdir = Path(str(args.out) + ".work")
        else:
            workdir = args.workdir
        try:
            overrides = parse_overrides(args.set)
        except ValueError as e:
            return _fail(str(e))
        cfg = RunConfig(
            data=args.data,
            out=args.out,
            workdir=workdir,
            preset=args.preset,
            downscale=args.downscale,
            device=args.device,
            progress_bar=not args.no_bar,
            overrides=overrides,
        )
        if args.command == "run":
            out = run_pipeline(cfg)
            print(f"wrote {out}")
            return 0
        ctx = open_context(cfg)
        from trainer.pipeline import stage_record

        if stage_record(ctx, args.command) is not None:
            print(
                f"stage {args.command} already finished in {ctx.workdir} "
                f"(delete {args.command}.done to redo it)"
            )
            return 0
        run_stages(ctx, [args.command])
        print(f"stage {args.command} finished")
        return 0
    except Cancelled as e:
        print(f"cancelled; rerun the same command to resume ({e})", file=sys.stderr)
        return e.exit_code
    except BrokenPipeError:  # the reader of stdout went away (``| head``)
        from renderer.cli import stdout_closed

        return stdout_closed()
    except user_errors as e:
        return _fail(str(e))
    except OSError as e:  # the disk or the file system (a write the trainer did not expect to fail)
        where = e.filename or "a file"
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            return _fail(f"no space left writing {where}")
        return _fail(f"{where}: {e.strerror or e}")
    except MemoryError:
        return _fail(f"{args.command}: out of memory; lower the batch sizes or resolutions (--set ...)")
    except RuntimeError as e:
        if _out_of_memory(e):
            reason = (str(e).splitlines() or [""])[0][:120]
            return _fail(
                f"{args.command}: out of memory ({reason}); lower the batch sizes or resolutions (--set ...)"
            )
        raise


def _out_of_memory(e: BaseException) -> bool:
    """Whether torch failed to allocate memory (CPU or GPU)."""
    import torch

    text = str(e)
    return isinstance(e, torch.OutOfMemoryError) or "can't allocate memory" in text or "out of memory" in text
