"""`diffseg` command line: one parser, one subcommand per job, one-line errors (exit 2).

Subcommands are registered by the package that owns them; `temporal` and `volume` are
imported lazily here (the core never imports them at module level).
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Callable, Sequence

from .errors import DiffSegError

log = logging.getLogger("diffseg")

EPILOG = """examples:
  diffseg image photo.jpg -o out/ --model tiny-random
  diffseg video clip.mp4 -o out/ --keyframe-every 4
  diffseg track frames/ --segments seg/ -o out/
  diffseg volume scan.nii.gz -o labels.nii.gz --window soft-tissue
  diffseg stack slices.tif -o labels.tif
  diffseg evaluate video pred/labels gt/masks
  diffseg run videos/ scans/ -o out/ --devices 2
"""

def _version() -> str:
    try:
        from importlib.metadata import version

        return version("diffseg-vv")
    except Exception:  # not installed (running from a checkout)
        from . import __version__

        return __version__

def common_parent() -> argparse.ArgumentParser:
    """Options every subcommand takes: --quiet and --verbose."""
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("output control")
    g.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    g.add_argument("-v", "--verbose", action="store_true", help="debug logging and full tracebacks")
    return p

def build_parser() -> argparse.ArgumentParser:
    parent = common_parent()
    parser = argparse.ArgumentParser(
        prog="diffseg",
        description="Unsupervised, zero-shot segmentation of images, videos and 3D volumes "
        "with DiffSeg (Stable Diffusion self-attention).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[parent],
    )
    parser.add_argument("--version", action="version", version=f"diffseg-vv {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    from . import cli_image

    cli_image.register(sub, parent)
    # Lazy imports: the app layer is the only place the core reaches the other packages.
    from temporal import cli as temporal_cli
    from volume import cli as volume_cli
    from . import distributed

    temporal_cli.register(sub, parent)
    volume_cli.register(sub, parent)
    distributed.register(sub, parent)
    ev = sub.add_parser("evaluate", help="score predicted labels against ground truth (JSON)",
                        parents=[parent])
    ev_sub = ev.add_subparsers(dest="evaluate_kind", metavar="KIND")
    ev_sub.required = True
    temporal_cli.register_evaluate(ev_sub, parent)
    volume_cli.register_evaluate(ev_sub, parent)
    return parser

def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s" if verbose else "%(message)s",
        stream=sys.stderr,
    )
    if not verbose:
        for noisy in ("diffusers", "transformers", "pytorch_lightning", "lightning", "lightning.pytorch",
                      "lightning_fabric"):
            logging.getLogger(noisy).setLevel(logging.ERROR)

def main(argv: "Sequence[str] | None" = None) -> int:
    """Entry point of the `diffseg` console script. Returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    verbose = bool(getattr(args, "verbose", False))
    _setup_logging(verbose)
    from .progress import set_progress_enabled

    set_progress_enabled(not getattr(args, "quiet", False))
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return int(func(args) or 0)
    except DiffSegError as exc:
        if verbose:
            log.exception("failed")
        print(f"diffseg {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"diffseg {args.command}: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:
        # Disk full, read-only output, unreadable input that slipped through: one line.
        if verbose:
            log.exception("failed")
        where = f" {exc.filename}" if getattr(exc, "filename", None) else ""
        print(f"diffseg {args.command}: error:{where} {exc.strerror or exc}", file=sys.stderr)
        return 2
    except MemoryError:
        print(f"diffseg {args.command}: error: out of memory (try a smaller --size or --batch-size)",
              file=sys.stderr)
        return 2

if __name__ == "__main__":  # pragma: no cover
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
