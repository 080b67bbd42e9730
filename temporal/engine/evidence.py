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

from ..matching import bhattacharyya, kl_similarity, normalise_rows, symmetric_kl_matrix


@dataclass
class Evidence:
    """The pair table of one frame.

    Attributes:
        track_ids: int64 ``(T,)`` ids of the tracks predicted in this frame.
        inter: int64 ``(K, T + 1)`` overlap counts (column 0 = no prediction).
        seg_area: int64 ``(K,)``; pred_area: int64 ``(T,)`` predicted pixels per track
            (on a segment or not).
        look: float32 ``(K, T)`` look similarity in 0..1, or None (no proposals, no images).
        part: int64 ``(h, w)`` the part of every pixel, ``(j + 1) * (T + 1) + c`` for
            segment j (-1: no segment) and column c of ``inter`` (0: no prediction, 1 + t:
            track row t): one index map for every per-part count of the frame.
        colours: the parts' `PartColours` (a part against any track), or None: then a
            part's look with a track other than its own is unknown and counts 0.
    """

    track_ids: np.ndarray
    inter: np.ndarray
    seg_area: np.ndarray
    pred_area: np.ndarray
    look: Optional[np.ndarray]
    part: np.ndarray
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


@dataclass
class PartColours:
    """The colour of a frame's parts: to compare a part with any track, and to sum parts
    into the histogram of anything made of them (a segment, a track's pixels) with no
    second pass over the pixels.

    Attributes:
        code: int64 ``(P,)`` the parts present on a segment, as ``j * columns + c``
            (segment j, column c of ``Evidence.inter``), ascending.
        counts: float32 ``(P, B)`` colour cell counts of each part.
        root: float32 ``(P, B)`` square roots of the normalised histograms.
        track_root: float32 ``(T, B)`` the same of the tracks' remembered histograms, or
            None (no track has a look yet).
        columns: ``T + 1``, the columns of ``Evidence.inter``.
    """

    code: np.ndarray
    counts: np.ndarray
    root: np.ndarray
    track_root: Optional[np.ndarray]
    columns: int

    @property
    def segment(self) -> np.ndarray:
        """int64 ``(P,)`` the segment of each part."""
        return self.code // self.columns

    @property
    def column(self) -> np.ndarray:
        """int64 ``(P,)`` each part's column of ``Evidence.inter`` (0: no prediction, 1 + t: track row t)."""
        return self.code % self.columns

    def own(self, K: int) -> np.ndarray:
        """float32 ``(K, T)``: each part with the track that predicted it (0 for empty parts)."""
        out = np.zeros((K, self.columns - 1), np.float32)
        sel = self.column > 0
        t = self.column[sel] - 1
        out[self.segment[sel], t] = np.sum(self.root[sel] * self.track_root[t], 1)
        return out

    def with_track(self, j: int, o: int) -> np.ndarray:
        """float32 ``(T,)``: each part of segment ``j`` with track row ``o`` (0 for empty parts)."""
        a, b = np.searchsorted(self.code, (j * self.columns + 1, (j + 1) * self.columns))  # codes are sorted
        out = np.zeros(self.columns - 1, np.float32)
        out[self.code[a:b] % self.columns - 1] = self.root[a:b] @ self.track_root[o]
        return out

    def histograms(self, group: np.ndarray, n: int) -> np.ndarray:
        """float32 ``(n, B)`` normalised histograms of groups of parts (``group``: int ``(P,)``
        in ``-1..n-1``, -1 = in none): equal to `temporal.matching.cell_histograms` of the
        groups' pixels (integer counts add exactly in float32)."""
        onehot = np.zeros((n, len(group)), np.float32)
        sel = np.flatnonzero(group >= 0)
        onehot[group[sel], sel] = 1.0
        return normalise_rows(onehot @ self.counts)


def part_colours(cells: np.ndarray, ev: Evidence, bins: int, track_hists: "np.ndarray | None" = None
                 ) -> PartColours:
    """The `PartColours` of a frame (``cells``: its `temporal.matching.color_cells`;
    ``track_hists``: float32 ``(T, B)`` the predicted tracks' remembered histograms, or None).

    A part is judged by its own pixels: an object the segmenter merged into the ground looks
    like itself, not like the ground segment around it.
    """
    n, nb = ev.inter.size, bins ** 3
    present = np.concatenate([np.zeros(ev.inter.shape[1], bool), ev.inter.ravel() > 0])
    P = int(present.sum())
    lut = np.cumsum(present) - 1
    lut[~present] = P  # parts on no segment (the first row of codes) count in a last row, dropped
    pixel = np.take(lut, ev.part)  # (part row, colour cell) of every pixel, in one index
    pixel *= nb
    pixel += cells
    counts = np.bincount(pixel.ravel(), minlength=(P + 1) * nb)[:P * nb].reshape(P, nb).astype(np.float32)
    troot = None if track_hists is None else np.sqrt(np.maximum(track_hists, 0)).astype(np.float32)
    code = np.flatnonzero(present[-n:]) if n else np.zeros(0, np.int64)
    return PartColours(code, counts, np.sqrt(normalise_rows(counts)), troot, ev.inter.shape[1])


def gather(pred: np.ndarray, seg: np.ndarray, K: int, area: "np.ndarray | None" = None) -> Evidence:
    """The overlap table of the predicted ids ``pred`` and the segment map ``seg``.

    Args:
        pred: int32 ``(h, w)`` predicted track ids (0 = none).
        seg: int32 ``(h, w)`` segment index ``0..K-1`` (-1 = no segment: ignored).
        K: number of segments.
        area: ``np.bincount(pred.ravel())`` when at hand (index 0 may be anything).

    Returns:
        `Evidence` without ``look`` (see `part_colours`).
    """
    cnt = np.bincount(pred.ravel()) if area is None else area
    ids = np.flatnonzero(cnt)
    ids = ids[ids > 0].astype(np.int64)
    T = len(ids)
    col_of = np.zeros(len(cnt), np.int64)  # the column of inter of each predicted id
    col_of[ids] = np.arange(1, T + 1)
    part = np.take(col_of, pred)
    part += (seg + 1) * (T + 1)
    inter = np.bincount(part.ravel(), minlength=(K + 1) * (T + 1))[(T + 1):].reshape(K, T + 1)
    # a track's predicted area counts its pixels on no segment too (background): a structure
    # that shrank into the background is not a full match of what is left of it
    return Evidence(ids, inter, inter.sum(1), cnt[ids].astype(np.int64), None, part)
