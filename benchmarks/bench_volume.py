#!/usr/bin/env python3
"""Benchmark of `volume`: 3D consistency of linked slice segmentations, geometry, memory.

Usage:
    python3 benchmarks/bench_volume.py DATA_DIR [--seeds 0,1,2] [--big] [--big-model]

DATA_DIR is the shared data folder (``ct_totalseg_abdomen/``, ``mr_totalseg_abdomen/``,
``microscopy_nuclei3d_cells3d/``). For every reference label volume it makes DiffSeg-like
slice segmentations (`volume_sim.diffseg_like_volume`: ids shuffled per slice, background
in inconsistent pieces, boundary jitter, splits, merges) at two strengths, writes them in
the source format, links them with ``diffseg stack`` (the CLI, in process) and prints:

* 3D mean Dice (one Hungarian matching over the volume) of the linked labels;
* the per-slice-oracle Dice of the raw slice segmentations (each slice matched alone);
* the ceiling of a linker that only joins segments (`families.ceiling`, over the volume);
* the same 3D Dice for the IoU-only stitcher (Cellpose ``stitch_threshold=0.25`` style).

Then synthetic phantoms with exact ground truth (touching, nested, small ellipsoids at
3 x 0.75 x 0.75 mm), the affine / orientation round trip (NIfTI oblique LPS affine and an
oblique DICOM series), ``diffseg volume`` with a stand-in segmenter (axes one / all), and
with ``--big`` the peak RSS of ``diffseg stack`` on a 512 x 512 x 600 label volume
(``--big-model``: also ``diffseg volume --model tiny-random`` on a 512 x 512 x 600 scan).
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

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import families  # noqa: E402
from volume_sim import SimConfig, diffseg_like_volume, phantom  # noqa: E402

from diffseg.cli import main as diffseg_main  # noqa: E402
from volume.evaluate import volume_dice  # noqa: E402
from volume.io import read_label_volume, read_volume  # noqa: E402
from temporal.engine.baseline import iou_stitch  # noqa: E402

LEVELS = {
    "mild": SimConfig(bg_pieces=(2, 4), jitter=0.1, p_split=0.03, p_merge=0.05),
    "strong": SimConfig(bg_pieces=(2, 5), jitter=0.3, p_split=0.05, p_merge=0.1),
}
VOLUMES = [
    ("CT (41 structures)", "ct_totalseg_abdomen/labels.nii.gz", "ct_totalseg_abdomen/image.nii.gz"),
    ("MR (23 structures)", "mr_totalseg_abdomen/labels.nii.gz", "mr_totalseg_abdomen/image.nii.gz"),
    ("nuclei (20 instances)", "microscopy_nuclei3d_cells3d/labels.tif", "microscopy_nuclei3d_cells3d/image.tif"),
]


def _save_like(path: Path, labels: np.ndarray, src: Path) -> None:
    """Write (D, H, W) labels in the source's format and geometry (NIfTI / TIFF)."""
    vol = read_volume(src)
    from volume.io import write_labels

    write_labels(path, labels, vol)


def _stitch_baseline(sim: np.ndarray, threshold: float = 0.25) -> np.ndarray:
    out = np.zeros(sim.shape, np.int32)
    prev = np.zeros(sim.shape[1:], np.int32)
    nid = 1
    for z in range(sim.shape[0]):
        prev, nid = iou_stitch(prev, sim[z], nid, threshold, background=None)
        out[z] = prev
    return out


def _run(argv: list[str]) -> None:
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):
        rc = diffseg_main(argv)
    if rc != 0:
        raise SystemExit(f"diffseg {' '.join(argv)} failed with {rc}")


