"""`TrackRegistry`: permanent track ids, their appearance memory, miss counts, retirement.

Track ids are separate from per-frame segment indices, increase monotonically from
``id_offset + 1`` and are never reused, even after a track is retired.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Optional

import numpy as np


@dataclass
class Track:
    """What the linking engine remembers about one track.

    Attributes:
        id: permanent id (>= 1).
        first_frame: frame index where it appeared.
        last_frame: last frame index where it was present.
        proposal: float32 ``(h, w)`` distribution (the last merged attention/proposal map).
        hist: float32 ``(bins**3,)`` colour histogram (EMA), or None without images.
        missed: consecutive frames it has been absent.
        carved: consecutive frames it was present only as parts carved out of other
            segments (no segment of its own).
        velocity: ``(dy, dx)`` work-resolution pixels per frame, the last displacement
            measured from the flow while it was seen (the constant-velocity guess when the
            flow loses it or it is out of sight). Measured when first read (`measured_by`).
    """

    id: int
    first_frame: int
    last_frame: int
    proposal: Optional[np.ndarray] = None
    hist: Optional[np.ndarray] = None
    missed: int = 0
    carved: int = 0
    _velocity: tuple[float, float] = field(default=(0.0, 0.0), repr=False)
    _source: Any = field(default=None, repr=False, compare=False)

    @property
    def velocity(self) -> tuple[float, float]:
        if self._source is not None:
            self._velocity, self._source = self._source[self.id], None
        return self._velocity

    @velocity.setter
    def velocity(self, v: "tuple[float, float]") -> None:
        self._velocity, self._source = (float(v[0]), float(v[1])), None

    def measured_by(self, source: Any) -> None:
        """The velocity is now ``source[id]``, measured only if it is ever read (most
        tracks' never is: it matters once the flow loses a track or it leaves)."""
        self._source = source


def settle_velocities(tracks: "Iterable[Track]", keep: Any = None) -> None:
    """Measure the pending velocities of ``tracks`` whose source is not ``keep``, one
    batch per source (``source.measure(ids)``), and drop the sources: the frames they
    hold are freed."""
    by: dict[int, tuple[Any, list[Track]]] = {}
    for t in tracks:
        if t._source is not None and t._source is not keep:
            by.setdefault(id(t._source), (t._source, []))[1].append(t)
    for src, ts in by.values():
        src.measure([t.id for t in ts])
        for t in ts:
            _ = t.velocity


class TrackRegistry:
    """Bounded set of live tracks (present, or missing for at most ``max_missed`` frames).

    Args:
        max_missed: frames an absent track is kept for re-identification.
        id_offset: first id handed out is ``id_offset + 1``.
    """

    def __init__(self, max_missed: int = 30, id_offset: int = 0) -> None:
        self.max_missed = int(max_missed)
        self.next_id = int(id_offset) + 1
        self.tracks: dict[int, Track] = {}
        self.n_created = 0

    def new(self, frame_index: int) -> Track:
        """Create a track with a fresh id (never reused)."""
        t = Track(id=self.next_id, first_frame=frame_index, last_frame=frame_index)
        self.tracks[t.id] = t
        self.next_id += 1
        self.n_created += 1
        return t

    def __contains__(self, tid: int) -> bool:
        return int(tid) in self.tracks

    def __getitem__(self, tid: int) -> Track:
        return self.tracks[int(tid)]

    def __len__(self) -> int:
        return len(self.tracks)

    def lost_ids(self) -> list[int]:
        """Ids of remembered tracks that were absent in the last frame."""
        return [t.id for t in self.tracks.values() if t.missed > 0]

    @property
    def max_id(self) -> int:
        """Largest id handed out so far (``id_offset`` when none)."""
        return self.next_id - 1

    def end_frame(self, frame_index: int, present: "np.ndarray | list[int]") -> list[int]:
        """Close a frame: present tracks are seen, others miss one more frame.

        Returns:
            ids retired in this frame (absent for more than ``max_missed`` frames).
        """
        present_set = {int(i) for i in np.asarray(present).ravel()}
        retired = []
        for t in list(self.tracks.values()):
            if t.id in present_set:
                t.missed = 0
                t.last_frame = frame_index
            else:
                t.missed += 1
                if t.missed > self.max_missed:
                    del self.tracks[t.id]
                    retired.append(t.id)
        return retired
