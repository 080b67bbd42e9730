"""Scores of a predicted label volume against ground truth (Dice after Hungarian matching).

* 3D Dice: one one-to-one Hungarian matching of predicted to ground-truth ids over the whole
  volume (maximising the sum of Dice), then Dice per ground-truth label (0 when unmatched).
* HD95 and surface Dice (medical), for each ground-truth label and its matched prediction,
  in the units of the voxel spacing, as MONAI computes them: surfaces are the voxels of a
  mask that a face-connected erosion removes; HD95 is the larger of the two directed 95th
  percentiles of surface-to-surface distances; surface Dice (normalised surface distance)
  is the share of both surfaces within ``tolerance`` of the other. Unmatched: HD95 None,
  surface Dice 0.
* Instance matching (microscopy, as StarDist and Cellpose report it): predicted and
  ground-truth instances paired one-to-one at IoU >= 0.5; precision, recall, F1 and
  ``accuracy`` = TP / (TP + FP + FN) (Cellpose's "average precision" at 0.5).
* Per-slice-oracle Dice: every slice is matched independently (its own Hungarian), the
  matched intersections are summed over slices, and Dice is computed per ground-truth label
  over the volume. It ignores consistency of ids between slices: the upper bound of what a
  linker can reach from the same slice segmentations.

Ground-truth id 0 is background and not scored; predicted id 0 means "no label".
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
from scipy import ndimage
from scipy.optimize import linear_sum_assignment

from diffseg_core.errors import InputError

from .geometry import slabs
from .postprocess import bounding_boxes, present_ids, ranks


@dataclass
class VolumeScores:
    """Dice scores of one prediction.

    Attributes:
        dice: ground-truth id -> 3D Dice after the global Hungarian matching.
        matched: ground-truth id -> matched predicted id (0 = unmatched).
        mean_dice: mean of ``dice`` over ground-truth labels.
        oracle_dice: ground-truth id -> per-slice-oracle Dice.
        mean_oracle_dice: mean of ``oracle_dice``.
        n_gt: number of ground-truth labels; n_pred: number of predicted labels.
        axis: slicing axis of the oracle.
        instances: instance matching at IoU 0.5 (`instance_matching`).
        hd95, surface_dice: ground-truth id -> HD95 (None when unmatched) and surface Dice,
            with ``surface=True``; ``mean_hd95`` over the matched labels, ``mean_surface_dice``
            over all; ``surface_tolerance`` their tolerance, in the spacing's units.
    """

    dice: dict[int, float]
    matched: dict[int, int]
    mean_dice: float
    oracle_dice: dict[int, float] = field(default_factory=dict)
    mean_oracle_dice: float = float("nan")
    n_gt: int = 0
    n_pred: int = 0
    axis: int = 0
    instances: dict = field(default_factory=dict)
    hd95: "dict[int, float | None]" = field(default_factory=dict)
    mean_hd95: "float | None" = None
    surface_dice: dict[int, float] = field(default_factory=dict)
    mean_surface_dice: "float | None" = None
    surface_tolerance: "float | None" = None

    def to_dict(self) -> dict:
        d = asdict(self)
        for k in ("dice", "matched", "oracle_dice", "hd95", "surface_dice"):
            d[k] = {str(a): b for a, b in d[k].items()}
        return d


def contingency(gt: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Joint voxel counts of ground-truth and predicted ids.

    Returns:
        ``(table, gt_ids, pred_ids)``: int64 ``(G + 1, P + 1)`` (row/column 0 = id 0),
        and the sorted non-zero ids.
    """
    if gt.shape != pred.shape:
        raise ValueError(f"prediction {pred.shape} and ground truth {gt.shape} differ in shape")
    g_ids, p_ids = present_ids(gt), present_ids(pred)
    ng, npd = len(g_ids) + 1, len(p_ids) + 1
    table = np.zeros(ng * npd, np.int64)
    for sl in slabs(gt.shape):
        gi = ranks(np.asarray(gt[sl]), g_ids).ravel()
        pi = ranks(np.asarray(pred[sl]), p_ids).ravel()
        table += np.bincount(gi * npd + pi, minlength=ng * npd)
    return table.reshape(ng, npd), g_ids, p_ids


