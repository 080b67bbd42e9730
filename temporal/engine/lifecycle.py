"""Stage 4, lifecycle: births, memory and retirement, re-identification, late corrections.

* *re-identify*: remembered tracks (absent for at most ``memory`` frames) compete in the
  association itself (`temporal.engine.associate`, scored by look: proposal maps hold the
  position, colour the appearance, minus ``reid_threshold``);
* *births*: what is still new gets a fresh id (never reused);
* *late corrections*: when the association carves one segment between a young track (at
  most ``correction_window`` frames old) and an older look-alike, the segmenter shows one
  object where the young track was a piece of the older one: the young id is folded into
  the older (`TrackedFrame.absorbed`; the frames held back are rewritten);
* *memory*: the registry counts missed frames and retires tracks after ``memory``.
"""
from __future__ import annotations

from ..tracks import TrackRegistry
from .config import LifecycleConfig


def folds(parts: "list[list[int]]", reg: TrackRegistry, idx: int, cfg: LifecycleConfig,
          alike) -> dict[int, int]:
    """Young tracks to fold into older ones.

    Args:
        parts: per carved segment, the ids that share it.
        reg: the registry (ages).
        idx: this frame's index.
        alike: ``(young id, older id) -> look similarity`` in 0..1.

    Returns:
        ``{young id: older id}`` (chains resolved to the final keeper).
    """
    if cfg.correction_window <= 0:
        return {}
    out: dict[int, int] = {}
    for ids in parts:
        ids = [i for i in ids if i in reg]
        if len(ids) < 2:
            continue
        # the keeper is the oldest track (the first born among equally old ones: a total
        # order, so folds never form a cycle across segments)
        keep = min(ids, key=lambda i: (reg[i].first_frame, i))
        for y in ids:
            if y == keep or y in out:
                continue
            if idx - reg[y].first_frame <= cfg.correction_window and alike(y, keep) >= cfg.reid_threshold:
                out[y] = keep
    for y in list(out):  # a -> b -> c  becomes a -> c (keepers come first in the order: no cycle)
        while out[y] in out:
            out[y] = out[out[y]]
    return out