def bench_real(data: Path, seeds: list[int], tmp: Path) -> list[dict]:
    rows = []
    for name, rel, img_rel in VOLUMES:
        src = data / rel
        img = data / img_rel
        if not src.exists():
            print(f"  skip {name}: {src} not found")
            continue
        gt = np.asarray(read_label_volume(src)[0]).astype(np.int32)
        ext = ".nii.gz" if rel.endswith(".nii.gz") else ".tif"
        for level, cfg in LEVELS.items():
            acc = {"ours": [], "ours_img": [], "oracle": [], "ceiling": [], "stitch": [], "secs": [], "n": []}
            for seed in seeds:
                sim = diffseg_like_volume(gt, seed=seed, cfg=cfg)
                sim_path = tmp / f"sim_{seed}{ext}"
                out_path = tmp / f"linked_{seed}{ext}"
                _save_like(sim_path, sim, src)
                t0 = time.perf_counter()
                _run(["stack", str(sim_path), "-o", str(out_path), "--background", "none", "-q",
                      "--no-montage"])
                acc["secs"].append(time.perf_counter() - t0)
                pred = np.asarray(read_label_volume(out_path)[0])
                ours = volume_dice(pred, gt, oracle=False)
                acc["ours"].append(ours.mean_dice)
                acc["n"].append(ours.n_pred)
                if img.exists():
                    _run(["stack", str(sim_path), "-o", str(out_path), "--background", "none", "-q",
                          "--no-montage", "--image", str(img)])
                    acc["ours_img"].append(volume_dice(np.asarray(read_label_volume(out_path)[0]), gt,
                                                       oracle=False).mean_dice)
                acc["oracle"].append(volume_dice(sim, gt).mean_oracle_dice)
                joined = families.ceiling(sim, gt, pooled=True)
                acc["ceiling"].append(volume_dice(joined, gt, oracle=False).mean_dice)
                acc["stitch"].append(volume_dice(_stitch_baseline(sim), gt, oracle=False).mean_dice)
            r = {k: float(np.mean(v)) if v else float("nan") for k, v in acc.items()}
            r.update(volume=name, level=level, shape=list(gt.shape))
            rows.append(r)
            print(f"  {name:22s} {level:6s} 3D Dice: ours {r['ours']:.4f}, ours+--image {r['ours_img']:.4f} | "
                  f"per-slice oracle {r['oracle']:.4f} (ours/oracle {r['ours'] / r['oracle']:.3f}) | "
                  f"ceiling {r['ceiling']:.4f} | IoU stitcher {r['stitch']:.4f} "
                  f"| {r['n']:.0f} labels, {r['secs']:.2f} s")
    return rows


def _oblique_affine(spacing_xyz: tuple[float, float, float]) -> np.ndarray:
    th = np.deg2rad(15)
    rot = np.array([[np.cos(th), -np.sin(th), 0], [np.sin(th), np.cos(th), 0], [0, 0, 1]])
    a = np.eye(4)
    a[:3, :3] = np.diag([-1.0, -1.0, 1.0]) @ rot @ np.diag(spacing_xyz)  # LPS-like, rotated
    a[:3, 3] = [40.0, -12.5, 80.0]
    return a


