"""3D cleanup of linked labels: connected components, tiny-fragment removal, relabelling.

All functions work in place on int32 ``(D, H, W)`` volumes (which may be ``np.memmap``) and
touch only bounding boxes (`scipy.ndimage.find_objects`) or slabs of slices, so no full-size
temporary beyond one bool mask is made; except where ids reach `DENSE_IDS` (another tool's
hashed ids), which `label_stats` and `bounding_boxes` count on an int32 copy of their ranks.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
from scipy import ndimage

from .geometry import slabs
from .types import LabelInfo


@dataclass
class CleanupStats:
    """What `remove_fragments` did.

    Attributes:
        fragments: connected components merged into a neighbour (or cleared).
        voxels: voxels that changed label.
        split: extra ids created by ``split_disconnected``.
    """

    fragments: int = 0
    voxels: int = 0
    split: int = 0


# ids below this index tables directly (a table of this many counts is 8 MB); a volume
# with larger ids (a hand-made file, another tool's hashed ids) is counted by rank instead
DENSE_IDS = 1 << 20


def present_ids(labels: np.ndarray) -> np.ndarray:
    """The sorted non-zero ids of ``labels`` (int64), read slab by slab."""
    present: set[int] = set()
    for sl in slabs(labels.shape):
        present.update(np.unique(np.asarray(labels[sl])).tolist())
    present.discard(0)
    return np.array(sorted(present), dtype=np.int64)


def ranks(block: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """int64 ``block`` with ``ids[i]`` -> ``i + 1`` and any other value (0) -> 0."""
    block = np.asarray(block)
    if not len(ids):
        return np.zeros(block.shape, np.int64)
    pos = np.minimum(np.searchsorted(ids, block), len(ids) - 1)
    return np.where(ids[pos] == block, pos + 1, 0)


def _indexable(labels: np.ndarray) -> "tuple[np.ndarray, np.ndarray | None, int]":
    """``(labels, None, largest id)`` when its ids are small enough to index tables by; else
    an int32 copy holding the ranks of its ids (`ranks`), those ids and the largest rank."""
    top = int(labels.max()) if labels.size else 0
    if top < DENSE_IDS:
        return labels, None, top
    ids = present_ids(labels)
    out = np.empty(labels.shape, np.int32)
    for sl in slabs(labels.shape):
        out[sl] = ranks(labels[sl], ids)
    return out, ids, len(ids)


def bounding_boxes(labels: np.ndarray) -> "dict[int, tuple[slice, ...]]":
    """Id -> bounding box (`scipy.ndimage.find_objects`) of every non-zero id present, also
    for ids far larger than their number."""
    idx, ids, _ = _indexable(labels)
    return {i + 1 if ids is None else int(ids[i]): box
            for i, box in enumerate(ndimage.find_objects(np.asarray(idx))) if box is not None}


def _chunked_bincount(a: np.ndarray, n: int, chunk: int = 1 << 22) -> np.ndarray:
    """``np.bincount(a.ravel(), minlength=n)`` without the int64 copy of the whole array."""
    flat = a.reshape(-1)
    out = np.zeros(n, np.int64)
    for i in range(0, flat.size, chunk):
        out += np.bincount(flat[i:i + chunk], minlength=n)[:n]
    return out


def _structure(connectivity: int) -> np.ndarray:
    return ndimage.generate_binary_structure(3, connectivity)


def remove_fragments(labels: np.ndarray, min_size: int, connectivity: int = 1,
                     split_disconnected: bool = False, background: int = 0,
                     min_label_size: int = 0) -> CleanupStats:
    """Merge small 3D fragments of every label into their neighbour, in place.

    A fragment is a connected component (``connectivity`` 1 = faces, 3 = corners) of one
    label that is smaller than ``min_size`` voxels and is not that label's largest
    component (debris split off a structure); a whole label smaller than
    ``min_label_size`` counts as a fragment too (a sliver that no slice continued). It
    takes the label that shares the most faces with it (``background`` if it touches
    nothing else). Small structures that are whole (one component of at least
    ``min_label_size`` voxels) are kept: at 3 mm CT voxels an adrenal gland is ~100 voxels.

    Args:
        labels: int32 ``(D, H, W)``, modified in place.
        min_size: fragment size threshold in voxels (0: only ``split_disconnected`` runs).
        min_label_size: whole labels below this many voxels are removed too.
        connectivity: 1, 2 or 3.
        split_disconnected: give every remaining component of a label its own new id.
        background: the "no label" value (never treated as a label).

    Returns:
        `CleanupStats`.
    """
    st = CleanupStats()
    struct = _structure(connectivity)
    objs = ndimage.find_objects(labels)
    # (global box of the fragment, its mask in that box); fragments are marked -1 in
    # `labels` so that they never vote for each other. No full-volume temporaries beyond
    # one label's bounding box.
    frags: list[tuple[tuple[slice, ...], np.ndarray]] = []
    next_id = len(objs) + 1
    for lab_m1, box in enumerate(objs):
        if box is None:
            continue
        lab = lab_m1 + 1
        if lab == background:
            continue
        region = labels[box]
        sub = region == lab
        cc, n = ndimage.label(sub, structure=struct)
        del sub
        if n <= 1 and not (n == 1 and min_label_size > 0):
            continue
        sizes = _chunked_bincount(cc, n + 1)
        sizes[0] = 0
        largest = int(np.argmax(sizes))
        small = (sizes < min_size) & (np.arange(n + 1) > 0)
        small[largest] = sizes[largest] < min_label_size
        comp_boxes = ndimage.find_objects(cc) if (small.any() or (split_disconnected and n > 1)) else []
        for c, cbox in enumerate(comp_boxes, start=1):
            if cbox is None:
                continue
            if small[c]:
                m = cc[cbox] == c
                region[cbox][m] = -1
                frags.append((tuple(slice(b.start + s.start, b.start + s.stop) for b, s in zip(box, cbox)), m))
            elif split_disconnected and c != largest:
                region[cbox][cc[cbox] == c] = next_id
                next_id += 1
                st.split += 1
        del cc
    pending = frags
    for _ in range(3):  # fragments touching only other fragments wait for them
        later = []
        for gbox, m in pending:
            grown = tuple(slice(max(s.start - 1, 0), s.stop + 1) for s in gbox)
            comp = np.zeros(tuple(g.stop - g.start if g.stop <= dim else dim - g.start
                                  for g, dim in zip(grown, labels.shape)), bool)
            inner = tuple(slice(s.start - g.start, s.start - g.start + (s.stop - s.start)) for s, g in zip(gbox, grown))
            comp[inner] = m
            ring = ndimage.binary_dilation(comp, structure=_structure(1)) & ~comp
            around = labels[grown][ring]
            around = around[around >= 0]
            if around.size == 0 and _ < 2:
                later.append((gbox, m))
                continue
            if around.size:
                vals, counts = np.unique(around, return_counts=True)
                nz = vals != background  # prefer a real label over background
                target = int(vals[nz][np.argmax(counts[nz])]) if nz.any() else int(background)
            else:
                target = int(background)
            region = labels[gbox]
            region[m] = target
            st.fragments += 1
            st.voxels += int(m.sum())
        pending = later
        if not pending:
            break
    return st


def relabel_consecutive(labels: np.ndarray, background: int = 0) -> int:
    """Renumber the ids of ``labels`` to ``1..n``, in place.

    Ids keep their relative order; ``background`` stays 0.

    Args:
        labels: int32 ``(D, H, W)`` with ids >= 0, modified in place (slab by slab).

    Returns:
        n, the number of labels.
    """
    top = int(labels.max()) if labels.size else 0
    if top >= DENSE_IDS:  # ids far apart: by rank, no table of every id up to the largest
        ids = present_ids(labels)
        ids = ids[ids != background]
        for sl in slabs(labels.shape):
            labels[sl] = ranks(labels[sl], ids)
        return int(len(ids))
    present = np.zeros(top + 1, bool)
    for sl in slabs(labels.shape):
        present[np.unique(labels[sl])] = True
    present[background] = False
    lut = np.zeros(top + 1, np.int32)
    ids = np.flatnonzero(present)
    lut[ids] = np.arange(1, len(ids) + 1, dtype=np.int32)
    for sl in slabs(labels.shape):
        labels[sl] = lut[labels[sl]]
    return int(len(ids))


def label_stats(labels: np.ndarray, spacing: tuple[float, float, float] = (1.0, 1.0, 1.0),
                axis: int = 0) -> list[LabelInfo]:
    """Per-label voxel count, physical volume, bounding box and slice range.

    Args:
        labels: int ``(D, H, W)`` ids >= 0 (0 = none).
        spacing: ``(dz, dy, dx)``; volumes are ``voxels * dz * dy * dx``.
        axis: slicing axis whose index range is reported as ``slice_range``.

    Returns:
        One `LabelInfo` per present id (sorted by id).
    """
    voxel = float(np.prod(spacing))
    idx, ids, top = _indexable(labels)
    counts = np.zeros(top + 1, np.int64)
    for sl in slabs(idx.shape):
        counts += _chunked_bincount(np.asarray(idx[sl]), top + 1)
    out = []
    for i, box in enumerate(ndimage.find_objects(np.asarray(idx))):
        if box is None or counts[i + 1] == 0:
            continue
        bb = [int(s.start) for s in box] + [int(s.stop) for s in box]
        out.append(LabelInfo(id=i + 1 if ids is None else int(ids[i]), voxels=int(counts[i + 1]),
                             volume=float(counts[i + 1]) * voxel, bbox=bb, slice_range=[bb[axis], bb[axis + 3] - 1]))
    return out


def waist_cuts(area: np.ndarray, inter: np.ndarray, ratio: float, max_iou: float, trend: int = 2,
               min_peak: int = 50) -> np.ndarray:
    """Where a label's area profile along the slicing axis says two structures were joined.

    A convex structure's cross-section area rises then falls along any axis (for an
    ellipsoid it is a parabola); two structures stacked end to end that the linker continued
    one into the other show a *waist*: the area shrinks to a small part of its peak (the
    first one's tip), then grows again (the second one). A cut is placed between slices z
    and z+1 when, for the same label,

    * both slices hold the label and their masks overlap with IoU < ``max_iou`` (the link
      was uncertain: a confident continuation is never cut),
    * the area falls strictly over the ``trend`` slices before the smaller of the two
      (the low slice) and rises strictly over the ``trend`` slices after it,
    * the low area is <= ``ratio`` x the largest area of the ``trend`` slices before it and
      <= ``ratio`` x that of the ``trend`` slices after it (a sharp, V-shaped waist: the
      section of an ellipsoid changes fastest near its tip),
    * both of those largest areas are >= ``min_peak`` pixels.

    Of neighbouring candidate cuts of one label (a waist spread over a few slices) only the
    one with the lowest IoU is kept.

    Args:
        area: int64 ``(D, n)`` voxels of label l on slice z.
        inter: int64 ``(D - 1, n)`` voxels of label l on both slice z and z+1 at one pixel.
        ratio: waist depth, in (0, 1); smaller = only deeper waists are cut.
        max_iou: only links with a slice-to-slice IoU below this are cut.
        trend: slices over which the area must fall (not rise) into the waist's low slice
            and rise (not fall) after it.
        min_peak: both parts must reach this area (pixels): the area of a structure of a
            few pixels is dominated by boundary noise.

    Returns:
        bool ``(D - 1, n)``: cut between slice z and z+1 for label l.
    """
    a = area.astype(np.float64)
    if a.shape[0] < 2:
        return np.zeros((max(a.shape[0] - 1, 0), a.shape[1]), bool)
    a0, a1 = a[:-1], a[1:]
    union = np.maximum(a0 + a1 - inter, 1.0)
    iou = inter / union
    low = np.minimum(a0, a1)
    # A waist, not noise or a gentle narrowing: the area falls strictly over ``trend``
    # slices into the low slice and rises strictly over ``trend`` slices after it, and the
    # low is at most ``ratio`` x the largest area of each of those two short runs (an
    # ellipsoid's section shrinks fastest at its tip; a background piece that changes every
    # slice, a structure of a few pixels or a slowly narrowing organ do not qualify).
    d, n = a.shape
    m = np.where(a0 <= a1, np.arange(d - 1)[:, None], np.arange(1, d)[:, None])  # (D-1, n) low slice
    cols = np.broadcast_to(np.arange(n), m.shape)
    pad = np.vstack([np.zeros((trend + 1, n)), a, np.zeros((trend + 1, n))])
    mp = m + trend + 1
    cand = (a0 > 0) & (a1 > 0) & (iou < max_iou)
    before = np.zeros(m.shape)
    after = np.zeros(m.shape)
    for k in range(trend):
        lo_b, hi_b = pad[mp - k, cols], pad[mp - k - 1, cols]          # falling into the low slice
        lo_a, hi_a = pad[mp + k, cols], pad[mp + k + 1, cols]          # rising after it
        cand &= (hi_b > lo_b) & (hi_a > lo_a)
        before, after = np.maximum(before, hi_b), np.maximum(after, hi_a)
    cand &= (low <= ratio * before) & (low <= ratio * after)
    cand &= (before >= min_peak) & (after >= min_peak)  # a few pixels' area is jitter, not shape
    if not cand.any():
        return cand
    # Keep the lowest-IoU candidate of every run of consecutive candidates (per label).
    score = np.where(cand, iou, np.inf)
    keep = cand.copy()
    prev_better = np.zeros_like(cand)
    next_better = np.zeros_like(cand)
    prev_better[1:] = cand[:-1] & (score[:-1] <= score[1:])
    next_better[:-1] = cand[1:] & (score[1:] < score[:-1])
    keep &= ~prev_better & ~next_better
    # A run longer than two can leave none kept when IoUs rise then fall; keep its minimum.
    run_start = cand & ~np.vstack([np.zeros((1, cand.shape[1]), bool), cand[:-1]])
    run_id = np.cumsum(run_start, axis=0) * cand
    for l in np.flatnonzero(cand.any(0)):
        for r in np.unique(run_id[:, l][run_id[:, l] > 0]):
            zs = np.flatnonzero(run_id[:, l] == r)
            if not keep[zs, l].any():
                keep[zs[np.argmin(score[zs, l])], l] = True
    return keep


def split_at_waists(labels: np.ndarray, axis: int = 0, ratio: float = 0.75, max_iou: float = 0.5) -> int:
    """Give the part of a label after a waist along ``axis`` a new id, in place (`waist_cuts`).

    Linking slice by slice on overlap continues a structure that ends into another that
    starts at the same place (two ellipsoids end to end, a vertebra then a disc); the
    area profile of the joined label shows where.

    Args:
        labels: int32 ``(D, H, W)`` ids >= 0 (0 = none), modified in place.
        axis: the slicing (linking) axis.
        ratio: see `waist_cuts` (0 turns the split off).
        max_iou: see `waist_cuts`.

    Returns:
        Number of cuts made (= new ids).
    """
    if ratio <= 0 or labels.size == 0:
        return 0
    vol = np.moveaxis(labels, axis, 0)
    d = vol.shape[0]
    n = int(labels.max()) + 1
    area = np.zeros((d, n), np.int32)  # (slices x ids): int32 keeps it at 4 bytes a cell
    inter = np.zeros((max(d - 1, 0), n), np.int32)
    prev = None
    for z in range(d):
        cur = np.asarray(vol[z])
        area[z] = np.bincount(cur.ravel(), minlength=n)[:n]
        if prev is not None:
            same = prev == cur
            inter[z - 1] = np.bincount(cur[same], minlength=n)[:n]
        prev = cur
    area[:, 0] = 0
    # Only labels on >= 5 slices (2 falling, the low, 2 rising) that reach 50 pixels can have
    # a waist: the float work of `waist_cuts` runs on those columns only.
    cols = np.flatnonzero(((area > 0).sum(0) >= 5) & (area.max(0) >= 50))
    if cols.size == 0:
        return 0
    cuts = np.zeros(inter.shape, bool)
    cuts[:, cols] = waist_cuts(area[:, cols], inter[:, cols], ratio, max_iou)
    if not cuts.any():
        return 0
    piece = np.vstack([np.zeros((1, n), np.int64), np.cumsum(cuts, axis=0)])  # (D, n) part index
    # New ids: label l's part p >= 1 -> n + running number over (l, p).
    n_parts = piece[-1]
    base = n + np.concatenate([[0], np.cumsum(n_parts)[:-1]])
    for z in range(d):
        lut = np.where(piece[z] > 0, base + piece[z] - 1, np.arange(n)).astype(labels.dtype)
        vol[z] = lut[vol[z]]
    return int(cuts.sum())


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold of the finite values (maximum between-class variance of a histogram)."""
    v = np.asarray(values, np.float64).ravel()
    v = v[np.isfinite(v)]
    if v.size == 0 or v.min() == v.max():
        return float(v.min()) if v.size else 0.0
    hist, edges = np.histogram(v, bins=bins)
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centres)
    mean0 = m0 / np.maximum(w0, 1)
    mean1 = (m0[-1] - m0) / np.maximum(w1, 1)
    between = w0 * w1 * (mean0 - mean1) ** 2
    return float(edges[int(np.argmax(between[:-1])) + 1])


