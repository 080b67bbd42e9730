"""Stage 3, associate: one decision per frame, a correlation clustering of segment parts.

Every segment ``j`` is cut by the prediction into *parts* ``(j, t)``: its pixels that track
``t`` predicts, and ``(j, none)``. The frame's labelling gives every part a track or the
segment's new object, maximising one objective (all terms are fractions of an object, so
nothing depends on its size in pixels):

* a part given to the track that predicted it gains the fraction of the track's predicted
  mask it holds, ``n(j,t) / m(t)``, scaled by how alike segment and track look
  (``1 + look_weight * (2 * look - 1)``): *continue*, and several segments inside one
  track all continue it (*part-of*, a split);
* a part given to a track that another track predicted costs ``foreign_weight * n / m(t)``
  (pixels the track would grow by): a segment mostly made of other things does not take
  the track's id (pixels no track predicts, those that failed the flow check, are unknown
  and cost nothing). With ``min_iou`` > 0 (slices) what a track takes of a segment, whole
  or a part, scores ``IoU * look - min_iou`` with its predicted section instead, in both
  passes: a structure's section grows and shrinks several-fold from slice to slice, which
  the foreign cost, measured against the previous section, reads as another object;
* two parts of one segment given to different owners cost ``2 * segment_trust * f_a * f_b``
  (``f``: fractions of the segment): the segmenter says they are one thing; a sliver is
  cheap to leave with its segment and costly to cut, while an object the segmenter merged
  into a neighbour or into the ground holds most of its own track and is carved out
  (*contains*, a merge);
* two tracks are never one object in the same frame (cannot-link); a part no track wins
  belongs to the segment's new object (*new*; *re-identify* and late corrections are
  decided by `temporal.engine.lifecycle` on these).

The objective is maximised in two passes, in the order the relations are trusted:

1. *whole segments*: every segment takes the track that scores best for all of it, or is
   new (the segmenter is trusted; several segments may continue one track);
2. *contains*: only a track that continues in no segment may be carved out of the segments
   that hold its prediction (exactly per segment, between the segment's own track and
   those lost tracks). Without this restriction a track's prediction that leaked into a
   big neighbour (flow error at a boundary) was carved out of it frame after frame and the
   track grew into the ground (libby, degradation: J 0.55 -> 0.90). And a part counts for
   a lost track only when it looks more like that track than like the track its segment
   continues: an object merged into a neighbour looks like itself, while the place of an
   object that ended, left or hid (a section's last slice, an occlusion) shows its
   neighbour, and carving it out kept a ghost of the track alive in the neighbour's
   pixels.

Parts of different segments share no term, so pass 2 splits into one small clustering per
segment, solved exactly by enumeration when it has few labellings (almost always) and by
greedy additive edge contraction (GAEC, the multicut heuristic micro-sam/elf use across
slices) otherwise (with ``min_iou`` > 0, whose IoU is not a sum over parts, GAEC runs on
the per-part gains and the objective then picks the best of its labelling, pass 1's and
all new).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from .config import AssociateConfig
from .evidence import Evidence

# segments with at most this many labellings of their parts are solved exactly by
# enumeration (all but a few segments per frame); larger ones by GAEC
EXACT_LIMIT = 4096


@dataclass
class Association:
    """The frame's decision.

    Attributes:
        owner: int64 ``(K, T + 1)``: track row each part goes to (-1 = the segment's new
            object); parts with no pixel are -1.
        whole: int64 ``(K,)``: the track row owning all of segment j, -1 when all of it is
            new, -2 when it is carved between owners.
    """

    owner: np.ndarray
    whole: np.ndarray


def gaec(w: np.ndarray, n_free: int) -> np.ndarray:
    """Greedy additive edge contraction of a small complete graph.

    Args:
        w: float64 ``(n, n)`` symmetric edge weights (diagonal ignored); nodes
            ``n_free..n-1`` are mutually exclusive (never in one cluster).
        n_free: nodes ``0..n_free-1`` may join anything.

    Returns:
        int64 ``(n,)`` cluster representative of every node.
    """
    n = len(w)
    w = w.astype(np.float64, copy=True)
    excl = np.zeros((n, n), bool)
    excl[n_free:, n_free:] = True
    np.fill_diagonal(excl, True)
    cand = np.where(excl, -np.inf, w)  # kept up to date: no full rebuild per contraction
    rep = np.arange(n)
    alive = np.ones(n, bool)
    while True:
        k = int(np.argmax(cand))
        a, b = divmod(k, n)
        if not cand[a, b] > 0:
            break
        if b < a:
            a, b = b, a
        w[a] += w[b]
        w[:, a] += w[:, b]
        excl[a] |= excl[b]
        excl[:, a] |= excl[:, b]
        excl[a, a] = True
        alive[b] = False
        cand[a] = np.where(excl[a] | ~alive, -np.inf, w[a])
        cand[:, a] = cand[a]
        cand[b] = -np.inf
        cand[:, b] = -np.inf
        rep[rep == b] = a
    return rep


@functools.lru_cache(maxsize=128)
def _labellings(A: int, Tj: int) -> "tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]":
    """Every labelling of ``A`` parts with ``Tj + 1`` labels, ``(N, A)``, which pairs of
    parts each one puts together, ``(N, A (A - 1) / 2)``, and those pairs (cached, read-only:
    the same few shapes recur every frame)."""
    combos = np.array(np.meshgrid(*[np.arange(Tj + 1)] * A, indexing="ij")).reshape(A, -1).T
    iu, ju = np.triu_indices(A, 1)
    same = combos[:, iu] == combos[:, ju]
    for a in (combos, same, iu, ju):
        a.flags.writeable = False
    return combos, same, iu, ju


def _exact(w: np.ndarray, A: int, Tj: int) -> np.ndarray:
    """The best labelling of ``A`` parts by enumeration: each part takes one of the ``Tj``
    candidate tracks (its index) or the segment's new object (``Tj``)."""
    combos, same, iu, ju = _labellings(A, Tj)  # (N, A), (N, pairs)
    pt = np.concatenate([w[:A, A:], np.zeros((A, 1))], 1)  # part x label gain (new = 0)
    score = pt[np.arange(A)[None, :], combos].sum(1)
    score += (same * w[iu, ju][None, :]).sum(1)
    return combos[int(np.argmax(score))]


