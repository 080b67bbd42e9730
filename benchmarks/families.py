"""Families of per-frame / per-slice segmentations that the linking engine is judged on.

A linker that is tuned on one generator of segmentations learns that generator. These
families differ in how they fail, so a figure that holds on all of them says something
about the linker:

* ``degrade_mild`` / ``degrade_strong``: our DiffSeg-like degradation of the ground truth
  (`synth_video.diffseg_like`, `volume_sim.diffseg_like_slice`) at two severities; every
  value is a segment (0 too).
* ``felzenszwalb_fine`` / ``felzenszwalb_coarse``: scikit-image's graph-based segmenter run
  on the image at two scales (fine splits objects into pieces, coarse merges them into the
  ground); 0 is a segment.
* ``slic``: SLIC superpixels (compact, boundaries at colour edges, about 40 per image); 0 is
  a segment.
* ``quickshift``: quickshift mode seeking: **held out** while the engine was designed (run
  it only to check, never to tune).
* ``watershed_compact``: compact watershed of the grey gradient from 150 markers (video
  only): **held out**, added in session 21 after the join of tracks (`temporal.engine.join`)
  was fixed, to judge it on a family it had not seen.
* ``objects``: object masks on an empty ground, as SAM 2, DEVA or Cellpose give them: the
  mild degradation with every segment that lies mostly on the ground set to 0, the
  background (`BACKGROUND`: linked with ``background=0``, as ``diffseg track --background
  0`` reads such maps); objects numbered from 1.

Every family is a function ``(rgb uint8 (H, W, 3), gt int (H, W), rng) -> int32 (H, W)``.

The evaluation reads id 0 as "no segment" (`temporal.evaluate`, `volume.evaluate`), so the
per-frame oracle of a family's raw maps is computed on `as_ids` of them: when 0 is a
segment, as in every family here, an oracle of the raw values could not use it (for our
degradation, whose numbers are shuffled, segment 0 is often an object: the oracle lost up
to 0.19 of J&F on a DAVIS sequence, and every ratio to it was inflated).
"""
from __future__ import annotations

from typing import Callable

import numpy as np

HELD_OUT = ("quickshift", "watershed_compact")
#: families whose 0 means "no segment" (linked and scored so); in the others every value is
#: a segment, 0 too
BACKGROUND = {"objects": 0}


def as_ids(maps, background: "int | None" = None):
    """A family's label maps (a list of ``(H, W)`` or a ``(D, H, W)`` array) as the
    evaluation reads them: with every value a segment (``background`` None), the ids
    ``value + 1`` that `diffseg_core.io.segment_ids` writes to files; with background 0,
    unchanged."""
    from diffseg_core.io import segment_ids

    if background == 0:
        return maps
    if background is not None:
        raise ValueError(f"background must be None or 0; got {background}")
    return segment_ids(maps) if isinstance(maps, np.ndarray) else [segment_ids(m) for m in maps]