def _match(table: np.ndarray) -> np.ndarray:
    """Hungarian on Dice of a contingency table (row/col 0 excluded): pred column per gt row."""
    inter = table[1:, 1:].astype(np.float64)
    g = table[1:, :].sum(1).astype(np.float64)
    p = table[:, 1:].sum(0).astype(np.float64)
    match = np.full(inter.shape[0], -1, np.int64)
    if inter.size == 0:
        return match
    dice = 2 * inter / np.maximum(g[:, None] + p[None, :], 1)
    r, c = linear_sum_assignment(-dice)
    ok = dice[r, c] > 0
    match[r[ok]] = c[ok]
    return match


def volume_dice(pred: np.ndarray, gt: np.ndarray, oracle: bool = True, axis: int = 0,
                gt_name: str = "ground truth", surface: bool = False,
                spacing: "tuple[float, float, float]" = (1.0, 1.0, 1.0), tolerance: float = 1.0) -> VolumeScores:
    """3D Dice after one global Hungarian matching, the per-slice-oracle Dice, instance
    matching at IoU 0.5, and (``surface``) HD95 and surface Dice of the matched labels.

    Args:
        pred: int ``(D, H, W)`` predicted ids (0 = none): an array, a memory map or a lazily
            read stack (`volume.types.LazyStack`).
        gt: int ``(D, H, W)`` ground-truth ids (0 = background, not scored), the same kinds.
        oracle: also compute the per-slice-oracle Dice.
        axis: slicing axis of the oracle (0, 1, 2).
        gt_name: how errors name the ground truth (e.g. its file).
        surface: also compute HD95 and surface Dice (a distance transform per label).
        spacing: ``(dz, dy, dx)`` voxel size of the distances (mm for medical volumes).
        tolerance: surface Dice tolerance, in the units of ``spacing``.

    Returns:
        `VolumeScores`.
    """
    pred, gt = np.asarray(pred), np.asarray(gt)  # a lazily read stack (compressed TIFF, slice files) whole
    table, g_ids, p_ids = contingency(gt, pred)
    if len(g_ids) == 0:  # every score would be 0/0
        raise InputError(f"{gt_name} has no labels (every voxel is 0): nothing to score")
    match = _match(table)
    g_tot = table[1:, :].sum(1)
    p_tot = table[:, 1:].sum(0)
    dice: dict[int, float] = {}
    matched: dict[int, int] = {}
    for i, gid in enumerate(g_ids):
        j = match[i]
        if j < 0:
            dice[int(gid)], matched[int(gid)] = 0.0, 0
        else:
            dice[int(gid)] = float(2 * table[i + 1, j + 1] / (g_tot[i] + p_tot[j]))
            matched[int(gid)] = int(p_ids[j])
    scores = VolumeScores(dice=dice, matched=matched,
                          mean_dice=float(np.mean(list(dice.values()))) if dice else float("nan"),
                          n_gt=len(g_ids), n_pred=len(p_ids), axis=axis, instances=instance_matching(table))
    if surface:
        scores.hd95, scores.surface_dice = surface_scores(pred, gt, matched, spacing, tolerance)
        hd = [v for v in scores.hd95.values() if v is not None]
        scores.mean_hd95 = float(np.mean(hd)) if hd else None
        scores.mean_surface_dice = float(np.mean(list(scores.surface_dice.values())))
        scores.surface_tolerance = float(tolerance)
    if oracle:
        scores.oracle_dice = oracle_dice(pred, gt, axis, g_ids)
        vals = list(scores.oracle_dice.values())
        scores.mean_oracle_dice = float(np.mean(vals)) if vals else float("nan")
    return scores


def instance_matching(table: np.ndarray, thresh: float = 0.5) -> dict:
    """Instances paired one-to-one (Hungarian on IoU, pairs below ``thresh`` do not count)
    from a `contingency` table: ``tp``, ``fp`` (unpaired predictions), ``fn`` (unpaired
    ground truth), ``precision``, ``recall``, ``f1``, ``accuracy`` = TP / (TP + FP + FN)
    (Cellpose's average precision), ``thresh``: StarDist's ``matching`` definitions."""
    inter = table[1:, 1:].astype(np.float64)
    g = table[1:, :].sum(1).astype(np.float64)
    p = table[:, 1:].sum(0).astype(np.float64)
    n_true, n_pred = inter.shape
    tp = 0
    if inter.size:
        iou = inter / np.maximum(g[:, None] + p[None, :] - inter, 1)
        ok = iou >= thresh
        r, c = linear_sum_assignment(-(iou * ok))
        tp = int(ok[r, c].sum())
    fp, fn = n_pred - tp, n_true - tp
    return {"thresh": thresh, "tp": tp, "fp": fp, "fn": fn,
            "precision": tp / n_pred if n_pred else 0.0, "recall": tp / n_true if n_true else 0.0,
            "f1": 2 * tp / (n_pred + n_true) if n_pred + n_true else 0.0,
            "accuracy": tp / (tp + fp + fn) if tp + fp + fn else 0.0}


