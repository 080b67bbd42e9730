"""Joining the tracks of one object after a run: the pixels tracks trade from frame to frame.

A segmenter that cuts an object into pieces that change from frame to frame (fine
graph-based segmenters, watershed, quickshift) leaves the online engine one track per piece
that it could follow: each piece is a fair segment of its own and holds too little of its
track's last section to continue it. Over a whole video, though, the pieces of one object
betray themselves: the cut between them moves, so pixels that were piece a in one frame are
piece b in the next, and back, all the time. Two neighbours that are different things
(an object and its ground, two objects) trade pixels only where the segmenter misplaces
their boundary, little against the pixels each keeps.

`Exchange` counts, over a video, for every pair of track ids the pixels that pass from one
to the other between consecutive frames (either way) and, for every id, the pixels that
keep it. `Exchange.groups` agglomerates greedily: the pair that trades the largest share

    traded(a, b) / (traded(a, b) + kept(a) + kept(b))

is joined first, while that share is at least ``exchange``, and, where the frames were
given, only if their mean colours differ by at most ``colour_sd`` pooled standard
deviations in every channel (neighbouring superpixels of an object and its ground re-tile
too, and look different). Joined groups are counted as one from then on.

The evidence is the whole video's: an online fold with the same rule joined objects with
their ground from a few pixels in the first frames (benchmarks/RESULTS.md, session 20). So
this is a pass over a finished run (`temporal.api.join_run`, ``diffseg join``), not a
stage of the streaming engine. A volume is a video of its slices with grey "colours"
(`volume.api.join_volume`). Memory: one label map, one count per pair of ids that ever
traded and a few numbers per id and channel.
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from diffseg_core.config import ConfigDict
from diffseg_core.errors import InputError

__all__ = ["JoinConfig", "Exchange", "join_label_maps", "apply_joins", "join_lut", "name_donors"]


@dataclass(frozen=True)
class JoinConfig(ConfigDict):
    """When two tracks are one object.

    Attributes:
        exchange: join two tracks when the pixels they trade between consecutive frames are
            at least this share of those plus the pixels each keeps.
        colour_sd: and only when their mean colours over the video (grey levels over the
            volume) differ by at most this many pooled standard deviations in every
            channel (where the frames are given).
    """

    exchange: float = 0.05
    colour_sd: float = 1.0

    def __post_init__(self) -> None:
        if not 0.0 < float(self.exchange) <= 1.0:
            raise InputError(f"JoinConfig.exchange must be in (0, 1]; got {self.exchange}")
        if not float(self.colour_sd) >= 0.0:
            raise InputError(f"JoinConfig.colour_sd must be >= 0; got {self.colour_sd}")


#: at most this many (id, level) cells in a frame's colour histograms (8 MB a channel)
_HISTOGRAM_CELLS = 1 << 20


class Exchange:
    """What the tracks of one video trade from frame to frame (see the module docstring).

    Feed the frames in order with `add`; then `groups`.
    """

    #: pair tables merged into one after this many frames (bounds the memory of a long video)
    _FOLD = 64

    def __init__(self) -> None:
        self._prev: Optional[np.ndarray] = None
        self._kept = np.zeros(1, np.int64)
        self._area = np.zeros(1, np.int64)
        self._sums = np.zeros((1, 0))  # colour sums and sums of squares per id and channel
        self._squares = np.zeros((1, 0))
        self._colour: Optional[bool] = None  # frames given with every map (None: no map yet)
        self._pairs: list[tuple[np.ndarray, np.ndarray]] = []  # (codes lo << 32 | hi, counts)
        self.n_frames = 0

    @property
    def area(self) -> np.ndarray:
        """int64 pixels (voxels) per id ``0..max id`` over every frame counted."""
        return self._area.copy()

    def _grow(self, n: int) -> None:
        if n > len(self._kept):
            pad = n - len(self._kept)
            self._kept = np.concatenate([self._kept, np.zeros(pad, np.int64)])
            self._area = np.concatenate([self._area, np.zeros(pad, np.int64)])
            self._sums = np.concatenate([self._sums, np.zeros((pad, self._sums.shape[1]))])
            self._squares = np.concatenate([self._squares, np.zeros((pad, self._sums.shape[1]))])

    def add(self, labels: np.ndarray, rgb: "np.ndarray | None" = None) -> None:
        """Count one frame.

        Args:
            labels: int ``(H, W)`` track ids (0 = none), the same size every frame.
            rgb: uint8 ``(H, W, 3)`` the frame (the colour test), or uint8 ``(H, W)`` a grey
                slice, or None; given with every frame or with none, in one kind.
        """
        lab = np.asarray(labels)
        if lab.ndim != 2:
            raise ValueError(f"labels must be 2-D (H, W); got shape {lab.shape}")
        top = int(lab.max()) if lab.size else 0
        if lab.size and (lab.min() < 0 or top > np.iinfo(np.int32).max):
            raise ValueError("track ids must be in [0, 2**31)")
        if self._prev is not None and lab.shape != self._prev.shape:
            raise ValueError(f"frame {self.n_frames}: labels of shape {lab.shape} after {self._prev.shape}")
        colour = rgb is not None
        if self._colour is not None and colour != self._colour:
            raise ValueError("give the frames with every label map or with none")
        self._colour = colour
        flat = lab.ravel().astype(np.int64)
        self._grow(top + 1)
        n = len(self._kept)
        area = np.bincount(flat, minlength=n)
        self._area += area
        if colour:
            img = np.asarray(rgb)
            img = img[..., None] if img.ndim == 2 else img
            channels = self._sums.shape[1] if self.n_frames else img.shape[-1]
            if img.shape[:2] != lab.shape or img.shape[2:] not in ((1,), (3,)) or img.dtype != np.uint8 \
                    or img.shape[2] != channels:
                want = f"{lab.shape + (3,)} (RGB) or {lab.shape} (grey)" if not self.n_frames else \
                    f"{lab.shape + (channels,)}"
                raise ValueError(f"frame {self.n_frames}: a uint8 image of shape {want} was expected; got "
                                 f"{img.dtype} {np.asarray(rgb).shape}")
            if not self.n_frames:
                self._sums = np.zeros((len(self._kept), channels))
                self._squares = np.zeros((len(self._kept), channels))
            self._add_colours(flat, img.reshape(-1, channels), area)
        if self._prev is not None:
            prev = self._prev.ravel().astype(np.int64)
            same = prev == flat
            self._kept += np.bincount(flat[same], minlength=n)
            moved = ~same & (prev > 0) & (flat > 0)
            a, b = prev[moved], flat[moved]
            codes = (np.minimum(a, b) << 32) | np.maximum(a, b)
            self._pairs.append(np.unique(codes, return_counts=True))
            if len(self._pairs) >= self._FOLD:
                self._pairs = [self._folded()]
        self._prev = lab.astype(np.int32, copy=True)
        self.n_frames += 1

    def _add_colours(self, flat: np.ndarray, px: np.ndarray, area: np.ndarray) -> None:
        """Colour sums and sums of squares per id: a histogram of (id, level) per channel,
        over the ids of the frame (one count per pixel, exact), then its levels summed."""
        present = np.flatnonzero(area)
        m = len(present)
        if m * 256 > _HISTOGRAM_CELLS:  # too many ids for the histograms: sums weighted per pixel
            for c in range(px.shape[1]):
                v = px[:, c].astype(np.float64)
                self._sums[:, c] += np.bincount(flat, v, minlength=len(area))
                self._squares[:, c] += np.bincount(flat, v * v, minlength=len(area))
            return
        compact = np.zeros(len(area), np.int64)
        compact[present] = np.arange(m) * 256
        cell = compact[flat]
        levels = np.arange(256, dtype=np.float64)
        for c in range(px.shape[1]):
            h = np.bincount(cell + px[:, c], minlength=m * 256).reshape(m, 256).astype(np.float64)
            self._sums[present, c] += h @ levels
            self._squares[present, c] += h @ (levels * levels)

    def _folded(self) -> tuple[np.ndarray, np.ndarray]:
        if not self._pairs:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        codes = np.concatenate([p[0] for p in self._pairs])
        counts = np.concatenate([p[1] for p in self._pairs])
        u, inv = np.unique(codes, return_inverse=True)
        return u, np.bincount(inv, counts, minlength=len(u)).astype(np.int64)

    def groups(self, config: JoinConfig = JoinConfig()) -> dict[int, int]:
        """``{id: the id it joins}`` for every id that joins another (the smallest id of a
        group, the oldest track, names it); ids left alone are not listed."""
        codes, counts = self._folded()
        self._pairs = [(codes, counts)]
        kept = self._kept.astype(np.float64)
        sums, squares, area = self._sums.copy(), self._squares.copy(), self._area.astype(np.float64)
        colour = bool(self._colour)
        traded: dict[int, dict[int, float]] = {}
        for code, k in zip(codes.tolist(), counts.tolist()):
            a, b = code >> 32, code & 0xFFFFFFFF
            traded.setdefault(a, {})[b] = float(k)
            traded.setdefault(b, {})[a] = float(k)

        def share(a: int, b: int) -> float:
            x = traded[a][b]
            return x / (x + kept[a] + kept[b])

        def alike(a: int, b: int) -> bool:
            if not colour:
                return True
            if area[a] == 0 or area[b] == 0:
                return False
            ma, mb = sums[a] / area[a], sums[b] / area[b]
            pooled = (squares[a] / area[a] - ma ** 2 + squares[b] / area[b] - mb ** 2) / 2
            sd = np.sqrt(np.maximum(pooled, 1.0))  # at least one grey level
            return bool(np.all(np.abs(ma - mb) <= config.colour_sd * sd))

        heap = [(-share(a, b), a, b) for a in traded for b in traded[a] if a < b]
        heapq.heapify(heap)
        parent: dict[int, int] = {}
        while heap:
            neg, a, b = heapq.heappop(heap)
            if a in parent or b in parent or b not in traded[a] or -neg != share(a, b):
                continue  # stale: one of them joined another, or their counts grew
            if -neg < config.exchange:
                break
            if not alike(a, b):
                continue
            parent[b] = a  # b joins a (a < b: the older track)
            kept[a] += kept[b] + traded[a].pop(b)
            del traded[b][a]
            area[a] += area[b]
            sums[a] += sums[b]
            squares[a] += squares[b]
            for c, x in traded.pop(b).items():
                del traded[c][b]
                traded[a][c] = traded[c][a] = traded[a].get(c, 0.0) + x
            for c in traded[a]:
                heapq.heappush(heap, (-share(a, c), min(a, c), max(a, c)))

        def root(x: int) -> int:
            while x in parent:
                x = parent[x]
            return x

        return {b: root(b) for b in parent}


def join_label_maps(label_maps: Sequence[np.ndarray], frames: "Sequence[np.ndarray] | None" = None,
                    config: JoinConfig = JoinConfig()) -> tuple[list[np.ndarray], dict[int, int]]:
    """Join the tracks of one object in a linked video held in memory.

    Args:
        label_maps: int ``(H, W)`` track ids per frame (0 = none), as the tracker wrote them.
        frames: uint8 ``(H, W, 3)`` the frames or ``(H, W)`` grey slices (the colour
            test), or None.
        config: `JoinConfig`.

    Returns:
        (the int32 label maps with every joined id replaced, ``{id: the id it joined}``).
    """
    if frames is not None and len(frames) != len(label_maps):
        raise ValueError(f"{len(label_maps)} label maps but {len(frames)} frames")
    ex = Exchange()
    for t, lab in enumerate(label_maps):
        ex.add(lab, None if frames is None else frames[t])
    mapping = ex.groups(config)
    return [apply_joins(lab, mapping) for lab in label_maps], mapping


def join_lut(mapping: dict[int, int], top: int) -> np.ndarray:
    """int32 ``(top + 1,)`` lookup table: every id ``0..top`` to the id it joined (itself
    when it joined none)."""
    lut = np.arange(max(top, max(mapping, default=0)) + 1, dtype=np.int32)
    lut[list(mapping)] = list(mapping.values())
    return lut


def apply_joins(labels: np.ndarray, mapping: dict[int, int]) -> np.ndarray:
    """int32 ``labels`` with the ids of ``mapping`` replaced (the others kept)."""
    lab = np.asarray(labels, dtype=np.int32)
    if not mapping or not lab.size:
        return lab.copy()
    return join_lut(mapping, int(lab.max()))[lab]


def name_donors(mapping: dict[int, int], named: "set[int]", size: "dict[int, int]") -> dict[int, int]:
    """``{group id: the member whose name it takes}`` for the groups whose own (smallest)
    id has no name: their largest named member's (``named``: the ids with a name; ``size``:
    pixels or voxels per id)."""
    donors: dict[int, int] = {}
    for b in sorted(mapping, key=lambda t: -size.get(t, 0)):
        root = mapping[b]
        if root not in named and root not in donors and b in named:
            donors[root] = b
    return donors
