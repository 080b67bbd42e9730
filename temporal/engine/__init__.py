"""The linking engine shared by videos (frames) and volumes (slices as time).

Four stages, one module each: `predict` (where each live track should be now),
`evidence` (one table per segment x track pair), `associate` (one clustering per frame over
the segments' parts: continue, part-of, contains, new), `lifecycle` (re-identification,
births, late corrections, memory). `Linker` runs them on one frame; `config` holds every
knob with the `video` and `slices` presets. `join` is a pass over a finished video, not a
stage: it joins the tracks that trade pixels from frame to frame (`diffseg join`).
"""
from .config import (AssociateConfig, EngineConfig, EvidenceConfig, LifecycleConfig, PredictConfig, slices,
                     video)
from .linker import Linker, LinkResult, LinkState

__all__ = ["EngineConfig", "PredictConfig", "EvidenceConfig", "AssociateConfig", "LifecycleConfig", "video",
           "slices", "Linker", "LinkState", "LinkResult"]
