"""Slice-to-slice linking: per-slice segment indices -> consistent 3D track ids.

A slice index is a time index: this reuses the temporal package's matching math
(`temporal.matching`: overlap matrix, IoU, symmetric KL of proposal maps, gated Hungarian)
on slices, without optical flow (neighbouring slices are already aligned). On top of the
one-to-one Hungarian match it handles what slice-wise segmenters do to 3D structures:

* splits: a segment left over that lies mostly inside one track's previous mask joins it;
* merges: a matched segment that is mostly made of two or more tracks' previous masks is
  carved between them (nearest previous mask), so both ids survive the merge;
* short gaps: a track stays matchable for ``memory`` slices after it was last seen.

State is bounded: the last ``memory`` linked slices (int32) and one proposal map per live
track; nothing grows with the number of slices.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from temporal.matching import (bhattacharyya, cost_matrix, hungarian_assign, iou_from_overlap, overlap_matrix,
                               symmetric_kl_matrix)

from .types import LinkConfig


@dataclass
class TrackOverlaps:
    """Overlap of the current slice's segments with the live tracks.

    Attributes:
        track_ids: int64 ``(T,)`` live track ids (>= 1).
        inter: int64 ``(K, T)`` pixels shared by segment k and track t's reference mask.
        seg_area: int64 ``(K,)`` segment areas.
        track_area: int64 ``(T,)`` reference mask areas.
        age: int64 ``(T,)`` slices since the reference mask (1 = previous slice).
        ref_slot: int64 ``(T,)`` index into the history (0 = newest) holding the mask.
    """

    track_ids: np.ndarray
    inter: np.ndarray
    seg_area: np.ndarray
    track_area: np.ndarray
    age: np.ndarray
    ref_slot: np.ndarray


def compact_ids(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(a, return_inverse=True)`` for non-negative ints, by counting (no sort).

    Args:
        a: int array, values >= 0.

    Returns:
        ``(values, inverse)``: sorted present values (int64) and int64 indices, ``a``'s shape.
    """
    a = np.asarray(a)
    top = int(a.max()) if a.size else 0
    if a.size and (int(a.min()) < 0 or top > max(4 * a.size, 1 << 20)):
        vals, inv = np.unique(a, return_inverse=True)  # sparse huge ids: sort instead
        return vals.astype(np.int64), inv.reshape(a.shape).astype(np.int64)
    counts = np.bincount(a.ravel(), minlength=top + 1)
    vals = np.flatnonzero(counts)
    lut = np.zeros(top + 1, np.int64)
    lut[vals] = np.arange(len(vals))
    return vals.astype(np.int64), lut[a]


def track_overlaps(seg: np.ndarray, k: int, history: "list[np.ndarray]") -> TrackOverlaps:
    """Overlaps of segments with every track seen in ``history`` (newest first).

    Each track's reference is its mask in the newest history slice that contains it.

    Args:
        seg: int ``(H, W)`` segment index ``0..k-1``, -1 = no segment.
        k: number of segments.
        history: int32 ``(H, W)`` linked slices (track ids, 0 = none), newest first.

    Returns:
        `TrackOverlaps`.
    """
    seg_area = np.bincount(seg[seg >= 0].ravel(), minlength=k)[:k].astype(np.int64)
    ids_all, inters, areas, ages, slots = [], [], [], [], []
    seen: set[int] = set()
    flat_seg = seg.ravel()
    valid = flat_seg >= 0
    for slot, m in enumerate(history):
        vals, inv = compact_ids(m.ravel())
        keep_cols = np.array([v > 0 and int(v) not in seen for v in vals], dtype=bool)
        if not keep_cols.any():
            continue
        n = len(vals)
        area = np.bincount(inv, minlength=n)
        flat = flat_seg[valid].astype(np.int64) * n + inv[valid]
        ov = np.bincount(flat, minlength=k * n)[: k * n].reshape(k, n)
        cols = np.flatnonzero(keep_cols)
        ids_all.append(vals[cols].astype(np.int64))
        inters.append(ov[:, cols])
        areas.append(area[cols])
        ages.append(np.full(len(cols), slot + 1, np.int64))
        slots.append(np.full(len(cols), slot, np.int64))
        seen.update(int(v) for v in vals[cols])
    if not ids_all:
        z = np.zeros(0, np.int64)
        return TrackOverlaps(z, np.zeros((k, 0), np.int64), seg_area, z, z, z)
    return TrackOverlaps(np.concatenate(ids_all), np.concatenate(inters, axis=1), seg_area,
                         np.concatenate(areas), np.concatenate(ages), np.concatenate(slots))


