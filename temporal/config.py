"""`TrackerConfig`: every knob of the video tracker, frozen and validated."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from diffseg_core.errors import InputError, look_up_option

FLOW_BACKENDS = ("dis", "farneback")
DIS_PRESETS = ("ultrafast", "fast", "medium")


@dataclass(frozen=True)
class TrackerConfig:
    """Settings of `temporal.tracker.VideoSegmenter`.

    Attributes:
        use_flow: estimate dense optical flow between consecutive frames and warp the
            previous track masks/proposals with it. False = no images needed (e.g. volume
            slices without images, or label maps alone): masks are compared in place.
        flow_backend: ``"dis"`` (OpenCV DIS, fast) or ``"farneback"`` (OpenCV Farneback).
        dis_preset: DIS preset, ``"ultrafast"``, ``"fast"`` or ``"medium"``.
        work_side: flow and matching run on frames resized so that the shorter side is this
            many pixels (0 = full resolution). Output labels stay at full resolution.
        flow_fallback_preset: DIS preset (``"fast"``, ``"medium"``, or ``"none"``) the flow of a
            frame pair is recomputed with when the forward-backward check rejected most of
            a track (``flow_fallback_valid``): fast motion and blur defeat the cheap preset,
            and a careful one costs ~5x only on those frames. Needs ``fb_check``.
        flow_fallback_valid: a track whose confirmed warped area is below this fraction of
            its previous area counts as lost by the flow.
        flow_fallback_min_area: tracks smaller than this many work-resolution pixels do not
            trigger the fallback (specks are often rejected whatever the flow).
        fb_check: forward-backward consistency check; inconsistent (occluded/unreliable)
            pixels do not vote for any track.
        fb_abs: absolute tolerance of the check, pixels at work resolution.
        fb_rel: relative tolerance of the check (fraction of the flow magnitude squared).
        motion_model: a per-track motion model for tracks the flow lost: each track's robust
            displacement (median flow of its confirmed pixels, else its last displacement:
            constant velocity) moves its previous mask rigidly; for a track whose confirmed
            warp keeps less than ``flow_fallback_valid`` of its area (tracks of at least
            ``flow_fallback_min_area`` pixels), that translated mask fills the pixels no
            confirmed warp claims. Fast objects the flow cannot follow keep their id. Needs
            ``use_flow`` and ``fb_check``.
        motion_min_valid: a track's displacement is measured when at least this fraction of
            its previous area (and ``motion_min_pixels``) passed the forward-backward check;
            otherwise its last displacement is reused.
        motion_min_pixels: see ``motion_min_valid``.
        common_fate: a segment or track that moves unlike a track is never a piece of it:
            not joined as a split piece, not its child, not handed over to it as a fragment,
            and carved out of a segment that moves unlike it even when young (an object that
            the first frame's segmentation merged with the ground it moves over). Motions
            differ when they are more than 6 work pixels and 3/4 of the larger one apart,
            each measured by the flow on at least half of its pixels
            (`temporal.tracker._Motion`).
        template_motion: match every object-sized track (``flow_fallback_min_area`` work
            pixels up to ``template_max_area`` of the frame) by its own pixels: its previous
            mask is the mask of a normalised-correlation template searched in this frame
            (`temporal.flow.match_shifts`) around the flow's shift, the constant-velocity
            guess and zero. Where the match clearly fits better than the flow, the track's
            prediction is its previous mask moved by the matched shift. Coarse-to-fine flow
            loses small objects that move farther than their size. Needs ``motion_model``.
        template_max_area: see ``template_motion`` (fraction of the work frame).
        template_radius: search margin (work pixels) around the guesses.
        template_min_score: a match counts when its correlation (-1..1) is at least this
            (plus up to ``template_margin`` the farther it lies from every guess)...
        template_margin: ...and, for a track the flow measured, this much above the
            correlation at the flow's shift, 2+ pixels away from it.
        second_association: tracks of the previous frame left unmatched by the flow-based
            association get a second one (as in ByteTrack) with the segments left unmatched,
            each track predicted without motion and at its constant velocity (same cost and
            gates; the segment must look like the track). The flow's prediction lies beside
            an object that stops while the camera pans, or a half-hidden object whose pixels
            the occluder's motion dragged along.
        w_iou: weight of ``1 - IoU`` (warped track mask vs segment mask) in the cost.
        w_kl: weight of ``1 - exp(-sKL / kl_tau)`` (symmetric KL of proposal maps).
        kl_tau: KL scale (nats) of the KL similarity.
        min_iou: gate: a track may only take a segment it overlaps with at least this IoU.
        max_cost: gate: pairs with a larger (weight-normalised) cost are never matched.
        handle_splits: a segment left unmatched that lies mostly inside a matched track's
            warped mask (``split_containment``) joins that track (one track, several
            segments) when its colour looks alike (``split_min_appearance``).
        split_containment: fraction of the segment's area inside the track's warped mask.
        split_gain_containment: a segment less contained than ``split_containment`` but with
            at least this fraction inside the warped mask still joins the track when that
            raises the IoU of the track's segments with its warped mask by
            ``split_min_gain`` (0 turns this off).
        split_min_gain: see ``split_gain_containment``.
        split_min_appearance: Bhattacharyya coefficient of colour histograms (0..1); 0 turns
            the appearance test off.
        handle_merges: a segment that swallows the warped mask of another (otherwise
            unmatched) track is carved along the warped labels so both ids survive.
        merge_containment: fraction of the other track's warped area inside the segment.
            With images, the carved region must also look (colour) more like its own track
            than like the track that swallowed it.
        merge_margin: how much more (Bhattacharyya coefficient) the carved region must look
            like its own track than like the track that swallowed it.
        merge_min_age: only tracks at least this many frames old are carved out (a piece
            split off in the previous frame is not an object of its own).
        max_carved: consecutive keyframes a track may live on by carving alone (without a
            segment of its own) before it counts as missing.
        prefer_older_on_merge: when a segment covers the warped masks of two look-alike
            tracks (an object that split into a fragment with a new id and is whole again),
            the older track keeps it, whichever the assignment picked.
        merge_same_appearance: colour similarity (Bhattacharyya, 0..1) two tracks need to
            count as look-alike for ``prefer_older_on_merge`` (ignored without images).
        fragment_age: a track at most this many frames old that takes a segment also
            covered by an older, unmatched track is presumed a fragment of a split: the older
            track keeps the segment when ``fragment_containment`` of its warped mask (without
            the forward-backward mask) lies inside it and the two look alike at the
            ``split_min_appearance`` level (0 turns this off).
        fragment_containment: see ``fragment_age``.
        id_correction_window: output delay (frames) for id corrections: a track born at
            most this many frames ago that turns out to be a piece or a re-appearance of an
            older track (a fresh fragment that yields to it, a young track re-identified as
            it) is folded into the older track and its pixels in the frames still held back
            are rewritten with the older id, so the correction reaches every frame of its
            short life (`TrackedFrame.absorbed`). `VideoSegmenter.iter_video` holds back
            this many frames (full-resolution int32 label maps); 0 = no delay, no rewrite.
        max_missed: frames a track that disappeared is remembered for re-identification
            (occlusion); after that it is retired. Ids are never reused.
        reid: re-identify remembered tracks by appearance (proposal KL + colour histogram).
        reid_min_similarity: gate (0..1) of the re-identification similarity.
        reid_young_similarity: a track born at most ``fragment_age`` frames ago may take back
            a remembered id (its lifetime not overlapping the young one's) with a similarity
            of only this much when the pair is unambiguous (see ``reid_young_margin``).
        reid_young_margin: lead over every other remembered track for the young track, and
            over every other young track for the remembered one (0 turns this off).
        reid_w_position: weight of the last-known position (IoU with the old mask) in the
            re-identification similarity; the rest is appearance.
        hist_bins: colour histogram bins per RGB channel (0 = no colour appearance).
        proposal_side: grid (shorter side) of proposal maps derived from masks when a
            segmentation has no attention.
        proposal_floor: floor added to derived proposal maps before normalising.
        min_segment_area: segments smaller than this many work-resolution pixels never
            start a new track (they keep id 0 unless a split joins them to a track).
        keyframe_every: segment every k-th frame, propagate labels by flow in between.
        batch_size: frames per segmenter call (0 = the segmenter's own ``config.batch_size``).
        id_offset: the first new track id is ``id_offset + 1`` (unique ids across chunks).
        appearance_ema: weight of the newest observation in the track appearance update.
    """

    use_flow: bool = True
    flow_backend: Literal["dis", "farneback"] = "dis"
    dis_preset: Literal["ultrafast", "fast", "medium"] = "ultrafast"
    work_side: int = 240
    flow_fallback_preset: Literal["none", "ultrafast", "fast", "medium"] = "medium"
    flow_fallback_valid: float = 0.7
    flow_fallback_min_area: int = 64
    fb_check: bool = True
    fb_abs: float = 1.0
    fb_rel: float = 0.05
    motion_model: bool = True
    motion_min_valid: float = 0.1
    motion_min_pixels: int = 8
    common_fate: bool = True
    template_motion: bool = True
    template_max_area: float = 0.05
    template_radius: int = 20
    template_min_score: float = 0.6
    template_margin: float = 0.1
    second_association: bool = True
    w_iou: float = 1.0
    w_kl: float = 0.5
    kl_tau: float = 2.0
    min_iou: float = 0.05
    max_cost: float = 0.9
    handle_splits: bool = True
    split_containment: float = 0.6
    split_min_appearance: float = 0.5
    split_gain_containment: float = 0.3
    split_min_gain: float = 0.05
    handle_merges: bool = True
    merge_containment: float = 0.6
    max_carved: int = 5
    merge_margin: float = 0.15
    merge_min_age: int = 3
    prefer_older_on_merge: bool = True
    merge_same_appearance: float = 0.7
    fragment_age: int = 5
    fragment_containment: float = 0.3
    id_correction_window: int = 5
    max_missed: int = 30
    reid: bool = True
    reid_min_similarity: float = 0.55
    reid_young_similarity: float = 0.45
    reid_young_margin: float = 0.15
    reid_w_position: float = 0.3
    hist_bins: int = 8
    proposal_side: int = 32
    proposal_floor: float = 1e-3
    min_segment_area: int = 0
    keyframe_every: int = 1
    batch_size: int = 0
    id_offset: int = 0
    appearance_ema: float = 0.5

    def __post_init__(self) -> None:
        look_up_option(self.flow_backend, FLOW_BACKENDS, "flow backend")
        look_up_option(self.dis_preset, DIS_PRESETS, "DIS preset")
        look_up_option(self.flow_fallback_preset, ("none",) + DIS_PRESETS, "flow fallback preset")
        for name in ("work_side", "max_missed", "hist_bins", "min_segment_area", "batch_size", "id_offset", "max_carved", "merge_min_age", "fragment_age", "id_correction_window",
                     "flow_fallback_min_area", "motion_min_pixels", "template_radius"):
            if int(getattr(self, name)) < 0:
                raise InputError(f"TrackerConfig.{name} must be >= 0; got {getattr(self, name)}")
        if int(self.keyframe_every) < 1:
            raise InputError(f"TrackerConfig.keyframe_every must be >= 1; got {self.keyframe_every}")
        if int(self.proposal_side) < 1:
            raise InputError(f"TrackerConfig.proposal_side must be >= 1; got {self.proposal_side}")
        for name in ("w_iou", "w_kl", "fb_abs", "fb_rel", "proposal_floor"):
            if not float(getattr(self, name)) >= 0:
                raise InputError(f"TrackerConfig.{name} must be >= 0; got {getattr(self, name)}")
        if self.w_iou + self.w_kl <= 0:
            raise InputError("TrackerConfig.w_iou + w_kl must be > 0")
        if not float(self.kl_tau) > 0:
            raise InputError(f"TrackerConfig.kl_tau must be > 0; got {self.kl_tau}")
        for name in ("min_iou", "max_cost", "split_containment", "split_min_appearance",
                     "split_gain_containment", "split_min_gain", "fragment_containment", "merge_containment", "merge_margin", "merge_same_appearance", "flow_fallback_valid", "motion_min_valid", "template_max_area", "template_min_score", "template_margin", "reid_min_similarity", "reid_young_similarity", "reid_young_margin", "reid_w_position", "appearance_ema"):
            v = float(getattr(self, name))
            if not 0.0 <= v <= 1.0:
                raise InputError(f"TrackerConfig.{name} must be in [0, 1]; got {v}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrackerConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise InputError(f"unknown TrackerConfig option(s) {unknown}; expected some of {sorted(names)}")
        return cls(**d)

    def replace(self, **changes: Any) -> "TrackerConfig":
        """A copy with ``changes`` applied (validated)."""
        return dataclasses.replace(self, **changes)


def iou_only_baseline(**changes: Any) -> TrackerConfig:
    """The IoU-only linker (no flow, no KL, no splits/merges/re-id): the DEVA/Cellpose-style
    baseline the benchmark compares against."""
    base = dict(use_flow=False, w_kl=0.0, w_iou=1.0, handle_splits=False, handle_merges=False, prefer_older_on_merge=False,
                reid=False, hist_bins=0, min_iou=0.1, max_cost=0.9, id_correction_window=0,
                second_association=False, common_fate=False)
    base.update(changes)
    return TrackerConfig(**base)
