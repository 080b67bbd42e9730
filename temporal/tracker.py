"""`VideoSegmenter`: per-frame segmentations -> stable track ids (flow + attention KL).

Per frame (keyframe):
1. dense flow current -> previous (and back, for the forward-backward check) at work
   resolution; the previous frame's track-id map and the tracks' proposal maps are warped
   into the current frame (unreliable pixels vote for nobody); when the check rejects most
   of a track, the pair is recomputed with a careful DIS preset (flow fallback);
2. cost(track, segment) = weighted ``1 - IoU(warped mask, segment)`` and
   ``1 - exp(-sKL(warped proposal, segment proposal) / tau)``; Hungarian with gating; when
   a segment covers an older look-alike (or parent) track too, the older one keeps it;
3. unmatched segments are compared with remembered (lost) tracks by appearance (proposal
   KL, colour histogram) and last position: re-identification;
4. splits: an unmatched segment lying inside a track's warped mask joins it; merges: a
   segment that swallowed another track's warped mask is carved so both ids survive;
5. what is left starts new tracks (fresh ids, never reused).
Common fate throughout: a segment or track moving unlike a track is never a piece of it
(`_Motion`).
Non-keyframes (``keyframe_every > 1``) propagate the previous labels by flow.
State is bounded: the previous frame's work-resolution ids, grayscale image and the live
tracks; nothing grows with the length of the video.
"""
from __future__ import annotations

import functools
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, NamedTuple, Optional, Protocol

import cv2
import numpy as np
from scipy import ndimage

from diffseg_core.types import Segmentation

from .config import TrackerConfig
from .flow import (forward_backward_check, label_displacements, make_flow_estimator, match_shifts, resize_flow,
                   translate_labels, warp_labels, warp_maps)
from .matching import (bhattacharyya, box_iou_matrix, color_cells, color_histograms, containing_segment, cost_matrix, distinct_pairs,
                       hungarian_assign, iou_from_overlap, kl_similarity, overlap_matrix, slice_boxes,
                       symmetric_kl_matrix)
from .proposals import grid_hw, segmentation_from_labels
from .relabel import IdCorrectionBuffer
from .tracks import TrackRegistry
from .types import TrackedFrame

#: the remembered (EMA) look must fit a split piece by this much more than the current look
SPLIT_MEMORY_MARGIN = 0.2
#: a track seen this many frames ago or less, unmatched now, may claim a split piece back
SPLIT_RIVAL_FRAMES = 2
#: ... when its last box overlaps the piece's this much (IoU) ...
SPLIT_RIVAL_BOX_IOU = 0.2
#: ... and it looks more like the piece than the split owner does by this much
SPLIT_RIVAL_MARGIN = 0.05
#: a track whose prediction lies inside a segment nobody took that is this many times its
#: predicted area merged into it (object + background): carved out, not re-identified with
#: the whole segment
ENGULF_RATIO = 3.0
#: common fate: two measured motions (work-resolution pixels per frame) differ when they are
#: farther apart than this ...
MOTION_APART_PX = 6.0
#: ... and than this fraction of the larger of the two (fast objects measure less exactly)
MOTION_APART_REL = 0.75
#: ... each measured on at least this fraction of its pixels (forward-backward check)
MOTION_APART_VALID = 0.5
#: segment motion is the median flow on every n-th pixel of every n-th row
MOTION_SUBSAMPLE = 4

__all__ = ["TrackerConfig", "VideoSegmenter", "VideoState", "TrackedFrame", "Segmenter"]


class _Moves(NamedTuple):
    """Tracks moved by template matching (`VideoSegmenter._template_moves`).

    Attributes:
        moved: int32 ``(h, w)`` their previous masks translated by the matched shifts.
        over: bool ``(max id + 1,)`` which previous ids were moved.
        area: int ``(max id + 1,)`` previous area of every id (who is drawn over whom).
    """

    moved: np.ndarray
    over: np.ndarray
    area: np.ndarray


class _Motion:
    """This frame's motion evidence for the common-fate tests: a piece that moves unlike a
    track is not a piece of it, whatever its colour (an object that the first frame's
    segmentation merged with the ground it runs over, while the camera pans).

    Track motion: the shift of every previous id measured by the flow on at least
    ``MOTION_APART_VALID`` of its previous area (``firm``; not those template matching
    overruled). Segment motion: the median flow of a segment's pixels that passed the
    forward-backward check, where those are at least ``min_pixels`` and
    ``MOTION_APART_VALID`` of it (on a ``MOTION_SUBSAMPLE`` grid, computed on first use).
    Motion measured on fewer pixels (small, fast or blurred objects) never separates
    anything.
    """

    def __init__(self, shifts: np.ndarray, firm: np.ndarray, seg_w: np.ndarray, K: int, bwd: np.ndarray,
                 valid: "np.ndarray | None", min_pixels: int) -> None:
        self.shifts = shifts
        self.firm = set(np.asarray(firm).tolist())  # ids of `shifts`
        self._seg_args = (seg_w, K, bwd, valid, max(min_pixels, 1))
        self._seg: "tuple[np.ndarray, np.ndarray] | None" = None

    def track(self, tid: int) -> "np.ndarray | None":
        return self.shifts[tid].astype(np.float64) if tid in self.firm else None

    def segment(self, j: int) -> "np.ndarray | None":
        if self._seg is None:
            # every fourth pixel of every fourth row: a median needs no more (a segment of
            # fewer than about 16 x min_pixels pixels stays unmeasured), and this runs on
            # most frames
            seg_w, K, bwd, valid, min_pixels = self._seg_args
            sub = seg_w[::MOTION_SUBSAMPLE, ::MOTION_SUBSAMPLE] + 1
            area = np.bincount(sub.ravel(), minlength=K + 1)
            lab = sub if valid is None else np.where(valid[::MOTION_SUBSAMPLE, ::MOTION_SUBSAMPLE], sub, 0)
            disp, cnt = label_displacements(lab, bwd[::MOTION_SUBSAMPLE, ::MOTION_SUBSAMPLE], K + 1)
            ok = (cnt >= min_pixels) & (cnt >= MOTION_APART_VALID * area[:K + 1])
            self._seg = (disp[1:].astype(np.float64), ok[1:])
        disp, ok = self._seg
        return disp[j] if ok[j] else None

    @staticmethod
    def apart(a: "np.ndarray | None", b: "np.ndarray | None") -> bool:
        """Whether two motions ``(dy, dx)`` differ (False when either is unknown)."""
        if a is None or b is None:
            return False
        gap = float(np.hypot(*(a - b)))
        return gap > max(MOTION_APART_PX, MOTION_APART_REL * max(float(np.hypot(*a)), float(np.hypot(*b))))

    def segment_apart(self, j: int, tid: int) -> bool:
        """Segment ``j`` moves unlike track ``tid``."""
        t = self.track(tid)
        return t is not None and self.apart(self.segment(j), t)

    def tracks_apart(self, a: int, b: int) -> bool:
        return self.apart(self.track(a), self.track(b))


@dataclass(eq=False)
class _Frame:
    """One keyframe's matching state, handed from step to step of `VideoSegmenter._link`.

    Work resolution throughout. ``A`` ``(T,)``: the previous ids present in the warp (row
    ``t`` of the ``(T, K)`` overlaps ``inter``: checked warp, ``inter_raw``: unchecked);
    ``rows``: the warp as row indices (-1 = none); ``seg_track`` ``(K,)``: the id given to
    each segment so far (0 = none); ``taken``: ids holding a segment; ``carve``: ``{segment:
    [ids carved out of it along the warp]}``; ``yielded``, ``reided``, ``engulfed``: see the
    steps that fill them.
    """

    idx: int
    seg: Segmentation
    labels: np.ndarray
    K: int
    seg_w: np.ndarray
    small: Optional[np.ndarray]
    gray: Optional[np.ndarray]
    props: np.ndarray
    bwd: Optional[np.ndarray]
    prev: Optional[np.ndarray]
    prev_area: Optional[np.ndarray]
    warped: np.ndarray
    raw: Optional[np.ndarray]
    vel_before: dict
    A: np.ndarray
    T: int
    rows: np.ndarray
    inter: np.ndarray
    inter_raw: np.ndarray
    area_t: np.ndarray
    area_s: np.ndarray
    cells: Optional[np.ndarray]
    bins: int
    motion: Optional[_Motion]
    hists: Optional[np.ndarray]
    P_warp: Optional[np.ndarray] = None
    asg: Any = None
    seg_track: Any = None
    seg_boxes: Optional[list] = None
    taken: set = field(default_factory=set)
    yielded: dict = field(default_factory=dict)  # young track -> the older track it handed its segment(s) to
    reided: dict = field(default_factory=dict)  # track re-identified in step 4 -> the segment it took
    carve: dict = field(default_factory=dict)
    engulfed: dict = field(default_factory=dict)  # track -> the unowned segment it merged into (step 5)
    jb: Optional[np.ndarray] = None
    inside: Optional[np.ndarray] = None

    @functools.cached_property
    def pair_hist(self) -> np.ndarray:
        """Colour histogram counts of every (warped track row, segment) region: float32
        ``(T*K, bins**3)`` (computed on first use: only the merge rules need it)."""
        pair = np.where(self.rows >= 0, self.rows * self.K + self.seg_w, -1)  # row t, segment j -> t*K + j
        return overlap_matrix(pair, self.T * self.K, self.cells, self.bins ** 3).astype(np.float32)


class Segmenter(Protocol):
    """Anything with ``segment(list of uint8 (H, W, 3)) -> list[Segmentation]``."""

    def segment(self, images: list) -> list:  # pragma: no cover - protocol
        ...