def enclosed(seg: np.ndarray, s: int, fraction: float = 0.95) -> bool:
    """True when segment ``s`` lies in a hole of one other segment (nested, not split).

    A split piece sits beside the rest of its structure and also touches what is outside
    it; a structure that starts inside another (a core inside a shell) is surrounded by
    that one segment alone.

    Args:
        seg: int ``(H, W)`` segment index (-1 = none).
        s: the segment.
        fraction: share of the one-pixel ring around ``s`` that one other segment must hold.
    """
    m = seg == s
    ys, xs = np.nonzero(m)
    if ys.size == 0:
        return False
    y0, y1 = max(ys.min() - 1, 0), min(ys.max() + 2, seg.shape[0])
    x0, x1 = max(xs.min() - 1, 0), min(xs.max() + 2, seg.shape[1])
    sub = m[y0:y1, x0:x1]
    ring = ndimage.binary_dilation(sub) & ~sub
    # Touching the image border means not enclosed.
    if ys.min() == 0 or xs.min() == 0 or ys.max() == seg.shape[0] - 1 or xs.max() == seg.shape[1] - 1:
        return False
    around = seg[y0:y1, x0:x1][ring]
    if around.size == 0:
        return False
    counts = np.bincount(around[around >= 0], minlength=1)
    return bool(counts.max(initial=0) >= fraction * around.size)


def carve(region: np.ndarray, seeds: np.ndarray) -> np.ndarray:
    """Split a region between seed labels: every pixel takes its nearest seed's label.

    Args:
        region: bool ``(H, W)`` pixels to divide.
        seeds: int ``(H, W)``, > 0 where a seed label lies (0 elsewhere); at least one > 0.

    Returns:
        int ``(H, W)``: nearest seed label inside ``region``, 0 outside.
    """
    ys, xs = np.nonzero(region | (seeds > 0))
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    sub_seeds = seeds[y0:y1, x0:x1]
    _, (iy, ix) = ndimage.distance_transform_edt(sub_seeds == 0, return_indices=True)
    nearest = sub_seeds[iy, ix]
    out = np.zeros(seeds.shape, dtype=seeds.dtype)
    sub_region = region[y0:y1, x0:x1]
    out[y0:y1, x0:x1][sub_region] = nearest[sub_region]
    return out


@dataclass
class LinkStats:
    """Counters of one linking run (for logs and tests)."""

    slices: int = 0
    new_tracks: int = 0
    matched: int = 0
    splits_joined: int = 0
    merges_carved: int = 0
    extra: dict = field(default_factory=dict)


