"""The IoU-only baselines every benchmark compares the engine against.

`IouLinker` (frames):
Each segment takes the id of the previous frame's track it overlaps best, one to one
(Hungarian on IoU, pairs below `MIN_IOU` never match), masks compared in place; anything
else starts a new id. No flow, no look, no splits, merges or re-identification: what
DEVA-style IoU matching does. Same interface as `Linker`.

`iou_stitch` (slices): Cellpose's ``stitch_threshold``, many-to-one.
"""
from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment

from ..matching import iou_from_overlap, overlap_matrix
from ..proposals import relabel_consecutive, segment_index
from ..tracks import TrackRegistry
from .config import EngineConfig
from .evidence import gather
from .linker import LinkResult, LinkState
from .predict import Prediction

MIN_IOU = 0.1  # the usual stitching threshold (Cellpose's stitch_threshold ranges 0.1-0.5)


class IouLinker:
    """`Linker`'s interface over IoU-only matching (the config's predict group is ignored)."""

    def __init__(self, config: EngineConfig) -> None:
        self.cfg = config

    def init_state(self, id_offset: int = 0) -> LinkState:
        return LinkState(TrackRegistry(self.cfg.lifecycle.memory, id_offset))

    def predict(self, state: LinkState, gray: "np.ndarray | None") -> Prediction:
        return Prediction(state.prev, None, {})

    def step(self, state: LinkState, seg: np.ndarray, K: int, props: "np.ndarray | None",
             small: "np.ndarray | None", gray: "np.ndarray | None", idx: int) -> LinkResult:
        reg = state.registry
        prev = state.prev if state.prev is not None else np.zeros_like(seg)
        ev = gather(prev, seg, K)
        ids = np.zeros(K, np.int64)
        if len(ev.track_ids) and K:
            inter = ev.inter[:, 1:].astype(np.float64)
            iou = inter / np.maximum(ev.seg_area[:, None] + ev.pred_area[None, :] - inter, 1)
            r, c = linear_sum_assignment(-iou)
            ok = iou[r, c] >= MIN_IOU
            ids[r[ok]] = ev.track_ids[c[ok]]
        for j in np.flatnonzero((ids == 0) & (ev.seg_area > 0)).tolist():
            ids[j] = reg.new(idx).id
        lut = np.concatenate([ids, [0]]).astype(np.int32)
        labels = lut[seg]  # seg -1 -> the trailing 0
        present = np.unique(ids[ids > 0])
        reg.end_frame(idx, present)
        state.prev, state.prev_gray = labels, gray
        return LinkResult(labels, ids, np.zeros(K, bool), {}, present)


def iou_stitch(prev: np.ndarray, cur: np.ndarray, next_id: int, threshold: float = 0.25,
               background: "int | None" = 0) -> tuple[np.ndarray, int]:
    """Cellpose-style ``stitch_threshold`` linking of one slice to the previous: every mask
    of ``cur`` takes the id of the previous slice's mask with the largest IoU if that IoU
    >= ``threshold`` (not one-to-one: the pieces of a split all continue), else a new id.

    Args:
        prev: int32 ``(H, W)`` stitched ids of the previous slice (0 = none).
        cur: int ``(H, W)`` this slice's labels.
        next_id: first unused id.
        threshold: IoU threshold.
        background: value of ``cur`` meaning "no mask", or None.

    Returns:
        ``(ids int32 (H, W), next_id)``.
    """
    seg, values = segment_index(cur, background)
    k = len(values)
    pinv, pv = relabel_consecutive(prev)
    n = len(pv)
    ov = overlap_matrix(seg, k, pinv, n)
    iou = iou_from_overlap(ov, ov.sum(1), np.bincount(pinv.ravel(), minlength=n))
    iou[:, pv == 0] = 0.0
    best = iou.argmax(1) if n else np.zeros(k, np.int64)
    ok = iou[np.arange(k), best] >= threshold if n else np.zeros(k, bool)
    ids = np.where(ok, pv[best] if n else 0, 0).astype(np.int64)
    nn = int((~ok).sum())
    ids[~ok] = next_id + np.arange(nn)
    lut = np.concatenate([ids, [0]]).astype(np.int32)
    return lut[seg], next_id + nn
