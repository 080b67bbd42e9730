"""Data types that flow between `diffseg_core`, `temporal` and `volume`.

Canonical storage is numpy (what OpenCV, scipy and the file writers consume);
`Segmentation.to(device)` gives a torch view for GPU-side matching.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence

import numpy as np


@dataclass
class AttentionMaps:
    """Aggregated self-attention of one image.

    Attributes:
        maps: float32 ``(N, h, w)`` with ``N = h * w``; ``maps[q]`` is the attention
            distribution of query position ``q`` (row-major) over the ``h x w`` key grid,
            each sums to 1.
        latent_hw: ``(h, w)`` of the finest attention grid (the VAE latent).
    """

    maps: Any
    latent_hw: tuple[int, int]

    def __post_init__(self) -> None:
        h, w = self.latent_hw
        shape = tuple(self.maps.shape)
        if len(shape) != 3 or shape[0] != h * w or shape[1:] != (h, w):
            raise ValueError(
                f"AttentionMaps.maps must be (h*w, h, w) = ({h * w}, {h}, {w}); got shape {shape}"
            )


@dataclass
class SegmentNames:
    """Names of the segments of one image (`diffseg_core.naming`).

    Attributes:
        vocabulary: the ``V`` words.
        scores: float32 ``(K, V)``: per segment, the share of its evidence that goes to each
            word (rows sum to 1; 0 where the segment had no attention).
        names: per segment ``0..K-1``, its word or None (no word reached ``min_score``).
    """

    vocabulary: tuple[str, ...]
    scores: Any
    names: list

    def score(self, k: int) -> float:
        """The score of segment ``k``'s name: its best word's share minus the runner-up's."""
        top = np.sort(np.asarray(self.scores[k], dtype=np.float64))[::-1]
        return float(top[0] - (top[1] if len(top) > 1 else 0.0)) if len(top) else 0.0


@dataclass
class Segmentation:
    """DiffSeg result for one image.

    Attributes:
        labels: int32 ``(H, W)`` segment index per pixel, values ``0..K-1`` (all present).
        proposals: float32 ``(K, h, w)``: the merged attention map of every segment on the
            latent grid, each a distribution (sums to 1). Drives KL matching across frames.
        image_hw: ``(H, W)`` of the image the labels belong to.
        meta: free-form provenance (model id, thresholds, timings).
        names: the segments' names when a vocabulary was given (`SegmentNames`), else None.
    """

    labels: Any
    proposals: Any
    image_hw: tuple[int, int] = (0, 0)
    meta: dict = field(default_factory=dict)
    names: "SegmentNames | None" = None

    def __post_init__(self) -> None:
        if tuple(self.image_hw) == (0, 0):
            self.image_hw = tuple(int(s) for s in self.labels.shape[-2:])
        self.image_hw = (int(self.image_hw[0]), int(self.image_hw[1]))
        if self.labels.ndim != 2 or tuple(self.labels.shape) != self.image_hw:
            raise ValueError(
                f"Segmentation.labels must be (H, W) = {self.image_hw}; got {tuple(self.labels.shape)}"
            )
        if self.proposals.ndim != 3:
            raise ValueError(
                f"Segmentation.proposals must be (K, h, w); got shape {tuple(self.proposals.shape)}"
            )

    @property
    def num_segments(self) -> int:
        """K, the number of segments (= number of proposal maps)."""
        return int(self.proposals.shape[0])

    @property
    def latent_hw(self) -> tuple[int, int]:
        return int(self.proposals.shape[1]), int(self.proposals.shape[2])

    def masks(self) -> Any:
        """bool ``(K, H, W)``: one mask per segment (numpy or torch, like ``labels``)."""
        k = self.num_segments
        if isinstance(self.labels, np.ndarray):
            return self.labels[None, :, :] == np.arange(k, dtype=np.int32)[:, None, None]
        import torch

        idx = torch.arange(k, device=self.labels.device, dtype=self.labels.dtype)
        return self.labels.unsqueeze(0) == idx[:, None, None]

    def to(self, device: Any) -> "Segmentation":
        """A copy whose ``labels``/``proposals`` are torch tensors on ``device``."""
        import torch

        return Segmentation(
            labels=torch.as_tensor(self.labels).to(device),
            proposals=torch.as_tensor(self.proposals).to(device),
            image_hw=self.image_hw,
            meta=dict(self.meta),
            names=self.names,
        )

    def numpy(self) -> "Segmentation":
        """A copy with numpy arrays (int32 labels, float32 proposals)."""
        lab, prop = self.labels, self.proposals
        if not isinstance(lab, np.ndarray):
            lab = lab.detach().cpu().numpy()
        if not isinstance(prop, np.ndarray):
            prop = prop.detach().float().cpu().numpy()
        return Segmentation(
            labels=np.ascontiguousarray(lab, dtype=np.int32),
            proposals=np.ascontiguousarray(prop, dtype=np.float32),
            image_hw=self.image_hw,
            meta=dict(self.meta),
            names=self.names,
        )


class Segmenter(Protocol):
    """Anything with DiffSeg's batch interface: uint8 RGB ``(H, W, 3)`` images in, one
    `Segmentation` per image out (`DiffSegSegmenter`, a stand-in, your own model)."""

    def segment(self, images: Sequence[np.ndarray]) -> list[Any]: ...  # pragma: no cover - protocol


def resolve_segmenter(segmenter: Any) -> Any:
    """The segmenter an API call was given: an object with ``.segment`` as it is, a
    `SegmenterConfig` or None as a `DiffSegSegmenter` (the default config for None)."""
    if segmenter is not None and hasattr(segmenter, "segment"):
        return segmenter
    from .config import SegmenterConfig

    if segmenter is None or isinstance(segmenter, SegmenterConfig):
        from .segmenter import DiffSegSegmenter  # heavy: imported only when needed

        return DiffSegSegmenter(segmenter if segmenter is not None else SegmenterConfig())
    raise TypeError(f"`segmenter` must have .segment(images) or be a SegmenterConfig; got {type(segmenter).__name__}")
