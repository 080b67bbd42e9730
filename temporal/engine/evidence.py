"""Stage 2, evidence: one table per (segment, predicted track) pair, computed once a frame.

* ``inter[j, 0]``: pixels of segment j that no track predicts; ``inter[j, 1 + t]``: pixels
  of segment j that track ``t`` predicts (the overlap after warping, both ways at once:
  divided by the segment's area it is the containment of the segment in the track, by the
  track's predicted area the containment of the track in the segment);
* ``look[j, t]`` in 0..1: how alike the part (j, t) looks to track t: the Bhattacharyya
  coefficient of their colour histograms (`part_colours`). The similarity of proposal maps
  (``exp(-sKL / kl_tau)``, DiffSeg's attention) identifies remembered tracks and late
  corrections (`look_similarity`): between a segment and a track of other sizes it is low
  whatever their identity, so it does not weigh parts.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from ..matching import bhattacharyya, cell_histograms, kl_similarity, overlap_matrix, symmetric_kl_matrix


@dataclass
class Evidence:
    """The pair table of one frame.

    Attributes:
        track_ids: int64 ``(T,)`` ids of the tracks predicted in this frame.
        inter: int64 ``(K, T + 1)`` overlap counts (column 0 = no prediction).
        seg_area: int64 ``(K,)``; pred_area: int64 ``(T,)`` predicted pixels per track
            (on a segment or not).
        look: float32 ``(K, T)`` look similarity in 0..1, or None (no proposals, no images).
        rows: int32 ``(h, w)`` predicted track row per pixel (-1 = none).
        colours: the parts' `PartColours` (a part against any track), or None: then a
            part's look with a track other than its own is unknown and counts 0.
    """

    track_ids: np.ndarray
    inter: np.ndarray
    seg_area: np.ndarray
    pred_area: np.ndarray
    look: Optional[np.ndarray]
    rows: np.ndarray
    colours: Optional[PartColours] = None


def look_similarity(track_maps: "np.ndarray | None", seg_maps: "np.ndarray | None", kl_tau: float,
                    track_hists: "np.ndarray | None" = None, seg_hists: "np.ndarray | None" = None
                    ) -> Optional[np.ndarray]:
    """float32 ``(K, T)`` look similarity of segments (rows) and tracks (columns), or None.

    Args:
        track_maps: float32 ``(T, h, w)`` distributions; seg_maps: float32 ``(K, h, w)``.
        track_hists, seg_hists: float32 ``(T, B)`` / ``(K, B)`` normalised histograms.
    """
    sim = None
    if track_maps is not None and seg_maps is not None and len(track_maps) and len(seg_maps):
        sim = kl_similarity(symmetric_kl_matrix(seg_maps, track_maps), kl_tau).astype(np.float32)
    if track_hists is not None and seg_hists is not None and len(track_hists) and len(seg_hists):
        col = bhattacharyya(seg_hists, track_hists).astype(np.float32)
        sim = col if sim is None else sim * col
    return sim


def _compact_pairs(seg: np.ndarray, rows: np.ndarray, K: int, T: int) -> tuple[np.ndarray, np.ndarray]:
    """Number the (segment, track row) parts present: ``(index map (h, w), -1 = none;
    int64 codes j * T + t of each index)``, by counting (no sort: this runs every frame)."""
    pair = np.where((seg >= 0) & (rows >= 0), seg.astype(np.int64) * T + rows, -1)
    present = np.bincount(pair[pair >= 0], minlength=K * T) > 0
    lut = np.cumsum(present) - 1
    return np.where(pair >= 0, lut[np.maximum(pair, 0)], -1), np.flatnonzero(present)


@dataclass
class PartColours:
    """The colour histograms of a frame's parts, to compare a part with any track.

    Attributes:
        code: int64 ``(P,)`` the parts present, as ``j * T + t`` (segment j, track row t),
            ascending.
        root: float32 ``(P, B)`` square roots of their normalised histograms.
        track_root: float32 ``(T, B)`` the same of the tracks' remembered histograms.
    """

    code: np.ndarray
    root: np.ndarray
    track_root: np.ndarray

    def own(self, K: int) -> np.ndarray:
        """float32 ``(K, T)``: each part with the track that predicted it (0 for empty parts)."""
        T = len(self.track_root)
        out = np.zeros((K, T), np.float32)
        t = self.code % T
        out[self.code // T, t] = np.sum(self.root * self.track_root[t], 1)
        return out

    def with_track(self, j: int, o: int) -> np.ndarray:
        """float32 ``(T,)``: each part of segment ``j`` with track row ``o`` (0 for empty parts)."""
        T = len(self.track_root)
        a, b = np.searchsorted(self.code, (j * T, (j + 1) * T))  # codes are sorted
        out = np.zeros(T, np.float32)
        out[self.code[a:b] % T] = self.root[a:b] @ self.track_root[o]
        return out


def part_colours(cells: np.ndarray, seg: np.ndarray, rows: np.ndarray, K: int, track_hists: np.ndarray,
                 bins: int) -> PartColours:
    """The `PartColours` of a frame (``cells``: its `temporal.matching.color_cells`;
    ``track_hists``: float32 ``(T, B)`` the predicted tracks' remembered histograms).

    A part is judged by its own pixels: an object the segmenter merged into the ground looks
    like itself, not like the ground segment around it.
    """
    T = len(track_hists)
    idx, codes = _compact_pairs(seg, rows, K, T)
    h = cell_histograms(cells, idx, len(codes), bins)
    return PartColours(codes, np.sqrt(h), np.sqrt(np.maximum(track_hists, 0)).astype(np.float32))


def gather(pred: np.ndarray, seg: np.ndarray, K: int) -> Evidence:
    """The overlap table of the predicted ids ``pred`` and the segment map ``seg``.

    Args:
        pred: int32 ``(h, w)`` predicted track ids (0 = none).
        seg: int32 ``(h, w)`` segment index ``0..K-1`` (-1 = no segment: ignored).
        K: number of segments.

    Returns:
        `Evidence` without ``look`` (see `part_colours`).
    """
    cnt = np.bincount(pred.ravel())
    ids = np.flatnonzero(cnt)
    ids = ids[ids > 0].astype(np.int64)
    T = len(ids)
    row_of = np.full(len(cnt), -1, np.int32)
    row_of[ids] = np.arange(T, dtype=np.int32)
    rows = np.take(row_of, pred)
    inter = overlap_matrix(seg, K, rows + 1, T + 1)
    # a track's predicted area counts its pixels on no segment too (background): a structure
    # that shrank into the background is not a full match of what is left of it
    return Evidence(ids, inter, inter.sum(1), cnt[ids].astype(np.int64), None, rows)
