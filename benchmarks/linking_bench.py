"""In-process quality harness of the linking engine on videos: families x items x methods.

Used by `bench_temporal.py --only quality` (and by hand while working on the engine)::

    python3 benchmarks/linking_bench.py --data ../shared/data --families all --methods engine,iou

Items: the three DAVIS-2016 sequences of DATA (frames and masks halved to 427x240: the
engine works at 240 px anyway) and three synthetic multi-object videos (`synth_video`) of
the same size. ``--full-res`` keeps the DAVIS sequences at their own 854x480 (items named
``<sequence>@full``), so the engine takes the path real videos take, its flow and warps at
its work side and the labels resized back; the families then segment the full frames (fine
felzenszwalb takes minutes a cell) and the synthetic videos are left out. Each family (`families.VIDEO`) segments every frame; the label maps are
cached under WORK (``.npz``), then linked by each method and scored with
`temporal.evaluate` (DAVIS-2017 unsupervised protocol: J&F of one assignment per sequence
over the per-frame oracle, id switches per object per 100 frames) and beside the ceiling
of a linker that only joins segments (`families.ceiling`: the J&F of every object given,
frame by frame, the segments that make its best IoU), whose share each method reaches is
printed at the end with the cells where 0.97 x the oracle lies above that ceiling.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import families  # noqa: E402
from paired import fingerprint, print_ceilings, print_report  # noqa: E402
from synth_video import SynthVideo  # noqa: E402

DAVIS = ("davis16_bmx-trees", "davis16_horsejump-high", "davis16_libby")
HW = (240, 427)


def synth_items(n: int, seed: int = 0) -> dict[str, SynthVideo]:
    k = 1000 * seed
    return {"synth_occlusion": SynthVideo(n_frames=n, hw=HW, n_objects=5, speed=(2, 4), size=(45, 85), seed=11 + k),
            "synth_enter_leave": SynthVideo(n_frames=n, hw=HW, n_objects=5, speed=(1, 3), size=(30, 60),
                                            enter_leave=True, seed=12 + k),
            "synth_fast": SynthVideo(n_frames=n, hw=HW, n_objects=3, speed=(10, 18), size=(40, 70), seed=13 + k)}


def read_sequence(seq: Path) -> tuple[list, list]:
    """A DAVIS sequence of the shared data at its own size: (RGB frames, ground-truth id maps)."""
    from diffseg_core.io import read_image, read_labels

    return ([read_image(p) for p in sorted((seq / "frames").glob("*.jpg"))],
            [read_labels(p) for p in sorted((seq / "masks").glob("*.png"))])


def load_items(data: Path, n_synth: int = 60, seed: int = 0,
               full_res: bool = False) -> Iterator[tuple[str, list, list]]:
    """(name, RGB frames, ground-truth id maps), all at 427x240; with ``full_res`` only the
    DAVIS sequences, at their own size, named ``<sequence>@full``."""
    import cv2

    for name in DAVIS:
        seq = data / name
        if not (seq / "frames").is_dir():
            print(f"# skipping {name}: not found in {data}")
            continue
        frames, gt = read_sequence(seq)
        if full_res:
            yield f"{name}@full", frames, gt
            continue
        frames = [cv2.resize(f, HW[::-1], interpolation=cv2.INTER_AREA) for f in frames]
        gt = [cv2.resize(g.astype(np.uint8), HW[::-1], interpolation=cv2.INTER_NEAREST) for g in gt]
        yield name, frames, gt
    if full_res:
        return
    for name, vid in synth_items(n_synth, seed).items():
        pairs = [vid.frame(t) for t in range(vid.n_frames)]
        yield name, [p[0] for p in pairs], [p[1] for p in pairs]


def family_maps(work: Path, item: str, family: str, frames: list, gt: list, seed: int) -> list[np.ndarray]:
    """The family's label maps of an item (cached in WORK)."""
    path = work / f"{item}__{family}__s{seed}.npz"
    if path.exists():
        z = np.load(path)
        return list(z["labels"])
    fn = families.VIDEO[family]
    rng = np.random.default_rng(seed)
    maps = [np.asarray(fn(f, g, rng), np.int32) for f, g in zip(frames, gt)]
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, labels=np.stack(maps))
    return maps