class SliceLinker:
    """Stateful slice-to-slice linker (a thin class over the pure functions above).

    Usage::

        linker = SliceLinker(LinkConfig())
        for seg_index, proposals in slices:        # in slice order
            ids = linker.step(seg_index, proposals)   # int32 (H, W) track ids, 0 = none
    """

    def __init__(self, config: LinkConfig = LinkConfig(), id_offset: int = 0) -> None:
        self.config = config
        self.history: deque[np.ndarray] = deque(maxlen=int(config.memory))
        self.next_id = int(id_offset) + 1
        self.stats = LinkStats()
        self._props: dict[int, np.ndarray] = {}
        self._hists: dict[int, np.ndarray] = {}
        # track id -> (slices observed, last appearance was carved): live tracks only.
        self._observed: dict[int, tuple[int, bool]] = {}
        self._hist_ids: deque[set[int]] = deque(maxlen=int(config.memory))

    def step(self, seg: np.ndarray, proposals: "np.ndarray | None" = None,
             gray: "np.ndarray | None" = None) -> np.ndarray:
        """Link one slice.

        Args:
            seg: int ``(H, W)`` segment index ``0..K-1`` of this slice; -1 = no segment.
            proposals: float32 ``(K, h, w)`` segment distributions (DiffSeg attention), or
                None (overlap only).
            gray: uint8 ``(H, W)`` the slice's image (windowed intensities), or None. Gives
                every segment an intensity histogram; ``1 - Bhattacharyya`` to a track's
                last histogram joins the matching cost, and with ``min_appearance`` > 0 a
                segment that looks different cannot continue a track except by a confident
                overlap (a disc starting where a vertebra ended).

        Returns:
            int32 ``(H, W)`` track ids (>= 1), 0 where ``seg`` is -1.
        """
        cfg = self.config
        seg = np.asarray(seg)
        k = int(seg.max()) + 1 if seg.size and seg.max() >= 0 else 0
        if self.history and self.history[0].shape != seg.shape:
            raise ValueError(f"slice shape {seg.shape} differs from the previous slice {self.history[0].shape}")
        seg_to_track = np.zeros(k, np.int64)
        hists = None
        if gray is not None and cfg.min_appearance + cfg.appearance_weight > 0 and k:
            if gray.shape != seg.shape:
                raise ValueError(f"gray slice {gray.shape} and segments {seg.shape} differ in size")
            bins = int(cfg.hist_bins)
            cells = (np.asarray(gray, np.int32) * bins) >> 8
            hists = overlap_matrix(seg, k, cells, bins).astype(np.float32)
            hists /= np.maximum(hists.sum(1, keepdims=True), 1)
        carve_groups: list[tuple[int, list[int]]] = []
        ov = track_overlaps(seg, k, list(self.history))
        t = len(ov.track_ids)
        if k and t:
            inter = ov.inter
            iou = iou_from_overlap(inter, ov.seg_area, ov.track_area)
            in_track = inter / np.maximum(ov.seg_area[:, None], 1)     # share of the segment
            covers = inter / np.maximum(ov.track_area[None, :], 1)    # share of the track
            # Gate on IoU only: containment alone would let a big track (a background piece)
            # swallow a structure that starts inside it.
            allowed = iou >= cfg.min_overlap
            skl = None
            if proposals is not None and cfg.kl_weight > 0 and self._props:
                have = np.array([int(i) in self._props for i in ov.track_ids])
                if have.all() and proposals.shape[0] == k:
                    tp = np.stack([self._props[int(i)] for i in ov.track_ids])
                    if tp.shape[1:] == proposals.shape[1:]:
                        skl = symmetric_kl_matrix(proposals, tp)
            cost = cost_matrix(iou, skl, w_iou=1.0, w_kl=cfg.kl_weight)
            alike = np.ones((k, t), bool)
            if hists is not None and self._hists:
                have = np.array([int(i) in self._hists for i in ov.track_ids])
                th = np.stack([self._hists.get(int(i), np.zeros(hists.shape[1], np.float32)) for i in ov.track_ids])
                bc = bhattacharyya(hists, th)
                alike = (bc >= cfg.min_appearance) | ~have[None, :]
                cost = (cost + cfg.appearance_weight * (1.0 - bc) * have[None, :]) / (1.0 + cfg.appearance_weight)
            # Two stages: confident continuations of the previous slice first (IoU >=
            # `confident_iou`), so a structure that ended cannot steal the continuation of a
            # neighbour that resembles its last mask; then every track of the memory for the
            # segments left over, with the IoU gate only (a structure lost for a slice or
            # two, or one that moved, beats a neighbour that merely touches it).
            used = np.zeros(t, bool)
            rows_all, cols_all = [], []
            stages = [(ov.age == 1, max(cfg.confident_iou, cfg.min_overlap)), (ov.age >= 1, cfg.min_overlap)]
            for tracks_ok, gate in stages:
                free_s = np.flatnonzero(seg_to_track == 0)
                cand = np.flatnonzero(tracks_ok & ~used)
                if free_s.size == 0 or cand.size == 0:
                    continue
                ok = iou[np.ix_(free_s, cand)] >= gate
                if gate < cfg.confident_iou:  # uncertain overlaps must also look alike
                    ok &= alike[np.ix_(free_s, cand)]
                    if cfg.min_cover > 0:  # ... and cover a fair part of the track's mask
                        ok &= covers[np.ix_(free_s, cand)] >= cfg.min_cover
                c = cost[np.ix_(free_s, cand)] + cfg.age_penalty * (ov.age[cand][None, :] - 1)
                asg = hungarian_assign(c, allowed=ok)
                r, c = free_s[asg.rows], cand[asg.cols]
                seg_to_track[r] = ov.track_ids[c]
                used[c] = True
                rows_all.append(r)
                cols_all.append(c)
            m_rows = np.concatenate(rows_all) if rows_all else np.zeros(0, np.int64)
            m_cols = np.concatenate(cols_all) if cols_all else np.zeros(0, np.int64)
            self.stats.matched += len(m_rows)
            # Splits: leftover segments lying mostly inside one track's reference mask.
            # Candidates: IoU above the gate, or lying mostly inside a track's mask and
            # covering a fair part of it; the best IoU wins (a piece that moved into a
            # neighbour's old place still goes to its own structure when it overlaps more).
            # (The IoU route needs ``min_cover`` too: a small segment inside a big track's
            # mask is a structure that starts there, not a piece of that track.)
            cand_ok = ((allowed & (covers >= cfg.min_cover))
                       | ((in_track >= cfg.split_fraction) & (covers >= cfg.split_min_cover))) & alike
            for s in np.flatnonzero(seg_to_track == 0):
                if not cand_ok[s].any():
                    continue
                j = int(np.argmax(np.where(cand_ok[s], iou[s] + 1e-9 * in_track[s], -1.0)))
                if not enclosed(seg, int(s)):
                    seg_to_track[s] = ov.track_ids[j]
                    used[j] = True  # the track continues here: never carved into another segment
                    self.stats.splits_joined += 1
            # Merges: a matched segment made mostly of several tracks' previous masks.
            for s, j in zip(m_rows, m_cols):
                # Only established tracks (observed on >= 2 slices, last time observed, not
                # carved): two young tracks born from one split structure must re-unite.
                extra = [c for c in np.flatnonzero(~used & (covers[s] >= cfg.merge_fraction)
                                                   & (in_track[s] >= cfg.merge_min_share))
                         if self._observed.get(int(ov.track_ids[c]), (0, True))[0] >= 2
                         and not self._observed.get(int(ov.track_ids[c]), (0, True))[1]]
                if not extra:
                    continue
                group = [int(j)] + [int(c) for c in extra]
                if inter[s, group].sum() < cfg.merge_fraction * ov.seg_area[s]:
                    continue  # the segment is mostly something else
                used[extra] = True
                carve_groups.append((int(s), group))
        new = np.flatnonzero(seg_to_track == 0)
        seg_to_track[new] = self.next_id + np.arange(len(new))
        self.next_id += len(new)
        self.stats.new_tracks += len(new)

        lut = np.concatenate([[0], seg_to_track]).astype(np.int32)
        out = lut[seg.astype(np.int64) + 1]
        carved_ids: set[int] = set()
        for s, group in carve_groups:
            seeds = np.zeros(seg.shape, np.int32)
            for c in sorted(group, key=lambda c: -int(ov.ref_slot[c])):  # newest reference last
                ref = self.history[int(ov.ref_slot[c])]
                tid = int(ov.track_ids[c])
                seeds[ref == tid] = tid
            region = seg == s
            seeds[~region] = 0  # seeds only inside the merged segment
            if not (seeds > 0).any():
                continue
            c_out = carve(region, seeds)
            out[region] = c_out[region]
            carved_ids.update(int(ov.track_ids[c]) for c in group[1:])
            self.stats.merges_carved += 1

        if hists is not None:  # appearance memory: histogram of the latest observation
            for s_ in range(k):
                self._hists[int(seg_to_track[s_])] = hists[s_]
        # Proposal memory of live tracks (observed ones only).
        if proposals is not None and k:
            for s in range(k):
                self._props[int(seg_to_track[s])] = np.asarray(proposals[s], np.float32)
        self.history.appendleft(out)
        self._hist_ids.appendleft(set(int(x) for x in seg_to_track.tolist()) | carved_ids)
        if self._props:  # forget proposals of tracks that fell out of the history
            live = set().union(*self._hist_ids)
            self._props = {i: p for i, p in self._props.items() if i in live}
        for tid in set(int(x) for x in seg_to_track.tolist()) - carved_ids:
            self._observed[tid] = (self._observed.get(tid, (0, False))[0] + 1, False)
        for tid in carved_ids:
            self._observed[tid] = (self._observed.get(tid, (0, False))[0], True)
        live = set().union(*self._hist_ids)
        self._observed = {i: v for i, v in self._observed.items() if i in live}
        if self._hists:
            self._hists = {i: h for i, h in self._hists.items() if i in live}
        self.stats.slices += 1
        return out


