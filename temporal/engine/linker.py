"""`Linker`: the four stages run on one frame (or slice) at a time, with bounded state.

Used by `temporal.tracker.VideoSegmenter` (frames, the `video` preset) and
`volume.stacking.SliceLinker` (slices as time, the `slices` preset). Everything here is at
work resolution; the drivers resize.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator, Optional

import numpy as np

from ..matching import color_histograms
from ..tracks import TrackRegistry
from .associate import associate
from .config import EngineConfig
from .evidence import Evidence, gather, look_similarity, part_looks, part_motion
from .lifecycle import folds
from .predict import Prediction, Predictor

APPEARANCE_EMA = 0.5  # weight of the newest frame in a track's remembered look


@dataclass
class LinkState:
    """What the engine carries from one frame to the next (bounded: one label map, one
    grey image, one look per remembered track)."""

    registry: TrackRegistry
    prev: Optional[np.ndarray] = None
    prev_gray: Optional[np.ndarray] = None


@dataclass
class LinkResult:
    """One linked frame at work resolution.

    Attributes:
        labels: int32 ``(h, w)`` track ids (0 = none).
        segment_ids: int64 ``(K,)`` id of each segment kept whole (0 = carved or no id).
        carved: bool ``(K,)`` segments cut between several ids.
        absorbed: ``{young id: older id}`` folded in this frame.
        ids: int64 sorted ids present.
    """

    labels: np.ndarray
    segment_ids: np.ndarray
    carved: np.ndarray
    absorbed: dict
    ids: np.ndarray


class Linker:
    """The linking engine of one stream (see the package docstring).

    Args:
        config: `EngineConfig` (`temporal.engine.config.video` / `slices` presets).
    """

    def __init__(self, config: EngineConfig) -> None:
        self.cfg = config
        self.predictor = Predictor(config.predict)

    def init_state(self, id_offset: int = 0) -> LinkState:
        return LinkState(TrackRegistry(self.cfg.lifecycle.memory, id_offset))

    def predict(self, state: LinkState, gray: "np.ndarray | None") -> Prediction:
        """Stage 1 (also used alone to propagate labels between keyframes)."""
        reg = state.registry
        vel = {tid: t.velocity for tid, t in reg.tracks.items()}
        p = self.predictor(state.prev, state.prev_gray, gray, vel)
        for tid, v in p.velocity.items():
            if tid in reg:
                reg[tid].velocity = v
        return p

    def step(self, state: LinkState, seg: np.ndarray, K: int, props: "np.ndarray | None",
             small: "np.ndarray | None", gray: "np.ndarray | None", idx: int) -> LinkResult:
        """Link one frame.

        Args:
            seg: int32 ``(h, w)`` segment index ``0..K-1`` (-1 = no segment).
            K: number of segments.
            props: float32 ``(K, ph, pw)`` proposal maps (distributions), or None.
            small: uint8 ``(h, w, 3)`` the frame (colour looks), or None.
            gray: uint8 ``(h, w)`` the frame for the flow, or None.
            idx: frame (slice) index.
        """
        cfg = self.cfg
        reg = state.registry
        pred = (self.predict(state, gray) if state.prev is not None
                else Prediction(np.zeros_like(seg), None, {}))
        bins = cfg.evidence.hist_bins if small is not None else 0
        has_props = props is not None and len(props) == K and K > 0

        def track_look(ids: np.ndarray) -> "tuple[np.ndarray | None, np.ndarray | None]":
            """Remembered proposal maps and colour histograms of ``ids`` (None when one lacks it)."""
            tr = [reg[i] for i in ids]
            maps = (np.stack([t.proposal for t in tr]) if has_props and tr and all(
                t.proposal is not None and t.proposal.shape == props.shape[1:] for t in tr) else None)
            hists = np.stack([t.hist for t in tr]) if bins and tr and all(t.hist is not None for t in tr) else None
            return maps, hists

        ev = gather(pred.labels, seg, K)
        if bins and len(ev.track_ids) and K:
            _, hists = track_look(ev.track_ids)
            if hists is not None:
                ev.look = part_looks(small, seg, ev.rows, K, hists, bins)
        if pred.flow is not None and len(ev.track_ids) and K and cfg.evidence.motion_tolerance > 0:
            d = np.array([pred.velocity.get(int(i), (np.nan, np.nan)) for i in ev.track_ids], np.float32)
            mot = part_motion(pred.flow, seg, ev.rows, K, d, cfg.evidence.motion_tolerance)
            ev.look = mot if ev.look is None else ev.look * mot
        # remembered tracks (absent from the prediction) compete in the same decision: a
        # segment takes one back by look (proposal KL x colour) above reid_threshold
        predicted = set(ev.track_ids.tolist())
        remembered = np.array([t for t in reg.lost_ids() if t not in predicted], np.int64)
        reid = None
        if len(remembered) and K:
            maps, hists = track_look(remembered)
            sim = look_similarity(maps, props if has_props else None, cfg.evidence.kl_tau, hists,
                                  color_histograms(small, seg, K, bins) if hists is not None else None)
            if sim is not None:
                reid = sim - cfg.lifecycle.reid_threshold
                reid[ev.seg_area < cfg.lifecycle.min_area] = -1.0
        asg = associate(ev, cfg.associate, reid)
        T = len(ev.track_ids)
        row_id = np.concatenate([ev.track_ids, remembered if reid is not None else [], [0]]).astype(np.int64)
        part_ids = row_id[asg.owner]  # owner -1 -> the trailing 0
        new_seg = np.flatnonzero(((asg.owner < 0) & (ev.inter > 0)).any(1) & (ev.seg_area > 0))

        # lifecycle: births for what no track continues or takes back
        assigned: dict[int, int] = {}
        for j in new_seg.tolist():
            if j not in assigned and ev.seg_area[j] >= cfg.lifecycle.min_area:
                assigned[j] = reg.new(idx).id
        for j, tid in assigned.items():
            part_ids[j, asg.owner[j] < 0] = tid
        part_ids[ev.inter == 0] = 0

        carved = asg.whole == -2
        absorbed: dict[int, int] = {}
        if carved.any():
            groups = [np.unique(part_ids[j][part_ids[j] > 0]).tolist() for j in np.flatnonzero(carved)]
            absorbed = folds(groups, reg, idx, cfg.lifecycle, lambda a, b: self._alike(*track_look([a, b])))
            if absorbed:
                lut = np.arange(max(int(part_ids.max()), max(absorbed)) + 1, dtype=np.int64)
                for y, o in absorbed.items():
                    lut[y] = o
                part_ids = lut[part_ids]
                for y in absorbed:
                    reg.tracks.pop(y, None)
        # a segment whose parts now all carry one id is whole again
        nz = np.where(ev.inter > 0, part_ids, -1)
        mx, mn = nz.max(1), np.where(ev.inter > 0, part_ids, np.iinfo(np.int64).max).min(1)
        single = (mx == mn) & (ev.seg_area > 0)
        segment_ids = np.where(single, np.maximum(mx, 0), 0)
        carved = ~single & (ev.seg_area > 0)

        flat = part_ids.reshape(-1)
        labels = np.where(seg >= 0, np.take(flat, np.maximum(seg, 0) * (T + 1) + ev.rows + 1), 0).astype(np.int32)
        ids = np.unique(part_ids[part_ids > 0])
        self._update(state, seg, labels, ids, segment_ids, props if has_props else None, ev, small, gray, idx, bins)
        return LinkResult(labels, segment_ids, carved, absorbed, ids)

    def _alike(self, maps: "np.ndarray | None", hists: "np.ndarray | None") -> float:
        """Look similarity (0..1) of two tracks from their remembered maps / histograms."""
        sim = look_similarity(maps[:1] if maps is not None else None, maps[1:] if maps is not None else None,
                              self.cfg.evidence.kl_tau, hists[:1] if hists is not None else None,
                              hists[1:] if hists is not None else None)
        return 1.0 if sim is None else float(sim[0, 0])

    def _update(self, state: LinkState, seg: np.ndarray, labels: np.ndarray, ids: np.ndarray, segment_ids: np.ndarray,
                props: "np.ndarray | None", ev: Evidence, small: "np.ndarray | None", gray: "np.ndarray | None",
                idx: int, bins: int) -> None:
        """Remember each present track's look and close the frame in the registry."""
        reg = state.registry
        a = APPEARANCE_EMA
        if len(ids):
            if props is not None:
                area = ev.seg_area.astype(np.float64)
                for tid in ids.tolist():
                    own = np.flatnonzero(segment_ids == tid)
                    if not len(own) or tid not in reg:
                        continue
                    p = np.tensordot(area[own] / area[own].sum(), props[own], 1).astype(np.float32)
                    old = reg[tid].proposal
                    reg[tid].proposal = p if old is None or old.shape != p.shape else (a * p + (1 - a) * old)
            if bins and small is not None:
                # a track's colour is learnt from the segments it owns whole; a track that
                # only holds carved parts learns from those (else carved-in ground would
                # teach an object the ground's colour, and the next carve would find it alike)
                owned = np.where(seg >= 0, np.take(segment_ids, np.maximum(seg, 0)), 0)
                has_own = np.zeros(int(ids[-1]) + 1, bool)
                has_own[segment_ids[segment_ids > 0]] = True
                src = np.where(has_own[labels], owned, labels)
                comp = np.searchsorted(ids, src)
                comp = np.where((comp < len(ids)) & (src > 0), comp, -1)
                h = color_histograms(small, comp, len(ids), bins)
                for k, tid in enumerate(ids.tolist()):
                    if tid in reg:
                        old = reg[tid].hist
                        reg[tid].hist = h[k] if old is None else (a * h[k] + (1 - a) * old)
        reg.end_frame(idx, ids)
        state.prev = labels
        state.prev_gray = gray