# engine variants of the ablation: each removes one mechanism (or changes one weight)
ABLATION = {
    "no flow (in place)": {"predict": {"flow": "none", "fallback_preset": "none", "colour_tolerance": 0}},
    "no colour check": {"predict": {"colour_tolerance": 0, "fallback_preset": "none"}},
    "no fallback flow": {"predict": {"fallback_preset": "none"}},
    "no colour look": {"associate": {"look_weight": 0.0}},
    "no foreign cost": {"associate": {"foreign_weight": 0.0}},
    "segment_trust 1.5": {"associate": {"segment_trust": 1.5}},
    "no carving (trust 100)": {"associate": {"segment_trust": 100.0}},
    "no re-identification": {"lifecycle": {"reid_threshold": 1.0}},
    "no late corrections": {"lifecycle": {"correction_window": 0}},
    "+ split cost 0.2": {"associate": {"split_cost": 0.2}},
}


def methods(ablation: bool = False) -> dict[str, Callable]:
    """name -> ``link(frames, label maps, background=None) -> list of int32 track-id maps``
    (``background``: the maps' value meaning "no segment", or None)."""
    from temporal.config import TrackerConfig, iou_only_baseline
    from temporal.tracker import link_label_maps

    def run(cfg: TrackerConfig) -> Callable:
        flow = cfg.linker == "engine" and cfg.engine.predict.flow != "none"
        return lambda frames, maps, background=None: [
            tf.labels for tf in link_label_maps(maps, frames if flow else None, cfg, background=background)]

    def joined(frames: list, maps: list, background=None) -> list:
        from temporal.engine.join import join_label_maps

        return join_label_maps(out["engine"](frames, maps, background), frames)[0]

    out = {"engine": run(TrackerConfig()), "iou": run(iou_only_baseline()), "join": joined}
    if ablation:
        out.update({k: run(TrackerConfig().replace(engine=v)) for k, v in ABLATION.items()})
    return out


def speed(n: int = 60, repeats: int = 3, data: "Path | None" = None) -> None:
    """Frames/s (CPU time, one thread) of the engine and the IoU-only linker, all measured
    in this run: end to end (what `diffseg track` does with label maps), then the linkers'
    step alone. First on a synthetic 854x480 video of our degradation family (the target's
    figure), then, when DATA holds it, on the real DAVIS clip bmx-trees at its own 854x480
    with the same family's maps: on real motion the cheap flow loses a track on most frame
    pairs and the careful preset is run as well, which the synthetic video hardly shows."""
    import cv2
    import torch

    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    vid = SynthVideo(n_frames=n, n_objects=5, seed=21)
    rng = np.random.default_rng(0)
    frames, maps = [], []
    for t in range(n):
        img, gt = vid.frame(t)
        frames.append(img)
        maps.append(families.VIDEO["degrade_mild"](img, gt, rng))
    print(f"\n## Speed: {n} frames 854x480 (synthetic), one thread, CPU time (median of {repeats}), label maps given")
    _time_linkers(frames, maps, repeats)
    seq = None if data is None else data / DAVIS[0]
    if seq is None or not (seq / "frames").is_dir():
        print(f"# skipping the real clip: {seq} not found")
        return
    frames, gts = read_sequence(seq)
    rng = np.random.default_rng(0)
    maps = [np.asarray(families.VIDEO["degrade_mild"](f, g, rng), np.int32) for f, g in zip(frames, gts)]
    h, w = frames[0].shape[:2]
    print(f"\n## Speed: {len(frames)} frames {w}x{h} ({DAVIS[0]}), one thread, CPU time (median of {repeats})")
    _time_linkers(frames, maps, repeats)


