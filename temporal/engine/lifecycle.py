"""Stage 4, lifecycle: births, memory and retirement, re-identification, late corrections.

* *re-identify*: segments the association left new are matched to remembered tracks
  (absent for at most ``memory`` frames) by look alone (proposal maps hold the position,
  colour the appearance): one Hungarian assignment, gated by ``reid_threshold``;
* *births*: what is still new gets a fresh id (never reused) when it has ``min_area``;
* *late corrections*: when the association carves one segment between a young track (at
  most ``correction_window`` frames old) and an older look-alike, the segmenter shows one
  object where the young track was a piece of the older one: the young id is folded into
  the older (`TrackedFrame.absorbed`; the frames held back are rewritten);
* *memory*: the registry counts missed frames and retires tracks after ``memory``.
"""
from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment

from ..tracks import TrackRegistry
from .config import LifecycleConfig


def reidentify(sim: np.ndarray, threshold: float) -> list[tuple[int, int]]:
    """Pairs ``(row, col)`` of a max-similarity one-to-one assignment with ``sim >= threshold``.

    Args:
        sim: float ``(N, R)`` similarity of new objects (rows) and remembered tracks.
    """
    if sim.size == 0:
        return []
    r, c = linear_sum_assignment(-sim)
    return [(int(i), int(j)) for i, j in zip(r, c) if sim[i, j] >= threshold]


def folds(parts: "list[list[int]]", reg: TrackRegistry, idx: int, cfg: LifecycleConfig,
          alike) -> dict[int, int]:
    """Young tracks to fold into older ones.

    Args:
        parts: per carved segment, the ids that share it (largest part first).
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
        # the keeper is the oldest track (the largest part among equally old ones)
        keep = min(ids, key=lambda i: (reg[i].first_frame, ids.index(i)))
        for y in ids:
            if y == keep or y in out:
                continue
            if idx - reg[y].first_frame <= cfg.correction_window and alike(y, keep) >= cfg.reid_threshold:
                out[y] = keep
    for y in list(out):  # a -> b -> c  becomes a -> c
        seen = {y}
        while out[y] in out and out[y] not in seen:
            seen.add(out[y])
            out[y] = out[out[y]]
    return out
