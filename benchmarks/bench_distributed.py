"""Benchmark of `diffseg run`: 1 vs 2 CPU processes, and chunked vs whole-video agreement.

1. Throughput: the same job (images and short videos) with ``--devices 1`` and with
   ``--devices 2 --strategy ddp`` (gloo), each in a fresh process, wall-clock timed
   (process start, model load and Lightning set-up included, as a user sees it). The two
   outputs are compared: images must be equal, videos equal up to one relabelling.
2. Chunking: one long video run as a whole (one chunk) and split into chunks of
   ``--chunk-frames`` (segmented on 2 processes, linked in one pass). Printed:
   the fraction of pixels whose ids agree after one optimal global relabelling
   (`diffseg.jobs.relabel_agreement`), over all frames.

Usage:
    python benchmarks/bench_distributed.py [--job PATH ...] [--video PATH]
        [--model tiny-random] [--size 64] [--chunk-frames 30] [--chunk-overlap 0]

``--job`` (files/folders) and ``--video`` (a video file or frame folder) default to
synthetic data written to a temporary folder (a moving-squares clip and small pictures).
``--segmenter-factory bench_distributed:component_segmenter`` swaps the tiny model for a
deterministic colour-region segmenter with many segments that change from frame to frame
(the tiny random model gives a few coarse segments per frame, about ten at small sizes:
too easy a case for the agreement figure).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from diffseg_core.io import read_labels  # noqa: E402
from diffseg.jobs import relabel_agreement  # noqa: E402


class ComponentSegmenter:
    """Stand-in segmenter with many, changing segments (harder for tracking than the tiny
    random model's few coarse segments).

    Colours are quantised to 3 levels per channel (after a median blur); each connected
    region of one colour is a segment; regions below 0.5 % of the frame join segment 0.
    Deterministic. Use with ``--segmenter-factory bench_distributed:component_segmenter``.
    """

    def __init__(self, config=None) -> None:
        self.config = config

    def segment(self, images, generator=None):
        import cv2
        from scipy import ndimage

        from diffseg_core.types import Segmentation
        from temporal.proposals import proposals_from_labels

        out = []
        for img in images:
            img = cv2.medianBlur(np.ascontiguousarray(img, dtype=np.uint8), 5)
            q = (img // 86).astype(np.int32)
            cls = q[..., 0] * 9 + q[..., 1] * 3 + q[..., 2]
            labels = np.zeros(cls.shape, np.int32)
            nxt = 1
            for c in np.unique(cls):  # <= 27 colour classes, not pixels
                comp, n = ndimage.label(cls == c)
                if n:
                    labels[comp > 0] = comp[comp > 0] + nxt - 1
                    nxt += n
            ids, inv, counts = np.unique(labels, return_inverse=True, return_counts=True)
            big = counts >= 0.005 * labels.size
            remap = np.cumsum(big) * big  # small regions -> 0, big ones -> 1..B
            labels = remap[inv].reshape(labels.shape).astype(np.int32)
            _, labels = np.unique(labels, return_inverse=True)
            labels = labels.reshape(cls.shape).astype(np.int32)
            h, w = labels.shape
            props = proposals_from_labels(labels, side=max(1, min(h, w) // 8))
            out.append(Segmentation(labels=labels, proposals=props, image_hw=(h, w)))
        return out


def component_segmenter(config=None) -> ComponentSegmenter:
    return ComponentSegmenter(config)


def synth_clip(folder: Path, n: int, hw: tuple[int, int] = (64, 80), seed: int = 0) -> Path:
    """Frames of two squares moving over a two-colour background (uint8 PNGs)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    h, w = hw
    for t in range(n):
        a = np.zeros((h, w, 3), np.uint8)
        a[:, : w // 3] = (30, 170, 40)
        a[:, w // 3:] = (40, 60, 190)
        x = int(4 + (w - 24) * (0.5 + 0.5 * np.sin(t / 9.0)))
        a[h // 5: h // 5 + 16, x: x + 16] = (220, 30, 30)
        y = int(4 + (h - 20) * (0.5 + 0.5 * np.cos(t / 13.0)))
        a[y: y + 12, w // 2: w // 2 + 20] = (230, 220, 40)
        a = np.clip(a.astype(np.int16) + rng.integers(0, 12, a.shape), 0, 255).astype(np.uint8)
        Image.fromarray(a).save(folder / f"{t:05d}.png")
    return folder


def synth_job(root: Path) -> list[Path]:
    from PIL import Image

    photos = root / "photos"
    photos.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for i in range(8):
        a = np.zeros((64, 64, 3), np.uint8)
        a[:, : 20 + 3 * i] = (200, 40, 30)
        a[30:, 32:] = (30, 40, 200)
        a = np.clip(a.astype(np.int16) + rng.integers(0, 12, a.shape), 0, 255).astype(np.uint8)
        Image.fromarray(a).save(photos / f"photo_{chr(97 + i)}.png")
    clips = [synth_clip(root / f"clip{k}" / "frames", 16, seed=k) for k in range(2)]
    return [photos, *clips]


def run_cli(inputs: list[Path], out: Path, opts: list[str], devices: int) -> tuple[float, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(REPO / "benchmarks"), env.get("PYTHONPATH", "")])
    cmd = [sys.executable, "-m", "diffseg", "run", *map(str, inputs), "-o", str(out), "--devices", str(devices),
           *(["--strategy", "ddp"] if devices > 1 else []), *opts]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"run failed ({p.returncode}):\n{p.stderr[-3000:]}")
    return dt, p.stderr.strip().splitlines()[-1] if p.stderr.strip() else ""


def video_stack(folder: Path) -> np.ndarray:
    files = sorted(folder.glob("*.png"))
    return np.stack([read_labels(p) for p in files])


def compare_jobs(a: Path, b: Path) -> tuple[int, int, float]:
    """(images equal, images, min video agreement) between two job folders."""
    same = total = 0
    for p in sorted((a / "images" / "labels").glob("*.png")):
        total += 1
        same += int(np.array_equal(read_labels(p), read_labels(b / "images" / "labels" / p.name)))
    agree = [relabel_agreement(video_stack(v / "labels"), video_stack(b / "videos" / v.name / "labels"))
             for v in sorted((a / "videos").iterdir())] if (a / "videos").is_dir() else [1.0]
    return same, total, min(agree)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--job", nargs="*", default=None, help="inputs of the 1-vs-2-process job [synthetic]")
    ap.add_argument("--video", default=None, help="long video (file or frame folder) for the chunking check [synthetic]")
    ap.add_argument("--video-frames", type=int, default=120, help="frames of the synthetic long video")
    ap.add_argument("--max-frames", type=int, default=0, help="use only the first N frames of --video (0 = all)")
    ap.add_argument("--model", default="tiny-random")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--max-side", type=int, default=0)
    ap.add_argument("--chunk-frames", type=int, default=30)
    ap.add_argument("--chunk-overlap", type=int, default=0)
    ap.add_argument("--segmenter-factory", default=None)
    ap.add_argument("--skip-throughput", action="store_true")
    args = ap.parse_args()

    seg = (["--segmenter-factory", args.segmenter_factory] if args.segmenter_factory else
           ["--model", args.model, "--size", str(args.size)])
    common = [*seg, "--accelerator", "cpu", "--no-overlay", "-q"]
    with tempfile.TemporaryDirectory(prefix="bench_dist_") as tmp:
        root = Path(tmp)
        print(f"machine: {os.cpu_count()} CPU cores; segmenter: {args.segmenter_factory or args.model} "
              f"(size {args.size})")
        if not args.skip_throughput:
            job = [Path(p) for p in args.job] if args.job else synth_job(root / "job")
            opts = [*common, "--chunk-frames", "10", "--chunk-overlap", "2"]
            t1, _ = run_cli(job, root / "one", opts, 1)
            t2, _ = run_cli(job, root / "two", opts, 2)
            man = json.loads((root / "one" / "manifest.json").read_text())
            n_items = len(man["items"])
            frames = sum(v.get("frames", 0) for v in man["items"].values())
            same, total, agree = compare_jobs(root / "one", root / "two")
            print(f"[throughput] job: {n_items} items, {frames} frames segmented "
                  f"(videos in chunks of 10, overlap 2)")
            print(f"[throughput] 1 process : {t1:7.1f} s  {frames / t1:6.2f} frames/s")
            print(f"[throughput] 2 processes (ddp, gloo): {t2:7.1f} s  {frames / t2:6.2f} frames/s  "
                  f"speed-up x{t1 / t2:.2f}")
            print(f"[throughput] 1 vs 2 processes: images equal {same}/{total}, "
                  f"video agreement after relabelling {agree:.6f}")

        if args.video:
            video = Path(args.video)
        else:
            video = synth_clip(root / "long" / "frames", args.video_frames)
        if args.max_frames and video.is_dir():
            sub = root / "long_cut" / "frames"
            sub.mkdir(parents=True)
            from diffseg.jobs import image_files

            for p in image_files(video)[: args.max_frames]:
                os.symlink(p, sub / p.name)
            video = sub
        extra = ["--max-side", str(args.max_side)] if args.max_side else []
        n_guess = 10 ** 7
        tw, _ = run_cli([video], root / "whole", [*common, *extra, "--chunk-frames", str(n_guess),
                                                   "--chunk-overlap", "0"], 1)
        tc, _ = run_cli([video], root / "chunked", [*common, *extra, "--chunk-frames", str(args.chunk_frames),
                                                     "--chunk-overlap", str(args.chunk_overlap)], 2)
        name = next((root / "whole" / "videos").iterdir()).name
        a = video_stack(root / "whole" / "videos" / name / "labels")
        b = video_stack(root / "chunked" / "videos" / name / "labels")
        info = json.loads((root / "chunked" / "videos" / name / "tracks.json").read_text())
        infw = json.loads((root / "whole" / "videos" / name / "tracks.json").read_text())
        per_frame = [relabel_agreement(x, y) for x, y in zip(a, b)]
        print(f"[chunks] video {video} : {a.shape[0]} frames {a.shape[1]}x{a.shape[2]}, "
              f"chunks {info.get('chunks')} (overlap {args.chunk_overlap})")
        print(f"[chunks] whole video, 1 process: {tw:.1f} s, {infw['n_tracks']} tracks; "
              f"chunked on 2 processes: {tc:.1f} s, {info['n_tracks']} tracks")
        print(f"[chunks] agreement chunked vs whole (one global relabelling, all frames): "
              f"{relabel_agreement(a, b):.4f}")
        print(f"[chunks] per-frame agreement (each frame relabelled alone): mean {np.mean(per_frame):.4f}, "
              f"min {np.min(per_frame):.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