def associate(ev: Evidence, cfg: AssociateConfig, reid: "np.ndarray | None" = None,
              carvable: "np.ndarray | None" = None) -> Association:
    """Label every part of every segment (see the module docstring).

    Args:
        ev: the frame's `Evidence`.
        cfg: `AssociateConfig`.
        reid: float ``(K, R)`` re-identification scores of the segments with the R
            remembered tracks (look similarity minus its threshold; > 0 = a candidate), or
            None.
        carvable: bool ``(T,)``: tracks that carving out may still gain from (False for a
            track that has lived only by being carved for ``memory`` frames: the segmenter
            no longer shows it; a segment pass 1 gave to such a track stays its own);
            None = all.

    Returns:
        `Association`; owner / whole values ``T + r`` stand for remembered track ``r``.
    """
    inter = ev.inter
    K, T1 = inter.shape
    T = T1 - 1
    R = 0 if reid is None else reid.shape[1]
    owner = np.full((K, T1), -1, np.int64)
    whole = np.full(K, -1, np.int64)
    if K == 0 or T + R == 0:
        return Association(owner, whole)
    m = np.maximum(ev.pred_area, 1).astype(np.float64)
    lam = np.ones((K, T)) if ev.look is None else 1.0 + cfg.look_weight * (2.0 * ev.look - 1.0)
    # pass 1, whole segments: each segment continues the track with the best score of the
    # whole segment (several segments may continue one track: part-of), takes back a
    # remembered track it looks like (one segment per remembered track), or is new
    if cfg.min_iou > 0:  # sections of a structure grow and shrink: symmetric overlap
        iou = inter[:, 1:] / np.maximum(ev.seg_area[:, None] + m[None, :] - inter[:, 1:], 1)
        score = iou * lam - cfg.min_iou
    else:
        gain = inter[:, 1:] / m[None, :] * lam
        predicted = (ev.seg_area - inter[:, 0])[:, None]
        score = gain - cfg.foreign_weight * (predicted - inter[:, 1:]) / m[None, :]
    score = np.where(inter[:, 1:] > 0, score, -np.inf)
    if R:
        score = np.concatenate([score, reid], 1)
        best = np.argmax(score, 1)
        back = np.flatnonzero(best >= T)
        if len(back):  # one-to-one among the segments that prefer a remembered track
            sub = reid[back]
            rows, cols = linear_sum_assignment(-sub)
            won = {int(back[i]): T + int(c) for i, c in zip(rows, cols) if sub[i, c] > 0}
            for j in back.tolist():
                score[j, T:] = -np.inf
                if j in won:
                    score[j, won[j]] = reid[j, won[j] - T]
    best = np.argmax(score, 1)
    top = score[np.arange(K), best]
    ok = top > 0
    if cfg.split_cost > 0:  # a track's second, third... segment must pay for overriding the segmenter
        sel = np.flatnonzero(ok & (best < T))
        order = sel[np.lexsort((-top[sel], best[sel]))]  # by track, best segment first
        extra = order[1:][best[order][1:] == best[order][:-1]]
        ok[extra[top[extra] <= cfg.split_cost]] = False
    whole[ok] = best[ok]
    owner[:] = np.where(inter > 0, whole[:, None], -1)
    # pass 2, contains: a track that continues in no segment (the segmenter merged it into a
    # neighbour or the ground) may be carved out of the segments that hold its prediction
    if ev.look is None:  # nothing but the segmenter's word: its grouping stands
        return Association(owner, whole)
    lost = np.ones(T, bool)
    lost[whole[(whole >= 0) & (whole < T)]] = False
    for j in np.flatnonzero((inter[:, 1:][:, lost] > 0).any(1) & (whole < T)):
        cand = np.flatnonzero(lost & (inter[j, 1:] > 0))
        o = int(whole[j])
        is_o = np.arange(T) == o
        # a track that lives only by being carved is not carved out any more, but the
        # track pass 1 gave the segment to is not carved out of it: it keeps its agreement
        lj = lam[j] if carvable is None else np.where(carvable | is_o, lam[j], 0.0)
        if o >= 0:
            cand = np.union1d(cand, [o])
            # a part is evidence for a lost track only when it looks more like that track
            # than like the track its segment continues
            rival = ev.colours.with_track(j, o) if ev.colours is not None else 0.0
            lj = np.where((ev.look[j] > rival) | is_o, lj, 0.0)
        whole[j], owner[j] = _segment(inter[j], m, lj, cfg, cand, o)
    return Association(owner, whole)