def _outside_slice(values: np.ndarray, threshold: float) -> np.ndarray:
    """bool ``(a, b)``: pixels below ``threshold`` connected to the slice's border."""
    comp, n = ndimage.label(values < threshold)
    if n == 0:
        return np.zeros(values.shape, bool)
    touching = np.zeros(n + 1, bool)
    touching[np.concatenate([comp[0], comp[-1], comp[:, 0], comp[:, -1]])] = True
    touching[0] = False
    return touching[comp]


#: At most this many voxels go into the Otsu threshold of `outside_mask` (the step grows
#: with the volume: a 2048 x 2048 x 300 stack is sampled every 6th voxel, not every 2nd).
OTSU_VOXELS = 1 << 23


def _subsample(values: np.ndarray, step: int) -> np.ndarray:
    """Every ``step``-th voxel along each axis (a coarser step when that would exceed
    `OTSU_VOXELS`), read slice by slice: a strided view of each slice, copied small (``ravel``
    of a transposed NIfTI view would copy the whole volume first; a lazy stack reads one
    slice at a time)."""
    size = int(np.prod(values.shape))
    step = max(int(step), int(np.ceil((size / OTSU_VOXELS) ** (1 / 3))))
    return np.concatenate([np.asarray(values[i, ::step, ::step]).ravel() for i in range(0, values.shape[0], step)])


