"""Benchmark of the video tracker: quality (J&F, id switches), speed and memory.

Usage:
    python3 benchmarks/bench_temporal.py --data ../shared/data [--work /tmp/bench_temporal]
        [--only quality|keyframes|speed|memory] [--synth-frames 80] [--seeds 0-9] [--jobs 2]

Quality: per-frame segmentations that behave like DiffSeg's are made from ground truth
(`synth_video.diffseg_like`: numbers shuffled per frame, background split into changing
stuff segments, boundary jitter, splits, merges, spurious fragments) for the DAVIS-2016
sequences in DATA and for synthetic multi-object videos with exact ground truth
(`synth_video.SynthVideo`). Each is tracked by running `diffseg track` (subprocess: the
same code path as users) with the default tracker and with `--baseline iou` (IoU-only
linker, no flow/KL), then scored by `temporal.evaluate` (DAVIS-2017 unsupervised protocol).
Printed: tracked J&F, the per-frame-oracle J&F of the raw segmentations, their ratio, id
switches per object per 100 frames, per seed and summarised over seeds (mean and worst):
one seed is one draw of the random degradations, and a tracker tuned on one draw can be
lucky there.

Keyframes: `--keyframe-every auto` and `--keyframe-every 3` against every-frame mode on the
same sequences and stand-in segmentations: segmenter calls saved and J&F kept.

Speed: tracker alone (flow + matching, segmentation given with its proposal maps, one
thread) at 854x480. Memory: peak RSS (VmHWM) of a subprocess tracking a streamed
synthetic 480p video with all outputs written, 200 vs 2,000 frames.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))  # this checkout's packages, not an installed copy

from synth_video import SynthVideo, diffseg_like  # noqa: E402

DAVIS = ("davis16_bmx-trees", "davis16_horsejump-high", "davis16_libby")


def synth_specs(n: int, seed: int = 0) -> dict[str, SynthVideo]:
    """The synthetic videos; ``seed`` > 0 gives other scenes of the same kind."""
    k = 1000 * seed
    return {
        "synth_occlusion": SynthVideo(n_frames=n, n_objects=5, speed=(3, 8), size=(90, 170), seed=11 + k),
        "synth_enter_leave": SynthVideo(n_frames=n, n_objects=5, speed=(2, 6), enter_leave=True, seed=12 + k),
        "synth_fast": SynthVideo(n_frames=n, n_objects=3, speed=(20, 35), size=(80, 140), seed=13 + k),
    }


def _save_png(path: Path, arr: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray(arr).save(path)


def prepare(work: Path, data: Path, n_synth: int, seed: int = 0) -> list[tuple[str, Path, Path, Path]]:
    """Write ground truth (synthetic only) and DiffSeg-like segmentations; return
    (name, frames dir, gt dir, segments dir)."""
    from diffseg_core.io import read_labels

    out = []
    rng = np.random.default_rng(seed)
    for name in DAVIS:
        seq = data / name
        if not (seq / "frames").is_dir():
            print(f"# skipping {name}: not found in {data}")
            continue
        sdir = work / name / "segs"
        sdir.mkdir(parents=True, exist_ok=True)
        for m in sorted((seq / "masks").glob("*.png")):
            _save_png(sdir / m.name, diffseg_like(read_labels(m), rng).astype(np.uint16))
        out.append((name, seq / "frames", seq / "masks", sdir))
    for name, vid in synth_specs(n_synth, seed).items():
        base = work / name
        for d in ("frames", "gt", "segs"):
            (base / d).mkdir(parents=True, exist_ok=True)
        for t in range(vid.n_frames):
            img, gt = vid.frame(t)
            _save_png(base / "frames" / f"{t:05d}.png", img)
            _save_png(base / "gt" / f"{t:05d}.png", gt.astype(np.uint8))
            _save_png(base / "segs" / f"{t:05d}.png", diffseg_like(gt, rng).astype(np.uint16))
        out.append((name, base / "frames", base / "gt", base / "segs"))
    return out


def run_track(frames: Path, segs: Path, out: Path, extra: list[str]) -> float:
    return run_track_summary(frames, segs, out, extra)[0]


def run_track_summary(frames: Path, segs: Path, out: Path, extra: list[str]) -> tuple[float, dict]:
    """``diffseg track`` as a user runs it: (seconds, its JSON summary line)."""
    t0 = time.time()
    cmd = [sys.executable, "-m", "diffseg", "track", str(frames), "--segments", str(segs), "-o", str(out),
           "-q", "--json", "--no-overlay", *extra]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=HERE.parent)  # `-m` runs this checkout
    if r.returncode != 0:
        raise SystemExit(f"diffseg track failed ({r.returncode}): {r.stderr.strip()}")
    return time.time() - t0, json.loads(r.stdout.strip().splitlines()[-1])


#: adaptive keyframes: tuning videos (the defaults were chosen on these) and held-out ones
KEYFRAME_TUNING = ("synth_occlusion", "synth_fast", "davis16_bmx-trees")


def _keyframes_seed(args: tuple[Path, Path, int, int]) -> list[dict]:
    from temporal.evaluate import evaluate_video_dirs

    work, data, n_synth, seed = args
    rows = []
    for name, frames, gt, segs in prepare(work / f"kf_seed{seed}", data, n_synth, seed):
        for mode, extra in (("every frame", []), ("auto", ["--keyframe-every", "auto"]),
                            ("every 3rd", ["--keyframe-every", "3"])):
            out = work / f"kf_seed{seed}" / name / f"out_{mode.replace(' ', '_')}"
            _, summary = run_track_summary(frames, segs, out, extra)
            s = evaluate_video_dirs(out / "labels", gt)
            rows.append({"sequence": name, "seed": seed, "mode": mode, "JF": s.JF, "frames": summary["frames"],
                         "calls": summary.get("keyframes", summary["frames"]), "idsw": s.id_switches_per_100})
    return rows


def keyframes(work: Path, data: Path, n_synth: int, seeds: list[int], jobs: int = 1) -> None:
    """Adaptive keyframes (`--keyframe-every auto`) against every-frame mode: segmenter calls
    and J&F per sequence (the stand-in segmenter is `diffseg_like`, one draw per seed)."""
    print("\n## Keyframes: segmenter calls and J&F against every-frame mode (DiffSeg-like stand-in)")
    print(f"# tuning: {', '.join(KEYFRAME_TUNING)}; the others are held out")
    rows: list[dict] = []
    args = [(work, data, n_synth, seed) for seed in seeds]
    with (ProcessPoolExecutor(jobs) if jobs > 1 else contextlib.nullcontext()) as ex:
        for seed_rows in (ex.map if ex else map)(_keyframes_seed, args):
            rows += seed_rows
    print(f"{'sequence':24s} {'mode':12s} {'calls fewer':>11s} {'J&F / every frame':>17s} {'IDsw/obj/100f':>13s}")
    summary: dict[tuple[str, bool], list[tuple[float, float]]] = {}
    for name in dict.fromkeys(r["sequence"] for r in rows):
        for mode in ("auto", "every 3rd"):
            pairs = []
            for seed in seeds:
                base = next(r for r in rows if r["sequence"] == name and r["seed"] == seed and r["mode"] == "every frame")
                r = next(r for r in rows if r["sequence"] == name and r["seed"] == seed and r["mode"] == mode)
                pairs.append((r["frames"] / r["calls"], r["JF"] / base["JF"], r["idsw"]))
            fewer, ratio, sw = (float(np.mean([p[i] for p in pairs])) for i in range(3))
            print(f"{name:24s} {mode:12s} {fewer:10.2f}x {ratio:17.3f} {sw:13.2f}")
            summary.setdefault((mode, name in KEYFRAME_TUNING), []).append((fewer, ratio))
    for (mode, tuning), vals in sorted(summary.items()):
        print(f"{mode:12s} {'tuning' if tuning else 'held out':8s}: {np.mean([v[0] for v in vals]):.2f}x fewer calls, "
              f"J&F {np.mean([v[1] for v in vals]):.3f} of every-frame mode (worst {min(v[1] for v in vals):.3f}) "
              f"target >= 3x at >= 0.98")


def segments_oracle(segs: Path, gt: Path):
    """The per-frame oracle of the raw segmentations (`temporal.evaluate.VideoScores`),
    every value a segment, 0 too (`families.as_ids`): read as ids, segment 0 would be "no
    segment" and the oracle could not use it."""
    from diffseg_core.io import read_labels
    from families import as_ids
    from temporal.evaluate import evaluate_video_arrays

    gts = sorted(gt.glob("*.png"))
    return evaluate_video_arrays(as_ids([read_labels(segs / g.name) for g in gts]), [read_labels(g) for g in gts])