def _time_linkers(frames: list, maps: list, repeats: int) -> None:
    """Print both linkers' frames/s end to end and their step alone on one video, and how
    often the engine needed its careful flow."""
    import cv2

    n = len(frames)
    fps = {}
    linked = {}
    for name, link in methods().items():
        if name == "join":
            continue  # timed alone below, on the engine's labels
        cpu = []
        for _ in range(repeats):
            c0 = time.process_time()
            linked[name] = link(frames, maps)
            cpu.append(time.process_time() - c0)
        fps[name] = n / float(np.median(cpu))
        print(f"{name:8s} {fps[name]:7.1f} frames/s")
    print(f"engine / IoU-only: {fps['engine'] / fps['iou']:.2f}x")
    from temporal.engine.join import join_label_maps

    cpu = []
    for _ in range(repeats):
        c0 = time.process_time()
        join_label_maps(linked["engine"], frames)
        cpu.append(time.process_time() - c0)
    print(f"the join after the run (`diffseg join`'s counting and relabelling, in memory, colour test on the "
          f"frames): {1000 * float(np.median(cpu)) / n:.1f} ms/frame")
    # the linkers' own step on inputs prepared once at work resolution: the figures above
    # also count the input handling both linkers share (relabelling each full-size map,
    # deriving proposal maps, writing the ids back at full size)
    from temporal.config import TrackerConfig, iou_only_baseline
    from temporal.engine import Linker
    from temporal.engine.baseline import IouLinker
    from temporal.proposals import grid_hw, segmentation_from_labels

    side = TrackerConfig().engine.predict.work_side
    h, w = grid_hw(frames[0].shape[:2], side)
    prepared = []
    for t, (img, lab) in enumerate(zip(frames, maps)):
        seg = segmentation_from_labels(lab, work_side=side)
        small = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
        prepared.append((cv2.resize(seg.labels, (w, h), interpolation=cv2.INTER_NEAREST), seg.num_segments,
                         seg.proposals, small, cv2.cvtColor(small, cv2.COLOR_RGB2GRAY), t))
    ms = {}
    engine = Linker(TrackerConfig().engine)
    careful = _Counted(engine.predictor.fallback)  # the careful flow, counted while timed (a call per run)
    if careful.flow is not None:
        engine.predictor.fallback = careful
    for name, linker in (("engine", engine), ("iou", IouLinker(iou_only_baseline().engine))):
        cpu = []
        for _ in range(repeats):
            state = linker.init_state()
            c0 = time.process_time()
            for args in prepared:
                linker.step(state, *args)
            cpu.append(time.process_time() - c0)
        ms[name] = 1000 * float(np.median(cpu)) / n
    print(f"linker step alone (inputs prepared at {w}x{h}): engine {ms['engine']:.1f} ms/frame, "
          f"IoU-only {ms['iou']:.1f} ms/frame: {ms['iou'] / ms['engine']:.2f}x; "
          f"the careful flow ran on {careful.calls // repeats} of {n - 1} frame pairs")


