"""Helpers of `bench_volume.py`: DiffSeg-like per-slice segmentations and 3D phantoms.

`diffseg_like_slices` turns reference 3D labels into what a slice-wise unsupervised
segmenter produces: every slice labelled on its own (ids shuffled per slice), the
background split into pieces that change from slice to slice, jittered boundaries, and
occasional splits of one structure in two and merges of two touching structures.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage


@dataclass(frozen=True)
class SimConfig:
    """Perturbations of `diffseg_like_slices`.

    Attributes:
        bg_pieces: (min, max) number of background pieces per slice (random Voronoi cells).
        jitter: probability that a boundary pixel takes a neighbour's label.
        jitter_width: boundary band (pixels) where jitter applies.
        p_split: per slice and structure, probability of a split along a random line.
        p_merge: per slice, probability that one pair of touching structures is merged.
        min_split_area: structures smaller than this (pixels) are never split.
    """

    bg_pieces: tuple[int, int] = (2, 4)
    jitter: float = 0.3
    jitter_width: int = 1
    p_split: float = 0.05
    p_merge: float = 0.1
    min_split_area: int = 40


def _touching_pairs(lab: np.ndarray) -> np.ndarray:
    a = np.concatenate([lab[:, :-1].ravel(), lab[:-1, :].ravel()])
    b = np.concatenate([lab[:, 1:].ravel(), lab[1:, :].ravel()])
    m = (a != b) & (a > 0) & (b > 0)
    if not m.any():
        return np.zeros((0, 2), np.int64)
    pairs = np.unique(np.sort(np.stack([a[m], b[m]], 1), axis=1), axis=0)
    return pairs


def diffseg_like_slice(gt: np.ndarray, rng: np.random.Generator, cfg: SimConfig = SimConfig()) -> np.ndarray:
    """One slice: reference labels ``(H, W)`` (0 = background) -> DiffSeg-like labels 1..K.

    Args:
        gt: int ``(H, W)`` reference labels.
        rng: random generator.
        cfg: perturbation settings.

    Returns:
        int32 ``(H, W)`` labels ``1..K`` (no background value), shuffled.
    """
    H, W = gt.shape
    lab = gt.astype(np.int64).copy()
    nxt = int(lab.max()) + 1
    # Merges of touching structures.
    if rng.random() < cfg.p_merge:
        pairs = _touching_pairs(lab)
        if len(pairs):
            a, b = pairs[rng.integers(len(pairs))]
            lab[lab == b] = a
    # Splits along a random line through the centroid.
    ids, areas = np.unique(lab[lab > 0], return_counts=True)
    yy, xx = np.mgrid[:H, :W]
    for i, ar in zip(ids, areas):
        if ar >= cfg.min_split_area and rng.random() < cfg.p_split:
            m = lab == i
            cy, cx = yy[m].mean(), xx[m].mean()
            th = rng.uniform(0, np.pi)
            side = (yy - cy) * np.sin(th) + (xx - cx) * np.cos(th) > 0
            lab[m & side] = nxt
            nxt += 1
    # Background in inconsistent pieces (Voronoi cells of random seeds).
    bg = lab == 0
    n_bg = int(rng.integers(cfg.bg_pieces[0], cfg.bg_pieces[1] + 1))
    if bg.any():
        seeds = np.zeros((H, W), np.int64)
        sy, sx = rng.integers(0, H, n_bg), rng.integers(0, W, n_bg)
        seeds[sy, sx] = np.arange(1, n_bg + 1)
        _, (iy, ix) = ndimage.distance_transform_edt(seeds == 0, return_indices=True)
        cell = seeds[iy, ix]
        cell[cell == 0] = 1
        lab[bg] = nxt + cell[bg] - 1
        nxt += n_bg
    # Boundary jitter: boundary pixels take a random neighbour's label.
    for _ in range(cfg.jitter_width):
        pad = np.pad(lab, 1, mode="edge")
        shifts = [pad[:-2, 1:-1], pad[2:, 1:-1], pad[1:-1, :-2], pad[1:-1, 2:]]
        boundary = np.zeros((H, W), bool)
        for s in shifts:
            boundary |= s != lab
        d = rng.integers(0, 4, size=(H, W))
        nb = np.choose(d, shifts)
        flip = boundary & (rng.random((H, W)) < cfg.jitter)
        lab = np.where(flip, nb, lab)
    # Shuffle ids per slice: 1..K in random order.
    vals, inv = np.unique(lab, return_inverse=True)
    perm = rng.permutation(len(vals)) + 1
    return perm[inv.reshape(H, W)].astype(np.int32)


def diffseg_like_volume(gt: np.ndarray, seed: int = 0, cfg: SimConfig = SimConfig(), axis: int = 0) -> np.ndarray:
    """Apply `diffseg_like_slice` to every slice of ``gt`` along ``axis`` (int32 output)."""
    rng = np.random.default_rng(seed)
    out = np.zeros(gt.shape, np.int32)
    for i in range(gt.shape[axis]):
        sl = [slice(None)] * 3
        sl[axis] = i
        out[tuple(sl)] = diffseg_like_slice(np.asarray(gt[tuple(sl)]), rng, cfg)
    return out


def phantom(shape: tuple[int, int, int] = (24, 96, 96), spacing: tuple[float, float, float] = (3.0, 0.75, 0.75),
            seed: int = 0) -> np.ndarray:
    """Ellipsoid phantom with exact labels in physical space (mm), on an anisotropic grid.

    Contains: two touching ellipsoids (1, 2), a nested pair (shell 3 around core 4), and a
    few small separate ellipsoids (5..). Background 0.
    """
    rng = np.random.default_rng(seed)
    D, H, W = shape
    dz, dy, dx = spacing
    z, y, x = np.meshgrid(np.arange(D) * dz, np.arange(H) * dy, np.arange(W) * dx, indexing="ij")
    Z, Y, X = D * dz, H * dy, W * dx
    lab = np.zeros(shape, np.int32)

    def ell(cz, cy, cx, rz, ry, rx):
        return ((z - cz) / rz) ** 2 + ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 < 1

    # Touching pair: two ellipsoids sharing a flat face at x = X*0.3.
    a = ell(Z * .5, Y * .3, X * .3, Z * .35, Y * .18, X * .16)
    b = ell(Z * .5, Y * .3, X * .3, Z * .3, Y * .15, X * .16 * 2)
    lab[a & (x < X * .3)] = 1
    lab[b & (x >= X * .3)] = 2
    # Nested: shell 3 with core 4.
    outer = ell(Z * .5, Y * .7, X * .65, Z * .38, Y * .2, X * .2)
    inner = ell(Z * .5, Y * .7, X * .65, Z * .2, Y * .1, X * .1)
    lab[outer] = 3
    lab[inner] = 4
    # Small separate ellipsoids.
    k = 5
    for _ in range(4):
        c = (rng.uniform(.25, .75) * Z, rng.uniform(.1, .3) * Y + Y * .55 * (k % 2), rng.uniform(.1, .9) * X)
        r = (rng.uniform(.1, .2) * Z, rng.uniform(.04, .07) * Y, rng.uniform(.04, .07) * X)
        m = ell(*c, *r) & (lab == 0)
        if m.sum() > 20:
            lab[m] = k
            k += 1
    return lab