def _quality_seed(args: tuple[Path, Path, int, int]) -> tuple[list[dict], list[str]]:
    """All sequences of one seed, both methods: (rows, printed lines)."""
    from temporal.evaluate import evaluate_video_dirs

    work, data, n_synth, seed = args
    rows, lines = [], []
    for name, frames, gt, segs in prepare(work / f"seed{seed}", data, n_synth, seed):
        oracle = segments_oracle(segs, gt)
        for method, extra in (("flow+KL", []), ("IoU-only", ["--baseline", "iou"])):
            out = work / f"seed{seed}" / name / f"out_{method.replace('+', '_')}"
            sec = run_track(frames, segs, out, extra)
            s = evaluate_video_dirs(out / "labels", gt)
            ratio = s.JF / oracle.oracle_JF
            rows.append({"sequence": name, "seed": seed, "method": method, "JF": s.JF, "oracle_JF": oracle.oracle_JF,
                         "ratio": ratio, "id_switches": s.id_switches, "idsw_per_obj_100": s.id_switches_per_100,
                         "tracks": s.n_tracks})
            lines.append(f"{name:24s} {seed:4d} {method:9s} {s.n_frames:6d} {s.n_objects:3d} {s.JF:6.3f} "
                         f"{oracle.oracle_JF:9.3f} {ratio:6.3f} {s.id_switches_per_100:13.2f} {s.n_tracks:6d} {sec:5.1f}")
    return rows, lines


