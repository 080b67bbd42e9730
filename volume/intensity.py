"""Volume intensities -> uint8 RGB slices for the segmenter (CT windows, percentiles)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .types import WINDOW_PRESETS, Volume

#: Slices sampled (evenly along axis 0) to estimate percentiles / the value range.
SAMPLE_SLICES = 32
#: Pixels per sampled slice kept for the estimate (a strided subsample).
SAMPLE_PIXELS = 65536


@dataclass(frozen=True)
class IntensityMap:
    """A linear map of physical values to 0..255: ``(v - low) / (high - low)``, clipped.

    Attributes:
        low: value mapped to 0.
        high: value mapped to 255 (> ``low``).
        mode: how it was chosen (``"window soft-tissue L40/W400"``, ``"percentile 1-99"``...).
        fill: value that replaces NaN/inf voxels (``low``).
    """

    low: float
    high: float
    mode: str
    fill: float

    def __post_init__(self) -> None:
        if not (self.high > self.low):
            object.__setattr__(self, "high", self.low + 1.0)


def sample_values(vol: Volume, max_slices: int = SAMPLE_SLICES, max_pixels: int = SAMPLE_PIXELS) -> np.ndarray:
    """float32 1-D finite values from up to ``max_slices`` evenly spaced axis-0 slices.

    Bounded memory: one slice of float data at a time.
    """
    d = vol.shape[0]
    idx = np.unique(np.linspace(0, d - 1, min(d, max_slices)).round().astype(int))
    out = []
    for i in idx:
        s = vol.slice_values(0, int(i)).ravel()
        step = max(1, s.size // max_pixels)
        s = s[::step]
        out.append(s[np.isfinite(s)])
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def has_finite_value(vol: Volume) -> bool:
    """True when any voxel is finite (slice by slice, stops at the first one found)."""
    return any(np.isfinite(vol.slice_values(0, i)).any() for i in range(vol.shape[0]))


def looks_like_ct(vol: Volume, values: np.ndarray) -> bool:
    """True when the volume is CT by its DICOM modality, or its values look like HU.

    HU test (no modality): integer-valued data with air (min < -500) and tissue/bone
    above 0, in the HU range [-1100, 4000] of CT scanners.
    """
    if vol.modality:
        return vol.modality.upper() == "CT"
    if values.size == 0:
        return False
    lo, hi = float(values.min()), float(values.max())
    integral = bool(np.all(values[: 4096] == np.round(values[: 4096])))
    return integral and lo < -500 and lo >= -3100 and 0 < hi <= 4100


def plan_intensity(vol: Volume, window: "str | tuple[float, float]" = "auto",
                   percentiles: tuple[float, float] = (1.0, 99.0)) -> IntensityMap:
    """Choose the intensity map of a volume.

    Args:
        vol: the volume (sampled slice by slice).
        window: ``auto`` (soft-tissue window for CT-like data, else percentiles),
            ``percentile``, ``minmax``, a preset name of `WINDOW_PRESETS`, or ``(level, width)``.
        percentiles: low/high percentile for ``percentile`` mode.

    Returns:
        The `IntensityMap`.
    """
    values = sample_values(vol)
    if window == "auto":
        window = "soft-tissue" if looks_like_ct(vol, values) else "percentile"
    if isinstance(window, tuple):
        lv, wd = window
        return IntensityMap(lv - wd / 2, lv + wd / 2, f"window L{lv:g}/W{wd:g}", lv - wd / 2)
    if window in WINDOW_PRESETS:
        lv, wd = WINDOW_PRESETS[window]
        return IntensityMap(lv - wd / 2, lv + wd / 2, f"window {window} L{lv:g}/W{wd:g}", lv - wd / 2)
    if values.size == 0:
        return IntensityMap(0.0, 1.0, f"{window} (no finite values)", 0.0)
    if window == "minmax":
        lo, hi = float(values.min()), float(values.max())
        return IntensityMap(lo, hi, "minmax", lo)
    lo, hi = (float(v) for v in np.percentile(values, percentiles))
    if hi <= lo:  # e.g. mostly-constant microscopy background: fall back to the full range
        lo, hi = float(values.min()), float(values.max())
    return IntensityMap(lo, hi, f"percentile {percentiles[0]:g}-{percentiles[1]:g}", lo)


def to_uint8(values: np.ndarray, imap: IntensityMap) -> tuple[np.ndarray, int]:
    """Map a float slice to uint8 gray.

    Args:
        values: float32 ``(H, W)`` physical values (may hold NaN/inf).
        imap: the intensity map.

    Returns:
        ``(gray, n_bad)``: uint8 ``(H, W)`` in 0..255 and the number of non-finite
        voxels replaced by ``imap.fill``.
    """
    v = np.asarray(values, dtype=np.float32)
    bad = ~np.isfinite(v)
    n_bad = int(bad.sum())
    if n_bad:
        v = np.where(bad, np.float32(imap.fill), v)
    scaled = (v - np.float32(imap.low)) * np.float32(255.0 / (imap.high - imap.low))
    return np.clip(scaled + 0.5, 0, 255).astype(np.uint8), n_bad


def gray_to_rgb(gray: np.ndarray) -> np.ndarray:
    """uint8 ``(H, W)`` -> uint8 ``(H, W, 3)`` (the model takes RGB)."""
    return np.repeat(np.asarray(gray, dtype=np.uint8)[:, :, None], 3, axis=2)