def segment_index(labels: np.ndarray, background: "int | None" = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-slice label values -> segment index ``0..K-1`` (``-1`` for ``background``).

    Args:
        labels: int ``(H, W)`` arbitrary non-negative values.
        background: value meaning "no segment", or None.

    Returns:
        ``(seg, values)``: int32 ``(H, W)`` index and int64 ``(K,)`` original values.
    """
    values, inv = compact_ids(np.asarray(labels))
    seg = inv.astype(np.int32)
    if background is not None and values.size and (values == background).any():
        b = int(np.flatnonzero(values == background)[0])
        seg = np.where(seg == b, -1, seg - (seg > b)).astype(np.int32)
        values = np.delete(values, b)
    return seg, values.astype(np.int64)


def iou_stitch(prev: np.ndarray, cur: np.ndarray, next_id: int, threshold: float = 0.25,
               background: "int | None" = 0) -> tuple[np.ndarray, int]:
    """Baseline: Cellpose-style ``stitch_threshold`` linking of one slice to the previous.

    Every mask of ``cur`` takes the id of the previous slice's mask with the largest IoU if
    that IoU >= ``threshold`` (not one-to-one), else a new id.

    Args:
        prev: int32 ``(H, W)`` stitched ids of the previous slice (0 = none).
        cur: int ``(H, W)`` this slice's labels.
        next_id: first unused id.
        threshold: IoU threshold.
        background: value of ``cur`` meaning "no mask", or None.

    Returns:
        ``(ids int32 (H, W), next_id)``.
    """
    seg, _ = segment_index(cur, background)
    k = int(seg.max()) + 1 if seg.size and seg.max() >= 0 else 0
    pv, pinv = compact_ids(prev.ravel())
    n = len(pv)
    valid = seg.ravel() >= 0
    ov = np.bincount(seg.ravel()[valid].astype(np.int64) * n + pinv.ravel()[valid], minlength=k * n)[: k * n]
    ov = ov.reshape(k, n)
    a_seg = np.bincount(seg.ravel()[valid], minlength=k)[:k]
    a_prev = np.bincount(pinv.ravel(), minlength=n)
    iou = iou_from_overlap(ov, a_seg, a_prev)
    iou[:, pv == 0] = 0.0
    best = iou.argmax(1) if n else np.zeros(k, int)
    ok = iou[np.arange(k), best] >= threshold if n else np.zeros(k, bool)
    ids = np.where(ok, pv[best] if n else 0, 0).astype(np.int64)
    nn = int((~ok).sum())
    ids[~ok] = next_id + np.arange(nn)
    lut = np.concatenate([[0], ids]).astype(np.int32)
    return lut[seg.astype(np.int64) + 1], next_id + nn
