"""`diffseg` command line: one parser, one subcommand per job, one-line errors (exit 2).

Subcommands are registered by the package that owns them (`register(sub, parent)` of
`cli_image`, `temporal.cli`, `volume.cli` and `distributed`); this app layer is the only
place that knows them all.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
import threading
from importlib import import_module
from typing import Callable, Iterator, Sequence

from diffseg_core import software_version
from diffseg_core.cli_args import CommandResult
from diffseg_core.errors import DiffSegError
from diffseg_core.io import output_lock, protect_inputs, remove_stale_temporaries

from .settings import add_settings_args, apply_settings, name_flags

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


def common_parent() -> argparse.ArgumentParser:
    """Options every subcommand takes: output control and settings."""
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("output control")
    # SUPPRESS: left out, an option sets nothing, so the subcommand's copy does not reset
    # what was given before the subcommand (`diffseg -q video ...` = `diffseg video ... -q`)
    g.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                   help="no progress bars and no summary line (errors and warnings still print)")
    g.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                   help="debug logging and full tracebacks")
    g.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                   help="print the command's summary as one JSON line on stdout")
    add_settings_args(p.add_argument_group("settings"))
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
    parser.add_argument("--version", action="version", version=f"diffseg-vv {software_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    from . import cli_image

    cli_image.register(sub, parent)
    from temporal import cli as temporal_cli
    from volume import cli as volume_cli
    from . import cli_join, distributed

    temporal_cli.register(sub, parent)
    volume_cli.register(sub, parent)
    cli_join.register(sub, parent)
    distributed.register(sub, parent)
    ev_sub = _group(sub, parent, "evaluate", "score predicted labels against ground truth (JSON)", "KIND")
    temporal_cli.register_evaluate(ev_sub, parent)
    volume_cli.register_evaluate(ev_sub, parent)
    ex_sub = _group(sub, parent, "export", "convert outputs to other tools' formats (DAVIS, COCO RLE, MOT)", "FORMAT")
    temporal_cli.register_export(ex_sub, parent)
    return parser


#: the subcommands that are groups of subcommands (``evaluate video``), and where argparse keeps their choice
GROUPS = {"evaluate": "evaluate_kind", "export": "export_kind"}


def _group(sub: "argparse._SubParsersAction", parent: argparse.ArgumentParser, name: str, help: str,
           metavar: str) -> "argparse._SubParsersAction":
    """A subcommand that takes one of its own subcommands (registered by the packages)."""
    group = sub.add_parser(name, help=help, parents=[parent]).add_subparsers(dest=GROUPS[name], metavar=metavar)
    group.required = True
    return group


#: what a command loads that initialises C++ extensions, imported first with Ctrl-C held: a
#: KeyboardInterrupt raised while torch's import runs Python from C++ aborts the process
#: (pybind11: "terminate called after throwing ... error_already_set", no clean-up)
PRELOAD = {"image": ("torch",), "video": ("torch",), "volume": ("torch",), "run": ("torch", "pytorch_lightning")}


@contextlib.contextmanager
def interrupts_held() -> "Iterator[None]":
    """Ctrl-C inside the block is recorded, not raised, and delivered when the block ends
    (`KeyboardInterrupt` with Python's default handler). Main thread only; elsewhere a no-op."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    got: list[int] = []
    prev = signal.signal(signal.SIGINT, lambda signum, frame: got.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.SIG_DFL if prev is None else prev)  # None: set outside Python
    if got and prev is not signal.SIG_IGN:
        signal.raise_signal(signal.SIGINT)  # the handler that was there before acts on it


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s" if verbose else "%(message)s",
        stream=sys.stderr,
    )
    if not verbose:
        # libraries' own chatter (a damaged TIFF's tags, a NIfTI header fixed up on load): the
        # problem, when it is one, reaches the user as our one error line; -v shows it all
        for noisy in ("diffusers", "transformers", "pytorch_lightning", "lightning", "lightning.pytorch",
                      "lightning_fabric", "highdicom"):  # highdicom: a line per module copied into a DICOM-SEG
            logging.getLogger(noisy).setLevel(logging.ERROR)
        for reader in ("tifffile", "nibabel", "pydicom"):  # they log what they recover from as errors
            logging.getLogger(reader).setLevel(logging.CRITICAL)


