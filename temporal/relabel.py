"""`IdCorrectionBuffer`: hold the last few tracked frames back so that late id corrections
reach them before they are written.

An online tracker decides a new segment's id at once, and sometimes finds out a few frames
later that it decided wrong: the "new" track was a fragment of an object that split for a
frame, or the first slivers of an object coming back from behind an occluder, too little
to recognise when it appeared. The tracker then folds the young track into the older one
(`TrackedFrame.absorbed`); this buffer rewrites the young id in the frames it still holds,
so the correction covers the young track's whole short life instead of leaving two id
switches in the output (old -> young -> old). It is the bounded-latency compromise between
an online tracker and an offline one (DEVA's in-clip consensus also looks a few frames
ahead): memory is ``window`` label maps, the output lags by ``window`` frames.
"""
from __future__ import annotations

from collections import deque
from typing import Iterator

import numpy as np

from .types import TrackedFrame

__all__ = ["IdCorrectionBuffer", "relabel_frame"]


def relabel_frame(tf: TrackedFrame, mapping: dict[int, int]) -> bool:
    """Rewrite ids of one tracked frame in place (new arrays; the old ones are not touched).

    Args:
        tf: the frame; ``labels``, ``track_ids`` and ``segment_to_track`` are replaced.
        mapping: ``{old id: new id}``; ids not in the frame are ignored.

    Returns:
        whether the frame had any of the ids.
    """
    hit = [(y, o) for y, o in mapping.items() if np.any(tf.track_ids == y)]
    if not hit:
        return False
    labels = tf.labels
    s2t = tf.segment_to_track
    for y, o in hit:
        labels = np.where(labels == y, np.int32(o), labels).astype(np.int32, copy=False)
        if len(s2t):
            s2t = np.where(s2t == y, np.int32(o), s2t).astype(np.int32, copy=False)
    tf.labels = labels
    tf.segment_to_track = s2t
    ids = tf.track_ids.copy()
    for y, o in hit:
        ids[ids == y] = o
    tf.track_ids = np.unique(ids).astype(np.int32)
    return True


class IdCorrectionBuffer:
    """FIFO of the last ``window`` tracked frames; `push` applies a new frame's
    ``absorbed`` ids to the frames held back and returns the frames that leave the window.

    Args:
        window: frames held back (0 = pass frames straight through).
    """

    def __init__(self, window: int) -> None:
        if int(window) < 0:
            raise ValueError(f"`window` must be >= 0; got {window}")
        self.window = int(window)
        self._held: deque[TrackedFrame] = deque()
        self.n_corrected = 0  # frames rewritten so far (a diagnostic)

    def __len__(self) -> int:
        return len(self._held)

    def push(self, tf: TrackedFrame) -> Iterator[TrackedFrame]:
        """Add the newest frame; yields the frames now older than the window, oldest first."""
        if tf.absorbed:
            mapping = dict(tf.absorbed)
            self.n_corrected += sum(relabel_frame(held, mapping) for held in self._held)
        self._held.append(tf)
        while len(self._held) > self.window:
            yield self._held.popleft()

    def flush(self) -> Iterator[TrackedFrame]:
        """Yield every frame still held, oldest first (end of the video)."""
        while self._held:
            yield self._held.popleft()