def quality(work: Path, data: Path, n_synth: int, seeds: list[int], jobs: int = 1) -> None:
    print("\n## Quality (DiffSeg-like segmentations from ground truth)")
    print(f"# seeds {seeds}: each seed draws other degradations (and other synthetic scenes)")
    hdr = (f"{'sequence':24s} {'seed':>4s} {'method':9s} {'frames':>6s} {'obj':>3s} {'J&F':>6s} {'oracleJ&F':>9s} "
           f"{'ratio':>6s} {'IDsw/obj/100f':>13s} {'tracks':>6s} {'sec':>5s}")
    print(hdr)
    rows = []
    args = [(work, data, n_synth, seed) for seed in seeds]
    with (ProcessPoolExecutor(jobs) if jobs > 1 else contextlib.nullcontext()) as ex:
        for seed_rows, lines in (ex.map if ex else map)(_quality_seed, args):  # in seed order
            rows += seed_rows
            print("\n".join(lines), flush=True)
    (work / "quality.json").write_text(json.dumps(rows, indent=1))
    print(f"\n## Summary over {len(seeds)} seed(s) (per sequence: mean and worst)")
    print(f"{'sequence':24s} {'method':9s} {'ratio mean':>10s} {'ratio min':>9s} {'IDsw/obj/100f mean':>18s} "
          f"{'max':>6s} {'seeds > 0.2':>11s}")
    for method in ("flow+KL", "IoU-only"):
        for name in dict.fromkeys(r["sequence"] for r in rows):
            sel = [r for r in rows if r["sequence"] == name and r["method"] == method]
            sw = [r["idsw_per_obj_100"] for r in sel]
            ra = [r["ratio"] for r in sel]
            print(f"{name:24s} {method:9s} {np.mean(ra):10.3f} {min(ra):9.3f} {np.mean(sw):18.2f} {max(sw):6.2f} "
                  f"{sum(x > 0.2 for x in sw):5d} of {len(sw)}")
    for method in ("flow+KL", "IoU-only"):
        sel = [r for r in rows if r["method"] == method]
        if sel:
            print(f"{method}: mean ratio {np.mean([r['ratio'] for r in sel]):.3f} (min {min(r['ratio'] for r in sel):.3f}); "
                  f"IDsw/obj/100f mean {np.mean([r['idsw_per_obj_100'] for r in sel]):.2f}, "
                  f"max {max(r['idsw_per_obj_100'] for r in sel):.2f}; runs above 0.2: "
                  f"{sum(r['idsw_per_obj_100'] > 0.2 for r in sel)} of {len(sel)}; runs with ratio below 0.97: "
                  f"{sum(r['ratio'] < 0.97 for r in sel)} of {len(sel)}")


def speed(n: int = 60, repeats: int = 5) -> None:
    import cv2
    import torch

    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    from temporal.config import TrackerConfig, iou_only_baseline
    from temporal.proposals import segmentation_from_labels
    from temporal.tracker import VideoSegmenter

    vid = SynthVideo(n_frames=n, n_objects=5, seed=21)
    rng = np.random.default_rng(0)
    frames, segs = [], []
    t_prop = 0.0
    for t in range(n):
        img, gt = vid.frame(t)
        lab = diffseg_like(gt, rng)
        t0 = time.process_time()
        segs.append(segmentation_from_labels(lab))
        t_prop += time.process_time() - t0
        frames.append(img)
    print("\n## Speed (854x480, one thread, tracker alone: flow + matching; segmentations given)")
    print("# CPU time of this process (torch/OpenCV on one thread): the machine is shared, wall time is not")
    # ids are never reused, so deep into a long video (or in a later chunk) they are large:
    # the per-frame cost must not grow with them
    for label, cfg, offset in (("default (DIS ultrafast, colour check, work side 240)", TrackerConfig(), 0),
                               ("default, ids from 20,001 (late in a long video)", TrackerConfig(), 20_000),
                               ("no colour check", TrackerConfig().replace(engine={"predict": {"colour_tolerance": 0}}), 0),
                               ("keyframe-every 4 (propagation frames)", TrackerConfig(keyframe_every=4), 0),
                               ("IoU-only baseline", iou_only_baseline(), 0)):
        vs = VideoSegmenter(None, cfg)
        cpu, wall = [], []
        for _ in range(repeats):  # the machine is shared: its speed drifts, so repeat
            st = vs.init_state(offset)
            vs.step(st, frames[0], segs[0])  # warm-up
            t0, c0 = time.perf_counter(), time.process_time()
            for f, s in zip(frames[1:], segs[1:]):
                vs.step(st, f, s if vs.is_keyframe(st) else None)
            wall.append((time.perf_counter() - t0) / (n - 1))
            cpu.append((time.process_time() - c0) / (n - 1))
        dc, best, dt = float(np.median(cpu)), min(cpu), float(np.median(wall))
        print(f"{label:52s} {1 / dc:7.1f} frames/s CPU median of {repeats} ({dc * 1000:.1f} ms/frame; best "
              f"{1 / best:.1f}); wall {1 / dt:6.1f} frames/s")
    print(f"{'(bring-your-own only) proposal maps from masks':52s} {n / t_prop:7.1f} frames/s CPU "
          f"({t_prop / n * 1000:.1f} ms/frame)")
    print(f"load average while measuring: {os.getloadavg()[0]:.1f} (CPU time is the per-core figure)")


