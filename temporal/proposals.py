"""Proposal maps for segmentations that come without attention (bring-your-own labels).

DiffSeg gives every segment a merged attention map on the latent grid; a label map made by
another segmenter has none. We derive a stand-in: each segment's area fraction on a coarse
grid (``side`` cells on the shorter image side, INTER_AREA downsampling of the one-hot
mask), plus a small floor so that KL stays finite, normalised to sum to 1. Such a map
encodes where the segment is and its rough shape, not its appearance (colour histograms
supply that in the tracker).
"""
from __future__ import annotations

import cv2
import numpy as np

from diffseg_core.types import Segmentation


def grid_hw(image_hw: tuple[int, int], side: int) -> tuple[int, int]:
    """``(h, w)`` of a grid with ``side`` cells on the shorter side, aspect kept (>= 1)."""
    H, W = image_hw
    s = side / max(1, min(H, W))
    return max(1, int(round(H * s))), max(1, int(round(W * s)))


def proposals_from_labels(labels: np.ndarray, num_segments: "int | None" = None, side: int = 32,
                          floor: float = 1e-3) -> np.ndarray:
    """Derive proposal maps from a label map.

    Each grid cell gets its share of the segment's area (measured on a nearest-neighbour
    sampling 4x finer than the grid), then ``floor`` is spread over the grid and every map
    is normalised: ``p = (share + floor / cells) / (1 + floor)``. The floor keeps KL finite;
    as a share of the whole map it leaves a tiny segment's map as concentrated as a big
    one's (a floor per cell made a few-pixel segment's map almost uniform, alike to
    anything).

    Args:
        labels: int ``(H, W)`` with values ``0..K-1``.
        num_segments: K (default ``labels.max() + 1``).
        side: grid cells on the shorter side (at most the image's shorter side).
        floor: probability mass spread evenly over the grid (keeps KL finite).

    Returns:
        float32 ``(K, h, w)``, each summing to 1.
    """
    labels = np.asarray(labels)
    k = int(labels.max()) + 1 if num_segments is None else int(num_segments)
    H, W = labels.shape
    h, w = grid_hw((H, W), min(side, H, W))
    sub = 4 if min(H, W) >= 4 * min(h, w) else 1
    fine = labels.astype(np.int32, copy=False)
    if fine.shape != (h * sub, w * sub):
        fine = cv2.resize(fine, (w * sub, h * sub), interpolation=cv2.INTER_NEAREST)
    cell = (np.arange(h * sub) // sub)[:, None] * w + (np.arange(w * sub) // sub)[None, :]
    counts = np.bincount((fine.astype(np.int64) * (h * w) + cell).ravel(), minlength=k * h * w)[: k * h * w]
    out = counts.reshape(k, h, w).astype(np.float32)
    out /= np.maximum(out.reshape(k, -1).sum(1), 1)[:, None, None]  # where the segment is, whatever its size
    out += np.float32(floor / (h * w))
    out /= out.reshape(k, -1).sum(1)[:, None, None]
    return out


def relabel_consecutive(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Map arbitrary non-negative labels to ``0..K-1`` (order of the values kept).

    Returns:
        ``(int32 (H, W) labels 0..K-1, int64 (K,) original value of each new label)``.
    """
    labels = np.asarray(labels)
    if labels.size and labels.dtype.kind in "iu" and int(labels.min()) >= 0 and int(labels.max()) < (1 << 22):
        present = np.bincount(labels.ravel()) > 0  # O(n), no sort
        values = np.flatnonzero(present)
        lut = np.cumsum(present, dtype=np.int32) - 1
        return np.take(lut, labels), values.astype(np.int64)
    values, inv = np.unique(labels, return_inverse=True)
    return inv.reshape(labels.shape).astype(np.int32), values.astype(np.int64)


def segment_index(labels: np.ndarray, background: "int | None" = None) -> tuple[np.ndarray, np.ndarray]:
    """Any label map -> segment index ``0..K-1`` (``-1`` where the value is ``background``).

    Returns:
        ``(int32 (H, W) index, int64 (K,) original value of each segment)``.
    """
    lab, values = relabel_consecutive(labels)
    if background is not None and np.any(values == background):
        b = int(np.flatnonzero(values == background)[0])
        lab = np.where(lab == b, -1, lab - (lab > b)).astype(np.int32)
        values = np.delete(values, b)
    return lab, values


def segmentation_from_labels(labels: np.ndarray, side: int = 32, floor: float = 1e-3,
                             work_side: int = 240, background: "int | None" = None) -> Segmentation:
    """A `Segmentation` from any label map (values need not be consecutive).

    Proposal maps are derived from the masks (see module docstring); to save time they are
    computed from a nearest-neighbour copy of the labels at ``work_side`` on the shorter side.

    Args:
        labels: int ``(H, W)`` label map; every distinct value is one segment.
        background: the value meaning "no segment" (its pixels get index -1), or None.

    Returns:
        `Segmentation` with int32 labels ``0..K-1`` (-1 = background) and float32
        ``(K, h, w)`` proposals; ``meta["source_values"]`` holds the original value of each
        segment.
    """
    lab, values = segment_index(labels, background)
    K = len(values)
    small = resize_labels(lab, work_side) if work_side else lab
    props = proposals_from_labels(np.where(small < 0, K, small), K + 1, side=side, floor=floor)[:K]
    return Segmentation(labels=lab, proposals=props, image_hw=lab.shape,
                        meta={"source_values": values.tolist(), "proposals": "derived-from-masks"})


def resize_labels(labels: np.ndarray, short_side: int) -> np.ndarray:
    """Nearest-neighbour resize of a label map so the shorter side is ``short_side``
    (never upscales)."""
    H, W = labels.shape
    if short_side <= 0 or min(H, W) <= short_side:
        return labels
    h, w = grid_hw((H, W), short_side)
    return cv2.resize(labels.astype(np.int32, copy=False), (w, h), interpolation=cv2.INTER_NEAREST)