def bench_phantoms(seeds: list[int], tmp: Path) -> None:
    import nibabel as nib

    spacing = (3.0, 0.75, 0.75)
    gt = phantom((24, 96, 96), spacing)
    aff = _oblique_affine((spacing[2], spacing[1], spacing[0]))
    # Intensity image of the phantom: one grey level per structure plus noise.
    levels = np.array([20, 120, 200, 90, 160, 60, 230, 140, 180, 100], np.float64)
    noise = np.random.default_rng(0).normal(0, 8, gt.shape)
    image = np.clip(levels[gt % len(levels)] + noise, 0, 255).astype(np.int16)
    nib.save(nib.Nifti1Image(image.transpose(2, 1, 0), aff), tmp / "ph_img.nii.gz")
    for level, cfg in LEVELS.items():
        ours, ours_img, orc, ceil, st = [], [], [], [], []
        for seed in seeds:
            sim = diffseg_like_volume(gt, seed=100 + seed, cfg=cfg)
            nib.save(nib.Nifti1Image(sim.transpose(2, 1, 0).astype(np.int16), aff), tmp / "ph.nii.gz")
            _run(["stack", str(tmp / "ph.nii.gz"), "-o", str(tmp / "ph_lab.nii.gz"), "--background", "none", "-q"])
            img = nib.load(tmp / "ph_lab.nii.gz")
            pred = np.asarray(img.dataobj).transpose(2, 1, 0)
            ours.append(volume_dice(pred, gt, oracle=False).mean_dice)
            _run(["stack", str(tmp / "ph.nii.gz"), "-o", str(tmp / "ph_lab_img.nii.gz"), "--background", "none",
                  "-q", "--image", str(tmp / "ph_img.nii.gz"), "--window", "minmax"])
            pred_i = np.asarray(nib.load(tmp / "ph_lab_img.nii.gz").dataobj).transpose(2, 1, 0)
            ours_img.append(volume_dice(pred_i, gt, oracle=False).mean_dice)
            orc.append(volume_dice(sim, gt).mean_oracle_dice)
            ceil.append(volume_dice(families.ceiling(sim, gt, pooled=True), gt, oracle=False).mean_dice)
            st.append(volume_dice(_stitch_baseline(sim), gt, oracle=False).mean_dice)
        print(f"  phantom {level:6s} ({int(gt.max())} structures: touching, nested, small, two stacked end to end; "
              f"spacing {spacing}) 3D Dice ours {np.mean(ours):.4f}, ours+--image "
              f"{np.mean(ours_img):.4f} | oracle {np.mean(orc):.4f} | ceiling {np.mean(ceil):.4f} | "
              f"IoU stitcher {np.mean(st):.4f}")
    # Geometry round trip (NIfTI): same affine, codes, orientation, voxel order.
    img = nib.load(tmp / "ph_lab.nii.gz")
    src = nib.load(tmp / "ph.nii.gz")
    same_aff = bool(np.allclose(img.affine, src.affine))
    codes = (nib.aff2axcodes(src.affine), nib.aff2axcodes(img.affine))
    exact = volume_dice(np.asarray(img.dataobj).transpose(2, 1, 0), gt, oracle=False).mean_dice
    print(f"  NIfTI round trip: affine equal {same_aff}, orientation {''.join(codes[0])} -> {''.join(codes[1])}, "
          f"shape {src.shape} -> {img.shape}, voxel-aligned Dice {exact:.4f}")

    # DICOM round trip: oblique series -> labels NIfTI; world coordinates of voxels compared.
    from tests.volume.helpers import ThresholdSegmenter, write_dicom_series

    row, col = np.array([np.cos(0.3), np.sin(0.3), 0.0]), np.array([0.0, 0.0, -1.0])
    hu = np.select([gt == 3, gt > 0], [900, 1100], 0).astype(np.uint16)
    write_dicom_series(tmp / "dcm", hu, spacing=spacing, origin=(-50.0, 20.0, 100.0), row_dir=row, col_dir=col,
                       intercept=-1024.0)
    vol = read_volume(tmp / "dcm")
    errs = []
    normal = np.cross(row, col)
    for d, h, w in [(0, 0, 0), (23, 95, 95), (7, 40, 3)]:
        lps = np.array([-50.0, 20.0, 100.0]) + d * spacing[0] * normal + h * spacing[1] * col + w * spacing[2] * row
        errs.append(float(np.abs((vol.affine @ [d, h, w, 1])[:3] - lps * [-1, -1, 1]).max()))
    from volume.api import segment_volume
    from volume.types import VolumeConfig

    seg = ThresholdSegmenter(edges=(20, 60, 140), batch_size=8)
    # a NIfTI output named explicitly (a folder would get labels.dcm, a DICOM-SEG, as the input is DICOM)
    res = segment_volume(tmp / "dcm", tmp / "dcm_out" / "labels.nii.gz", seg,
                         VolumeConfig(min_size=8, window=(0.0, 400.0)))
    limg = nib.load(res.labels_path)
    lab_err = float(np.abs(limg.affine @ [5, 6, 7, 1] - vol.affine @ [7, 6, 5, 1]).max())
    pred = np.asarray(limg.dataobj).transpose(2, 1, 0)
    expect = np.select([gt == 3, gt > 0], [1, 2], 0)
    print(f"  DICOM oblique series: max world-coordinate error of the reader {max(errs):.2e} mm, labels NIfTI "
          f"vs DICOM geometry {lab_err:.2e} mm, orientation {''.join(nib.aff2axcodes(limg.affine))}; "
          f"diffseg volume (stand-in segmenter, exact bands) Dice {volume_dice(pred, expect, oracle=False).mean_dice:.4f}")
    res_all = segment_volume(tmp / "dcm", tmp / "dcm_all" / "labels.nii.gz", seg,
                             VolumeConfig(min_size=8, window=(0.0, 400.0), axes="all"))
    pred_all = np.asarray(nib.load(res_all.labels_path).dataobj).transpose(2, 1, 0)
    print(f"  --axes all on the same series: Dice {volume_dice(pred_all, expect, oracle=False).mean_dice:.4f}, "
          f"{res_all.seconds:.2f} s (one axis {res.seconds:.2f} s)")


#: ellipsoids of the big label volume: about 25 labels a slice at 600 x 512 x 512 (issue 14's figure)
BIG_BLOBS = 210


def _big_labels(path: Path, shape=(600, 512, 512), n_blobs: int = BIG_BLOBS, seed: int = 0) -> float:
    """Slice-shuffled ellipsoids written slice by slice into a uint16 .npy memmap; returns
    the mean number of labels a slice holds."""
    rng = np.random.default_rng(seed)
    D, H, W = shape
    c = rng.uniform([0, 0, 0], [D, H, W], size=(n_blobs, 3))
    r = rng.uniform([15, 15, 15], [60, 50, 50], size=(n_blobs, 3))
    mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint16, shape=shape)
    yy, xx = np.mgrid[:H, :W]
    per_slice = 0
    for z in range(D):
        sl = np.zeros((H, W), np.int32)
        for i in np.flatnonzero(np.abs(c[:, 0] - z) < r[:, 0]):
            k = 1 - ((z - c[i, 0]) / r[i, 0]) ** 2
            ry, rx = r[i, 1] * np.sqrt(k), r[i, 2] * np.sqrt(k)
            y0, y1 = int(max(0, c[i, 1] - ry)), int(min(H, c[i, 1] + ry + 1))
            x0, x1 = int(max(0, c[i, 2] - rx)), int(min(W, c[i, 2] + rx + 1))
            sub = ((yy[y0:y1, x0:x1] - c[i, 1]) / max(ry, 1e-6)) ** 2 + ((xx[y0:y1, x0:x1] - c[i, 2]) / max(rx, 1e-6)) ** 2 < 1
            sl[y0:y1, x0:x1][sub] = i + 1
        perm = rng.permutation(n_blobs + 1)
        perm[0] = 0
        mm[z] = perm[sl]
        per_slice += int(np.count_nonzero(np.bincount(sl.ravel())[1:]))
    mm.flush()
    del mm
    return per_slice / D