def _outside_slices(values: np.ndarray, axis: int, sample: int) -> Iterator[np.ndarray]:
    """The outside of each slice along ``axis`` in turn (see `outside_mask`), one slice in memory."""
    thr = otsu_threshold(_subsample(values, sample))
    for i in range(values.shape[axis]):
        sl: list = [slice(None)] * 3
        sl[axis] = i
        yield _outside_slice(np.asarray(values[tuple(sl)]), thr)  # indexing: a lazy stack reads one slice


def outside_mask(values: np.ndarray, axis: int = 0, sample: int = 2) -> np.ndarray:
    """bool ``(D, H, W)``: the region outside the body or sample, slice by slice along
    ``axis``: the pixels darker than Otsu's threshold of the volume (computed on every
    ``sample``-th voxel along each axis) that are connected to the slice's border: the air around a patient
    in CT and MR, the empty medium around cells in microscopy. Dark regions inside a slice
    (lungs, gas, a pocket no border reaches) are not outside; the first and last slices of a
    scan cut through the body and do not count as a border."""
    values = np.asarray(values)
    out = np.zeros(values.shape, bool)
    for i, outside in enumerate(_outside_slices(values, axis, sample)):
        np.moveaxis(out, axis, 0)[i] = outside
    return out


def clear_outside(labels: np.ndarray, values: Any, axis: int = 0, min_fraction: float = 0.5,
                  sample: int = 2) -> int:
    """Set to 0, in place, every label lying at least ``min_fraction`` outside (see
    `outside_mask`; computed slice by slice: memory of one slice, also for a lazy stack such
    as `volume.io.TiffPages`): the labels of the air or the medium, not those of the body or
    sample. Segments are never cut. Returns how many labels were cleared."""
    n = int(labels.max()) + 1 if labels.size else 1
    total = np.zeros(n, np.int64)
    out = np.zeros(n, np.int64)
    for i, outside in enumerate(_outside_slices(values, axis, sample)):
        lab = np.asarray(np.take(labels, i, axis=axis))
        total += np.bincount(lab.ravel(), minlength=n)[:n]
        out += np.bincount(lab[outside], minlength=n)[:n]
    gone = np.flatnonzero((out >= min_fraction * np.maximum(total, 1)) & (total > 0))
    gone = gone[gone > 0]
    if len(gone):
        lut = np.arange(n, dtype=labels.dtype)
        lut[gone] = 0
        for i in range(labels.shape[axis]):
            sl = np.moveaxis(labels, axis, 0)[i]
            sl[...] = lut[sl]
    return int(len(gone))