def ceiling(maps, gt, background: "int | None" = None, pooled: bool = False):
    """What a linker that only joins segments can reach (it uses the truth): every object
    takes the segments that give it its best overlap score and keeps its ground-truth id
    through the video / volume. For one object these are the segments with the largest
    share inside it, taken while the score grows (IoU and Dice order sets alike); a segment
    two objects want goes to the one it lies in more. Splits are re-joined, merges are not
    undone, so a linker that carves can pass it; the per-frame oracle, which takes one
    segment per object and frame, is no upper bound for a linker that joins. Segments no
    object takes, and "no segment" (``background``), are 0.

    Args:
        maps: a family's label maps, a list of ``(H, W)`` or a ``(D, H, W)`` array (read as
            `as_ids` reads them).
        gt: the ground-truth id maps, same shapes (0 = ground).
        background: the maps' "no segment" value, or None.
        pooled: choose each object's segments over all frames at once (a volume's 3D Dice)
            instead of frame by frame (video J, a mean over frames).

    Returns:
        int32 ids, a list or an array as ``maps``.
    """
    ids = [np.asarray(s, np.int64) for s in as_ids(maps, background)]
    gts = [np.asarray(g, np.int64) for g in gt]
    unit, obj, both, area, size = [], [], [], [], []  # (segment of a frame) x object overlaps
    bases = []  # each frame's first unit: a segment of a frame is one unit
    base = 0
    for f, (s, g) in enumerate(zip(ids, gts)):
        bases.append(base)
        n, m = int(s.max()) + 1, int(g.max()) + 1
        codes, counts = np.unique(s.ravel() * m + g.ravel(), return_counts=True)
        seg, o = codes // m, codes % m
        segarea = np.bincount(seg, counts, n)
        keep = (seg > 0) & (o > 0)  # id 0: no segment / the ground
        unit.append(base + seg[keep])
        obj.append(o[keep] if pooled else o[keep] + f * (1 << 31))
        both.append(counts[keep])
        area.append(segarea[seg[keep]])
        size.append(np.bincount(g.ravel(), minlength=m)[o[keep]])
        base += n
    unit, obj, both, area, size = (np.concatenate(a) if a else np.zeros(0, np.int64)
                                   for a in (unit, obj, both, area, size))
    if pooled:  # an object's size over all frames
        tot = np.zeros(max((int(g.max()) for g in gts), default=0) + 1, np.int64)
        for g in gts:
            tot[:int(g.max()) + 1] += np.bincount(g.ravel())
        size = tot[obj]
    share = both / area
    order = np.lexsort((-share, obj))  # by object, largest share first
    unit, obj, both, area, size, share = (a[order] for a in (unit, obj, both, area, size, share))
    start = np.r_[0, np.flatnonzero(np.diff(obj)) + 1] if len(obj) else np.zeros(0, np.int64)
    group = np.repeat(np.arange(len(start)), np.diff(np.r_[start, len(obj)]))
    cum_both = np.cumsum(both) - np.r_[0, np.cumsum(both)][start][group]
    cum_area = np.cumsum(area) - np.r_[0, np.cumsum(area)][start][group]
    score = cum_both / (size + cum_area - cum_both)  # IoU of the prefix
    best = np.full(len(start), -1.0)
    np.maximum.at(best, group, score)
    last = np.full(len(start), 0)
    np.maximum.at(last, group, np.where(score >= best[group], np.arange(len(obj)), 0))
    taken = np.arange(len(obj)) <= last[group]
    unit, obj, share = unit[taken], obj[taken] % (1 << 31), share[taken]
    order = np.lexsort((-share, unit))  # a unit two objects want: the larger share
    unit, obj = unit[order], obj[order]
    first = np.r_[True, unit[1:] != unit[:-1]]
    lut = np.zeros(base, np.int32)
    lut[unit[first]] = obj[first]
    out = [lut[b + s] for b, s in zip(bases, ids)]
    return np.stack(out) if isinstance(maps, np.ndarray) else out


def _degrade(level: str) -> Callable:
    from synth_video import Degradation, diffseg_like

    deg = {"mild": Degradation(n_stuff=(2, 4), jitter_px=1.5, p_split=0.04, p_merge=0.03, n_fragments=(0, 2)),
           "strong": Degradation(n_stuff=(3, 7), jitter_px=4.0, p_split=0.15, p_merge=0.10, n_fragments=(1, 4))}[level]

    def f(rgb: np.ndarray, gt: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return diffseg_like(gt, rng, deg)
    return f


def felzenszwalb(scale: float, min_size: int) -> Callable:
    def f(rgb: np.ndarray, gt: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        from skimage.segmentation import felzenszwalb as fz

        return fz(rgb, scale=scale, sigma=0.8, min_size=min_size).astype(np.int32)
    return f


def slic(rgb: np.ndarray, gt: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    from skimage.segmentation import slic as sl

    return sl(rgb, n_segments=40, compactness=10, start_label=0).astype(np.int32)


def quickshift(rgb: np.ndarray, gt: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    from skimage.segmentation import quickshift as qs

    return qs(rgb, kernel_size=5, max_dist=12, ratio=0.5, rng=0).astype(np.int32)


def watershed_compact(rgb: np.ndarray, gt: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    from skimage.color import rgb2gray
    from skimage.filters import sobel
    from skimage.segmentation import watershed

    return (watershed(sobel(rgb2gray(rgb)), markers=150, compactness=0.0005) - 1).astype(np.int32)


_MILD = _degrade("mild")


def objects(rgb: np.ndarray, gt: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Object masks on an empty ground (0): the mild degradation's segments that lie mostly
    on objects, numbered from 1."""
    seg = _MILD(rgb, gt, rng)
    on_object = ((gt > 0) & (gt != 255)).ravel()  # 255: DAVIS's void
    n = int(seg.max()) + 1
    area = np.maximum(np.bincount(seg.ravel(), minlength=n), 1)
    share = np.bincount(seg.ravel(), weights=on_object, minlength=n) / area
    kept = share > 0.5
    return np.where(kept, np.cumsum(kept), 0).astype(np.int32)[seg]


VIDEO = {
    "degrade_mild": _MILD,
    "degrade_strong": _degrade("strong"),
    "felzenszwalb_fine": felzenszwalb(60, 40),
    "felzenszwalb_coarse": felzenszwalb(400, 150),
    "slic": slic,
    "quickshift": quickshift,
    "watershed_compact": watershed_compact,
    "objects": objects,
}