#: argparse destinations that hold input paths, in every subcommand.
INPUT_ARGS = ("images", "inputs", "source", "frames", "segments", "input", "labels", "pred", "gt", "tracked", "image")


def _input_paths(args: argparse.Namespace) -> list[str]:
    out: list[str] = []
    for name in INPUT_ARGS:
        v = getattr(args, name, None)
        if isinstance(v, (str, os.PathLike)):
            out.append(os.fspath(v))
        elif isinstance(v, (list, tuple)):
            out.extend(os.fspath(x) for x in v if isinstance(x, (str, os.PathLike)))
    return [p for p in out if os.path.exists(p)]


def _report(args: argparse.Namespace, result: "CommandResult | int | None") -> int:
    """The end of every command: its summary line on stderr (not with -q, unless it failed),
    its JSON summary on stdout with --json; returns the exit code."""
    if not isinstance(result, CommandResult):
        return int(result or 0)
    if result.code or not getattr(args, "quiet", False):
        print(result.line, file=sys.stderr)
    if getattr(args, "json", False):
        print(json.dumps(result.doc), flush=True)
    return result.code


def _subcommands(parser: argparse.ArgumentParser) -> "dict[str, argparse.ArgumentParser]":
    """``{name: parser}`` of ``parser``'s subcommands (empty when it has none)."""
    sub = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
    return dict(sub.choices) if sub is not None else {}


def _subparser(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    """The parser of the command ``args`` came from (``evaluate video`` included)."""
    for dest in ("command", GROUPS.get(getattr(args, "command", ""), "")):
        subs = _subcommands(parser)
        if not subs:
            break
        if getattr(args, dest, None) in subs:
            parser = subs[getattr(args, dest)]
    return parser


def main(argv: "Sequence[str] | None" = None) -> int:
    """Entry point of the `diffseg` console script. Returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    verbose = bool(getattr(args, "verbose", False))
    _setup_logging(verbose)
    try:
        sections = {name: _subcommands(parser)[name] for name in getattr(args, "settings_sections", ())}
        args.section_settings = apply_settings(args, _subparser(parser, args), args.command, sections)
        args.section_parsers = sections  # their options name the errors of prefixed settings
    except DiffSegError as exc:
        print(f"diffseg {args.command}: error: {exc}", file=sys.stderr)
        return 2
    from diffseg_core.progress import set_progress_enabled

    set_progress_enabled(not getattr(args, "quiet", False))
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        with contextlib.ExitStack() as stack:
            stack.enter_context(protect_inputs(_input_paths(args)))  # no output may replace an input
            if getattr(args, "output_folder", False):
                # one command per output folder; temporary files of a killed run are removed
                stack.enter_context(output_lock(args.output, f"diffseg {args.command}"))
                remove_stale_temporaries(args.output)
            with interrupts_held():
                for module in PRELOAD.get(args.command, ()):
                    import_module(module)
            return _report(args, func(args))
    except DiffSegError as exc:
        if verbose:
            log.exception("failed")
        print(f"diffseg {args.command}: error: {name_flags(str(exc), _subparser(parser, args))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # (the clean-up ran as it propagated; the caller's handler is left as it was)
        print(f"diffseg {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader of stdout went away (`diffseg evaluate ... | head`): not an error of ours
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except OSError as exc:
        # Disk full, read-only output, unreadable input that slipped through: one line.
        if verbose:
            log.exception("failed")
        where = f" {exc.filename}" if getattr(exc, "filename", None) else ""
        print(f"diffseg {args.command}: error:{where} {exc.strerror or exc}", file=sys.stderr)
        return 2
    except MemoryError:
        if verbose:
            log.exception("failed")
        flags = [f for f in ("--size", "--batch-size") if f in _subparser(parser, args)._option_string_actions]
        hint = f" (try a smaller {' or '.join(flags)})" if flags else ""
        print(f"diffseg {args.command}: error: out of memory{hint}", file=sys.stderr)
        return 2


def console_main() -> None:
    """The ``diffseg`` console script: `main`, then exit with its code. After Ctrl-C the
    process ends at once with 130 (interpreter shutdown can otherwise re-raise the signal
    when it arrived in the middle of a library import, and the shell would see a kill)."""
    rc = main()
    if rc == 130:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the exit short
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(130)
    sys.exit(rc)


if __name__ == "__main__":  # pragma: no cover
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    console_main()
