"""Matching math: overlaps, IoU, symmetric KL between proposal maps, colour histograms and
their Bhattacharyya likeness. Pure functions on numpy arrays."""
from __future__ import annotations

import cv2
import numpy as np



def overlap_matrix(a: np.ndarray, n_a: int, b: np.ndarray, n_b: int) -> np.ndarray:
    """Pixel counts of every (a-label, b-label) pair.

    Args:
        a: int ``(H, W)`` with values in ``-1..n_a-1`` (-1 = ignore).
        b: int ``(H, W)`` with values in ``-1..n_b-1`` (-1 = ignore).

    Returns:
        int64 ``(n_a, n_b)``: ``out[i, j] = #{a == i and b == j}``.
    """
    a = np.asarray(a).ravel()
    b = np.asarray(b).ravel()
    if a.shape != b.shape:
        raise ValueError(f"label maps differ in size: {a.shape} vs {b.shape}")
    keep = (a >= 0) & (b >= 0)
    if not keep.all():
        a, b = a[keep], b[keep]
    flat = a.astype(np.int64) * n_b + b
    return np.bincount(flat, minlength=n_a * n_b)[: n_a * n_b].reshape(n_a, n_b)


def iou_from_overlap(inter: np.ndarray, area_a: np.ndarray, area_b: np.ndarray) -> np.ndarray:
    """IoU ``(n_a, n_b)`` from intersections and areas (0 where the union is empty)."""
    inter = inter.astype(np.float64)
    union = area_a[:, None].astype(np.float64) + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1), 0.0)


def symmetric_kl_matrix(p: np.ndarray, q: np.ndarray, eps: float = 1e-8) -> np.ndarray:
    """Symmetric KL ``KL(p_i || q_j) + KL(q_j || p_i)`` between two sets of distributions.

    Args:
        p: float ``(M, ...)`` distributions (flattened; clamped by eps and renormalised).
        q: float ``(K, ...)`` distributions on the same grid.

    Returns:
        float64 ``(M, K)``, >= 0, symmetric in (p, q).
    """
    p = np.asarray(p, np.float32).reshape(len(p), -1)
    q = np.asarray(q, np.float32).reshape(len(q), -1)
    if p.shape[1] != q.shape[1]:
        raise ValueError(f"proposal grids differ: {p.shape[1]} vs {q.shape[1]} cells")
    if len(p) == 0 or len(q) == 0:
        return np.zeros((len(p), len(q)))
    p = np.maximum(p, np.float32(eps))
    q = np.maximum(q, np.float32(eps))
    p /= p.sum(1, keepdims=True)
    q /= q.sum(1, keepdims=True)
    lp, lq = np.log(p), np.log(q)
    # sum_x (p - q)(log p - log q) = sum p lp + sum q lq - p @ lq.T - lp @ q.T
    hp = np.einsum("ij,ij->i", p, lp, dtype=np.float64)
    hq = np.einsum("ij,ij->i", q, lq, dtype=np.float64)
    out = hp[:, None] + hq[None, :] - (p @ lq.T).astype(np.float64) - (lp @ q.T).astype(np.float64)
    return np.maximum(out, 0.0)


def kl_similarity(skl: np.ndarray, tau: float) -> np.ndarray:
    """Map symmetric KL (nats) to a similarity in (0, 1]: ``exp(-skl / tau)``."""
    return np.exp(-np.asarray(skl) / tau)


def color_cells(image: np.ndarray, bins: int = 8) -> np.ndarray:
    """Colour histogram cell of every pixel: int32 ``(H, W)`` in ``0..bins**3 - 1`` (uint8
    RGB ``(H, W, 3)`` quantised to ``bins`` levels per channel)."""
    if not 1 <= bins <= 256:
        raise ValueError(f"bins must be in 1..256; got {bins}")
    levels = ((np.arange(256) * bins) >> 8).astype(np.uint8)  # level of each channel value
    lev = cv2.LUT(np.ascontiguousarray(image, dtype=np.uint8), levels)
    if bins ** 3 <= 1 << 16:  # one matrix product a pixel (exact in float32), in half the time
        return cv2.transform(lev.astype(np.uint16), np.array([[bins * bins, bins, 1]], np.float32)).astype(np.int32)
    r, g, b = cv2.split(lev)
    cells = r.astype(np.int32)
    cells *= bins
    cells += g
    cells *= bins
    cells += b
    return cells


def color_histograms(image: np.ndarray, labels: np.ndarray, n: int, bins: int = 8) -> np.ndarray:
    """Normalised RGB colour histogram of every label (`cell_histograms` when the frame's
    `color_cells` are at hand already).

    Args:
        image: uint8 ``(H, W, 3)``.
        labels: int ``(H, W)`` with values ``-1..n-1`` (-1 ignored).
        n: number of labels.
        bins: bins per channel (``bins**3`` cells).

    Returns:
        float32 ``(n, bins**3)``, rows sum to 1 (all-zero for empty labels).
    """
    return cell_histograms(color_cells(image, bins), labels, n, bins)


def cell_histograms(cells: np.ndarray, labels: np.ndarray, n: int, bins: int = 8) -> np.ndarray:
    """`color_histograms` from a frame's `color_cells` (computed once a frame by the caller)."""
    return normalise_rows(overlap_matrix(labels, n, cells, bins ** 3).astype(np.float32))


def normalise_rows(counts: np.ndarray) -> np.ndarray:
    """Histograms from counts ``(n, B)``: each row divided by its sum (empty rows stay 0)."""
    return counts / np.maximum(counts.sum(1, keepdims=True), 1)


def bhattacharyya(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Bhattacharyya coefficients ``(M, K)`` in [0, 1] between histogram rows of a and b."""
    return np.sqrt(np.maximum(a, 0)) @ np.sqrt(np.maximum(b, 0)).T