def link_maps(label_maps: "Iterable[np.ndarray]", frames: "Iterable[np.ndarray] | None" = None,
              config: "EngineConfig | None" = None, id_offset: int = 0,
              background: "int | None" = None) -> "Iterator[np.ndarray]":
    """Link per-frame label maps with the engine (proposal maps derived from the masks).

    Args:
        label_maps: int ``(H, W)`` per frame, numbers independent per frame.
        frames: matching uint8 RGB ``(H, W, 3)`` frames (needed for the flow and colour), or
            None (the preset's flow must be ``"none"``).
        config: `EngineConfig` (default: the `video` preset).
        id_offset: first new id is ``id_offset + 1``.
        background: label value meaning "no segment" (e.g. 0 for Cellpose masks), or None.

    Yields:
        int32 ``(H, W)`` track ids per frame (0 = none), at most ``correction_window``
        frames after the frame was read (late corrections rewrite the frames held back).
    """
    import cv2

    from ..proposals import proposals_from_labels, relabel_consecutive, resize_labels
    from ..relabel import IdCorrectionBuffer
    from ..types import TrackedFrame

    cfg = config or EngineConfig()
    if frames is None and cfg.predict.flow != "none":
        raise ValueError("`frames` are required when the preset uses optical flow")
    linker = Linker(cfg)
    st = linker.init_state(id_offset)
    held = IdCorrectionBuffer(cfg.lifecycle.correction_window)
    it_frames = iter(frames) if frames is not None else None
    for idx, lab in enumerate(label_maps):
        lab = np.asarray(lab)
        seg, vals = relabel_consecutive(resize_labels(lab, cfg.predict.work_side))
        if background is not None and np.any(vals == background):
            b = int(np.flatnonzero(vals == background)[0])
            seg = np.where(seg == b, -1, seg - (seg > b)).astype(np.int32)
            vals = np.delete(vals, b)
        K = len(vals)
        small = gray = None
        if it_frames is not None:
            rgb = next(it_frames)
            small = rgb if seg.shape == rgb.shape[:2] else cv2.resize(rgb, seg.shape[::-1], interpolation=cv2.INTER_AREA)
            gray = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY) if cfg.predict.flow != "none" else None
        props = proposals_from_labels(np.where(seg < 0, K, seg), K + 1, 32)[:K] if K else None
        r = linker.step(st, seg, K, props, small, gray, idx)
        out = (r.labels if seg.shape == lab.shape else
               cv2.resize(r.labels, lab.shape[::-1], interpolation=cv2.INTER_NEAREST))
        for tf in held.push(TrackedFrame(idx, out, r.ids.astype(np.int32), absorbed=r.absorbed)):
            yield tf.labels
    for tf in held.flush():
        yield tf.labels
