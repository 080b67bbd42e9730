"""Semantic segmentation metrics of images: confusion, mIoU, pixel accuracy, and the
per-image Hungarian matching of unnamed segments to classes (the unsupervised protocol of
DiffSeg's COCO-Stuff-27 / Cityscapes tables).

Labels are int ``(H, W)``: ground-truth class ids ``0..C-1`` with an ignore value (255);
predictions are class ids too (-1: no class, always wrong where the ground truth counts).
"""
from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment

from .errors import InputError

__all__ = ["confusion", "mean_iou", "pixel_accuracy", "match_segments_to_classes", "names_to_classes"]


def _check(pred: np.ndarray, gt: np.ndarray) -> None:
    if pred.shape != gt.shape or pred.ndim != 2:
        raise InputError(f"prediction {pred.shape} and ground truth {gt.shape} must be one (H, W) shape")


def confusion(pred: np.ndarray, gt: np.ndarray, n_classes: int, ignore: int = 255) -> np.ndarray:
    """int64 ``(C, C + 1)``: rows ground truth, columns prediction (the last column: no
    class); pixels whose ground truth is ``ignore`` are left out."""
    pred, gt = np.asarray(pred), np.asarray(gt)
    _check(pred, gt)
    keep = gt != ignore
    g = gt[keep].astype(np.int64)
    if g.size and (g.min() < 0 or g.max() >= n_classes):
        raise InputError(f"ground-truth classes must be in 0..{n_classes - 1} (or {ignore}); got {g.min()}..{g.max()}")
    p = pred[keep].astype(np.int64)
    p = np.where((p < 0) | (p >= n_classes), n_classes, p)
    return np.bincount(g * (n_classes + 1) + p, minlength=n_classes * (n_classes + 1)).reshape(n_classes, n_classes + 1)


def mean_iou(conf: np.ndarray) -> float:
    """Mean over the classes present in the ground truth of TP / (TP + FP + FN)."""
    c = conf.shape[0]
    tp = np.diag(conf[:, :c]).astype(np.float64)
    gt = conf.sum(1)
    pred = conf[:, :c].sum(0)
    present = gt > 0
    return float(np.mean(tp[present] / (gt[present] + pred[present] - tp[present]))) if present.any() else float("nan")


def pixel_accuracy(conf: np.ndarray) -> float:
    """Share of counted pixels whose predicted class is right."""
    total = conf.sum()
    return float(np.trace(conf[:, : conf.shape[0]]) / total) if total else float("nan")


def match_segments_to_classes(segments: np.ndarray, gt: np.ndarray, n_classes: int, ignore: int = 255) -> np.ndarray:
    """Class ids of an unnamed segmentation by one-to-one Hungarian matching of its segments
    to the ground-truth classes of the image (largest total overlap); unmatched segments
    get -1 (wrong).

    Args:
        segments: int ``(H, W)`` segment ids ``>= 0`` (negative: none).
    """
    seg, gt = np.asarray(segments), np.asarray(gt)
    _check(seg, gt)
    keep = (gt != ignore) & (seg >= 0)
    ids, inv = np.unique(seg[keep], return_inverse=True)
    out = np.full(seg.shape, -1, np.int64)
    if not len(ids):
        return out
    ov = np.bincount(inv * n_classes + gt[keep].astype(np.int64), minlength=len(ids) * n_classes)
    r, c = linear_sum_assignment(-ov.reshape(len(ids), n_classes))
    lut = np.full(int(seg.max()) + 1, -1, np.int64)
    lut[ids[r]] = c
    out[seg >= 0] = lut[seg[seg >= 0]]
    return out


def names_to_classes(segments: np.ndarray, names: "dict[int, str | None]", classes: "list[str]") -> np.ndarray:
    """Class ids of a named segmentation: each segment's name looked up in ``classes``
    (case-insensitive); unnamed segments and names not in ``classes`` give -1."""
    seg = np.asarray(segments)
    index = {c.lower(): i for i, c in enumerate(classes)}
    top = int(seg.max()) + 1 if seg.size and seg.max() >= 0 else 1
    lut = np.full(top, -1, np.int64)
    for sid, name in names.items():
        if 0 <= sid < top and name is not None:
            lut[sid] = index.get(name.lower(), -1)
    out = np.full(seg.shape, -1, np.int64)
    out[seg >= 0] = lut[seg[seg >= 0]]
    return out