class _Counted:
    """A flow estimator that counts its calls."""

    def __init__(self, flow) -> None:
        self.flow, self.calls = flow, 0

    def __call__(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        self.calls += 1
        return self.flow(a, b)


def point_track_scores(labels: "list[np.ndarray]", tracks: np.ndarray) -> tuple[float, float, float]:
    """How well track ids follow point tracks (no masks needed).

    Args:
        labels: int ``(H, W)`` track ids per frame.
        tracks: float ``(N, 4)`` napari points ``[track, t, y, x]``.

    Returns:
        ``(purity, switches per track per 100 frames, shared)``: the fraction of points that
        carry their track's majority id; changes of id along a track; the fraction of
        (frame, pair of tracks) whose points carry one id (two objects under one track).
    """
    ids = {}
    for tid, t, y, x in tracks:
        lab = labels[int(t)]
        yy, xx = min(int(round(y)), lab.shape[0] - 1), min(int(round(x)), lab.shape[1] - 1)
        ids.setdefault(int(tid), []).append((int(t), int(lab[yy, xx])))
    pure, n, switches, frames = 0, 0, 0, 0
    for seq in ids.values():
        seq.sort()
        v = [i for _, i in seq]
        vals, cnt = np.unique(v, return_counts=True)
        pure += int(cnt.max())
        n += len(v)
        switches += sum(a != b for a, b in zip(v, v[1:]))
        frames += len(v)
    by_frame: dict = {}
    for seq in ids.values():
        for t, i in seq:
            by_frame.setdefault(t, []).append(i)
    pairs = shared = 0
    for v in by_frame.values():
        for a in range(len(v)):
            for b in range(a + 1, len(v)):
                pairs += 1
                shared += v[a] == v[b] and v[a] > 0
    return pure / max(n, 1), 100.0 * switches / max(frames, 1), shared / max(pairs, 1)


def timelapse(data: Path, work: Path, meths: dict) -> None:
    """The microscopy time-lapse (30 frames 511x511, 16 point tracks from blob detection:
    not ground truth) segmented by the scikit-image families, linked, scored on the points."""
    import tifffile

    root = data / "microscopy_timelapse2d_ctc"
    if not (root / "frames.tif").exists():
        print(f"# skipping the time-lapse: {root} not found")
        return
    grey = tifffile.imread(root / "frames.tif")
    tracks = np.load(root / "tracks_napari.npy")
    frames = [np.repeat(g[..., None], 3, 2) for g in grey]
    print("\n## Time-lapse point tracks: purity / id switches per track per 100 frames / shared pairs")
    for fam in ("felzenszwalb_fine", "felzenszwalb_coarse", "slic", "quickshift"):
        maps = family_maps(work, "timelapse", fam, frames, [np.zeros(g.shape, np.int32) for g in grey], 0)
        for m, link in meths.items():
            pure, sw, shared = point_track_scores(link(frames, maps), tracks)
            print(f"{'timelapse':22s} {fam:20s} {m:22s} {pure:6.3f} {sw:6.2f} {shared:6.3f}", flush=True)


def main() -> None:
    from temporal.evaluate import evaluate_video_arrays

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=HERE.parent.parent / "shared" / "data")
    ap.add_argument("--work", type=Path, default=Path("/tmp/linking_bench"))
    ap.add_argument("--families", default="tuning", help="'all', 'tuning' (all but the held-out) or a list")
    ap.add_argument("--methods", default="engine,iou",
                    help="engine (temporal.engine), iou (IoU-only), join (the engine, then `diffseg join`), "
                         "ablation")
    ap.add_argument("--items", default="", help="comma list of item names (default all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--synth-frames", type=int, default=60)
    ap.add_argument("--full-res", action="store_true",
                    help="the DAVIS sequences at their own 854x480 (the resize path of real videos), no synthetic ones")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--speed", action="store_true", help="only the speed figures")
    ap.add_argument("--timelapse", action="store_true", help="only the microscopy time-lapse point-track scores")
    a = ap.parse_args()
    if a.speed:
        speed(data=a.data)
        return
    if a.timelapse:
        timelapse(a.data, a.work, {k: v for k, v in methods().items()})
        return
    fams = (list(families.VIDEO) if a.families == "all" else
            [f for f in families.VIDEO if f not in families.HELD_OUT] if a.families == "tuning" else a.families.split(","))
    want_m = a.methods.split(",")
    meths = {k: v for k, v in methods("ablation" in want_m or any(m in ABLATION for m in want_m)).items()
             if k in want_m or ("ablation" in want_m and k in ABLATION)}
    want = set(filter(None, a.items.split(",")))
    rows = []
    print(f"{'item':22s} {'family':20s} {'method':22s} {'J&F':>6s} {'oracle':>6s} {'ratio':>6s} {'ceiling':>7s} "
          f"{'/ceil':>6s} {'sw/obj/100':>10s} {'tracks':>6s} {'s':>5s}")
    for item, frames, gt in load_items(a.data, a.synth_frames, a.seed, a.full_res):
        if want and item not in want:
            continue
        for fam in fams:
            maps = family_maps(a.work, item, fam, frames, gt, a.seed)
            # the per-frame oracle of the raw segmentation (each frame matched alone, one
            # segment per object) and the ceiling of a linker that joins segments
            bg = families.BACKGROUND.get(fam)
            oracle = evaluate_video_arrays(families.as_ids(maps, bg), gt).oracle_JF
            ceil = evaluate_video_arrays(families.ceiling(maps, gt, bg), gt).JF
            done: dict[str, list] = {}
            for m, link in meths.items():
                t0 = time.perf_counter()
                if m == "join" and "engine" in done:  # the engine's labels of this cell, joined
                    from temporal.engine.join import join_label_maps

                    pred = join_label_maps(done["engine"], frames)[0]
                else:
                    pred = link(frames, maps, background=bg)
                sec = time.perf_counter() - t0
                done[m] = pred
                s = evaluate_video_arrays(pred, gt)
                ratio = s.JF / oracle if oracle > 0 else 0.0
                share = s.JF / ceil if ceil > 0 else 0.0
                rows.append(dict(item=item, family=fam, method=m, JF=s.JF, oracle=oracle, ratio=ratio,
                                 ceiling=ceil, of_ceiling=share,
                                 sw=s.id_switches_per_100, tracks=s.n_tracks, sec=sec, out=fingerprint(pred)))
                print(f"{item:22s} {fam:20s} {m:22s} {s.JF:6.3f} {oracle:6.3f} {ratio:6.3f} {ceil:7.3f} "
                      f"{share:6.3f} {s.id_switches_per_100:10.2f} {s.n_tracks:6d} {sec:5.1f}", flush=True)
    print("\n# per method over all items and families: mean ratio, min ratio, mean sw, max sw")
    for m in meths:
        sel = [r for r in rows if r["method"] == m]
        if sel:
            print(f"{m:22s} ratio mean {np.mean([r['ratio'] for r in sel]):.3f} min {min(r['ratio'] for r in sel):.3f}  "
                  f"sw mean {np.mean([r['sw'] for r in sel]):.2f} max {max(r['sw'] for r in sel):.2f}")
    print_ceilings(rows, meths, families.HELD_OUT, target=0.97, unit="J&F")
    print_report(rows, meths)
    if a.json:
        a.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