@dataclass
class VideoState:
    """Everything carried from one frame to the next (bounded; see module docstring).

    Attributes:
        registry: live tracks and the id counter.
        n_seen: frames stepped so far.
        image_hw: ``(H, W)`` of the video (set by the first frame).
        work_hw: ``(h, w)`` of the work resolution.
        prev_gray: uint8 ``(h, w)`` previous frame at work resolution, or None.
        prev_labels: int32 ``(h, w)`` previous track ids at work resolution, or None.
        prev_full: int32 ``(H, W)`` previous track ids at full resolution (kept only in
            keyframe mode, for propagation).
        recent: the last few segmentations (``deque(maxlen=2)``).
        first_frame: index of the first frame stepped (tracks born there are whole objects,
            not pieces split off).
    """

    registry: TrackRegistry
    n_seen: int = 0
    image_hw: Optional[tuple[int, int]] = None
    work_hw: Optional[tuple[int, int]] = None
    prev_gray: Optional[np.ndarray] = None
    prev_labels: Optional[np.ndarray] = None
    prev_full: Optional[np.ndarray] = None
    recent: deque = field(default_factory=lambda: deque(maxlen=2))
    first_frame: Optional[int] = None


def _as_rgb(frame: Any) -> np.ndarray:
    """uint8 ``(H, W, 3)`` from uint8 ``(H, W, 3)`` or float ``(3, H, W)`` in [0, 1]."""
    if hasattr(frame, "detach"):
        frame = frame.detach().cpu().numpy()
    a = np.asarray(frame)
    if a.ndim == 3 and a.shape[2] == 3 and a.dtype == np.uint8:
        return a
    if a.ndim == 3 and a.shape[0] == 3 and a.dtype.kind == "f":
        return np.ascontiguousarray(np.clip(a.transpose(1, 2, 0) * 255 + 0.5, 0, 255).astype(np.uint8))
    raise ValueError(
        f"`frame` must be (H, W, 3) uint8 or (3, H, W) float in [0, 1]; got shape {a.shape} dtype {a.dtype}")


