"""DiffSeg after the UNet: attention maps -> `Segmentation` (aggregate, merge, refine, NMS)."""
from __future__ import annotations

import time
import warnings
from typing import Any, Sequence

import numpy as np
import torch

from .aggregate import aggregate, layer_grid, square_side
from .config import MergeConfig
from .merge import iterative_merge
from .nms import compact_dtype, relabel_consecutive, upsample_argmax
from .refine import refine_proposals
from .types import AttentionMaps, Segmentation


def _as_tensor(x: Any, name: str) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        if x.dtype.kind not in "fiu":
            raise TypeError(f"{name} must be a float array; got dtype {x.dtype}")
        return torch.from_numpy(np.ascontiguousarray(x))
    if isinstance(x, torch.Tensor):
        return x
    raise TypeError(f"{name} must be a numpy array or torch tensor; got {type(x).__name__}")


def segment_aggregated(agg: "AttentionMaps | torch.Tensor", config: MergeConfig = MergeConfig(),
                       out_size: "tuple[int, int] | None" = None, compact_labels: bool = False) -> Segmentation:
    """Merge, optionally refine, and NMS one image's aggregated attention.

    Args:
        agg: `AttentionMaps` or float ``(N, h, w)`` tensor (``N = h*w``, each map sums to 1).
        config: merge settings (thresholds, anchor grid, refinement, fp16 faithfulness).
        out_size: ``(H, W)`` of the labels; default: 8x the latent grid (the image size).
        compact_labels: labels in the narrowest type that holds ``0..K`` (uint8 for K <= 255)
            instead of int32: a quarter of the memory for huge images.

    Returns:
        `Segmentation` with int32 (or compact) labels ``(H, W)`` in ``0..K-1`` and float32 ``(K, h, w)``
        proposals (each a distribution), K = segments that win at least one pixel.
    """
    maps = agg.maps if isinstance(agg, AttentionMaps) else agg
    maps = _as_tensor(maps, "agg").float()
    if maps.ndim != 3 or maps.shape[0] != maps.shape[1] * maps.shape[2]:
        raise ValueError(f"aggregated maps must be (h*w, h, w); got shape {tuple(maps.shape)}")
    h, w = int(maps.shape[1]), int(maps.shape[2])
    if out_size is None:
        out_size = (8 * h, 8 * w)
    t0 = time.perf_counter()
    props = iterative_merge(maps, (h, w), config.kl_threshold, config.grid, config.faithful_fp16)
    if props.shape[0] == 0 and config.faithful_fp16:
        # Every anchor held a value that float16 flushes to zero (the original would fail
        # here too); the float32 path keeps them.
        warnings.warn("float16 merge dropped every anchor (attention underflows float16); "
                      "falling back to the float32 merge", RuntimeWarning, stacklevel=2)
        props = iterative_merge(maps, (h, w), config.kl_threshold, config.grid, False)
    t1 = time.perf_counter()
    if config.refine and props.shape[0] > 0:
        props = refine_proposals(maps, props, max_iter=config.refine_max_iter)
    t2 = time.perf_counter()
    index = upsample_argmax(props, out_size, dtype=compact_dtype(props.shape[0]) if compact_labels else torch.int32)
    labels, kept = relabel_consecutive(index, props.shape[0])
    props = props[kept].float()
    props = props / props.sum(dim=(1, 2), keepdim=True)
    t3 = time.perf_counter()
    return Segmentation(
        labels=labels.cpu().numpy(),
        proposals=props.cpu().numpy(),
        image_hw=(int(out_size[0]), int(out_size[1])),
        meta={"merge_s": t1 - t0, "refine_s": t2 - t1, "nms_s": t3 - t2,
              "kl_threshold": list(config.kl_threshold), "grid": config.grid,
              "refine": config.refine},
    )


def segment_from_attention(
    maps: Sequence[Any],
    kl_threshold: "float | Sequence[float]" = (1.1, 1.1, 1.1),
    grid: int = 16,
    refine: bool = False,
    out_size: "tuple[int, int] | None" = None,
    latent_hw: "tuple[int, int] | None" = None,
    faithful_fp16: bool = True,
    device: "str | torch.device" = "cpu",
) -> Segmentation:
    """Segment one image from self-attention maps of any model (DiffSeg steps 1-3).

    Args:
        maps: one array per attention layer, ``(heads, N, N)`` or ``(N, N)`` (numpy or torch),
            rows are distributions over the ``N = h_l * w_l`` key positions (row-major).
            Layers of the same size are averaged; resolutions are weighted by side length.
        kl_threshold: symmetric-KL threshold per merge iteration (one value = 3 iterations).
        grid: anchors along the shorter latent side (16 -> 16x16 on a square).
        refine: K-means refinement of the merged proposals.
        out_size: ``(H, W)`` of the labels; default ``8 x`` the finest grid.
        latent_hw: ``(h, w)`` of the finest grid; default: square from the largest map.
        faithful_fp16: round the first merge's inputs to float16 like the original (default;
            reproduces its labels: ARI >= 0.9998 on the reference cases). ``False`` computes in
            float32 with eps clamping, which flips up to ~0.2% of pixels against the original.
        device: where to compute.

    Returns:
        `Segmentation` (labels int32 ``(H, W)`` 0..K-1, proposals float32 ``(K, h, w)``).

    Raises:
        ValueError: wrong shapes, NaN/inf or negative values, rows not summing to 1.
    """
    if isinstance(maps, (np.ndarray, torch.Tensor)):
        maps = [maps]
    if len(maps) == 0:
        raise ValueError("maps must hold at least one attention array")
    tensors: list[torch.Tensor] = []
    for i, m in enumerate(maps):
        t = _as_tensor(m, f"maps[{i}]")
        if t.ndim == 2:
            t = t[None]
        if t.ndim != 3 or t.shape[1] != t.shape[2]:
            raise ValueError(f"maps[{i}] must be (heads, N, N) or (N, N); got shape {tuple(t.shape)}")
        t = t.to(device=device, dtype=torch.float32).mean(0)  # average the heads
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"maps[{i}] holds NaN or infinite values")
        if bool((t < 0).any()):
            raise ValueError(f"maps[{i}] holds negative values; expected attention probabilities")
        rows = t.sum(1)
        if not bool(torch.allclose(rows, torch.ones_like(rows), atol=1e-2)):
            raise ValueError(f"maps[{i}] rows must sum to 1 (softmax probabilities); "
                             f"got sums in [{float(rows.min()):.3g}, {float(rows.max()):.3g}]")
        tensors.append(t)
    if latent_hw is None:
        side = square_side(max(int(t.shape[0]) for t in tensors))
        latent_hw = (side, side)
    shapes = [layer_grid(int(t.shape[0]), latent_hw) for t in tensors]
    agg = aggregate([t[None] for t in tensors], shapes, latent_hw)[0]
    cfg = MergeConfig(kl_threshold=kl_threshold, grid=grid, refine=refine, faithful_fp16=faithful_fp16)
    return segment_aggregated(agg, cfg, out_size)
