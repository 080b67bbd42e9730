"""Quality harness of slice linking: families x volumes x linkers (3D Dice / per-slice oracle).

    python3 benchmarks/volume_linking_bench.py --data ../shared/data [--families all] [--seed 0]

Items: the CT, MR and nuclei label volumes of DATA with their images, sliced along axis 0.
Families (per slice): our DiffSeg-like degradation at two severities
(`volume_sim.diffseg_like_slice`), scikit-image felzenszwalb at two scales, SLIC, a
watershed of the intensity gradient, and quickshift (**held out**: never tuned on); on the
nuclei stack also the classical nuclei pipeline (`nuclei_watershed`: one threshold for the
stack, a distance-transform watershed per slice) at two marker spacings (**held out**
since it was added); its 0 is the background, so those two families are linked and scored with
0 as "no segment", as `diffseg stack` reads such maps by default (in the others every value
is a segment, 0 too, and the per-slice oracle counts it: `families.as_ids`). The slice maps
are cached under WORK. Linkers:

* ``engine``: what `diffseg stack` runs (`volume.api.link_volume`: the linking engine's
  `slices` preset, the grey slice as its look, then the waist cut);
* ``iou``: Cellpose-style IoU stitching (threshold 0.25), the baseline;
* ``join``: the engine, then `diffseg join` (`volume.api.join_volume`: labels that trade
  voxels from slice to slice and have like grey levels are joined);
* ``ablation``: the engine with one mechanism of the preset removed at a time (`ABLATION`;
  each name is also a method of its own).

Printed per item x family x linker: 3D mean Dice (one Hungarian matching over the volume),
the per-slice oracle Dice of the raw slice maps, their ratio, the ceiling of a linker that
only joins segments (`families.ceiling` over the volume: every structure given the slice
segments that make its best Dice) and the share of it reached, labels made and seconds.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import families  # noqa: E402
from paired import fingerprint, print_ceilings, print_report  # noqa: E402

VOLUMES = {
    "ct": ("ct_totalseg_abdomen/labels.nii.gz", "ct_totalseg_abdomen/image.nii.gz"),
    "mr": ("mr_totalseg_abdomen/labels.nii.gz", "mr_totalseg_abdomen/image.nii.gz"),
    "nuclei": ("microscopy_nuclei3d_cells3d/labels.tif", "microscopy_nuclei3d_cells3d/image.tif"),
}


def _degrade(level: str) -> Callable:
    from volume_sim import SimConfig, diffseg_like_slice

    cfg = {"mild": SimConfig(bg_pieces=(2, 4), jitter=0.1, p_split=0.03, p_merge=0.05),
           "strong": SimConfig(bg_pieces=(2, 5), jitter=0.3, p_split=0.05, p_merge=0.1)}[level]
    return lambda rgb, gt, rng: diffseg_like_slice(gt, rng, cfg)


def watershed(rgb: np.ndarray, gt: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Watershed of the Sobel gradient from its regional minima (h = 10 grey levels)."""
    from skimage.filters import sobel
    from skimage.morphology import h_minima
    from skimage.segmentation import watershed as ws
    from scipy import ndimage

    grad = sobel(rgb[..., 0].astype(np.float32))
    markers, _ = ndimage.label(h_minima(grad, 10.0))
    return ws(grad, markers).astype(np.int32)


def nuclei_watershed(min_distance: int) -> Callable:
    """The classical nuclei pipeline run slice by slice on a stack (what a microscopist
    without a 3D segmenter runs): Gaussian (sigma 1), Otsu's threshold of the whole stack
    (a per-slice threshold segments the blur of the empty slices above and below the
    cells), foreground components under 64 pixels dropped, then a watershed of the
    negated distance transform from one marker per local maximum at least
    ``min_distance`` pixels apart. 0 is the background. A stack family: ``(D, H, W) uint8
    -> (D, H, W) int32``."""
    def f(grey: np.ndarray) -> np.ndarray:
        from scipy import ndimage
        from skimage.feature import peak_local_max
        from skimage.filters import gaussian, threshold_otsu
        from skimage.segmentation import watershed as ws

        smooth = np.stack([gaussian(g.astype(np.float32), 1.0, preserve_range=True) for g in grey])
        t = threshold_otsu(smooth)
        out = np.zeros(grey.shape, np.int32)
        for z, g in enumerate(smooth):
            comp, n = ndimage.label(g > t)
            big = np.bincount(comp.ravel(), minlength=n + 1) >= 64
            big[0] = False
            fg = big[comp]
            dist = ndimage.distance_transform_edt(fg)
            peaks = peak_local_max(dist, min_distance=min_distance, labels=np.where(fg, comp, 0),
                                   exclude_border=False)
            markers = np.zeros(g.shape, np.int32)
            markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
            out[z] = ws(-dist, markers, mask=fg)
        return out
    return f


