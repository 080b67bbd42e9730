"""diffseg_core: the DiffSeg segmenter of one image, frame or slice.

Public API:
    segment_from_attention(maps, ...) -> Segmentation   (any model's self-attention)
    DiffSegSegmenter(config).segment(images) -> list[Segmentation]
"""
from __future__ import annotations

__version__ = "0.1.0"


def software_version() -> str:
    """The installed diffseg-vv version (package metadata), else ``__version__`` (a checkout)."""
    try:
        from importlib.metadata import version

        return version("diffseg-vv")
    except Exception:  # noqa: BLE001 - not installed
        return __version__


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