def rss_child(n: int, out: Path) -> None:
    """Track a streamed synthetic 480p video of n frames with all outputs; print VmHWM."""
    from temporal.api import track_stream
    from temporal.config import TrackerConfig

    vid = SynthVideo(n_frames=n, n_objects=4, seed=31, pan=(0.0, 0.0))
    rng = np.random.default_rng(0)
    period = 100  # the scene repeats every 100 frames; memory must not depend on n
    frames = ((f"{t:05d}", vid.frame(t % period)[0]) for t in range(n))
    labels = (diffseg_like(vid.frame(t % period)[1], rng) for t in range(n))
    res = track_stream(frames, labels, out, TrackerConfig(), n_frames=n, write_overlay=True)
    hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM"))
    print(json.dumps({"frames": res.n_frames, "complete": res.complete, "vmhwm_kb": hwm, "seconds": res.seconds}))


def memory(work: Path, short: int, long: int) -> None:
    print("\n## Memory (peak RSS of the whole track job, 854x480 streamed, labels + overlay + tracks.json)")
    res = {}
    for n in (short, long):
        out = work / f"rss_{n}"
        r = subprocess.run([sys.executable, __file__, "--rss-child", str(n), "--work", str(out)],
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise SystemExit(r.stderr)
        d = json.loads(r.stdout.strip().splitlines()[-1])
        res[n] = d
        print(f"{n:5d} frames: peak RSS {d['vmhwm_kb'] / 1024:7.1f} MiB, {d['seconds']:.0f} s "
              f"({n / d['seconds']:.1f} frames/s end to end with writing)")
    print(f"ratio {long} / {short}: {res[long]['vmhwm_kb'] / res[short]['vmhwm_kb']:.3f}")


def parse_seeds(text: str) -> list[int]:
    """``"0,1,5"`` or ``"0-9"`` (or a mix: ``"0-4,7"``) -> list of seeds."""
    out: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        out += list(range(int(lo), int(hi) + 1)) if hi else [int(lo)]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=HERE.parent.parent / "shared" / "data")
    ap.add_argument("--work", type=Path, default=Path("/tmp/bench_temporal"))
    ap.add_argument("--only", choices=("quality", "speed", "memory", "keyframes"), default=None)
    ap.add_argument("--synth-frames", type=int, default=80)
    ap.add_argument("--seeds", default="0-9", help="seeds of the degradations (quality): '0,1,2' or a range '0-9'")
    ap.add_argument("--jobs", type=int, default=1, help="seeds run in parallel (quality; one process each)")
    ap.add_argument("--speed-repeats", type=int, default=5, help="passes per speed figure (median and best)")
    ap.add_argument("--rss-frames", type=int, nargs=2, default=(200, 2000))
    ap.add_argument("--rss-child", type=int, default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.rss_child:
        from diffseg_core.progress import set_progress_enabled

        set_progress_enabled(False)
        rss_child(a.rss_child, a.work)
        return
    a.work.mkdir(parents=True, exist_ok=True)
    if a.only in (None, "quality"):
        quality(a.work, a.data, a.synth_frames, parse_seeds(a.seeds), a.jobs)
    if a.only in (None, "keyframes"):
        keyframes(a.work, a.data, a.synth_frames, parse_seeds(a.seeds), a.jobs)
    if a.only in (None, "speed"):
        speed(repeats=a.speed_repeats)
    if a.only in (None, "memory"):
        memory(a.work, *a.rss_frames)


if __name__ == "__main__":
    main()
