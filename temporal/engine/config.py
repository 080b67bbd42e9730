"""`EngineConfig`: every knob of the linking engine, in four small groups, with two presets.

One group per stage. Each default is explained in one line; `video()` and `slices()` are
the presets (slices: neighbouring slices are aligned, so no flow, and a structure that
leaves a slice rarely comes back many slices later).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from diffseg_core.config import ConfigDict
from diffseg_core.errors import InputError, look_up_option

from ..flow import DIS_PRESETS, FLOW_BACKENDS

FLOWS = FLOW_BACKENDS + ("none",)


def _check_range(obj: Any, name: str, lo: float, hi: float = float("inf")) -> None:
    v = getattr(obj, name)
    if not lo <= float(v) <= hi:
        raise InputError(f"{type(obj).__name__}.{name} must be in [{lo}, {hi}]; got {v}")


@dataclass(frozen=True)
class PredictConfig(ConfigDict):
    """Where each live track should be in the new frame.

    Attributes:
        flow: dense optical flow that carries the previous frame's track ids into this one
            (``"dis"``: OpenCV DIS, fast; ``"farneback"``; ``"none"``: compare in place,
            e.g. aligned slices or label maps without images).
        dis_preset: DIS preset of the first try (``"ultrafast"``: ~1.5 ms a frame at 240 px).
        fallback_preset: DIS preset the pair is recomputed with when the first flow loses a
            track (most of its pixels fail the colour check): fast motion and blur
            defeat the cheap preset; ``"none"`` = never.
        colour_tolerance: a pixel predicts nothing when its colour differs by more than
            this (grey levels, in any RGB channel) from the one the flow brings from the
            previous frame: occluded or uncovered, new content, or a flow that fell behind
            its object; 0 = no check. 24: a few times the noise of a compressed video, well
            under an object's contrast with its ground.
        work_side: flow and association run on frames whose shorter side is this many
            pixels (0 = full size); output labels keep the full size.
    """

    flow: Literal["dis", "farneback", "none"] = "dis"
    dis_preset: Literal["ultrafast", "fast", "medium"] = "ultrafast"
    fallback_preset: Literal["none", "ultrafast", "fast", "medium"] = "medium"
    colour_tolerance: int = 24
    work_side: int = 240

    def __post_init__(self) -> None:
        look_up_option(self.flow, FLOWS, "flow")
        look_up_option(self.dis_preset, DIS_PRESETS, "DIS preset")
        look_up_option(self.fallback_preset, ("none",) + DIS_PRESETS, "fallback preset")
        _check_range(self, "colour_tolerance", 0, 255)
        _check_range(self, "work_side", 0)


@dataclass(frozen=True)
class EvidenceConfig(ConfigDict):
    """What is measured for every (track, segment) pair besides overlap.

    Attributes:
        kl_tau: scale (nats) of the proposal-map similarity ``exp(-sKL / kl_tau)``
            (DiffSeg's merge threshold is 1.1 nats: maps that far apart are different).
        hist_bins: colour histogram bins per RGB channel for the appearance similarity
            (Bhattacharyya); 0 = proposal maps alone.
        look_update: weight of the newest frame in a track's remembered look (its colour
            histogram and proposal map, a running average); 1 = the last frame only (0.5:
            1 loses 1-2 points of the oracle ratio on both benchmark seeds, 0.25 2.5 on one).
    """

    kl_tau: float = 2.0
    hist_bins: int = 8
    look_update: float = 0.5

    def __post_init__(self) -> None:
        if not float(self.kl_tau) > 0:
            raise InputError(f"EvidenceConfig.kl_tau must be > 0; got {self.kl_tau}")
        _check_range(self, "hist_bins", 0, 32)
        if not 0.0 < float(self.look_update) <= 1.0:
            raise InputError(f"EvidenceConfig.look_update must be in (0, 1]; got {self.look_update}")


@dataclass(frozen=True)
class AssociateConfig(ConfigDict):
    """The weights of the per-frame clustering (see `temporal.engine.associate`).

    Attributes:
        segment_trust: how much the segmenter's grouping counts against the prediction:
            cutting a segment into parts owned by different tracks costs
            ``2 * segment_trust * f_a * f_b`` per pair of parts (``f``: fractions of the
            segment), while a part gains the fraction of a track's predicted mask it holds.
            3 keeps boundary slivers and stray flow with their segment and still carves out
            whole objects that the segmenter merged (derivation in docs/temporal.md).
        foreign_weight: cost, per fraction of a track's predicted size, of giving that track
            pixels it did not predict (1 = the IoU's balance of gained and foreign pixels).
        look_weight: how much the colour likeness of a segment and a track scales their
            agreement: ``1 + look_weight * (2 * look - 1)``; 0 = overlap only.
        split_cost: what a track pays (a fraction of its predicted mask) for each segment
            it takes beyond its best one: the segmenter says they are different things, so
            a piece joins as part of the track (a split) only when it scores more than
            this, and a smaller one inside the track's prediction is a new object (a
            structure that starts inside the ground); 0 = every piece inside joins.
        min_iou: 0 = a whole segment scores its share of the track's prediction minus the
            foreign cost (frames: the flow predicts the new mask well); > 0 = it scores
            ``IoU * look - min_iou`` (slices: a section grows or shrinks several-fold from
            one slice to the next; 0.25 = Cellpose's stitching threshold).
    """

    segment_trust: float = 3.0
    foreign_weight: float = 1.0
    look_weight: float = 1.5
    split_cost: float = 0.0
    min_iou: float = 0.0

    def __post_init__(self) -> None:
        _check_range(self, "segment_trust", 0.0)
        _check_range(self, "foreign_weight", 0.0)
        _check_range(self, "look_weight", 0.0, 2.0)
        _check_range(self, "split_cost", 0.0, 1.0)
        _check_range(self, "min_iou", 0.0, 1.0)


@dataclass(frozen=True)
class LifecycleConfig(ConfigDict):
    """Births, memory, re-identification and late id corrections.

    Attributes:
        memory: frames a track that left is remembered for re-identification (occlusion);
            then it is retired. Ids are never reused.
        reid_threshold: look similarity (0..1) a new segment needs to take a remembered id.
        correction_window: a track at most this many frames old whose object the segmenter
            shows whole with an older look-alike track is folded into it, and the frames
            still held back (this many) are rewritten; 0 = no delay, no fold.
    """

    memory: int = 30
    reid_threshold: float = 0.55
    correction_window: int = 5

    def __post_init__(self) -> None:
        _check_range(self, "memory", 0)
        _check_range(self, "reid_threshold", 0.0, 1.0)
        _check_range(self, "correction_window", 0)


@dataclass(frozen=True)
class EngineConfig(ConfigDict):
    """The four stage groups (see `video` and `slices` for the presets)."""

    predict: PredictConfig = field(default_factory=PredictConfig)
    evidence: EvidenceConfig = field(default_factory=EvidenceConfig)
    associate: AssociateConfig = field(default_factory=AssociateConfig)
    lifecycle: LifecycleConfig = field(default_factory=LifecycleConfig)

    def __post_init__(self) -> None:
        for name, group in _GROUPS.items():
            v = getattr(self, name)
            if isinstance(v, dict):  # from JSON / YAML
                object.__setattr__(self, name, group.from_dict(v))
            elif not isinstance(v, group):
                raise InputError(f"EngineConfig.{name} must be a {group.__name__} or a mapping; got {type(v).__name__}")

    def replace(self, **groups: Any) -> "EngineConfig":
        """A copy with groups replaced; a dict updates the group's fields
        (``cfg.replace(lifecycle={"memory": 5})``)."""
        return dataclasses.replace(self, **{k: (dataclasses.replace(getattr(self, k), **v) if isinstance(v, dict) else v)
                                            for k, v in groups.items()})

    def set(self, **knobs: Any) -> "EngineConfig":
        """A copy with knobs changed by their (unique) field names, whatever their group
        (``video().set(memory=5, flow="none")``)."""
        groups: dict[str, dict[str, Any]] = {}
        for name, value in knobs.items():
            group = next((g for g, cls in _GROUPS.items() if name in {f.name for f in dataclasses.fields(cls)}), None)
            if group is None:
                known = sorted(f.name for cls in _GROUPS.values() for f in dataclasses.fields(cls))
                raise InputError(f"unknown engine knob {name!r}; expected one of {known}")
            groups.setdefault(group, {})[name] = value
        return self.replace(**groups)


_GROUPS = {"predict": PredictConfig, "evidence": EvidenceConfig, "associate": AssociateConfig,
           "lifecycle": LifecycleConfig}


def video() -> EngineConfig:
    """The video preset: flow prediction, 30 frames of memory, 5 frames of late corrections."""
    return EngineConfig()


def slices() -> EngineConfig:
    """The slices preset: aligned neighbours (no flow); a segment continues a structure by
    IoU (0.25), since sections grow and shrink from slice to slice; a split cost (a
    structure that starts inside a bigger one's previous section is new, not a piece of
    it); no re-identification (a structure absent for a few slices that comes back at the
    same place is more often another one: the core under a shell's tip) and no held-back
    output. The look is the slice's intensity histogram when the caller passes the slice
    image (grey as RGB); without one, merged segments are not carved (the segmenter's
    grouping stands)."""
    return EngineConfig(predict=PredictConfig(flow="none", fallback_preset="none", colour_tolerance=0, work_side=0),
                        associate=AssociateConfig(split_cost=0.2, min_iou=0.25),
                        lifecycle=LifecycleConfig(memory=3, reid_threshold=1.0, correction_window=0))