class VideoSegmenter:
    """Link per-frame segmentations into tracks with stable ids.

    Args:
        segmenter: object with ``segment(list[uint8 (H, W, 3)]) -> list[Segmentation]``
            (e.g. `diffseg_core.segmenter.DiffSegSegmenter`), or None to pass
            segmentations yourself.
        config: `TrackerConfig`.
    """

    def __init__(self, segmenter: "Segmenter | None" = None, config: TrackerConfig = TrackerConfig()) -> None:
        if not isinstance(config, TrackerConfig):
            raise TypeError(f"`config` must be a TrackerConfig; got {type(config).__name__}")
        self.segmenter = segmenter
        self.config = config
        self.flow = make_flow_estimator(config.flow_backend, config.dis_preset) if config.use_flow else None
        fb = config.flow_fallback_preset
        self.flow_fallback = (make_flow_estimator("dis", fb) if config.use_flow and config.fb_check and fb != "none"
                              and not (config.flow_backend == "dis" and fb == config.dis_preset) else None)

    # ------------------------------------------------------------------ public API
    def init_state(self, id_offset: "int | None" = None) -> VideoState:
        """A fresh state; ids start at ``id_offset + 1`` (default ``config.id_offset``)."""
        off = self.config.id_offset if id_offset is None else int(id_offset)
        return VideoState(registry=TrackRegistry(self.config.max_missed, off))

    def is_keyframe(self, state: VideoState) -> bool:
        """Whether the next `step` is a keyframe (segmented) in keyframe mode."""
        return state.n_seen % self.config.keyframe_every == 0

    def step(self, state: VideoState, frame: Any = None, segmentation: "Segmentation | None" = None,
             frame_index: "int | None" = None) -> TrackedFrame:
        """Process one frame.

        Args:
            state: from `init_state`; updated in place.
            frame: uint8 ``(H, W, 3)`` RGB (or float ``(3, H, W)`` in [0, 1]); needed for flow,
                colour appearance, keyframe propagation and the segmenter. May be None when
                ``use_flow`` is False and a segmentation is given.
            segmentation: this frame's `Segmentation`; None = run the segmenter (keyframes)
                or propagate by flow (non-keyframes in keyframe mode).
            frame_index: index recorded in the result (default: frames stepped so far).

        Returns:
            `TrackedFrame` with int32 full-resolution track ids.
        """
        idx = state.n_seen if frame_index is None else int(frame_index)
        if state.first_frame is None:
            state.first_frame = idx
        rgb = None if frame is None else _as_rgb(frame)
        key = self.is_keyframe(state)
        if segmentation is None:
            if key and self.segmenter is not None:
                if rgb is None:
                    raise ValueError("`frame` is required to run the segmenter")
                segmentation = self.segmenter.segment([rgb])[0]
            elif state.prev_labels is None or self.config.keyframe_every == 1:
                raise ValueError(
                    "`segmentation` is required: this VideoSegmenter has no segmenter"
                    if self.segmenter is None else "`segmentation` is required on this frame")
        if segmentation is None:
            if rgb is None or not self.config.use_flow:
                out = self._hold(state, idx)
            else:
                out = self._propagate(state, rgb, idx)
        else:
            out = self._link(state, segmentation, rgb, idx)
        state.n_seen += 1
        return out

    def iter_video(self, frames: "Iterable[Any] | None" = None,
                   segmentations: "Iterable[Segmentation | None] | None" = None,
                   state: "VideoState | None" = None) -> Iterator[TrackedFrame]:
        """Track a whole video lazily (a generator; memory does not grow with length).

        Args:
            frames: iterable of frames (see `step`); None when segmentations alone are linked
                (requires ``use_flow=False``).
            segmentations: iterable of `Segmentation` (one per frame, None on frames to
                propagate), or None to run the segmenter in batches of keyframes.
            state: continue from this state (default: a fresh one).

        Yields:
            `TrackedFrame` per frame, in order. With ``config.id_correction_window`` = n > 0
            a frame is yielded n frames after it was stepped (at the end, all at once), so
            that the ids of young tracks found out to be pieces or re-appearances of older
            tracks are corrected in it (`temporal.relabel`). When a step raises, the frames
            held back are yielded first, then the error is raised.
        """
        state = self.init_state() if state is None else state
        buf = IdCorrectionBuffer(self.config.id_correction_window)
        try:
            for tf in self._iter_steps(frames, segmentations, state):
                yield from buf.push(tf)
        except Exception:
            yield from buf.flush()  # nothing already computed is lost
            raise
        yield from buf.flush()

    def _iter_steps(self, frames: "Iterable[Any] | None", segmentations: "Iterable[Segmentation | None] | None",
                    state: VideoState) -> Iterator[TrackedFrame]:
        """`iter_video` without the id-correction delay."""
        if segmentations is not None or self.segmenter is None:
            if segmentations is None:
                raise ValueError("`segmentations` is required: this VideoSegmenter has no segmenter")
            if frames is None:
                if self.config.use_flow:
                    raise ValueError("`frames` are required when use_flow is True")
                for seg in segmentations:
                    yield self.step(state, None, seg)
                return
            for fr, seg in zip(frames, segmentations):
                if seg is not None and not self.is_keyframe(state) and self.config.keyframe_every > 1:
                    seg = None  # keyframe mode: only keyframes are linked
                yield self.step(state, fr, seg)
            return
        if frames is None:
            raise ValueError("`frames` are required to run the segmenter")
        bs = self.config.batch_size or int(getattr(getattr(self.segmenter, "config", None), "batch_size", 1) or 1)
        buf: list[tuple[np.ndarray, bool]] = []
        n_key = 0
        pos = state.n_seen
        for fr in frames:
            key = pos % self.config.keyframe_every == 0
            pos += 1
            buf.append((_as_rgb(fr), key))
            n_key += key
            if n_key >= bs:
                yield from self._flush(state, buf)
                buf, n_key = [], 0
        if buf:
            yield from self._flush(state, buf)

    def _flush(self, state: VideoState, buf: list) -> Iterator[TrackedFrame]:
        keys = [f for f, k in buf if k]
        segs = iter(self.segmenter.segment(keys) if keys else [])  # type: ignore[union-attr]
        for f, k in buf:
            yield self.step(state, f, next(segs) if k else None)

    # ------------------------------------------------------------------ internals
    def _setup(self, state: VideoState, hw: tuple[int, int]) -> None:
        if state.image_hw is None:
            H, W = hw
            cfg = self.config
            wh = grid_hw(hw, cfg.work_side) if cfg.work_side and min(H, W) > cfg.work_side else (H, W)
            state.image_hw, state.work_hw = (H, W), wh
        elif tuple(hw) != state.image_hw:
            raise ValueError(f"frame size changed within the video: {state.image_hw} then {tuple(hw)}")

    @staticmethod
    def _down(state: VideoState, a: np.ndarray) -> np.ndarray:
        """Nearest-neighbour int32 label map full -> work resolution."""
        if state.work_hw == state.image_hw:
            return a
        h, w = state.work_hw  # type: ignore[misc]
        return cv2.resize(a, (w, h), interpolation=cv2.INTER_NEAREST)

    @staticmethod
    def _up(state: VideoState, a: np.ndarray) -> np.ndarray:
        """Nearest-neighbour int32 label map work -> full resolution."""
        if state.work_hw == state.image_hw:
            return a
        H, W = state.image_hw  # type: ignore[misc]
        return cv2.resize(a, (W, H), interpolation=cv2.INTER_NEAREST)

    def _work_image(self, state: VideoState, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        h, w = state.work_hw  # type: ignore[misc]
        small = rgb if (h, w) == rgb.shape[:2] else cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA)
        return small, cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)

    def _lost_by_flow(self, before: np.ndarray, warped: np.ndarray) -> np.ndarray:
        """bool ``(max id + 1,)``: tracks big enough to matter (``flow_fallback_min_area``)
        whose confirmed warped area is below ``flow_fallback_valid`` x their previous area
        ``before`` (per previous id; the forward-backward check rejected most of them: the
        flow lost them)."""
        cfg = self.config
        n = len(before)
        after = np.bincount(warped.ravel(), minlength=n)[:n]
        lost = (before >= max(cfg.flow_fallback_min_area, 1)) & (after < cfg.flow_fallback_valid * before)
        lost[0] = False
        return lost

    def _flows(self, state: VideoState, gray: np.ndarray,
               flow: "Any | None" = None) -> tuple[Optional[np.ndarray], Optional[np.ndarray]]:
        """(backward flow cur->prev, validity) at work resolution, or (None, None)."""
        flow = self.flow if flow is None else flow
        if flow is None or state.prev_gray is None or gray is None:
            return None, None
        bwd = flow(gray, state.prev_gray)
        valid = None
        if self.config.fb_check:
            fwd = flow(state.prev_gray, gray)
            valid = forward_backward_check(bwd, fwd, self.config.fb_abs, self.config.fb_rel)
        return bwd, valid

    def _link(self, state: VideoState, seg: Segmentation, rgb: "np.ndarray | None", idx: int) -> TrackedFrame:
        """One keyframe: match the segmentation to the tracks (see the module docstring)."""
        cfg = self.config
        f = self._warp_previous(state, seg, rgb, idx)  # 1
        self._assign(state, f)  # 2, 2a
        if cfg.handle_merges and f.T:
            self._carve_matched(state, f)  # 2b
        if cfg.second_association and f.prev is not None and f.bwd is not None and f.K:  # 2c
            self._second_association(state.registry, f.prev, f.prev_area, f.vel_before, f.seg_w, f.area_s, f.props,
                                     f.hists, f.seg_track, f.taken)
        if cfg.handle_splits and f.T:
            self._join_splits(state, f)  # 3
        self._reidentify(state, f)  # 4
        if cfg.handle_merges and f.T:
            self._carve_swallowed(state, f)  # 5
        self._new_tracks(state, f)  # 6
        return self._finish(state, f)

    def _warp_previous(self, state: VideoState, seg: Segmentation, rgb: "np.ndarray | None", idx: int) -> _Frame:
        """Step 1: validate the inputs, warp the previous ids into this frame (flow, motion
        model, template moves) and measure their overlaps with this frame's segments."""
        cfg = self.config
        if not isinstance(seg, Segmentation):
            raise TypeError(f"`segmentation` must be a Segmentation; got {type(seg).__name__}")
        seg = seg.numpy() if not isinstance(seg.labels, np.ndarray) or not isinstance(seg.proposals, np.ndarray) else seg
        labels = np.asarray(seg.labels, dtype=np.int32)
        K = seg.num_segments
        if labels.size and (int(labels.max()) >= K or int(labels.min()) < 0):
            raise ValueError(f"segmentation labels must be in 0..{K - 1}; got {int(labels.min())}..{int(labels.max())}")
        if rgb is not None and rgb.shape[:2] != labels.shape:
            raise ValueError(f"frame {rgb.shape[:2]} and segmentation {labels.shape} differ in size")
        self._setup(state, labels.shape)
        reg = state.registry
        seg_w = self._down(state, labels)
        small, gray = self._work_image(state, rgb) if rgb is not None else (None, None)
        props = np.asarray(seg.proposals, np.float32)

        bwd, valid = self._flows(state, gray) if gray is not None else (None, None)
        prev = state.prev_labels
        prev_area = np.bincount(prev.ravel(), minlength=1) if prev is not None else None  # per previous id
        raw0 = None  # the previous ids warped WITHOUT the forward-backward mask (see `raw`)
        if prev is None:
            warped = np.zeros_like(seg_w)
        elif bwd is not None:
            raw0 = warp_labels(prev, bwd, None, fill=0)
            warped = raw0 if valid is None else np.where(valid, raw0, 0)
            if self.flow_fallback is not None and valid is not None and self._lost_by_flow(prev_area, warped).any():
                # the cheap flow lost an object (fast motion, blur): redo this pair carefully
                bwd, valid = self._flows(state, gray, self.flow_fallback)
                raw0 = warp_labels(prev, bwd, None, fill=0)
                warped = raw0 if valid is None else np.where(valid, raw0, 0)
        else:
            warped = prev
        # per-track motion model: every previous track moved rigidly by its robust displacement
        shifts, measured, firm = (self._track_shifts(reg, prev_area, warped, bwd)
                                  if cfg.motion_model and prev is not None and bwd is not None else (None, None, None))
        tm_moves = None  # tracks whose own pixels, matched as a template, overrule the flow
        if shifts is not None and cfg.template_motion and gray is not None:
            tm_moves = self._template_moves(state, prev, prev_area, gray, shifts, measured)
            warped = self._apply_moves(warped, tm_moves)
        vel_before = ({tid: t.velocity for tid, t in reg.tracks.items()}
                      if cfg.second_association and prev is not None else {})
        if shifts is not None:
            upd = measured if tm_moves is None else np.union1d(measured, np.flatnonzero(tm_moves.over))
            for tid in upd.tolist():  # the constant-velocity guess of the next frame
                reg[tid].velocity = (float(shifts[tid, 0]), float(shifts[tid, 1]))
        if shifts is not None and valid is not None:
            # tracks the flow lost: their translated mask fills the pixels no confirmed warp claims
            lost = self._lost_by_flow(prev_area, warped)
            if lost.any():
                moved = translate_labels(np.where(lost[prev], prev, 0), shifts)
                warped = np.where((warped == 0) & (moved > 0), moved, warped)
        A = np.flatnonzero(np.bincount(warped.ravel()))  # O(n) unique of the warped ids
        A = A[A > 0]
        A = A[[int(a) in reg for a in A]] if len(A) else A
        T = len(A)
        row_of = np.full(int(warped.max()) + 1 if warped.size else 1, -1, np.int32)
        row_of[A] = np.arange(T)
        rows = np.take(row_of, warped)
        inter = overlap_matrix(rows, T, seg_w, K)
        # the previous ids warped WITHOUT the forward-backward mask (template moves applied):
        # the check rejects every pixel it cannot confirm (fast motion, blur, thin objects),
        # which leaves a track's warped mask too small to contain the pieces of a split; where
        # a pixel goes is still the flow's best guess, good enough for containment and carving
        raw = self._apply_moves(raw0, tm_moves) if raw0 is not None and valid is not None else None
        inter_raw = inter if raw is None else self._overlap_of(raw, row_of, T, seg_w, K)
        area_t = inter.sum(1)
        area_s = np.bincount(seg_w.ravel(), minlength=K)[:K]
        # colour cell of every work pixel: once per frame, for the segment histograms and
        # every (track, segment) histogram the merge rules ask for
        cells = color_cells(small, cfg.hist_bins) if (small is not None and cfg.hist_bins) else None
        # common fate: what moves unlike a track is not a piece of it (split, merge, parent tests)
        motion = (_Motion(shifts, firm if tm_moves is None else np.setdiff1d(firm, np.flatnonzero(tm_moves.over)),
                          seg_w, K, bwd, valid, cfg.motion_min_pixels)
                  if cfg.common_fate and shifts is not None and bwd is not None else None)
        return _Frame(idx=idx, seg=seg, labels=labels, K=K, seg_w=seg_w, small=small, gray=gray, props=props,
                      bwd=bwd, prev=prev, prev_area=prev_area, warped=warped, raw=raw, vel_before=vel_before,
                      A=A, T=T, rows=rows, inter=inter, inter_raw=inter_raw, area_t=area_t, area_s=area_s,
                      cells=cells, bins=cfg.hist_bins, motion=motion,
                      hists=color_histograms(small, seg_w, K, cfg.hist_bins, cells) if cells is not None else None)

    def _assign(self, state: VideoState, f: _Frame) -> None:
        """Step 2: costs and Hungarian on the tracks present in the previous frame; 2a: an
        older look-alike track keeps a re-fused object."""
        cfg = self.config
        reg = state.registry
        A, T, K, inter = f.A, f.T, f.K, f.inter
        iou = iou_from_overlap(inter, f.area_t, f.area_s)
        skl = None
        if T:
            P = np.stack([self._proposal_of(reg[a].proposal, f.props.shape[1:]) for a in A])
            f.P_warp = warp_maps(P, f.bwd) if f.bwd is not None else P
            if cfg.w_kl > 0 and K:
                skl = symmetric_kl_matrix(f.P_warp, f.props)
        cost = cost_matrix(iou, skl, cfg.w_iou, cfg.w_kl, cfg.kl_tau)
        asg = hungarian_assign(cost, allowed=(iou >= cfg.min_iou) & (inter > 0), max_cost=cfg.max_cost)
        f.asg = asg
        f.seg_track = np.zeros(K, np.int64)
        f.seg_track[asg.cols] = A[asg.rows]
        f.seg_boxes = ndimage.find_objects(f.seg_w + 1, max_label=K) if cfg.reid else None  # work-res box per segment
        f.taken = set(int(x) for x in A[asg.rows])
        # 2a. two tracks that look alike fused into one segment (a fragment made a new id when
        # the object split, and the object is whole again): the OLDER id keeps the segment,
        # whichever the assignment picked, so a transient fragment never takes over an object
        if cfg.prefer_older_on_merge and T and len(asg.rows):
            self._prefer_older(reg, A, asg, inter, f.area_t, f.area_s, f.seg_track, f.taken, f.idx, f.inter_raw,
                               f.yielded, f.hists, f.seg_boxes, f.motion)

    def _carve_matched(self, state: VideoState, f: _Frame) -> None:
        """Step 2b: a track matched to a segment that is mostly something else (the segment
        swallowed it: a merge) keeps only its warped pixels (carved in `_finish`); the rest of
        the segment goes to the track that covered it best, or to a new track."""
        cfg = self.config
        reg = state.registry
        A, T, K, inter, area_t, area_s = f.A, f.T, f.K, f.inter, f.area_t, f.area_s
        hists, seg_track, taken, motion, idx = f.hists, f.seg_track, f.taken, f.motion, f.idx
        for r_, j in zip(f.asg.rows.tolist(), f.asg.cols.tolist()):
            tid = int(A[r_])
            tr = reg[tid]
            other_cov = int(inter[:, j].sum() - inter[r_, j])  # pixels other tracks vouch for
            if cfg.prefer_older_on_merge:  # pieces born of this track (or its parent) are family
                fam = [o for o in range(T) if o != r_ and reg[int(A[o])].parent == tid]
                other_cov -= int(inter[fam, j].sum()) if fam else 0
            if not (inter[r_, j] >= cfg.merge_containment * area_t[r_] and other_cov >= 0.5 * area_s[j]
                    and tr.carved < cfg.max_carved):
                continue
            cov = inter[:, j].copy()
            cov[r_] = -1
            other_id = int(A[int(np.argmax(cov))])  # the track the warp puts in most of the rest
            if not (self._old_enough(state, tr, idx, other_id)
                    or (motion is not None and motion.segment_apart(j, tid))):
                continue  # young, unless the segment (mostly the rest) moves unlike it
            if f.small is not None and cfg.hist_bins and tr.hist is not None:
                pair = f.pair_hist[r_ * K + j]
                hr = pair / max(float(pair.sum()), 1.0)
                own = float(bhattacharyya(hr[None], tr.hist[None])[0, 0])
                if own < cfg.split_min_appearance:
                    continue
                oh = reg[other_id].hist
                if hists is not None and oh is not None:
                    # the rest of the segment (outside the track's confirmed warp) looks
                    # like the track, not like the track the warp says is there: the
                    # object moved or grew beyond its prediction, nothing swallowed it
                    rest = np.maximum(hists[j] * float(area_s[j]) - pair, 0)
                    rest = rest / max(float(rest.sum()), 1.0)
                    if float(bhattacharyya(rest[None], tr.hist[None])[0, 0]) > float(
                            bhattacharyya(rest[None], oh[None])[0, 0]):
                        continue
            # the rest goes to a free track that clearly lives there (most of its warped
            # mask inside the segment, covering a good part of it), else to a new track
            others = [(int(inter[o, j]), int(A[o])) for o in range(T)
                      if o != r_ and int(A[o]) not in taken
                      and inter[o, j] >= cfg.merge_containment * area_t[o] and inter[o, j] >= 0.2 * area_s[j]]
            if others:
                new_owner = max(others)[1]
            else:
                new_owner = reg.new(idx).id
            seg_track[j] = new_owner
            taken.add(new_owner)
            f.carve.setdefault(j, []).append(tid)

    def _join_splits(self, state: VideoState, f: _Frame) -> None:
        """Step 3 (before re-identification, so that a piece of a tracked object is not
        mistaken for an old track that looks alike): unmatched segments inside a track's
        warped mask join that track (`_split_owner`)."""
        cfg = self.config
        reg = state.registry
        # rivals: tracks seen in the last frames and not matched in this one, whose
        # look may claim a piece back from the track whose warp it lies in (a track that
        # swallowed an object, or took a piece of it, carries the object in its warp)
        rivals = ([i for i, tr in reg.tracks.items() if i not in f.taken and tr.hist is not None
                   and f.idx - tr.last_frame <= SPLIT_RIVAL_FRAMES]
                  if cfg.reid and f.hists is not None and f.seg_boxes is not None else [])
        for j in np.flatnonzero(f.seg_track == 0):
            if f.area_s[j] == 0:
                continue
            tid = self._split_owner(reg, f.A, f.inter_raw, f.area_s, f.seg_track, f.hists, j, rivals, f.seg_boxes,
                                    f.motion)
            if tid:
                f.seg_track[j] = tid
                f.taken.add(tid)

    def _reidentify(self, state: VideoState, f: _Frame) -> None:
        """Step 4: re-identification of remembered tracks (lost ones, and present ones left
        unmatched); young tracks take back the id of a remembered track they look like."""
        cfg = self.config
        reg = state.registry
        A, T, area_t, seg_track, taken = f.A, f.T, f.area_t, f.seg_track, f.taken
        un = np.flatnonzero((seg_track == 0) & (f.area_s >= max(cfg.min_segment_area, 1)))
        # each track's segment holding most of its warped mask, and whether it holds
        # merge_containment of it (the swallowed test of re-id, the stand-ins and step 5)
        f.jb, f.inside = containing_segment(f.inter, area_t, cfg.merge_containment)
        if cfg.reid and len(un):
            # lost tracks, and tracks of the previous frame that found no partner (e.g. flow
            # failed on fast motion, or all their warped pixels were unreliable); not a track
            # whose prediction lies inside a segment another track took: that segment
            # swallowed it (a merge, carved in step 5), the object has not moved elsewhere
            swallowed = set()
            if cfg.handle_merges and T:
                owner = seg_track[f.jb]
                swallowed = {int(A[t]) for t in np.flatnonzero(f.inside & (owner > 0) & (owner != A)
                                                                 & (area_t >= max(cfg.min_segment_area, 4)))}
                if f.small is not None and f.hists is not None:
                    # a segment nobody took swallowed it together with much more (the object
                    # merged with the background there): carved in step 5 like any swallowed
                    # track, else re-identification would hand it the whole segment and the
                    # track would go on as object + background
                    f.engulfed = self._engulfed(state, f, owner)
                    swallowed |= set(f.engulfed)
            cand = [i for i in reg.tracks if i not in taken and i not in swallowed]
            if cand:
                sim = self._reid_similarity(state, cand, un, f.seg_boxes, f.props, f.hists)
                r = hungarian_assign(1.0 - sim, max_cost=1.0 - cfg.reid_min_similarity)
                for ci, sj in zip(r.rows, r.cols):
                    seg_track[un[sj]] = cand[ci]
                    taken.add(cand[ci])
                    f.reided[int(cand[ci])] = int(un[sj])
        if cfg.reid:
            # a track born a few frames ago (an object re-entering shows only a sliver, too
            # little to recognise) takes back the id of a remembered track it looks like
            # once it is big enough, if that track was gone before it was born
            self._reid_young(state, f.idx, seg_track, taken, f.seg_boxes, f.props, f.hists, f.area_s, f.yielded)

    def _carve_swallowed(self, state: VideoState, f: _Frame) -> None:
        """Step 5: merges: carve a segment along the warped ids of the tracks it swallowed."""
        cfg = self.config
        reg = state.registry
        A, T, K, inter, area_t, area_s = f.A, f.T, f.K, f.inter, f.area_t, f.area_s
        seg_track, taken, engulfed, motion, idx = f.seg_track, f.taken, f.engulfed, f.motion, f.idx
        for t in range(T):
            tid = int(A[t])
            tr = reg[tid]
            if tid in taken or area_t[t] < max(cfg.min_segment_area, 4) or tr.carved >= cfg.max_carved:
                continue
            j = int(f.jb[t])
            if tid in engulfed:  # checked by `_engulfed`
                if seg_track[j] == 0:
                    # the rest of the segment: to a free track that lives there, else a new one
                    others = [(int(inter[o, j]), int(A[o])) for o in range(T)
                              if int(A[o]) not in taken and int(A[o]) not in engulfed
                              and inter[o, j] >= cfg.merge_containment * area_t[o]
                              and inter[o, j] >= 0.2 * area_s[j]]
                    seg_track[j] = max(others)[1] if others else reg.new(idx).id
                    taken.add(int(seg_track[j]))
                f.carve.setdefault(j, []).append(tid)
                taken.add(tid)
                continue
            if seg_track[j] == 0 or not f.inside[t]:
                continue
            apart = motion is not None and motion.segment_apart(j, tid)  # the segment moves unlike it
            if not (apart or self._old_enough(state, tr, idx, int(seg_track[j]))):
                continue
            if cfg.prefer_older_on_merge and tr.parent and tr.parent == int(seg_track[j]) and not apart:
                continue  # a piece of the object that took the segment: it is whole again
            if f.small is not None and cfg.hist_bins and tr.hist is not None:
                # the carved region must look like its own track more than like the
                # track that swallowed it (else the object left or is occluded)
                hr = f.pair_hist[t * K + j][None]
                hr = hr / max(float(hr.sum()), 1.0)
                other = reg[int(seg_track[j])].hist if int(seg_track[j]) in reg else None
                own = float(bhattacharyya(hr, tr.hist[None])[0, 0])
                if own < cfg.split_min_appearance:
                    continue
                if other is not None and own < float(bhattacharyya(hr, other[None])[0, 0]) + cfg.merge_margin:
                    continue  # looks no different from the track that took it: a real merge
            f.carve.setdefault(j, []).append(tid)
            taken.add(tid)

    def _new_tracks(self, state: VideoState, f: _Frame) -> None:
        """Step 6: new tracks; one born inside a track's predicted mask remembers it as its
        parent (a piece of that object, unless it proves otherwise), see `_prefer_older`."""
        cfg = self.config
        reg = state.registry
        A, T, area_s, inter_raw, motion, hists = f.A, f.T, f.area_s, f.inter_raw, f.motion, f.hists
        for j in np.flatnonzero(f.seg_track == 0):
            if area_s[j] >= cfg.min_segment_area and (area_s[j] > 0 or cfg.min_segment_area == 0):
                tr = reg.new(f.idx)
                f.seg_track[j] = tr.id
                if cfg.prefer_older_on_merge and T and area_s[j] > 0:
                    t = int(np.argmax(inter_raw[:, j]))
                    ph = reg[int(A[t])].hist
                    if (inter_raw[t, j] >= cfg.split_containment * area_s[j] and int(A[t]) in f.taken
                            and not (motion is not None and motion.segment_apart(j, int(A[t])))
                            and (hists is None or ph is None or cfg.split_min_appearance <= 0
                                 or float(bhattacharyya(hists[j:j + 1], ph[None])[0, 0]) >= cfg.split_min_appearance)):
                        tr.parent = int(A[t])  # and it looks like that track (else a new object)

    def _finish(self, state: VideoState, f: _Frame) -> TrackedFrame:
        """The frame's track-id maps (segments' ids, carved along the warp), track updates,
        late id corrections and the state for the next frame."""
        cfg = self.config
        reg = state.registry
        K, seg_w, labels, seg_track, carve = f.K, f.seg_w, f.labels, f.seg_track, f.carve
        lut = seg_track.astype(np.int32)
        out_w = np.take(lut, seg_w)
        out_full = np.take(lut, labels)
        if carve:
            # carve table: (segment j, warped id t) -> t for the carved pairs
            keep = np.zeros(K, bool)
            keep[list(carve)] = True
            tids = np.array(sorted({t for v in carve.values() for t in v}), np.int64)

            table = np.zeros((K, len(tids)), bool)
            for j, v in carve.items():
                table[j, np.searchsorted(tids, v)] = True
            # carve along the warp WITHOUT the fb mask: pixels the check could not confirm
            # still go to the track the flow moved them from (else a carved object keeps only
            # its confirmed part and the rest leaks to the segment's owner)
            src = f.warped if f.raw is None else f.raw
            # a pixel is carved when its (segment, warped id) pair is in the table: one
            # lookup per pixel in the flattened table, column 0 = not a carved id
            col = np.zeros(max(int(src.max()), int(tids[-1])) + 1, np.int32)
            col[tids] = np.arange(1, len(tids) + 1)
            flat = np.zeros((K, len(tids) + 1), bool)
            flat[:, 1:] = table
            ok = np.take(flat.ravel(), seg_w * (len(tids) + 1) + np.take(col, src))
            override = np.where(ok, src, 0).astype(np.int32, copy=False)
            out_w = np.where(ok, src, out_w).astype(np.int32, copy=False)
            # full resolution: the work-resolution carving, upsampled, inside the carved segments
            ok_rows, ok_cols = np.flatnonzero(ok.any(1)), np.flatnonzero(ok.any(0))
            if len(ok_rows):
                # only inside the bounding box of the carved pixels (cheap on big frames)
                H, W = state.image_hw  # type: ignore[misc]
                h, w = state.work_hw  # type: ignore[misc]
                y0, y1 = int(ok_rows[0]), int(ok_rows[-1]) + 1
                x0, x1 = int(ok_cols[0]), int(ok_cols[-1]) + 1
                Y0, Y1 = max(0, (y0 * H) // h - 1), min(H, -(-(y1 * H) // h) + 1)
                X0, X1 = max(0, (x0 * W) // w - 1), min(W, -(-(x1 * W) // w) + 1)
                ov_full = self._up(state, override)[Y0:Y1, X0:X1]
                sub = out_full[Y0:Y1, X0:X1]
                sel = (ov_full > 0) & np.take(keep, labels[Y0:Y1, X0:X1])
                sub[sel] = ov_full[sel]
        carved_ids = np.array([t for v in carve.values() for t in v], np.int64)
        hint = np.concatenate([seg_track[seg_track > 0], carved_ids])
        self._update_tracks(state, out_w, f.small, f.idx, seg_track, f.props, f.area_s, f.A, f.P_warp, hint, f.hists)
        for tid in set(carved_ids.tolist()):
            if tid in reg:
                reg[tid].carved += 1
        for tid in set(seg_track[seg_track > 0].tolist()):
            if tid in reg:
                reg[tid].carved = 0
        state.prev_labels = out_w
        state.prev_gray = f.gray
        state.prev_full = out_full if cfg.keyframe_every > 1 else None
        state.recent.append(f.seg)
        ids = np.unique(lut[lut > 0])
        if carve:
            ids = np.union1d(ids, carved_ids.astype(np.int32))
        if f.T and cfg.id_correction_window > 0 and cfg.prefer_older_on_merge:
            self._stand_ins(reg, f.A, f.inter_raw, seg_track, ids, f.idx, f.yielded, f.reided, f.seg_boxes)
        absorbed = self._absorb(reg, f.yielded, ids, f.idx)
        return TrackedFrame(f.idx, out_full, ids.astype(np.int32), f.seg, True, lut, absorbed)

    def _second_association(self, reg: TrackRegistry, prev: np.ndarray, prev_area: np.ndarray,
                            vel_before: dict, seg_w: np.ndarray, area_s: np.ndarray, props: np.ndarray,
                            hists: "np.ndarray | None", seg_track: np.ndarray, taken: set) -> None:
        """Match tracks of the previous frame that the first (flow) association left unmatched
        to segments it left unmatched, predicting each track by the other motion hypotheses:
        no motion, and its constant velocity (``vel_before``: ``{id: (dy, dx)}`` of the previous
        frame). The flow misleads when an object stops while the camera pans, or when an
        occluder's motion drags a half-hidden object's pixels along; then the flow's
        prediction lies beside the object and the first association gates the pair out.
        Same cost and gates as the first association, on the better IoU of the two
        hypotheses; the prediction must cover at least half of the segment (else the object
        merged into something bigger: the merge carving's case), and with images the segment
        must look like the track (``split_min_appearance``). Updates ``seg_track`` and
        ``taken`` in place.

        Args:
            prev: int32 ``(h, w)`` previous track ids; ``prev_area`` their areas per id.
            seg_w: int32 ``(h, w)`` segment index map; ``area_s`` ``(K,)`` segment areas.
            props: ``(K, gh, gw)`` segment proposal maps; ``hists`` ``(K, bins**3)`` or None.
        """
        cfg = self.config
        K = len(area_s)
        B = np.flatnonzero(prev_area)
        B = np.array([b for b in B.tolist() if b > 0 and b in reg and b not in taken], np.int64)
        C = np.flatnonzero((seg_track == 0) & (area_s > 0))
        if not len(B) or not len(C):
            return
        n = len(prev_area)
        row_of = np.full(n, -1, np.int32)
        row_of[B] = np.arange(len(B))
        col_of = np.full(K, -1, np.int32)
        col_of[C] = np.arange(len(C))
        cols = np.take(col_of, seg_w)
        iou = np.zeros((len(B), len(C)))
        cover = np.zeros((len(B), len(C)))  # fraction of the segment the prediction covers
        sh = np.zeros((n, 2), np.float64)
        for b in B.tolist():
            sh[b] = vel_before.get(b, (0.0, 0.0))
        sh = np.rint(sh).astype(np.int64)
        hyps = [prev] + ([translate_labels(np.where(row_of[prev] >= 0, prev, 0), sh)] if np.any(sh[B]) else [])
        for h in hyps:
            rows = np.take(row_of, h)
            inter = overlap_matrix(rows, len(B), cols, len(C))
            iou = np.maximum(iou, iou_from_overlap(inter, np.bincount(rows[rows >= 0], minlength=len(B)),
                                                   area_s[C]))
            cover = np.maximum(cover, inter / np.maximum(area_s[C], 1)[None, :])
        skl = None
        if cfg.w_kl > 0:
            P = np.stack([self._proposal_of(reg[int(b)].proposal, props.shape[1:]) for b in B])
            skl = symmetric_kl_matrix(P, props[C])
        # a segment the prediction covers less than half of is mostly something else (the
        # object merged into the background): that is for the merge carving, not a match
        allowed = (iou >= max(cfg.min_iou, 1e-9)) & (cover >= 0.5)
        if hists is not None and cfg.split_min_appearance > 0:  # a track without a look passes
            allowed &= self._looks(reg, B, hists[C], np.ones_like(iou)) >= cfg.split_min_appearance
        if not allowed.any():
            return
        r = hungarian_assign(cost_matrix(iou, skl, cfg.w_iou, cfg.w_kl, cfg.kl_tau), allowed=allowed,
                             max_cost=cfg.max_cost)
        for ri, ci in zip(r.rows.tolist(), r.cols.tolist()):
            seg_track[C[ci]] = int(B[ri])
            taken.add(int(B[ri]))

    def _stand_ins(self, reg: TrackRegistry, A: np.ndarray, inter_raw: np.ndarray, seg_track: np.ndarray,
                   present: np.ndarray, idx: int, yielded: dict[int, int],
                   reided: "dict[int, int] | None" = None, seg_boxes: "list | None" = None) -> None:
        """Young tracks that stood in for an older one: a track born inside the correction
        window and gone in this frame, where an older look-alike track took over: its
        prediction (the unchecked warp, ``inter_raw`` ``(T, K)``; only for a track seen in
        the previous frame) lies inside a segment the older track took, or the older track
        was re-identified in this frame (``reided``: id -> segment) on a segment next to the
        young track's last box (grown by its own size for every frame since it was last seen:
        where it could have moved; ``seg_boxes``: the segments' `ndimage.find_objects`
        boxes). A track born in the same frame as the one that took over counts only by the
        inside test (two halves of an object that split when both appeared). Typically an
        object half hidden, at the border or lost by the flow got a new id for a few frames,
        and then its old track re-identified it. Recorded in ``yielded`` (folded by
        `_absorb`)."""
        cfg = self.config
        pres = set(np.asarray(present).tolist())
        row = {int(a): t for t, a in enumerate(A.tolist())}
        raw_area = inter_raw.sum(1)
        jr, inside = containing_segment(inter_raw, raw_area, cfg.merge_containment)
        for y, tr in reg.tracks.items():
            if (y in pres or y in yielded or tr.first_frame < idx - cfg.id_correction_window
                    or tr.first_frame >= idx):
                continue
            owners = []
            t = row.get(y)
            if t is not None and raw_area[t] > 0 and inside[t] and seg_track[jr[t]] > 0:
                owners.append(int(seg_track[jr[t]]))
            inside_owner = owners[0] if owners else 0  # the owner by the inside test
            if reided and seg_boxes is not None:
                y0, x0, y1, x1 = tr.bbox
                gap = idx - tr.last_frame  # frames it may have moved since (its size each)
                gy, gx = gap * (y1 - y0), gap * (x1 - x0)
                for o, j in reided.items():
                    b = seg_boxes[j] if j < len(seg_boxes) else None
                    if b is not None and (b[0].start < y1 + gy and b[0].stop > y0 - gy
                                          and b[1].start < x1 + gx and b[1].stop > x0 - gx):
                        owners.append(o)
            for o in owners:
                old = reg.tracks.get(o)
                if o == y or old is None or old.first_frame > tr.first_frame:
                    continue
                # a twin born in the same frame (the object was split when both appeared, e.g.
                # on the first frame, and is whole again) only with the inside test: the
                # re-identified form says nothing about two tracks that lived side by side
                if old.first_frame == tr.first_frame and o != inside_owner:
                    continue
                if (tr.hist is not None and old.hist is not None and cfg.split_min_appearance > 0
                        and float(bhattacharyya(tr.hist[None], old.hist[None])[0, 0]) < cfg.split_min_appearance):
                    continue  # a different object: only occluded, or elsewhere
                yielded[y] = o
                break

    def _absorb(self, reg: TrackRegistry, yielded: dict[int, int], present: np.ndarray, idx: int) -> dict[int, int]:
        """Young tracks folded into the older track they yielded to in this frame:
        ``{young id: older id}`` (see `TrackedFrame.absorbed`).

        A young track is folded when it has no pixels left in this frame and its whole life
        lies inside ``id_correction_window`` (so every frame it appeared in can still be
        rewritten); it is then removed from the registry: it was never an object of its own.
        """
        win = self.config.id_correction_window
        if win <= 0 or not yielded:
            return {}
        out: dict[int, int] = {}
        pres = set(np.asarray(present).tolist())
        for y, o in yielded.items():
            if y in pres or y not in reg or reg[y].first_frame < idx - win:
                continue
            out[y] = o
        for y in list(out):  # chains (y -> o -> p in one frame) point at the final id
            o, seen = out[y], {y}
            while o in out and o not in seen:
                seen.add(o)
                o = out[o]
            out[y] = o
        for y, o in out.items():
            t = reg.tracks.pop(y)
            if o in reg:  # the older track inherits how much of the object was ever seen
                reg[o].peak_area = max(reg[o].peak_area, t.peak_area)
            for other in reg.tracks.values():  # pieces of the young track are pieces of the older one
                if other.parent == y:
                    other.parent = o
        return out

    def _old_enough(self, state: VideoState, tr: Any, idx: int, other: int) -> bool:
        """Whether track ``tr`` may be carved out of a segment that swallowed it (mostly track
        ``other``): it is at least ``merge_min_age`` frames old, or it was born on the first
        frame (so it is not a piece split off later) and looks unlike ``other`` (two halves
        of one object that both started on the first frame may be whole again)."""
        cfg = self.config
        if idx - tr.first_frame >= cfg.merge_min_age:
            return True
        if tr.first_frame != state.first_frame:
            return False
        reg = state.registry
        oh = reg[other].hist if other in reg else None
        if tr.hist is None or oh is None:
            return True
        return float(bhattacharyya(tr.hist[None], oh[None])[0, 0]) < cfg.merge_same_appearance

    def _engulfed(self, state: VideoState, f: _Frame, owner: np.ndarray) -> dict[int, int]:
        """Tracks that merged into a segment nobody took (``owner``: the id holding each
        track's containing segment ``f.jb``, 0 = none): ``{track id: segment}``.

        The track's warped mask lies inside the segment (``f.inside``, ``f.jb``: see
        `containing_segment`), the segment is at least ``ENGULF_RATIO`` times the track's
        prediction (without the forward-backward mask, ``f.inter_raw``), the track's part of
        it looks like the track (``split_min_appearance``) and the rest of it does not: less
        than the track's part by ``merge_margin`` (else the object grew or came closer, and
        the whole segment is the object's). Young tracks (``merge_min_age``) and tracks
        carved ``max_carved`` times in a row are left to the other rules, as in step 5.
        """
        cfg = self.config
        reg = state.registry
        out: dict[int, int] = {}
        pred = f.inter_raw.sum(1)
        for t in np.flatnonzero(f.inside & (owner == 0) & (f.area_t >= max(cfg.min_segment_area, 4))).tolist():
            tid, j = int(f.A[t]), int(f.jb[t])  # type: ignore[index]
            tr = reg[tid]
            if (tid in f.taken or tr.hist is None or tr.carved >= cfg.max_carved
                    or f.area_s[j] < ENGULF_RATIO * max(float(pred[t]), 1.0)
                    or not self._old_enough(state, tr, f.idx, 0)):
                continue
            part = f.pair_hist[t * f.K + j]
            rest = np.maximum(f.hists[j] * float(f.area_s[j]) - part, 0)  # type: ignore[index]
            part = part / max(float(part.sum()), 1.0)
            rest = rest / max(float(rest.sum()), 1.0)
            own, other = bhattacharyya(np.stack([part, rest]), tr.hist[None])[:, 0].tolist()
            if own >= cfg.split_min_appearance and other <= own - cfg.merge_margin:
                out[tid] = j
        return out

    def _split_owner(self, reg: TrackRegistry, A: np.ndarray, inter_raw: np.ndarray, area_s: np.ndarray,
                     seg_track: np.ndarray, hists: "np.ndarray | None", j: int, rivals: "list[int] | None" = None,
                     seg_boxes: "list | None" = None, motion: "_Motion | None" = None) -> int:
        """The track an unmatched segment ``j`` is a split piece of, or 0.

        Candidates, most overlapping first: tracks whose warped mask (without the
        forward-backward mask, ``inter_raw`` ``(T, K)``) contains ``split_containment`` of the
        segment, or at least ``split_gain_containment`` of it when adding the segment to the
        segments the track already took raises their IoU with the warped mask by
        ``split_min_gain`` (a half that the warp of a thin or fast object covers only
        partly). The piece must also look like the track (colour), see below, and no rival
        (``rivals``: ids of tracks seen in the last ``SPLIT_RIVAL_FRAMES`` frames and not
        matched in this one) whose last box overlaps the piece's (``seg_boxes``, IoU >=
        ``SPLIT_RIVAL_BOX_IOU``) may look more like it by ``SPLIT_RIVAL_MARGIN``: then the
        piece goes to the best-looking such rival (returned instead). Typically a background
        track swallowed a half-hidden object in the previous frame (or took a piece of it),
        so the object lies inside the background's warp when it shows again, or the flow
        dragged the object's own prediction onto the background.
        """
        cfg = self.config
        a_j = float(area_s[j])
        lo = min(cfg.split_containment, cfg.split_gain_containment) if cfg.split_gain_containment > 0 else cfg.split_containment
        cands = np.flatnonzero(inter_raw[:, j] >= lo * a_j)
        for t in cands[np.argsort(-inter_raw[cands, j], kind="stable")].tolist():
            tid = int(A[t])
            if motion is not None and motion.segment_apart(j, tid):
                continue  # moves unlike the track: something else (`_Motion`)
            own = np.flatnonzero(seg_track == tid)
            if inter_raw[t, j] < cfg.split_containment * a_j:
                if not len(own):
                    continue
                w_area = float(inter_raw[t].sum())
                i_s, s_area = float(inter_raw[t, own].sum()), float(area_s[own].sum())
                iou0 = i_s / max(w_area + s_area - i_s, 1.0)
                i_1, s_1 = i_s + float(inter_raw[t, j]), s_area + a_j
                if i_1 / max(w_area + s_1 - i_1, 1.0) < iou0 + cfg.split_min_gain:
                    continue
            if cfg.split_min_appearance > 0 and hists is not None:
                # compare with the segment(s) the track took in this frame (its current look)
                # and with its remembered histogram: a piece of a textured object may differ in
                # colour from the other piece but still fit the whole object's look; a
                # background piece fits neither
                now = hists[own].mean(0) if len(own) else None
                hist = reg[tid].hist
                if now is not None or hist is not None:
                    b_now = float(bhattacharyya(hists[j:j + 1], now[None])[0, 0]) if now is not None else -1.0
                    b_mem = float(bhattacharyya(hists[j:j + 1], hist[None])[0, 0]) if hist is not None else -1.0
                    if max(b_now, b_mem - SPLIT_MEMORY_MARGIN) < cfg.split_min_appearance:
                        continue
                    if rivals and seg_boxes is not None:
                        # like for like: the rival's remembered look against the owner's best fit
                        rival = self._rival_claims(reg, rivals, tid, j, max(b_now, b_mem), hists, seg_boxes)
                        if rival:
                            return rival
            return tid
        return 0

    @staticmethod
    def _rival_claims(reg: TrackRegistry, rivals: list[int], tid: int, j: int, look: float, hists: np.ndarray,
                      seg_boxes: list) -> int:
        """The rival track (not ``tid``) whose last box overlaps segment ``j``'s box and that
        looks most like the segment, if it beats ``look`` (the split owner's fit) by the
        margin; else 0."""
        best, best_look = 0, look + SPLIT_RIVAL_MARGIN
        biou = box_iou_matrix(np.array([reg[r].bbox for r in rivals]), slice_boxes([seg_boxes[j]]))[:, 0]
        for r, bi in zip(rivals, biou.tolist()):
            if r == tid or bi < SPLIT_RIVAL_BOX_IOU:
                continue
            b_r = float(bhattacharyya(hists[j:j + 1], reg[r].hist[None])[0, 0])
            if b_r > best_look:
                best, best_look = r, b_r
        return best

    @staticmethod
    def _overlap_of(ids: np.ndarray, row_of: np.ndarray, T: int, seg_w: np.ndarray, K: int) -> np.ndarray:
        """Overlaps ``(T, K)`` of an id map with the segments (ids mapped to rows by ``row_of``;
        ids without a row count for nobody)."""
        rows = np.take(row_of, np.minimum(ids, len(row_of) - 1))
        rows[ids >= len(row_of)] = -1
        return overlap_matrix(rows, T, seg_w, K)

    def _template_moves(self, state: VideoState, prev: np.ndarray, area: np.ndarray, gray: np.ndarray,
                        shifts: np.ndarray, measured: np.ndarray) -> "_Moves | None":
        """Tracks whose displacement, found by matching their own pixels (previous mask as a
        template mask) in this frame, clearly beats the flow's (`_Moves`), or None.

        ``area``: previous area per previous id. Object-sized tracks only
        (``flow_fallback_min_area`` .. ``template_max_area`` of the frame); a match counts
        when its correlation is at least ``template_min_score`` and ``template_margin``
        above the correlation at the flow's shift, and the shifts differ by 2+ pixels.
        Updates ``shifts`` of those tracks.
        """
        cfg = self.config
        reg = state.registry
        n = len(area)
        cand = np.flatnonzero((area >= max(cfg.flow_fallback_min_area, cfg.motion_min_pixels, 1))
                              & (area <= cfg.template_max_area * prev.size))
        cand = np.array([c for c in cand.tolist() if c > 0 and c in reg], np.int64)
        if not len(cand):
            return None
        vel = np.rint(np.array([reg[int(c)].velocity for c in cand], np.float64)).astype(np.int64)
        guesses = np.stack([shifts[cand], vel, np.zeros_like(vel)], 1)
        flow_ok = np.isin(cand, measured)
        # a track the flow measured and whose pixels fit well at the flow's shift is not searched
        best, score, at_flow = match_shifts(state.prev_gray, gray, prev, cand, guesses, cfg.template_radius,
                                            accept=min(1.0, cfg.template_min_score + 2 * cfg.template_margin),
                                            boxes=np.array([reg[int(c)].bbox for c in cand], np.int64))
        # a match far from every guess (flow, constant velocity, zero) needs a better score:
        # up to one more margin at the search radius (a far match is more often chance)
        far = np.abs(best[:, None, :] - guesses).max(2).min(1) / max(cfg.template_radius, 1)
        ok = (score >= cfg.template_min_score + cfg.template_margin * np.minimum(far, 1.0)) & (
            ~flow_ok | ((score >= at_flow + cfg.template_margin) & (np.abs(best - shifts[cand]).max(1) >= 2)))
        if not ok.any():
            return None
        over = np.zeros(n, bool)
        over[cand[ok]] = True
        sh = np.zeros((n, 2), np.int64)
        sh[cand[ok]] = best[ok]
        shifts[cand[ok]] = best[ok]
        return _Moves(translate_labels(np.where(over[prev], prev, 0), sh), over, area)

    @staticmethod
    def _apply_moves(warped: np.ndarray, moved: "_Moves | None") -> np.ndarray:
        """``warped`` with the template-moved tracks' pixels replaced by their moved masks
        (`_template_moves`). A moved track takes the pixels of bigger tracks (the background
        it moves over), not those of smaller ones (likely in front of it)."""
        if moved is None:
            return warped
        mv, over, area = moved
        area = area.astype(np.int32, copy=False)  # pixel counts: int32 maps below (half the memory traffic)
        n = len(over)
        w_id = np.minimum(warped, n - 1)
        size = np.where(warped < n, np.take(area, w_id), 0)
        out = np.where(np.take(over, w_id) & (warped < n), 0, warped)
        take = (mv > 0) & ((out == 0) | (size > np.take(area, mv)))
        return np.where(take, mv, out).astype(np.int32, copy=False)

    def _track_shifts(self, reg: TrackRegistry, area: np.ndarray, warped: np.ndarray,
                      bwd: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Integer shift ``(dy, dx)`` per previous track id (rows ``0..max id``): the median
        flow of its confirmed warped pixels, else its last displacement (constant velocity);
        the ids whose shift was measured (not guessed), and those measured on at least
        ``MOTION_APART_VALID`` of their area (firm enough for `_Motion`). ``area``: previous
        area per id."""
        cfg = self.config
        n = len(area)
        disp, cnt = label_displacements(warped, bwd, n)
        ok = (cnt >= max(cfg.motion_min_pixels, 1)) & (cnt >= cfg.motion_min_valid * area)
        firm_ok = ok & (cnt >= MOTION_APART_VALID * area)
        measured, firm = [], []
        for tid in (np.flatnonzero(area[1:]) + 1).tolist():
            t = reg.tracks.get(tid)
            if t is None:
                continue
            if ok[tid]:
                measured.append(tid)
                if firm_ok[tid]:
                    firm.append(tid)
            else:
                disp[tid] = t.velocity
        return np.rint(disp).astype(np.int64), np.array(measured, np.int64), np.array(firm, np.int64)

    def _prefer_older(self, reg: TrackRegistry, A: np.ndarray, asg: Any, inter: np.ndarray, area_t: np.ndarray,
                      area_s: np.ndarray, seg_track: np.ndarray, taken: set, idx: int,
                      inter_raw: np.ndarray, yielded: "dict[int, int] | None" = None,
                      hists: "np.ndarray | None" = None, seg_boxes: "list | None" = None,
                      motion: "_Motion | None" = None) -> None:
        """Hand a matched segment to an older, unmatched, look-alike track mostly inside it
        (and not moving unlike it: ``motion``, see `_Motion`).

        Args:
            A: int ``(T,)`` track ids of the warped rows; ``inter`` int ``(T, K)`` overlaps;
            area_t ``(T,)`` warped track areas; area_s ``(K,)`` segment areas.
            seg_track: int64 ``(K,)`` track id per segment (0 = none); updated in place.
            taken: ids already owning a segment; updated in place.
            idx: this frame's index (a track at most ``fragment_age`` frames old is fresh).
            inter_raw: ``(T, K)`` overlaps of the warp without the forward-backward mask
                (``inter`` when there is no such warp), for the fresh-fragment test.
            yielded: ``{young id: older id}`` of the hand-overs; updated in place.
            hists: ``(K, bins**3)`` colour histograms of the segments, or None; with
                ``seg_boxes`` (the segments' `ndimage.find_objects` boxes) a fresh track also
                yields to an older unmatched track whose prediction the flow put elsewhere
                but whose last box overlaps the segment's (IoU >= ``SPLIT_RIVAL_BOX_IOU``)
                and that fits the segment's colour about as well as the fresh one (within
                ``SPLIT_RIVAL_MARGIN``) or better.
        """
        cfg = self.config
        matched = np.zeros(len(A), bool)
        matched[asg.rows] = True
        for r_, j in zip(asg.rows.tolist(), asg.cols.tolist()):
            tid = int(A[r_])
            young = reg[tid]
            # unmatched rows mostly inside segment j and covering a good part of it
            # (a good part: a fifth of it, or at least half as much as the track that took it:
            # an object that was mostly hidden comes back as two small predictions)
            cand = np.flatnonzero(~matched & (inter[:, j] >= cfg.merge_containment * np.maximum(area_t, 1))
                                  & ((inter[:, j] >= 0.2 * area_s[j]) | (inter[:, j] >= 0.5 * inter[r_, j])))
            fresh = cfg.fragment_age > 0 and idx - young.first_frame <= cfg.fragment_age
            if fresh:
                # a track born a few frames ago is most likely a fragment of an object that
                # split: an older track whose (unchecked) warp lies partly in the segment wins
                raw_area = np.maximum(inter_raw.sum(1), 1)
                cand = np.union1d(cand, np.flatnonzero(
                    ~matched & (inter_raw[:, j] >= cfg.fragment_containment * raw_area)
                    & ((raw_area >= 0.3 * area_s[j]) | (inter_raw[:, j] >= 0.5 * inter_raw[r_, j]))))
                if hists is not None and seg_boxes is not None and young.hist is not None:
                    # the flow dragged the older track's prediction off the object (onto the
                    # background, say): its last box and its look still say where it is
                    b_young = float(bhattacharyya(hists[j:j + 1], young.hist[None])[0, 0])
                    near = [o for o in np.flatnonzero(~matched).tolist()
                            if reg[int(A[o])].hist is not None and reg[int(A[o])].first_frame < young.first_frame]
                    if near:
                        biou = box_iou_matrix(np.array([reg[int(A[o])].bbox for o in near]),
                                              slice_boxes([seg_boxes[j]]))[:, 0]
                        near = [o for o, bi in zip(near, biou.tolist()) if bi >= SPLIT_RIVAL_BOX_IOU]
                    near = [o for o in near if float(bhattacharyya(hists[j:j + 1], reg[int(A[o])].hist[None])[0, 0])
                            >= max(b_young - SPLIT_RIVAL_MARGIN, cfg.split_min_appearance)]
                    cand = np.union1d(cand, np.array(near, np.int64))
            best = None
            for o in cand.tolist():
                old = reg[int(A[o])]
                if int(A[o]) in taken or old.first_frame >= young.first_frame:
                    continue
                if motion is not None and motion.tracks_apart(tid, old.id):
                    continue  # two things moving apart: not a fragment of the older one
                if young.parent == old.id:
                    pass  # the young track was born as a piece of this one
                elif young.hist is not None and old.hist is not None:
                    bar = cfg.split_min_appearance if fresh else cfg.merge_same_appearance
                    if float(bhattacharyya(young.hist[None], old.hist[None])[0, 0]) < bar:
                        continue  # two different-looking objects: an occlusion, not a fragment
                if best is None or old.first_frame < reg[int(A[best])].first_frame:
                    best = o
            if best is not None:
                oid = int(A[best])
                young.parent = oid  # from now on a piece of the older track (merge tests below)
                if yielded is not None:
                    yielded[tid] = oid
                seg_track[j] = oid
                taken.discard(tid)
                taken.add(oid)
                matched[best] = True
                matched[r_] = False
                asg.rows[asg.rows == r_] = best

    def _proposal_of(self, p: "np.ndarray | None", hw: tuple[int, int]) -> np.ndarray:
        h, w = hw
        if p is None:
            return np.full((h, w), 1.0 / (h * w), np.float32)
        if p.shape != (h, w):
            p = cv2.resize(p, (w, h), interpolation=cv2.INTER_AREA if p.shape[0] > h else cv2.INTER_LINEAR)
            p = np.maximum(p, 0)
            p = p / max(float(p.sum()), 1e-12)
        return p.astype(np.float32, copy=False)

    def _reid_young(self, state: VideoState, idx: int, seg_track: np.ndarray, taken: set, seg_boxes: list,
                    props: np.ndarray, hists: "np.ndarray | None", area_s: np.ndarray,
                    yielded: "dict[int, int] | None" = None) -> None:
        """Re-identification of tracks born at most ``fragment_age`` frames ago (not this
        frame) against remembered tracks last seen before they were born; a match hands all
        the young track's segments to the remembered id. A pair below
        ``reid_min_similarity`` matches too when it reaches ``reid_young_similarity`` and
        leads every rival of its row and column by ``reid_young_margin``."""
        cfg = self.config
        reg = state.registry
        if cfg.fragment_age <= 0:
            return
        ys = sorted({int(y) for y in seg_track[seg_track > 0].tolist()
                     if 0 < idx - reg[int(y)].first_frame <= cfg.fragment_age and not reg[int(y)].parent})
        if not ys:
            return
        big = [max(np.flatnonzero(seg_track == y).tolist(), key=lambda j: area_s[j]) for y in ys]
        keep = [k for k, j in enumerate(big) if area_s[j] >= max(cfg.min_segment_area, cfg.flow_fallback_min_area, 1)]
        ys, big = [ys[k] for k in keep], np.array([big[k] for k in keep], np.int64)
        first = min((reg[y].first_frame for y in ys), default=idx)
        cand = [i for i in reg.tracks if i not in taken and reg[i].last_frame < first]
        if not cand or not ys:
            return
        sim = self._reid_similarity(state, cand, big, seg_boxes, props, hists)
        born = np.array([reg[y].first_frame for y in ys])
        last = np.array([reg[c].last_frame for c in cand])
        sim = np.where(last[:, None] < born[None, :], sim, 0.0)
        # a young track has shown itself for a few frames, so a pair below the gate still
        # counts when it is unambiguous: an object coming out from behind an occluder shows
        # a shifted part of itself (the last-position cue is weak) but fits no other memory
        allowed = sim >= cfg.reid_min_similarity
        if cfg.reid_young_margin > 0:
            allowed |= (sim >= cfg.reid_young_similarity) & distinct_pairs(sim, cfg.reid_young_margin)
        r = hungarian_assign(1.0 - sim, allowed=allowed)
        for ci, k in zip(r.rows.tolist(), r.cols.tolist()):
            seg_track[seg_track == ys[k]] = cand[ci]
            taken.discard(ys[k])
            taken.add(cand[ci])
            reg[ys[k]].parent = cand[ci]  # its warped mask is not carved out of the old id's segment
            if yielded is not None:
                yielded[ys[k]] = cand[ci]

    def _reid_similarity(self, state: VideoState, cand: list[int], un: np.ndarray, seg_boxes: list,
                         props: np.ndarray, hists: "np.ndarray | None") -> np.ndarray:
        """Similarity (len(cand), len(un)) in [0, 1] of remembered tracks vs unmatched segments
        (``seg_boxes``: `ndimage.find_objects` of the work-resolution segment map + 1)."""
        cfg = self.config
        reg = state.registry
        P = np.stack([self._proposal_of(reg[c].proposal, props.shape[1:]) for c in cand])
        ksim = kl_similarity(symmetric_kl_matrix(P, props[un]), cfg.kl_tau)
        # bbox IoU of the last known box vs the segment's box (work resolution)
        biou = box_iou_matrix(np.array([reg[c].bbox for c in cand]), slice_boxes([seg_boxes[j] for j in un]))
        # Proposal maps (attention or derived) are spatially localised, so their KL mostly
        # says "same place"; colour histograms say "looks the same" wherever it reappears.
        position = 0.5 * (biou + ksim)
        # colour for every remembered track that has a look (one never seen whole enough to
        # get a histogram falls back to its proposal KL, without disabling the colour cue of
        # all the others)
        app = ksim if hists is None else self._looks(reg, cand, hists[un], ksim)
        return cfg.reid_w_position * position + (1 - cfg.reid_w_position) * app

    @staticmethod
    def _looks(reg: TrackRegistry, ids: "Iterable[int]", seg_hists: np.ndarray, fallback: np.ndarray) -> np.ndarray:
        """Colour likeness ``(len(ids), len(seg_hists))``: Bhattacharyya coefficient of each
        track's remembered histogram with each segment's; the rows of tracks that have none
        (never seen whole enough) are ``fallback``'s (not modified)."""
        has = np.array([reg[int(i)].hist is not None for i in ids], bool)
        if not has.any():
            return fallback
        out = np.array(fallback, np.float64)
        out[has] = bhattacharyya(np.stack([reg[int(i)].hist for i, h in zip(ids, has) if h]), seg_hists)
        return out

    def _update_tracks(self, state: VideoState, out_w: np.ndarray, small: "np.ndarray | None", idx: int,
                       seg_track: np.ndarray, props: np.ndarray, area_s: np.ndarray,
                       A: np.ndarray, P_warp: "np.ndarray | None", present_hint: "np.ndarray | None" = None,
                       seg_hists: "np.ndarray | None" = None) -> None:
        """Refresh appearance (proposal, colour histogram), box and area of present tracks."""
        cfg = self.config
        reg = state.registry
        if present_hint is None:
            present = np.flatnonzero(np.bincount(out_w.ravel()))
        else:  # candidate ids (a superset): avoid scanning the whole map
            present = np.unique(present_hint)
        present = present[present > 0]
        n = len(present)
        if n:
            comp_of = np.full(max(int(present[-1]), int(out_w.max())) + 1, -1, np.int32)
            comp_of[present] = np.arange(n)
            comp = np.take(comp_of, out_w)
        else:
            comp = np.full(out_w.shape, -1, np.int32)
        comp1 = comp + 1  # 0 = no present track
        area = np.bincount(comp1.ravel(), minlength=n + 1)[1:n + 1] if n else np.zeros(0, np.int64)
        objs = ndimage.find_objects(comp1, max_label=n) if n else []
        if seg_hists is None:
            hist = color_histograms(small, comp, n, cfg.hist_bins) if (small is not None and cfg.hist_bins and n) else None
        else:
            hist = None  # per track from its segments' histograms below (no second pass over the image)
        # tracks whose segments are too small to show at work resolution still count as present
        present_all = np.union1d(present[area > 0], np.unique(seg_track[seg_track > 0]))
        a_row = {int(a): i for i, a in enumerate(A)}
        ema = cfg.appearance_ema
        for tid in present_all.tolist():
            t = reg[tid]
            segs = np.flatnonzero(seg_track == tid)
            if len(segs):
                if len(segs) == 1:
                    p = props[segs[0]]
                else:
                    w = area_s[segs].astype(np.float64) + 1e-9
                    p = (props[segs] * (w / w.sum())[:, None, None]).sum(0).astype(np.float32)
            elif P_warp is not None and tid in a_row:
                p = P_warp[a_row[tid]]
            else:
                p = t.proposal
            t.proposal = p
            i = int(np.searchsorted(present, tid)) if n else 0
            if n and i < n and present[i] == tid and area[i] > 0:
                o = objs[i]
                if o is not None:
                    t.bbox = (o[0].start, o[1].start, o[0].stop, o[1].stop)
                t.area = int(area[i])
                t.peak_area = max(t.peak_area, t.area)
                h_new = hist[i] if hist is not None else None
                if h_new is None and seg_hists is not None and len(segs):
                    w = area_s[segs].astype(np.float32)
                    h_new = (seg_hists[segs] * (w / max(float(w.sum()), 1.0))[:, None]).sum(0)
                if h_new is not None:
                    # a sliver (an object leaving the frame, mostly hidden) updates the
                    # remembered look in proportion to how much of the object it shows
                    a = ema * min(1.0, t.area / max(t.peak_area, 1))
                    t.hist = h_new if t.hist is None else ((1 - a) * t.hist + a * h_new).astype(np.float32)
        reg.end_frame(idx, present_all)

    def _propagate(self, state: VideoState, rgb: np.ndarray, idx: int) -> TrackedFrame:
        """Non-keyframe: move the previous labels with the flow (keyframe mode)."""
        if state.image_hw is not None and rgb.shape[:2] != state.image_hw:
            raise ValueError(f"frame size changed within the video: {state.image_hw} then {rgb.shape[:2]}")
        small, gray = self._work_image(state, rgb)
        bwd, _ = self._flows(state, gray)
        prev_full = state.prev_full if state.prev_full is not None else self._up(state, state.prev_labels)
        if bwd is None:
            out_full = prev_full.copy()
        else:
            out_full = warp_labels(prev_full, resize_flow(bwd, state.image_hw), border_replicate=True)
        out_w = self._down(state, out_full)
        A = np.flatnonzero(np.bincount(out_w.ravel()))
        A = A[A > 0]
        P_warp = None
        if len(A) and bwd is not None:
            reg = state.registry
            props_hw = next((reg[a].proposal.shape for a in A if reg[a].proposal is not None), None)
            if props_hw is not None:
                P_warp = warp_maps(np.stack([self._proposal_of(reg[a].proposal, props_hw) for a in A]), bwd)
        self._update_tracks(state, out_w, small, idx, np.zeros(0, np.int64), np.zeros((0, 1, 1), np.float32),
                            np.zeros(0, np.int64), A, P_warp)
        state.prev_labels, state.prev_gray, state.prev_full = out_w, gray, out_full
        ids = np.flatnonzero(np.bincount(out_full.ravel()))
        return TrackedFrame(idx, out_full, ids[ids > 0].astype(np.int32), None, False)

    def _hold(self, state: VideoState, idx: int) -> TrackedFrame:
        """Non-keyframe without images: repeat the previous labels."""
        out_full = state.prev_full if state.prev_full is not None else self._up(state, state.prev_labels)
        ids = np.flatnonzero(np.bincount(out_full.ravel()))
        ids = ids[ids > 0]
        state.registry.end_frame(idx, ids)
        return TrackedFrame(idx, out_full.copy(), ids.astype(np.int32), None, False)


def link_label_maps(label_maps: Iterable[np.ndarray], frames: "Iterable[Any] | None" = None,
                    config: TrackerConfig = TrackerConfig()) -> Iterator[TrackedFrame]:
    """Convenience: link arbitrary per-frame label maps (proposals derived from the masks).

    Args:
        label_maps: int ``(H, W)`` per frame, labels independent per frame.
        frames: matching RGB frames (required when ``config.use_flow``).
        config: tracker settings.

    Yields:
        `TrackedFrame` per frame.
    """
    vs = VideoSegmenter(None, config)
    segs = (segmentation_from_labels(l, config.proposal_side, config.proposal_floor, config.work_side)
            for l in label_maps)
    yield from vs.iter_video(frames, segs)