def _segment(n: np.ndarray, m: np.ndarray, lam: np.ndarray, cfg: AssociateConfig, tracks: np.ndarray,
             o: int) -> tuple[int, np.ndarray]:
    """Cluster the parts of one segment between the candidate ``tracks`` (rows) and new:
    ``n`` int ``(T + 1,)`` its part sizes; ``o`` the row pass 1 gave all of it (-1: new)."""
    cols = np.flatnonzero(n)
    A, Tj = len(cols), len(tracks)
    nj = float(n.sum())
    f = n[cols] / nj
    w = np.zeros((A + Tj, A + Tj))
    w[:A, :A] = 2.0 * cfg.segment_trust * np.outer(f, f)
    # part a vs candidate track t: gain when t predicted it, foreign cost otherwise
    frac = n[cols][:, None] / m[tracks][None, :]
    mine = (cols[:, None] - 1) == tracks[None, :]
    pt = np.where(mine, frac * lam[tracks][None, :], -cfg.foreign_weight * frac)
    pt[cols == 0] = 0.0  # pixels nothing predicts (failed the flow check) are unknown, not foreign
    w[:A, A:] = pt
    w[A:, :A] = pt.T
    exact = (Tj + 1) ** A <= EXACT_LIMIT
    if cfg.min_iou > 0:  # slices: every owner scores what it takes as pass 1 scores a section
        if exact:
            labs, same, iu, ju = _labellings(A, Tj)
        else:  # the GAEC labelling (by the gains above), pass 1's or all new: the best of them
            mine_o = int(np.searchsorted(tracks, o)) if o >= 0 else Tj  # tracks are sorted
            labs = np.stack([_gaec_labels(w, A, Tj), np.full(A, mine_o), np.full(A, Tj)])
            iu, ju = np.triu_indices(A, 1)
            same = labs[:, iu] == labs[:, ju]
        part = np.searchsorted(cols, tracks + 1)  # every candidate predicted a part of the segment
        score = _section_scores(labs, n[cols].astype(np.float64), part, m[tracks], lam[tracks], cfg.min_iou)
        best = labs[int(np.argmax(score + same @ w[iu, ju]))]  # plus the cut costs
    else:
        best = _exact(w, A, Tj) if exact else _gaec_labels(w, A, Tj)
    lab = np.where(best < Tj, tracks[np.minimum(best, Tj - 1)], -1)
    out = np.full(len(n), -1, np.int64)
    out[cols] = lab
    wl = int(lab[0]) if np.all(lab == lab[0]) else -2
    return wl, out


def _gaec_labels(w: np.ndarray, A: int, Tj: int) -> np.ndarray:
    """int64 ``(A,)`` the GAEC clustering of ``A`` parts and ``Tj`` candidate tracks as
    labels: the index of the track a part joins, ``Tj`` for new."""
    rep = gaec(w, A)
    track_of_rep = {int(rep[A + i]): i for i in range(Tj)}
    return np.array([track_of_rep.get(int(rep[a]), Tj) for a in range(A)], np.int64)


def _section_scores(labs: np.ndarray, n: np.ndarray, part: np.ndarray, m: np.ndarray, lam: np.ndarray,
                    min_iou: float) -> np.ndarray:
    """float64 ``(L,)`` pass 1's score of a section summed over the owners of each
    labelling ``labs`` int ``(L, A)`` of one segment's parts (``Tj`` = new): ``IoU * look -
    min_iou`` of the parts an owner takes with its predicted section (``m``, pixels;
    ``part`` int ``(Tj,)``: the part it predicted). A whole segment scores exactly as in
    pass 1; a section that grew over pixels another track predicted is not charged them as
    foreign. The caller adds the cut costs."""
    L, A = labs.shape
    Tj = len(part)
    # pixels each owner takes (one bincount over (labelling, label) cells), and of those
    # the ones it predicted: its own part, when it takes it
    cell = labs + (Tj + 1) * np.arange(L)[:, None]
    taken = np.bincount(cell.ravel(), np.tile(n, L), L * (Tj + 1)).reshape(L, Tj + 1)[:, :Tj]
    own = (labs[:, part] == np.arange(Tj)) * n[part]
    return np.where(taken > 0, own / np.maximum(taken + m - own, 1.0) * lam - min_iou, 0.0).sum(1)