def _peak_rss(cmd: list[str]) -> tuple[float, float, str]:
    """(peak RSS MiB of the child, wall s, stdout) of a command run in a fresh process."""
    code = ("import resource, subprocess, sys, time, json; t=time.perf_counter(); "
            "p=subprocess.run(sys.argv[1:], capture_output=True, text=True); "
            "print(json.dumps([resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss/1024, "
            "time.perf_counter()-t, p.returncode, p.stdout[-300:], p.stderr[-500:]]))")
    out = subprocess.run([sys.executable, "-c", code] + cmd, capture_output=True, text=True, check=True)
    rss, wall, rc, so, se = json.loads(out.stdout.strip().splitlines()[-1])
    if rc != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {se}")
    return rss, wall, so.strip()


def bench_big(tmp: Path, model: bool, n_blobs: int = BIG_BLOBS) -> None:
    p = tmp / "big_slices.npy"
    t0 = time.perf_counter()
    per_slice = _big_labels(p, n_blobs=n_blobs)
    size_mb = p.stat().st_size / 2 ** 20
    print(f"  made 512x512x600 slice-shuffled label volume ({size_mb:.0f} MiB uint16, {n_blobs} ellipsoids, "
          f"{per_slice:.1f} labels a slice) in {time.perf_counter() - t0:.1f} s")
    diffseg = [sys.executable, "-m", "diffseg"]
    rss, wall, so = _peak_rss(diffseg + ["stack", str(p), "-o", str(tmp / "big_out.npy"), "-q", "--json"])
    print(f"  diffseg stack 512x512x600: peak RSS {rss:.0f} MiB, wall {wall:.1f} s "
          f"(int32 label volume alone = {600 * 512 * 512 * 4 / 2 ** 20:.0f} MiB); {so}")
    if model:
        scan = tmp / "big_scan.npy"
        mm = np.lib.format.open_memmap(scan, mode="w+", dtype=np.int16, shape=(600, 512, 512))
        src = np.load(p, mmap_mode="r")
        for z in range(0, 600, 50):
            mm[z:z + 50] = (src[z:z + 50] % 7).astype(np.int16) * 150 - 1000
        mm.flush()
        del mm
        rss, wall, so = _peak_rss(diffseg + ["volume", str(scan), "-o", str(tmp / "big_model.npy"), "-q", "--json",
                                            "--model", "tiny-random", "--size", "64", "--batch-size", "16",
                                            "--device", "cpu"])
        print(f"  diffseg volume 512x512x600 (tiny-random, --size 64): peak RSS {rss:.0f} MiB, wall {wall:.1f} s; {so}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", type=Path, help="shared data folder")
    ap.add_argument("--seeds", default="0,1,2", help="simulation seeds, averaged [0,1,2]")
    ap.add_argument("--big", action="store_true", help="512x512x600 peak-RSS run of diffseg stack")
    ap.add_argument("--big-model", action="store_true", help="also diffseg volume with tiny-random on 512x512x600")
    ap.add_argument("--big-blobs", type=int, default=BIG_BLOBS,
                    help=f"ellipsoids in the 512x512x600 volume ({BIG_BLOBS}: about 25 labels a slice)")
    ap.add_argument("--big-only", action="store_true", help="only the 512x512x600 runs")
    ap.add_argument("--tmp", type=Path, default=None, help="work folder (default: a temporary one)")
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",") if s]
    with tempfile.TemporaryDirectory(dir=args.tmp) as t:
        tmp = Path(t)
        if not args.big_only:
            print("== real reference labels, DiffSeg-like slices, linked with `diffseg stack`")
            bench_real(args.data, seeds, tmp)
            print("== synthetic phantoms (exact ground truth) and geometry round trips")
            bench_phantoms(seeds, tmp)
        if args.big or args.big_model or args.big_only:
            print("== bounded memory")
            bench_big(tmp, args.big_model, args.big_blobs)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