def _surface(mask: np.ndarray) -> np.ndarray:
    """The voxels of a mask that a face-connected erosion removes (outside = background)."""
    return mask & ~ndimage.binary_erosion(mask)


def surface_distances(a: np.ndarray, b: np.ndarray, spacing: "tuple[float, ...]") -> tuple[np.ndarray, np.ndarray]:
    """Distances from every surface voxel of mask ``a`` to the surface of ``b`` and back
    (``spacing`` units), both masks non-empty. Exact on any crop holding both masks (outside
    a crop both are 0, which is what the erosion assumes at the border): crop to their joint
    bounding box first, as `surface_scores` does."""
    sa, sb = _surface(a), _surface(b)
    da = ndimage.distance_transform_edt(~sb, sampling=spacing)[sa]
    db = ndimage.distance_transform_edt(~sa, sampling=spacing)[sb]
    return da, db


def surface_scores(pred: np.ndarray, gt: np.ndarray, matched: "dict[int, int]", spacing: "tuple[float, ...]",
                   tolerance: float) -> tuple["dict[int, float | None]", dict[int, float]]:
    """HD95 and surface Dice of every ground-truth label with its matched prediction (see
    the module docstring); each label's work is limited to its bounding box."""
    hd95: "dict[int, float | None]" = {}
    nsd: dict[int, float] = {}
    g_boxes, p_boxes = bounding_boxes(gt), bounding_boxes(pred)
    for gid, pid in matched.items():
        if pid == 0:
            hd95[gid], nsd[gid] = None, 0.0
            continue
        gb, pb = g_boxes[gid], p_boxes[pid]
        box = tuple(slice(min(x.start, y.start), max(x.stop, y.stop)) for x, y in zip(gb, pb))
        da, db = surface_distances(np.asarray(pred[box]) == pid, np.asarray(gt[box]) == gid, spacing)
        hd95[gid] = float(max(np.percentile(da, 95), np.percentile(db, 95)))
        nsd[gid] = float(((da <= tolerance).sum() + (db <= tolerance).sum()) / (len(da) + len(db)))
    return hd95, nsd


def oracle_dice(pred: np.ndarray, gt: np.ndarray, axis: int = 0,
                g_ids: "np.ndarray | None" = None) -> dict[int, float]:
    """Per-slice-oracle Dice: each slice along ``axis`` matched on its own (Hungarian on
    slice Dice); intersections and matched predicted areas summed over slices.

    Returns:
        Ground-truth id -> Dice.
    """
    if g_ids is None:
        g_ids = present_ids(gt)
    inter_sum = np.zeros(len(g_ids), np.float64)
    pred_sum = np.zeros(len(g_ids), np.float64)
    gt_sum = np.zeros(len(g_ids), np.float64)
    for z in range(gt.shape[axis]):
        g = np.take(gt, z, axis=axis)
        p = np.asarray(np.take(pred, z, axis=axis))
        gi = ranks(np.asarray(g), g_ids)
        p_ids = np.unique(p)
        p_ids = p_ids[p_ids != 0]
        pi = ranks(p, p_ids)
        n_p = len(p_ids) + 1
        t = np.bincount((gi * n_p + pi).ravel(), minlength=(len(g_ids) + 1) * n_p).reshape(-1, n_p)
        gt_sum += t[1:, :].sum(1)
        match = _match(t)
        hit = match >= 0
        rows = np.flatnonzero(hit)
        inter_sum[rows] += t[rows + 1, match[hit] + 1]
        pred_sum[rows] += t[:, 1:].sum(0)[match[hit]]
    return {int(gid): float(2 * inter_sum[i] / max(gt_sum[i] + pred_sum[i], 1)) for i, gid in enumerate(g_ids)}
