"""Optional K-means refinement of the merged proposals (the original's ``refine=True``).

The original runs scikit-learn ``KMeans(n_clusters=K, init=proposals, n_init=1)`` on the
``N`` aggregated attention maps and replaces every proposal by the mean of its cluster.
This is the same Lloyd iteration (sklearn's stopping rules and empty-cluster relocation)
written as float64 matrix products in torch, so it runs on the GPU too and needs no sklearn.
"""
from __future__ import annotations

import torch


def kmeans_lloyd(x: torch.Tensor, init: torch.Tensor, max_iter: int = 300,
                 tol: float = 1e-4) -> torch.Tensor:
    """Lloyd's K-means from given centres, with scikit-learn's convergence rules.

    Args:
        x: ``(N, D)`` samples.
        init: ``(K, D)`` initial centres.
        max_iter: maximum iterations.
        tol: relative tolerance on the total squared centre shift (times the mean feature
            variance, as sklearn).

    Returns:
        long ``(N,)`` cluster index of every sample.
    """
    x = x.double()
    mean = x.mean(0, keepdim=True)
    x = x - mean  # sklearn centres the data for precision
    centers = init.double() - mean
    K = centers.shape[0]
    tol_abs = float(x.var(0, unbiased=False).mean()) * tol
    labels_old = torch.full((x.shape[0],), -1, dtype=torch.long, device=x.device)
    strict = False
    labels = labels_old
    for _ in range(max_iter):
        labels = _assign(x, centers)
        new = _update(x, labels, centers, K)
        shift = ((new - centers) ** 2).sum()
        centers = new
        if torch.equal(labels, labels_old):
            strict = True
            break
        if float(shift) <= tol_abs:
            break
        labels_old = labels
    if not strict:
        labels = _assign(x, centers)
    return labels


def _assign(x: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
    # ||x - c||^2 up to the per-sample constant ||x||^2; argmin ties go to the lowest index.
    d = (centers * centers).sum(1)[None, :] - 2.0 * (x @ centers.T)
    return d.argmin(1)


def _update(x: torch.Tensor, labels: torch.Tensor, centers_old: torch.Tensor, K: int) -> torch.Tensor:
    sums = torch.zeros(K, x.shape[1], dtype=x.dtype, device=x.device).index_add_(0, labels, x)
    counts = torch.bincount(labels, minlength=K).to(x.dtype)
    empty = torch.nonzero(counts == 0).reshape(-1)
    if len(empty):
        # Relocate empty clusters to the samples farthest from their centres (as sklearn).
        dist = ((x - centers_old[labels]) ** 2).sum(1)
        far = torch.argsort(dist, descending=True)[: len(empty)]
        for new_id, idx in zip(empty.tolist(), far.tolist()):
            old_id = int(labels[idx])
            sums[old_id] -= x[idx]
            counts[old_id] -= 1
            sums[new_id] = x[idx]
            counts[new_id] = 1
    return sums / counts.clamp_min(1)[:, None]


def refine_proposals(maps: torch.Tensor, proposals: torch.Tensor, max_iter: int = 300) -> torch.Tensor:
    """Replace each proposal by the mean of the maps K-means assigns to it.

    Args:
        maps: ``(N, h, w)`` aggregated attention.
        proposals: ``(K, h, w)`` merged proposals (the initial centres).
        max_iter: Lloyd iterations.

    Returns:
        float64 ``(K', h, w)``, ``K' <= K`` (clusters left empty are dropped).
    """
    N, h, w = maps.shape
    x = maps.reshape(N, h * w).double()
    labels = kmeans_lloyd(x, proposals.reshape(-1, h * w), max_iter=max_iter)
    K = proposals.shape[0]
    sums = torch.zeros(K, h * w, dtype=x.dtype, device=x.device).index_add_(0, labels, x)
    counts = torch.bincount(labels, minlength=K)
    keep = counts > 0
    return (sums[keep] / counts[keep, None].to(x.dtype)).reshape(-1, h, w)
