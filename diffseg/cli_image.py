"""`diffseg image IMG... -o OUTDIR`: segment still images (files, or folders of them) with DiffSeg.

Writes, per input ``<stem>.<ext>``:
    ``<stem>.png``          labels 1..K, 0 = none (palette PNG; 16-bit grayscale when K > 255)
    ``<stem>.json``         provenance and the segments: id, name, score, area
    ``<stem>_overlay.png``  segment colours and white contours over the image (unless --no-overlay),
                            with a legend of the segments' names when there is a vocabulary
    ``<stem>.npy``          int32 labels (with --npy)

Unreadable inputs are reported one line each (file and problem); the good ones are still
written and the exit code is 2 if any failed. Two inputs with the same stem get distinct
output names (``name``, ``name-2``, ...), reported on stderr.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from diffseg_core import software_version
from diffseg_core.cli_args import (CommandResult, add_segmenter_args, naming_config_from_args,
                                   segmenter_config_from_args)
from diffseg_core.errors import DiffSegError, InputError, OutputError
from diffseg_core.io import (IMAGE_EXTENSIONS, atomic_save_npy, atomic_write_text, draw_legend, label_areas,
                            overlay, read_image, save_image, save_labels_png, segment_ids)
from diffseg_core.naming import nouns_of_caption
from diffseg_core.progress import progress
from diffseg_core.types import SegmentNames

from .jobs import image_files

log = logging.getLogger("diffseg")


def register(sub: "argparse._SubParsersAction", parent: argparse.ArgumentParser) -> None:
    """Add the ``image`` subcommand."""
    p = sub.add_parser(
        "image", parents=[parent], help="segment images (labels PNG + overlay per image)",
        description="Segment still images with DiffSeg. Writes <stem>.png (labels), "
                    "<stem>_overlay.png and optionally <stem>.npy into OUTDIR.",
        epilog="examples:\n  diffseg image examples/shapes.png -o out/ --model tiny-random\n"
               "  diffseg image photos/*.jpg -o out/ --model models/stable-diffusion-v1-4 --refine",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("images", nargs="+", metavar="IMG", help="image files (png, jpg, bmp, tif, webp) or folders of them")
    p.add_argument("-o", "--output", required=True, metavar="OUTDIR", help="output folder (created)")
    p.add_argument("--npy", action="store_true", help="also write <stem>.npy (int32 labels 1..K)")
    p.add_argument("--no-overlay", action="store_true", help="do not write <stem>_overlay.png")
    add_segmenter_args(p)
    p.set_defaults(func=run_image, output_folder=True)


def register_evaluate(sub: "argparse._SubParsersAction", parent: argparse.ArgumentParser) -> None:
    """Images have no evaluate subcommand (video/volume own them)."""


def output_names(stem: str) -> tuple[str, str, str, str]:
    """The files one image may write: labels, overlay, npy, sidecar JSON."""
    return f"{stem}.png", f"{stem}_overlay.png", f"{stem}.npy", f"{stem}.json"


def output_stems(paths: Sequence[Path], out_dir: "Path | None" = None) -> list[str]:
    """Output stems, in input order, such that no two inputs share an output file and no
    output is an input: ``a/x.png, b/x.jpg -> x, x-2``; inputs ``x.png`` and
    ``x_overlay.png`` -> ``x``, ``x_overlay-2`` (``x``'s overlay is ``x_overlay.png``); an input
    inside ``out_dir`` keeps its file (``out/photo.png -> photo-2.png``).
    """
    taken: set[str] = set()
    if out_dir is not None:
        out_real = os.path.realpath(out_dir)
        for p in paths:
            if os.path.dirname(os.path.realpath(p)) == out_real:
                taken.add(p.name.lower())  # never write over an input
    stems: list[str] = []
    for p in paths:
        base = p.stem or "image"
        stem, k = base, 1
        while any(n.lower() in taken for n in output_names(stem)):
            k += 1
            stem = f"{base}-{k}"
        taken.update(n.lower() for n in output_names(stem))
        stems.append(stem)
    return stems


def run_image(args: argparse.Namespace) -> CommandResult:
    """Handler of ``diffseg image``: what was done, exit code 0 ok, 2 if any input failed."""
    t_start = time.perf_counter()
    config = segmenter_config_from_args(argparse.Namespace(**{**vars(args), "caption": False}))  # captions: per image
    out_dir = Path(args.output)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"{out_dir}: output exists and is not a folder")
    failed: list[str] = []
    paths: list[Path] = []
    for p in map(Path, args.images):  # a folder stands for its images, as in `run`
        if not p.is_dir():
            paths.append(p)
        elif files := image_files(p):
            paths += files
        else:
            _fail(failed, InputError(f"{p}: no image files in this folder ({', '.join(IMAGE_EXTENSIONS)})"))
    stems = output_stems(paths, out_dir)
    for p, s in zip(paths, stems):
        if s != (p.stem or "image"):
            print(f"diffseg image: note: {p} -> {s}.png (its own name would overwrite another input or output)",
                  file=sys.stderr)

    from diffseg_core.models import segmenter_info
    from diffseg_core.segmenter import DiffSegSegmenter

    segmenter = DiffSegSegmenter(config)
    _ = segmenter.model  # load now: a missing model is one error, not one per image
    if segmenter.model.is_random:
        log.warning("model 'tiny-random' has random weights: its segments are meaningless (a test model)")

    info = segmenter_info(segmenter)
    captioner = None
    if args.caption:  # a vocabulary per image: its caption's nouns (+ --vocab)
        from diffseg_core.caption import Captioner

        captioner = Captioner(args.captioner, config.device)
    done = 0
    bs = 1 if captioner is not None else max(1, int(config.batch_size))
    bar = progress(total=len(paths), desc="images", unit="img")
    try:
        for s in range(0, len(paths), bs):
            batch: list[tuple[Path, str, np.ndarray]] = []
            for p, stem in zip(paths[s:s + bs], stems[s:s + bs]):
                try:
                    batch.append((p, stem, read_image(p)))
                except InputError as exc:
                    _fail(failed, exc)
                    bar.update(1)
            if not batch:
                continue
            vocab, caption = None, None
            if captioner is not None:
                caption = captioner.caption(batch[0][2])
                vocab = naming_config_from_args(args, extra=nouns_of_caption(caption)).vocabulary
            try:
                segs = segmenter.segment([im for _, _, im in batch], compact_labels=True,  # uint8: huge images
                                         vocabulary=vocab)
            except InputError:
                segs = None
            if segs is None:  # one bad image (e.g. extreme aspect ratio): run them one by one
                segs, kept = [], []
                for item in batch:
                    try:
                        segs.append(segmenter.segment([item[2]], compact_labels=True, vocabulary=vocab)[0])
                        kept.append(item)
                    except InputError as exc:
                        _fail(failed, InputError(f"{item[0]}: {exc}"))
                        bar.update(1)
                batch = kept
            for (p, stem, im), seg in zip(batch, segs):
                try:
                    meta = {"software": f"diffseg-vv {software_version()}", "source": str(p), "segmenter": info}
                    if caption is not None:
                        meta["caption"] = caption
                    write_image_outputs(out_dir, stem, im, seg.labels, npy=args.npy,
                                        with_overlay=not args.no_overlay, meta=meta, names=seg.names)
                    done += 1
                except (OutputError, ValueError) as exc:
                    if isinstance(exc, OutputError) and "space" in str(exc):
                        raise  # disk full: the next image will not fit either
                    _fail(failed, DiffSegError(f"{p}: {exc}"))
                bar.update(1)
    finally:
        bar.close()
    secs = time.perf_counter() - t_start
    return CommandResult(f"diffseg image: {done} done, {len(failed)} failed in {secs:.1f} s -> {out_dir}",
                         {"done": done, "failed": len(failed), "seconds": round(secs, 2), "output": str(out_dir)},
                         2 if failed else 0)


def _fail(failed: list[str], exc: Exception) -> None:
    failed.append(str(exc))
    print(f"diffseg image: error: {exc}", file=sys.stderr)


def write_image_outputs(out_dir: Path, stem: str, image: np.ndarray, labels: np.ndarray, *, npy: bool,
                        with_overlay: bool, meta: dict, names: "SegmentNames | None" = None) -> list[str]:
    """Write one image's outputs (`output_names`: ``<stem>.png``, ``<stem>.json``,
    ``<stem>_overlay.png``, ``<stem>.npy``) as `diffseg image` and `diffseg run` do; returns
    their names. ``labels`` are segments ``0..K-1`` (written ``1..K``; consumed)."""
    png, ov_name, npy_name, js = output_names(stem)
    labels = segment_ids(labels, consume=True)  # 1..K: 0 = no segment in every tool
    save_labels_png(out_dir / png, labels)
    written = [png]
    ids, area = label_areas(labels)
    segments = []
    for i, a in zip(ids.tolist(), area.tolist()):  # segment index i - 1
        name, score = (names.names[i - 1], round(names.score(i - 1), 4)) if names is not None else (None, None)
        segments.append({"id": i, "name": name, "score": score, "area": a})
    doc = {**meta, "vocabulary": list(names.vocabulary) if names is not None else [],
           "size": list(labels.shape), "labels": f"{stem}.png", "segments": segments}
    atomic_write_text(out_dir / js, json.dumps(doc, indent=1) + "\n")
    written.append(js)
    if with_overlay and image is not None:  # not needed afterwards: blended and written in place (huge images)
        ov = overlay(image, labels, out=image if image.flags.writeable else None)
        if names is not None:
            draw_legend(ov, [(s["id"], f"{s['id']} {s['name'] or 'unknown'}") for s in segments])
        save_image(out_dir / ov_name, ov, consume=True)
        written.append(ov_name)
    if npy:
        atomic_save_npy(out_dir / npy_name, labels.astype(np.int32, copy=False))
        written.append(npy_name)
    return written
