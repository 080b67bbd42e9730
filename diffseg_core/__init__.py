"""diffseg_core: the DiffSeg segmenter of one image, frame or slice.

Public API:
    segment_from_attention(maps, ...) -> Segmentation   (any model's self-attention)
    DiffSegSegmenter(config).segment(images) -> list[Segmentation]
"""
from __future__ import annotations

__version__ = "0.1.0"

from .config import CaptureConfig, MergeConfig, SegmenterConfig
from .errors import DiffSegError, InputError, ModelNotFoundError, OutputError
from .types import AttentionMaps, Segmentation

__all__ = [
    "AttentionMaps", "Segmentation", "MergeConfig", "CaptureConfig", "SegmenterConfig",
    "DiffSegError", "InputError", "ModelNotFoundError", "OutputError",
    "segment_from_attention", "DiffSegSegmenter",
]


def __getattr__(name: str):
    # Lazy: importing the package must not import diffusers/transformers.
    if name == "segment_from_attention":
        from .pipeline import segment_from_attention

        return segment_from_attention
    if name == "DiffSegSegmenter":
        from .segmenter import DiffSegSegmenter

        return DiffSegSegmenter
    raise AttributeError(name)
