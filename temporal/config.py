"""`TrackerConfig`: the video driver's settings around the linking engine's `EngineConfig`."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from diffseg_core.config import ConfigDict, cli
from diffseg_core.errors import InputError, look_up_option

from .engine.config import EngineConfig, PredictConfig, video

LINKERS = ("engine", "iou")


def parse_keyframe_every(text: "str | int") -> "int | str":
    """``"auto"`` or an integer >= 1 (as text)."""
    if text == "auto":
        return "auto"
    try:
        return int(text)
    except ValueError:
        raise InputError(f"expected an integer >= 1 or 'auto'; got {text!r}") from None


@dataclass(frozen=True)
class TrackerConfig(ConfigDict):
    """Settings of `temporal.tracker.VideoSegmenter`.

    Attributes:
        engine: the linking engine's knobs (`temporal.engine.config`; default: the `video`
            preset). A mapping is accepted (from JSON: ``{"lifecycle": {"memory": 10}}``).
        linker: ``"engine"`` (the product) or ``"iou"`` (the IoU-only baseline: segments
            take the id of the previous frame's mask they overlap best, one to one, IoU >=
            0.1; for comparisons, as in the benchmarks).
        keyframe_every: segment every k-th frame and carry the labels by optical flow in
            between (1 = every frame); ``"auto"``: segment a frame only when the labels
            carried from the last keyframe lose their cover (see ``keyframe_coverage``) or
            after ``keyframe_max_gap`` carried frames.
        keyframe_coverage: ``"auto"``: a frame is segmented when a track of the last
            keyframe keeps fewer than this fraction of its pixels on unbroken chains of
            flow that passes the colour check back to it (occlusion, fast motion, leaving
            the frame all break chains; tracks under 64 work pixels do not count).
        keyframe_max_gap: ``"auto"``: at most this many carried frames between keyframes
            (what flow cannot see: an object that appears in place, a change of look).
        batch_size: frames per segmenter call (0 = the segmenter's own ``config.batch_size``).
        id_offset: the first new track id is ``id_offset + 1`` (unique ids across chunks).
    """

    engine: EngineConfig = field(default_factory=video, metadata=cli(title="linking engine"))
    linker: Literal["engine", "iou"] = field(default="engine", metadata=cli(aliases=("--baseline",)))
    keyframe_every: "int | Literal['auto']" = field(default=1, metadata=cli(type=parse_keyframe_every,
                                                                            metavar="K|auto"))
    keyframe_coverage: float = 0.9
    keyframe_max_gap: int = 4
    batch_size: int = field(default=0, metadata=cli(flag="--frames-per-call"))  # --batch-size is the UNet's
    id_offset: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.engine, dict):
            object.__setattr__(self, "engine", EngineConfig.from_dict(self.engine))
        elif not isinstance(self.engine, EngineConfig):
            raise InputError(f"TrackerConfig.engine must be an EngineConfig or a mapping; got {type(self.engine).__name__}")
        look_up_option(self.linker, LINKERS, "linker")
        if self.keyframe_every != "auto":
            try:
                k = int(self.keyframe_every)
            except (TypeError, ValueError):
                k = 0
            if k < 1 or k != self.keyframe_every:
                raise InputError(f"TrackerConfig.keyframe_every must be an integer >= 1 or 'auto'; "
                                 f"got {self.keyframe_every!r}")
            object.__setattr__(self, "keyframe_every", k)
        if not 0.0 <= float(self.keyframe_coverage) <= 1.0:
            raise InputError(f"TrackerConfig.keyframe_coverage must be in [0, 1]; got {self.keyframe_coverage}")
        if int(self.keyframe_max_gap) < 0:
            raise InputError(f"TrackerConfig.keyframe_max_gap must be >= 0; got {self.keyframe_max_gap}")
        for name in ("batch_size", "id_offset"):
            if int(getattr(self, name)) < 0:
                raise InputError(f"TrackerConfig.{name} must be >= 0; got {getattr(self, name)}")

    @property
    def adaptive(self) -> bool:
        """Keyframes decided by the flow's cover (``keyframe_every="auto"``)."""
        return self.keyframe_every == "auto"

    @property
    def propagates(self) -> bool:
        """Some frames are carried by flow instead of segmented (keyframe mode)."""
        return self.adaptive or self.keyframe_every > 1

    def replace(self, **changes: Any) -> "TrackerConfig":
        """A copy with ``changes`` applied (validated); ``engine`` may be a mapping of group
        changes (``cfg.replace(engine={"lifecycle": {"memory": 5}})``)."""
        eng = changes.get("engine")
        if isinstance(eng, dict):
            changes["engine"] = self.engine.replace(**eng)
        return dataclasses.replace(self, **changes)


def iou_only_baseline(**changes: Any) -> TrackerConfig:
    """The IoU-only linker (masks compared in place; no flow, look, splits, merges or
    re-identification): the baseline the benchmarks compare against."""
    eng = EngineConfig(predict=PredictConfig(flow="none", fallback_preset="none", colour_tolerance=0))
    return TrackerConfig(**{"engine": eng, "linker": "iou", **changes})
