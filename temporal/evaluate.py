"""Video segmentation metrics: DAVIS-2017 unsupervised protocol, id switches, per-frame oracle.

* J: region IoU per object per frame (1 when prediction and ground truth are both empty).
* F: boundary F-measure (DAVIS: boundaries matched within ``ceil(bound_th * diagonal)``
  pixels, a disk dilation).
* Tracked J&F: ONE Hungarian assignment of predicted tracks to ground-truth objects for the
  whole sequence, maximising mean J&F over all frames (DAVIS-2017 unsupervised); objects
  left without a track score 0.
* Per-frame oracle: every frame matched independently (Hungarian on IoU): the upper bound
  that ignores temporal consistency.
* Id switches: per object, the predicted id that covers it best (IoU >= 0.5) changes
  between frames where it is matched (CLEAR-MOT style); reported per object per 100
  frames.
* Recall and Decay of J and F (davis2017-evaluation's ``db_statistics``), from the assigned
  track's per-frame values: Recall the share of frames above 0.5, Decay the mean of the
  first quarter of the frames minus that of the last (four bins of ``round(linspace(1, n,
  5)) - 1``, each bin's end frame included in it and in the next).
* Void: ground-truth pixels of value ``void`` (255, DAVIS) are no object and count nowhere:
  not in J's intersection nor union, not in F's boundaries (the masks are cleared there
  first), as the official ``db_eval_iou`` / ``f_measure`` take their void mask.

F is computed for every pair in the oracle and for each object's ``f_candidates`` best
tracks by mean J in the tracked protocol (other pairs use F = 0 in the assignment: they
have near-zero J and cannot win it).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import cv2
import numpy as np
from scipy.optimize import linear_sum_assignment

from diffseg_core.errors import InputError
from diffseg_core.io import read_labels

from .io import LABEL_EXTENSIONS, natural_key
from .writer import LABELS_DIR, TRACKS_JSON


def boundary_map(mask: np.ndarray) -> np.ndarray:
    """bool ``(H, W)`` one-pixel boundary of a binary mask (DAVIS ``seg2bmap`` rule: a pixel
    whose east, south or south-east neighbour differs)."""
    m = np.asarray(mask, bool)
    e = np.zeros_like(m)
    s = np.zeros_like(m)
    se = np.zeros_like(m)
    e[:, :-1] = m[:, 1:]
    s[:-1, :] = m[1:, :]
    se[:-1, :-1] = m[1:, 1:]
    b = (m ^ e) | (m ^ s) | (m ^ se)
    b[-1, :] = m[-1, :] ^ e[-1, :]
    b[:, -1] = m[:, -1] ^ s[:, -1]
    b[-1, -1] = False
    return b


def _disk(r: int) -> np.ndarray:
    """uint8 ``(2r+1, 2r+1)`` disk ``x^2 + y^2 <= r^2``: davis2017-evaluation's
    ``skimage.morphology.disk``. (OpenCV's ``MORPH_ELLIPSE`` is larger: it holds (1, 2) at r = 2.)"""
    y, x = np.ogrid[-r:r + 1, -r:r + 1]
    return (x * x + y * y <= r * r).astype(np.uint8)


def f_measure(pred: np.ndarray, gt: np.ndarray, bound_th: float = 0.008,
              void: "np.ndarray | None" = None) -> float:
    """DAVIS boundary F-measure of two binary masks ``(H, W)``, in [0, 1]; ``void`` (bool)
    pixels are cleared in both masks before their boundaries are taken."""
    pred, gt = np.asarray(pred, bool), np.asarray(gt, bool)
    if void is not None:
        pred, gt = pred & ~void, gt & ~void
    r = int(bound_th) if bound_th >= 1 else int(math.ceil(bound_th * math.hypot(*pred.shape)))
    bp, bg = boundary_map(pred), boundary_map(gt)
    n_p, n_g = int(bp.sum()), int(bg.sum())
    if n_p == 0 and n_g == 0:
        return 1.0
    if n_p == 0 or n_g == 0:
        return 0.0
    k = _disk(r)
    dp = cv2.dilate(bp.astype(np.uint8), k).astype(bool)
    dg = cv2.dilate(bg.astype(np.uint8), k).astype(bool)
    precision = float((bp & dg).sum()) / n_p
    recall = float((bg & dp).sum()) / n_g
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def j_measure(pred: np.ndarray, gt: np.ndarray, void: "np.ndarray | None" = None) -> float:
    """Region IoU of two binary masks, ``void`` (bool) pixels left out; 1 when both are empty."""
    pred, gt = np.asarray(pred, bool), np.asarray(gt, bool)
    if void is not None:
        pred, gt = pred & ~void, gt & ~void
    union = int((pred | gt).sum())
    return 1.0 if union == 0 else float((pred & gt).sum()) / union


@dataclass
class VideoScores:
    """Result of `evaluate_video`.

    Attributes:
        J, F, JF: tracked (one assignment per sequence) means over objects.
        J_recall, J_decay, F_recall, F_decay: DAVIS Recall and Decay of the tracked
            assignment, means over objects (`db_statistics`).
        oracle_J, oracle_F, oracle_JF: per-frame-oracle means over objects.
        id_switches: total id switches over all objects.
        id_switches_per_100: switches per object per 100 frames where it is present.
        n_frames, n_objects, n_tracks: sizes.
        per_object: per ground-truth object: id, assigned track, J, F, oracle J/F, switches.
    """

    J: float
    F: float
    JF: float
    J_recall: float
    J_decay: float
    F_recall: float
    F_decay: float
    oracle_J: float
    oracle_F: float
    oracle_JF: float
    id_switches: int
    id_switches_per_100: float
    n_frames: int
    n_objects: int
    n_tracks: int
    per_object: list = field(default_factory=list)

    @property
    def ratio(self) -> float:
        """Tracked J&F / per-frame-oracle J&F."""
        return self.JF / self.oracle_JF if self.oracle_JF > 0 else 0.0

    def to_dict(self, per_object: bool = True) -> dict[str, Any]:
        d = {"J": self.J, "F": self.F, "J&F": self.JF, "J_recall": self.J_recall, "J_decay": self.J_decay,
             "F_recall": self.F_recall, "F_decay": self.F_decay, "oracle_J": self.oracle_J, "oracle_F": self.oracle_F,
             "oracle_J&F": self.oracle_JF, "tracked_over_oracle": self.ratio, "id_switches": self.id_switches,
             "id_switches_per_object_per_100_frames": self.id_switches_per_100, "n_frames": self.n_frames,
             "n_objects": self.n_objects, "n_tracks": self.n_tracks}
        d = {k: (round(v, 6) if isinstance(v, float) else v) for k, v in d.items()}
        if per_object:
            d["objects"] = self.per_object
        return d


def _ids(a: np.ndarray, void: "int | None" = None) -> np.ndarray:
    u = np.unique(a)
    return u[(u > 0) & (u != void)] if void is not None else u[u > 0]


def db_statistics(per_frame: np.ndarray) -> tuple[float, float, float]:
    """``(mean, recall, decay)`` of one object's per-frame J or F, as davis2017-evaluation
    computes them: recall = share of frames above 0.5; decay = mean of the first of four
    overlapping bins minus mean of the last (bin edges ``round(linspace(1, n, 5)) - 1``,
    each bin ``v[e_i : e_(i+1) + 1]``). (The official code casts the edges to uint8, which
    wraps above 256 frames; here they stay integers.)"""
    v = np.asarray(per_frame, np.float64)
    edges = (np.round(np.linspace(1, len(v), 5) + 1e-10) - 1).astype(np.int64)
    bins = [v[edges[i]:edges[i + 1] + 1] for i in range(4)]
    return float(np.mean(v)), float(np.mean(v > 0.5)), float(np.mean(bins[0]) - np.mean(bins[3]))


def evaluate_video(load: Callable[[int], tuple[np.ndarray, np.ndarray]], n_frames: int,
                   bound_th: float = 0.008, f_candidates: int = 3, switch_iou: float = 0.5,
                   gt_name: str = "ground truth", void: "int | None" = 255) -> VideoScores:
    """Score a sequence; frames are loaded twice (J pass, F pass), never all at once.

    Args:
        load: ``load(t) -> (pred int (H, W), gt int (H, W))`` for frame t.
        n_frames: number of frames.
        bound_th: F boundary tolerance (fraction of the diagonal, or pixels if >= 1).
        f_candidates: tracks per object for which F is computed in the tracked protocol.
        switch_iou: IoU an id needs to count as the object's id in a frame.
        gt_name: how errors name the ground truth (e.g. its folder).
        void: the ground-truth value of pixels that count nowhere (DAVIS: 255), or None.

    Returns:
        `VideoScores`.
    """
    if n_frames < 1:
        raise InputError("no frames to evaluate")
    # pass 1: ids, J sums, oracle assignments, id switches
    gt_ids: dict[int, int] = {}
    pr_ids: dict[int, int] = {}
    j_entries: list[tuple[int, np.ndarray, np.ndarray, np.ndarray]] = []  # (frame, g, p, IoU)
    g_pres: list[np.ndarray] = []
    p_pres: list[np.ndarray] = []
    oracle: list[list[tuple[int, int]]] = []
    last_id: dict[int, int] = {}
    switches: dict[int, int] = {}
    for t in range(n_frames):
        pred, gt = load(t)
        if pred.shape != gt.shape:
            raise InputError(f"frame {t}: prediction {pred.shape} and ground truth {gt.shape} differ in size")
        vm = (gt == void) if void is not None else None
        if vm is not None and vm.any():
            pred = np.where(vm, 0, pred)  # a void pixel is in no prediction either
        G, P = _ids(gt, void), _ids(pred)
        for g in G:
            gt_ids.setdefault(int(g), len(gt_ids))
        for p in P:
            pr_ids.setdefault(int(p), len(pr_ids))
        gi = np.array([gt_ids[int(g)] for g in G], np.int64)
        pi = np.array([pr_ids[int(p)] for p in P], np.int64)
        g_pres.append(gi)
        p_pres.append(pi)
        pairs: list[tuple[int, int]] = []
        if len(G) and len(P):
            cg = np.where((gt > 0) & ~vm if vm is not None else gt > 0, np.searchsorted(G, gt), -1)
            cp = np.where(pred > 0, np.searchsorted(P, pred), -1)
            keep = (cg >= 0) & (cp >= 0)
            inter = np.bincount(cg[keep] * len(P) + cp[keep], minlength=len(G) * len(P)).reshape(len(G), len(P))
            ag = np.bincount(cg[cg >= 0], minlength=len(G))
            ap = np.bincount(cp[cp >= 0], minlength=len(P))
            iou = inter / np.maximum(ag[:, None] + ap[None, :] - inter, 1)
            nz = np.nonzero(inter)
            j_entries.append((t, gi[nz[0]], pi[nz[1]], iou[nz]))
            r, c = linear_sum_assignment(-iou)
            pairs = [(int(G[a]), int(P[b])) for a, b in zip(r, c) if iou[a, b] > 0]
            for a in range(len(G)):
                b = int(np.argmax(iou[a]))
                if iou[a, b] >= switch_iou:
                    g = int(G[a])
                    pid = int(P[b])
                    if g in last_id and last_id[g] != pid:
                        switches[g] = switches.get(g, 0) + 1
                    last_id[g] = pid
        oracle.append(pairs)
    nG, nP = len(gt_ids), len(pr_ids)
    g_inv = {v: k for k, v in gt_ids.items()}
    p_inv = {v: k for k, v in pr_ids.items()}
    if nG == 0:
        raise InputError(f"{gt_name} has no objects (all frames are 0)")
    n_g = np.zeros(nG, np.int64)
    n_p = np.zeros(nP, np.int64)
    both = np.zeros((nG, nP), np.int64)
    for gi, pi in zip(g_pres, p_pres):
        n_g[gi] += 1
        n_p[pi] += 1
        if len(gi) and len(pi):
            both[np.ix_(gi, pi)] += 1
    j_sum = np.zeros((nG, nP))
    for _, gi, pi, v in j_entries:
        np.add.at(j_sum, (gi, pi), v)
    both_absent = n_frames - n_g[:, None] - n_p[None, :] + both
    J = (j_sum + both_absent) / n_frames  # (nG, nP) mean J over frames
    # candidates for F
    cand = set()
    for g in range(nG):
        for p in np.argsort(-J[g])[:f_candidates]:
            if nP:
                cand.add((g, int(p)))
    # pass 2: F of candidate pairs and of the oracle pairs
    f_frames = {c: np.zeros(n_frames) for c in cand}  # per-frame F (Recall, Decay)
    oj = np.zeros(nG)
    of = np.zeros(nG)
    for t in range(n_frames):
        pred, gt = load(t)
        vm = (gt == void) if void is not None else None
        vm = vm if vm is not None and vm.any() else None
        pres_g = set(g_pres[t].tolist())
        pres_p = set(p_pres[t].tolist())
        for (g, p) in cand:
            gp, pp = g in pres_g, p in pres_p
            if not gp and not pp:
                f_frames[(g, p)][t] = 1.0
            elif gp and pp:
                f_frames[(g, p)][t] = f_measure(pred == p_inv[p], gt == g_inv[g], bound_th, vm)
        matched = dict(oracle[t])
        for g in range(nG):
            gid = g_inv[g]
            if g not in pres_g:
                oj[g] += 1.0
                of[g] += 1.0
                continue
            if gid in matched:
                pm, gm = pred == matched[gid], gt == gid
                oj[g] += j_measure(pm, gm, vm)
                of[g] += f_measure(pm, gm, bound_th, vm)
    F = np.zeros((nG, nP))
    for (g, p), v in f_frames.items():
        F[g, p] = v.mean()
    per = []
    if nP:
        r, c = linear_sum_assignment(-(J + F) / 2)
        assign = dict(zip(r.tolist(), c.tolist()))
    else:
        assign = {}
    g_on = np.zeros((nG, n_frames), bool)  # object / track present in frame t
    p_on = np.zeros((max(nP, 1), n_frames), bool)
    for t, (gi, pi) in enumerate(zip(g_pres, p_pres)):
        g_on[gi, t] = True
        p_on[pi, t] = True
    Js, Fs, stats = [], [], []
    for g in range(nG):
        p = assign.get(g)
        j = float(J[g, p]) if p is not None else 0.0
        f = float(F[g, p]) if p is not None else 0.0
        Js.append(j)
        Fs.append(f)
        jt, ft = _per_frame(g, p, g_on, p_on, j_entries, f_frames)
        stats.append(db_statistics(jt)[1:] + db_statistics(ft)[1:])
        rd = dict(zip(("J_recall", "J_decay", "F_recall", "F_decay"), (round(x, 6) for x in stats[-1])))
        per.append({"object": g_inv[g], "track": p_inv[p] if p is not None else None, "J": round(j, 6),
                    "F": round(f, 6), "oracle_J": round(oj[g] / n_frames, 6), "oracle_F": round(of[g] / n_frames, 6),
                    **rd, "id_switches": switches.get(g_inv[g], 0), "frames_present": int(n_g[g])})
    Jm, Fm = float(np.mean(Js)), float(np.mean(Fs))
    oJ, oF = float(np.mean(oj / n_frames)), float(np.mean(of / n_frames))
    n_sw = int(sum(switches.values()))
    jr, jd, fr, fd = (float(x) for x in np.mean(stats, axis=0))
    return VideoScores(J=Jm, F=Fm, JF=(Jm + Fm) / 2, J_recall=jr, J_decay=jd, F_recall=fr, F_decay=fd,
                       oracle_J=oJ, oracle_F=oF, oracle_JF=(oJ + oF) / 2,
                       id_switches=n_sw, id_switches_per_100=100.0 * n_sw / max(int(n_g.sum()), 1),
                       n_frames=n_frames, n_objects=nG, n_tracks=nP, per_object=per)


def _per_frame(g: int, p: "int | None", g_on: np.ndarray, p_on: np.ndarray, j_entries: list,
               f_frames: dict) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame J and F of object ``g`` with track ``p`` (None: no track): 1 where both are
    absent, 0 where one is, else the frame's value (F = 0 for a pair it was not computed
    for: its mean J is too low for it to be assigned but by lack of choice). ``g_on`` /
    ``p_on``: bool (objects / tracks, frames) presence."""
    gp = g_on[g]
    pp = p_on[p] if p is not None else np.zeros_like(gp)
    jt = np.where(~gp & ~pp, 1.0, 0.0)
    if p is not None:
        for t, gi, pi, v in j_entries:
            hit = (gi == g) & (pi == p)
            if hit.any():
                jt[t] = float(v[hit][0])
    ft = f_frames.get((g, p), np.where(~gp & ~pp, 1.0, 0.0)) if p is not None else jt.copy()
    return jt, ft


def _label_files(d: Path) -> dict[str, Path]:
    if not d.is_dir():
        raise InputError(f"{d}: not a folder of label maps")
    if (d / TRACKS_JSON).is_file() and (d / LABELS_DIR).is_dir():
        d = d / LABELS_DIR  # the output folder of `diffseg video / track`: its label maps
    out = {}
    for p in d.iterdir():
        if p.is_file() and p.suffix.lower() in LABEL_EXTENSIONS and not p.name.startswith("."):
            out.setdefault(p.stem, p)
    if not out:
        raise InputError(f"{d}: no label maps (.png/.npy)")
    return out


def same_aspect(a: tuple[int, ...], b: tuple[int, ...]) -> bool:
    """True when ``(H, W)`` shape ``a`` is a uniform rescaling of ``b`` up to rounding (the
    larger map scaled to either side of the smaller lands within one pixel of the other
    side, as `--max-side` rounds)."""
    (ha, wa), (hb, wb) = a[:2], b[:2]
    if min(ha, wa, hb, wb) < 1:
        return False
    if ha * wa > hb * wb:  # compare in the grid of the smaller map, where rounding happened
        (ha, wa), (hb, wb) = (hb, wb), (ha, wa)
    return abs(hb * wa / wb - ha) <= 1.0 + 1e-9 and abs(wb * ha / hb - wa) <= 1.0 + 1e-9


def evaluate_video_dirs(pred_dir: "str | Path", gt_dir: "str | Path", bound_th: float = 0.008) -> VideoScores:
    """`evaluate_video` on two folders of label maps with the same stems (every GT frame
    needs a prediction)."""
    pred_files, gt_files = _label_files(Path(pred_dir)), _label_files(Path(gt_dir))
    stems = sorted(gt_files, key=natural_key)
    missing = [s for s in stems if s not in pred_files]
    if missing:
        raise InputError(f"{pred_dir}: no prediction for {len(missing)} ground-truth frame(s), e.g. {missing[0]!r}")

    def load(t: int) -> tuple[np.ndarray, np.ndarray]:
        s = stems[t]
        pred, gt = read_labels(pred_files[s]), read_labels(gt_files[s])
        if pred.shape != gt.shape:
            if not same_aspect(pred.shape, gt.shape):
                raise InputError(f"{pred_files[s]}: prediction {s!r} is {pred.shape[0]}x{pred.shape[1]} (HxW) but the "
                                 f"ground truth {gt_files[s].name} is {gt.shape[0]}x{gt.shape[1]}: the aspect ratios "
                                 "differ (only a uniformly rescaled prediction, e.g. from --max-side, is resized)")
            # a uniformly rescaled prediction (``--max-side``) is brought back to the GT grid
            pred = cv2.resize(pred, (gt.shape[1], gt.shape[0]), interpolation=cv2.INTER_NEAREST)
        return pred, gt

    return evaluate_video(load, len(stems), bound_th=bound_th, gt_name=f"{gt_dir}: ground truth")


def evaluate_video_arrays(pred: Sequence[np.ndarray], gt: Sequence[np.ndarray], **kw: Any) -> VideoScores:
    """`evaluate_video` on in-memory label maps (lists of int ``(H, W)``)."""
    if len(pred) != len(gt):
        raise InputError(f"prediction has {len(pred)} frames, ground truth {len(gt)}")
    return evaluate_video(lambda t: (np.asarray(pred[t]), np.asarray(gt[t])), len(gt), **kw)
