"""The IoU-only linker: the baseline every benchmark compares the engine against.

Each segment takes the id of the previous frame's track it overlaps best, one to one
(Hungarian on IoU, pairs below `MIN_IOU` never match), masks compared in place; anything
else starts a new id. No flow, no look, no splits, merges or re-identification: what
DEVA-style and Cellpose-style IoU stitching does. Same interface as `Linker`.
"""
from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment

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
