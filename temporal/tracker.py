"""`VideoSegmenter`: per-frame segmentations -> stable track ids, by the linking engine.

A thin driver around `temporal.engine` (predict by optical flow, one evidence table, one
association per frame, lifecycle): it runs the segmenter in batches of keyframes, brings
each segmentation to the engine's work resolution, carries the labels by flow between
keyframes (``keyframe_every > 1``), writes the ids back at full resolution and holds the
last few frames back so that late id corrections reach them (`temporal.relabel`).
State is bounded: the engine's previous frame and remembered tracks, and in keyframe mode
the previous full-resolution labels; nothing grows with the length of the video.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Optional

import cv2
import numpy as np

from diffseg_core.types import Segmentation, Segmenter

from .config import TrackerConfig
from .engine import Linker, LinkState
from .engine.baseline import IouLinker
from .engine.predict import LOST_MIN_AREA
from .flow import resize_flow, warp_labels
from .proposals import grid_hw, segmentation_from_labels
from .relabel import IdCorrectionBuffer
from .tracks import TrackRegistry
from .types import TrackedFrame

#: adaptive keyframes: tracks smaller than this (work pixels) at the keyframe do not count
#: in the cover (specks fail the flow's colour check whatever the flow); the predict
#: stage's own threshold for a lost track
COVER_MIN_AREA = LOST_MIN_AREA

__all__ = ["TrackerConfig", "VideoSegmenter", "VideoState", "TrackedFrame", "Segmenter", "link_label_maps"]

_END = object()  # an iterator's end (None cannot say it: None is a segmentation, "propagate")


@dataclass
class VideoState:
    """Everything carried from one frame to the next (bounded; see module docstring).

    Attributes:
        link: the engine's state (previous work-resolution ids and grey frame, registry).
        n_seen: frames stepped so far.
        image_hw: ``(H, W)`` of the video (set by the first frame).
        work_hw: ``(h, w)`` of the work resolution.
        prev_full: int32 ``(H, W)`` previous track ids at full resolution (kept only in
            keyframe mode, for propagation).
        since_key: frames carried by flow since the last keyframe.
        chained: bool ``(h, w)`` (adaptive keyframes): work pixels whose label has an
            unbroken chain of consistent flow back to the last keyframe.
        key_area: int64 work pixels of each track id at the last keyframe (adaptive).
    """

    link: LinkState
    n_seen: int = 0
    image_hw: Optional[tuple[int, int]] = None
    work_hw: Optional[tuple[int, int]] = None
    prev_full: Optional[np.ndarray] = None
    since_key: int = 0
    chained: Optional[np.ndarray] = None
    key_area: Optional[np.ndarray] = None

    @property
    def registry(self) -> TrackRegistry:
        """Live and remembered tracks, and the id counter."""
        return self.link.registry


def segmenter_batch_size(segmenter: Any) -> int:
    """Images per call of ``segmenter`` (its ``config.batch_size``, else 1)."""
    return max(1, int(getattr(getattr(segmenter, "config", None), "batch_size", 1) or 1))


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
        self.linker = (IouLinker if config.linker == "iou" else Linker)(config.engine)
        self.use_flow = config.linker == "engine" and config.engine.predict.flow != "none"

    # ------------------------------------------------------------------ public API
    def init_state(self, id_offset: "int | None" = None) -> VideoState:
        """A fresh state; ids start at ``id_offset + 1`` (default ``config.id_offset``)."""
        off = self.config.id_offset if id_offset is None else int(id_offset)
        return VideoState(self.linker.init_state(off))

    def is_keyframe(self, state: VideoState) -> bool:
        """Whether the next `step` is a keyframe (segmented) whatever the frame shows: every
        k-th frame, or with ``keyframe_every="auto"`` the first frame and the frame after
        ``keyframe_max_gap`` carried ones (other frames are keyframes when the carried
        labels lose their cover, decided in `step`)."""
        c = self.config
        if c.adaptive:
            return state.link.prev is None or state.since_key >= c.keyframe_max_gap
        return state.n_seen % c.keyframe_every == 0

    def step(self, state: VideoState, frame: Any = None, segmentation: "Segmentation | None" = None,
             frame_index: "int | None" = None) -> TrackedFrame:
        """Process one frame.

        Args:
            state: from `init_state`; updated in place.
            frame: uint8 ``(H, W, 3)`` RGB (or float ``(3, H, W)`` in [0, 1]); needed for flow,
                colour looks, keyframe propagation and the segmenter. May be None when the
                engine uses no flow and a segmentation is given.
            segmentation: this frame's `Segmentation` (labels ``0..K-1``; ``-1`` = no
                segment); None = run the segmenter (keyframes) or propagate by flow
                (non-keyframes in keyframe mode).
            frame_index: index recorded in the result (default: frames stepped so far).

        Returns:
            `TrackedFrame` with int32 full-resolution track ids.
        """
        idx = state.n_seen if frame_index is None else int(frame_index)
        rgb = None if frame is None else _as_rgb(frame)
        key = self.is_keyframe(state)
        if self.config.adaptive and not key:
            carried = self._propagate(state, rgb, idx, self.config.keyframe_coverage)
            if carried is not None:  # the flow still covers the frame: no segmenter call
                state.n_seen += 1
                return carried
            key = True
            if segmentation is None and self.segmenter is None:
                raise ValueError("`segmentation` is required on this frame (the carried labels lost their cover)")
        if segmentation is None:
            if key and self.segmenter is not None:
                if rgb is None:
                    raise ValueError("`frame` is required to run the segmenter")
                segmentation = self.segmenter.segment([rgb])[0]
            elif state.link.prev is None or not self.config.propagates:
                raise ValueError(
                    "`segmentation` is required: this VideoSegmenter has no segmenter"
                    if self.segmenter is None else "`segmentation` is required on this frame")
        if segmentation is None:
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
                (requires an engine without flow).
            segmentations: iterable of `Segmentation` (one per frame, None on frames to
                propagate), or None to run the segmenter in batches of keyframes.
            state: continue from this state (default: a fresh one).

        Raises:
            ValueError: frames and segmentations differ in length (raised when the shorter
                ends, after every frame both have was yielded: nothing left is dropped
                silently).

        Yields:
            `TrackedFrame` per frame, in order. With the engine's ``correction_window`` = n
            > 0 a frame is yielded n frames after it was stepped (at the end, all at once),
            so that the ids of young tracks folded into older ones are corrected in it
            (`temporal.relabel`). When a step raises, the frames held back are yielded
            first, then the error is raised.
        """
        state = self.init_state() if state is None else state
        buf = IdCorrectionBuffer(self.config.engine.lifecycle.correction_window if self.config.linker == "engine" else 0)
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
                if self.use_flow:
                    raise ValueError("`frames` are required when the engine uses optical flow")
                for seg in segmentations:
                    yield self.step(state, None, seg)
                return
            segs, n = iter(segmentations), 0
            for fr in frames:
                seg = next(segs, _END)
                if seg is _END:
                    raise ValueError(f"more frames than segmentations: the segmentations ended after {n} "
                                     "(one segmentation, or None, per frame)")
                if seg is not None and not self.config.adaptive and not self.is_keyframe(state) \
                        and self.config.propagates:
                    seg = None  # keyframe mode: only keyframes are linked
                yield self.step(state, fr, seg)
                n += 1
            if next(segs, _END) is not _END:
                raise ValueError(f"more segmentations than frames: the frames ended after {n} "
                                 "(one segmentation, or None, per frame)")
            return
        if frames is None:
            raise ValueError("`frames` are required to run the segmenter")
        if self.config.adaptive:  # whether a frame is segmented depends on the frames before it
            for fr in frames:
                yield self.step(state, fr, None)
            return
        bs = self.config.batch_size or segmenter_batch_size(self.segmenter)
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
            side = self.config.engine.predict.work_side
            state.image_hw = (H, W)
            state.work_hw = grid_hw(hw, side) if side and min(H, W) > side else (H, W)
        elif tuple(hw) != state.image_hw:
            raise ValueError(f"frame size changed within the video: {state.image_hw} then {tuple(hw)}")

    @staticmethod
    def _resize(a: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
        """Nearest-neighbour resize of an int32 label map to ``hw``."""
        if a.shape == tuple(hw):
            return a
        return cv2.resize(a, (hw[1], hw[0]), interpolation=cv2.INTER_NEAREST)

    def _work_image(self, state: VideoState, rgb: "np.ndarray | None") -> tuple[Optional[np.ndarray], Optional[np.ndarray]]:
        """The frame at work resolution (colour looks) and its grey copy (flow), or Nones."""
        if rgb is None:
            return None, None
        h, w = state.work_hw  # type: ignore[misc]
        small = rgb if (h, w) == rgb.shape[:2] else cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA)
        return small, (cv2.cvtColor(small, cv2.COLOR_RGB2GRAY) if self.use_flow else None)

    def _link(self, state: VideoState, seg: Segmentation, rgb: "np.ndarray | None", idx: int) -> TrackedFrame:
        """One keyframe through the engine; ids written back at full resolution (segments
        kept whole take their id at full resolution, carved ones the engine's carving)."""
        if not isinstance(seg, Segmentation):
            raise TypeError(f"`segmentation` must be a Segmentation; got {type(seg).__name__}")
        seg = seg.numpy() if not isinstance(seg.labels, np.ndarray) or not isinstance(seg.proposals, np.ndarray) else seg
        labels = np.asarray(seg.labels, dtype=np.int32)
        K = seg.num_segments
        if labels.size and (int(labels.max()) >= K or int(labels.min()) < -1):
            raise ValueError(f"segmentation labels must be in -1..{K - 1}; got {int(labels.min())}..{int(labels.max())}")
        if rgb is not None and rgb.shape[:2] != labels.shape:
            raise ValueError(f"frame {rgb.shape[:2]} and segmentation {labels.shape} differ in size")
        if rgb is None and self.use_flow:
            raise ValueError("`frame` is required when the engine uses optical flow")
        self._setup(state, labels.shape)
        props = seg.proposals if seg.proposals is not None and len(seg.proposals) == K else None
        props = None if props is None else np.asarray(props, np.float32)
        small, gray = self._work_image(state, rgb)
        r = self.linker.step(state.link, self._resize(labels, state.work_hw), K, props, small, gray, idx)
        lut = np.concatenate([r.segment_ids, [0]]).astype(np.int32)
        carved = r.carved.any()
        # -1 -> the trailing 0; carved segments -> -1 first, then the engine's carving
        out = np.take(np.where(np.append(r.carved, False), -1, lut) if carved else lut, labels, mode="wrap")
        if carved:
            out = cv2.copyTo(self._resize(r.labels, state.image_hw), (out < 0).view(np.uint8), out)
        state.prev_full = out if self.config.propagates else None
        state.since_key = 0
        if self.config.adaptive:
            state.chained = r.labels > 0
            state.key_area = np.bincount(r.labels.ravel())
        return TrackedFrame(idx, out, r.ids.astype(np.int32), seg, True, lut[:K], r.absorbed)

    def _propagate(self, state: VideoState, rgb: "np.ndarray | None", idx: int,
                   min_cover: "float | None" = None) -> "TrackedFrame | None":
        """Non-keyframe: move the previous labels with the flow (or hold them without).

        With ``min_cover`` (adaptive keyframes): None, and nothing changed, when a track of
        the last keyframe (of `COVER_MIN_AREA` work pixels or more) keeps fewer than
        ``min_cover`` of its pixels on chains of consistent flow (the frame is then
        segmented instead)."""
        prev_full = state.prev_full if state.prev_full is not None else self._resize(state.link.prev, state.image_hw)
        flow = None
        if rgb is not None and self.use_flow:
            if rgb.shape[:2] != state.image_hw:
                raise ValueError(f"frame size changed within the video: {state.image_hw} then {rgb.shape[:2]}")
            small, gray = self._work_image(state, rgb)
            p = self.linker.predict(state.link, gray, commit=min_cover is None, small=small)
            flow = p.flow
            if min_cover is not None:
                # a pixel stays chained when the flow that brings it here passes the
                # colour check and it comes from a chained pixel (the motion model's
                # guess for a track the flow lost is not a chain)
                chained = (p.labels > 0) & (warp_labels(state.chained.view(np.uint8), flow) > 0)
                if p.valid is not None:
                    chained &= p.valid
                key = state.key_area
                kept = np.bincount(p.labels[chained], minlength=len(key))[:len(key)]
                big = key >= COVER_MIN_AREA
                big[0] = False
                if (kept[big] < min_cover * key[big]).any():
                    return None
                state.chained = chained
                self.linker.predict_commit(state.link, p)
            state.link.prev_gray = gray
            state.link.prev_small = small
        out = prev_full.copy() if flow is None else warp_labels(prev_full, resize_flow(flow, state.image_hw),
                                                                border_replicate=True)
        state.link.prev, state.link.prev_area = self._resize(out, state.work_hw), None
        ids = np.flatnonzero(np.bincount(out.ravel()))
        ids = ids[ids > 0]
        state.registry.end_frame(idx, ids)
        state.prev_full = out
        state.since_key += 1
        return TrackedFrame(idx, out, ids.astype(np.int32), None, False)


def link_label_maps(label_maps: Iterable[np.ndarray], frames: "Iterable[Any] | None" = None,
                    config: TrackerConfig = TrackerConfig(), background: "int | None" = None
                    ) -> Iterator[TrackedFrame]:
    """Link arbitrary per-frame label maps (proposal maps derived from the masks).

    Args:
        label_maps: int ``(H, W)`` per frame, numbers independent per frame.
        frames: matching RGB frames (required when the engine uses optical flow).
        config: tracker settings.
        background: label value meaning "no segment" (e.g. 0 for Cellpose or DAVIS masks),
            or None (every value is a segment).

    Yields:
        `TrackedFrame` per frame.

    Raises:
        ValueError: ``label_maps`` and ``frames`` differ in length (after the frames both
            have were yielded; see `VideoSegmenter.iter_video`).
    """
    vs = VideoSegmenter(None, config)
    side = config.engine.predict.work_side
    segs = (segmentation_from_labels(lab, work_side=side, background=background) for lab in label_maps)
    yield from vs.iter_video(frames, segs)