#: families run on the whole stack at once, and the items they apply to: the nuclei
#: pipeline at the spacing with the best per-slice oracle (20 px, one marker per nucleus)
#: and an over-split one (5 px, a few pieces per nucleus)
STACKS: "dict[str, tuple[Callable, tuple[str, ...]]]" = {
    "nuclei_watershed": (nuclei_watershed(20), ("nuclei",)),
    "nuclei_watershed_fine": (nuclei_watershed(5), ("nuclei",)),
}
#: families whose 0 means "no segment", linked and scored as `diffseg stack` reads such
#: maps by default (``--background 0``); in the others every value is a segment (0 too)
BACKGROUND = {**families.BACKGROUND, "nuclei_watershed": 0, "nuclei_watershed_fine": 0}
HELD_OUT = families.HELD_OUT + tuple(STACKS)

SLICES = {"degrade_mild": _degrade("mild"), "degrade_strong": _degrade("strong"),
          "felzenszwalb_fine": families.VIDEO["felzenszwalb_fine"],
          "felzenszwalb_coarse": families.VIDEO["felzenszwalb_coarse"], "slic": families.slic,
          "watershed": watershed, "quickshift": families.quickshift}


def load(data: Path, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(int32 labels (D, H, W), uint8 grey slices (D, H, W), 1-99 % window)."""
    from volume.io import read_label_volume, read_volume

    lab_rel, img_rel = VOLUMES[name]
    lab = np.asarray(read_label_volume(data / lab_rel)[0]).astype(np.int32)
    img = np.asarray(read_volume(data / img_rel).data, np.float32)
    lo, hi = np.percentile(img, [1, 99])
    return lab, np.clip((img - lo) / max(hi - lo, 1e-6) * 255, 0, 255).astype(np.uint8)


def slice_maps(work: Path, name: str, fam: str, gt: np.ndarray, grey: np.ndarray, seed: int) -> np.ndarray:
    path = work / f"vol_{name}__{fam}__s{seed}.npy"
    if path.exists():
        return np.load(path)
    if fam in STACKS:
        out = STACKS[fam][0](grey)
    else:
        rng = np.random.default_rng(seed)
        out = np.stack([SLICES[fam](np.repeat(g[..., None], 3, 2), t, rng) for g, t in zip(grey, gt)]).astype(np.int32)
    work.mkdir(parents=True, exist_ok=True)
    np.save(path, out)
    return out


def link_engine(maps: np.ndarray, grey: "np.ndarray | None", changes: "dict | None" = None,
                out: "np.ndarray | None" = None, background: "int | None" = None) -> np.ndarray:
    """`diffseg stack`'s linking (``changes``: engine knobs by name, e.g. ``{"memory": 5}``;
    ``waist_ratio`` too; ``background``: the value meaning "no segment", or None)."""
    from temporal.engine import slices
    from volume.api import _label_slices, link_volume
    from volume.types import VolumeConfig

    changes = dict(changes or {})
    waist = changes.pop("waist_ratio", VolumeConfig().waist_ratio)
    cfg = VolumeConfig(engine=slices().set(**changes), background=background, waist_ratio=waist)
    gray = None if grey is None else (lambda ax, i: grey[i])
    return link_volume(maps.shape, 0, _label_slices(maps, 0, cfg.background, gray), cfg, out=out)


def link_iou(maps: np.ndarray, grey: np.ndarray, background: "int | None" = None) -> np.ndarray:
    from temporal.engine.baseline import iou_stitch

    out, nxt, prev = [], 1, np.zeros(maps.shape[1:], np.int32)
    for m in maps:
        prev, nxt = iou_stitch(prev, m, nxt, 0.25, background=background)
        out.append(prev)
    return np.stack(out)


def link_join(maps: np.ndarray, grey: "np.ndarray | None", background: "int | None" = None) -> np.ndarray:
    """The engine, then `diffseg join`'s pass along the slices (`volume.api.join_volume`:
    `temporal.engine.join` with the grey slices for its grey test)."""
    from temporal.engine.join import join_label_maps

    lab = link_engine(maps, grey, background=background)
    return np.stack(join_label_maps(list(lab), None if grey is None else list(grey))[0])


# the slices preset with one mechanism removed (engine knobs by name, as `link_engine` takes them)
ABLATION = {
    "no look": {"look_weight": 0.0},
    "no carving (trust 100)": {"segment_trust": 100.0},
    "no split cost": {"split_cost": 0.0},
    "no IoU score (foreign cost)": {"min_iou": 0.0},
    "no waist cut": {"waist_ratio": 0.0},
}
METHODS: "dict[str, Callable]" = {"engine": link_engine, "iou": link_iou, "join": link_join,
                                  **{k: (lambda maps, grey, background=None, ch=ch:
                                         link_engine(maps, grey, ch, background=background))
                                     for k, ch in ABLATION.items()}}


def big(work: Path, n: int = 600) -> None:
    """`diffseg stack`'s linking on an n x 512 x 512 label volume (`bench_volume.BIG_BLOBS`
    ellipsoids, ids shuffled per slice, 0 = background, memmap), streamed slice by slice into an int32
    memmap: seconds and peak RSS against the size of the label array."""
    import resource

    from bench_volume import BIG_BLOBS, _big_labels

    work.mkdir(parents=True, exist_ok=True)
    src = work / f"big_{n}_b{BIG_BLOBS}.npy"
    if not src.exists():
        _big_labels(src, shape=(n, 512, 512))
    lab = np.load(src, mmap_mode="r")
    out = np.lib.format.open_memmap(work / f"big_{n}_linked.npy", mode="w+", dtype=np.int32, shape=lab.shape)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    link_engine(lab, None, out=out, background=0)
    sec = time.perf_counter() - t0
    out.flush()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{n} x 512 x 512 labels ({lab.nbytes / 2**20:.0f} MiB as stored, int32 output "
          f"{out.nbytes / 2**20:.0f} MiB): linked in {sec:.1f} s ({n / sec:.1f} slices/s), peak RSS "
          f"{rss:.0f} MiB (before linking {rss0:.0f} MiB), {len(np.unique(out[::50]))} ids on every 50th slice")


def main() -> None:
    from volume.evaluate import volume_dice

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=HERE.parent.parent / "shared" / "data")
    ap.add_argument("--work", type=Path, default=Path("/tmp/volume_linking_bench"))
    ap.add_argument("--families", default="all", help="all, tuning (all but the held-out ones) or a comma list")
    ap.add_argument("--methods", default="engine,iou",
                    help="comma list of engine, iou, join, ablation, or ablation names")
    ap.add_argument("--items", default="ct,mr,nuclei")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None, help="write the rows (for paired.py)")
    ap.add_argument("--big", type=int, default=0, metavar="N",
                    help="only: link an N x 512 x 512 label volume with the engine (time, peak RSS)")
    a = ap.parse_args()
    from diffseg_core.progress import set_progress_enabled

    set_progress_enabled(False)
    if a.big:
        big(a.work, a.big)
        return
    meths = [m for w in a.methods.split(",") for m in (["engine", *ABLATION] if w == "ablation" else [w])]
    meths = list(dict.fromkeys(meths))  # "engine,ablation" names the engine once
    unknown = [m for m in meths if m not in METHODS]
    if unknown:
        ap.error(f"unknown methods {unknown}; expected {sorted(METHODS)} or ablation")
    every = [*SLICES, *STACKS]
    fams = (every if a.families == "all" else [f for f in every if f not in HELD_OUT]
            if a.families == "tuning" else a.families.split(","))
    unknown = [f for f in fams if f not in every]
    if unknown:
        ap.error(f"unknown families {unknown}; expected {every}")
    rows = []
    print(f"{'item':8s} {'family':22s} {'method':28s} {'Dice':>6s} {'oracle':>6s} {'ratio':>6s} {'ceiling':>7s} "
          f"{'/ceil':>6s} {'labels':>6s} {'s':>5s}")
    for name in a.items.split(","):
        if not (a.data / VOLUMES[name][0]).exists():
            print(f"# skipping {name}: not found in {a.data}")
            continue
        gt, grey = load(a.data, name)
        for fam in fams:
            if fam in STACKS and name not in STACKS[fam][1]:
                continue
            maps = slice_maps(a.work, name, fam, gt, grey, a.seed)
            bg = BACKGROUND.get(fam)
            oracle = volume_dice(families.as_ids(maps, bg), gt).mean_oracle_dice
            ceil = volume_dice(families.ceiling(maps, gt, bg, pooled=True), gt, oracle=False).mean_dice
            for m in meths:
                t0 = time.perf_counter()
                pred = METHODS[m](maps, grey, background=bg)
                sec = time.perf_counter() - t0
                d = volume_dice(pred, gt, oracle=False).mean_dice
                share = d / ceil if ceil > 0 else 0.0
                rows.append(dict(item=name, family=fam, method=m, ratio=d / oracle, dice=d, oracle=oracle,
                                 ceiling=ceil, of_ceiling=share, out=fingerprint([pred])))
                print(f"{name:8s} {fam:22s} {m:28s} {d:6.3f} {oracle:6.3f} {d / oracle:6.3f} {ceil:7.3f} "
                      f"{share:6.3f} {len(np.unique(pred)):6d} {sec:5.1f}", flush=True)
    print(f"\n# per method: mean ratio over tuning families (min) | held out ({', '.join(HELD_OUT)})")
    for m in meths:
        tune = [r["ratio"] for r in rows if r["method"] == m and r["family"] not in HELD_OUT]
        held = [r["ratio"] for r in rows if r["method"] == m and r["family"] in HELD_OUT]
        if tune:
            print(f"{m:28s} {np.mean(tune):.3f} ({min(tune):.3f}) | "
                  f"{np.mean(held) if held else float('nan'):.3f}")
    print_ceilings(rows, meths, HELD_OUT, target=0.95, unit="Dice")
    print_report(rows, meths)
    if a.json:
        a.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
