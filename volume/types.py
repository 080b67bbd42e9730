"""Data types of the `volume` package: volumes, label volumes, configs and results."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from diffseg_core.config import ConfigDict, cli, parse_background
from diffseg_core.errors import InputError, look_up_option
from temporal.engine.config import EngineConfig, slices

#: CT window presets in Hounsfield units: name -> (level, width).
WINDOW_PRESETS: dict[str, tuple[float, float]] = {
    "soft-tissue": (40.0, 400.0),
    "lung": (-600.0, 1500.0),
    "bone": (400.0, 1800.0),
    "brain": (40.0, 80.0),
}
#: Intensity modes besides the CT presets and an explicit "L,W".
INTENSITY_MODES = ("auto", "percentile", "minmax") + tuple(WINDOW_PRESETS)
SOURCE_FORMATS = ("nifti", "dicom", "dicom-seg", "tiff", "npy", "ome-zarr", "slices", "nrrd")
AXIS_NAMES = {"z": 0, "y": 1, "x": 2}


class LazyStack:
    """A ``(D, H, W)`` array read on demand (a big file's slices): ``shape``, ``dtype``,
    ``ndim``, ``size``, ``nbytes`` like numpy; indexing (`__getitem__`) reads what it needs;
    ``np.asarray`` / ``astype`` read everything. Subclasses: `volume.io.PagedStack` (TIFF pages, slice files),
    `volume.omezarr.ZarrStack`."""

    shape: tuple[int, int, int]
    dtype: np.dtype
    ndim = 3

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    def __getitem__(self, key: Any) -> np.ndarray:
        raise NotImplementedError

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        a = self[:]
        return a if dtype is None else a.astype(dtype)

    def astype(self, dtype: Any) -> np.ndarray:
        return np.asarray(self).astype(dtype)


@dataclass
class Volume:
    """A scalar 3D image in array order ``(D, H, W)`` with its geometry.

    Attributes:
        data: ``(D, H, W)`` array in the file's native dtype (int16 HU, uint16, float32...),
            possibly a read-only ``np.memmap`` view. Physical values are
            ``slope * data + intercept`` (DICOM RescaleSlope/Intercept, NIfTI scl_slope/inter),
            applied slice by slice (`slice_values`) so no float copy of the volume is made.
        spacing: ``(dz, dy, dx)`` voxel size in mm (NIfTI/DICOM) or the file's unit (TIFF);
            all > 0. ``(1, 1, 1)`` with ``spacing_known=False`` when the file has none.
        affine: float64 ``(4, 4)`` mapping ``(d, h, w, 1)`` indices of ``data`` to RAS+ mm,
            or None (TIFF, npy).
        source_format: one of ``nifti``, ``dicom``, ``dicom-seg`` (a label volume), ``tiff``, ``npy``,
            ``ome-zarr``, ``slices`` (a folder of 2-D slice images), ``nrrd``.
        path: the file or folder read.
        spacing_known: whether ``spacing`` came from the file.
        unit: unit of ``spacing`` (``"mm"``, ``"um"``, ``"voxel"``...).
        modality: ``"CT"``, ``"MR"``... when the file says so, else ``""``.
        meta: format-specific data needed to write labels back in the same geometry
            (NIfTI header, TIFF resolution/ImageJ metadata, DICOM series description).
        slope: intensity scale applied to ``data``.
        intercept: intensity offset applied after ``slope``.
    """

    data: Any
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    affine: "np.ndarray | None" = None
    source_format: str = "npy"
    path: "Path | None" = None
    spacing_known: bool = False
    unit: str = "voxel"
    modality: str = ""
    meta: dict = field(default_factory=dict)
    slope: float = 1.0
    intercept: float = 0.0

    def __post_init__(self) -> None:
        shape = tuple(self.data.shape)
        if len(shape) != 3:
            raise InputError(f"{self.path or 'volume'}: expected a 3-D (D, H, W) volume; got shape {shape}")
        if min(shape) < 1:
            raise InputError(f"{self.path or 'volume'}: volume is empty; got shape {shape}")
        sp = tuple(float(s) for s in self.spacing)
        if len(sp) != 3 or not all(np.isfinite(sp)) or min(sp) <= 0:
            raise InputError(
                f"{self.path or 'volume'}: voxel spacing must be three positive numbers; got {sp}"
            )
        self.spacing = sp  # type: ignore[assignment]
        look_up_option(self.source_format, SOURCE_FORMATS, "volume format")

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.data.shape)  # type: ignore[return-value]

    def slice_values(self, axis: int, index: int) -> np.ndarray:
        """float32 ``(a, b)``: physical values of slice ``index`` along ``axis`` (0, 1, 2).

        The remaining two axes keep their order (axis 0 -> ``(H, W)``, 1 -> ``(D, W)``,
        2 -> ``(D, H)``). Non-finite values are returned as they are.
        """
        sl: list[Any] = [slice(None)] * 3
        sl[axis] = int(index)
        a = np.asarray(self.data[tuple(sl)], dtype=np.float32)
        if self.slope != 1.0 or self.intercept != 0.0:
            a = a * np.float32(self.slope) + np.float32(self.intercept)
        return a


@dataclass
class VolumeLabels:
    """A label volume.

    Attributes:
        labels: int32 ``(D, H, W)``, 0 = no label, ids ``1..n`` consecutive after postprocessing.
        spacing: ``(dz, dy, dx)``, like `Volume.spacing`.
    """

    labels: np.ndarray
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)

    def __post_init__(self) -> None:
        if self.labels.ndim != 3:
            raise ValueError(f"VolumeLabels.labels must be (D, H, W); got shape {self.labels.shape}")


def parse_axis(axis: "int | str | None") -> "int | None":
    """``None``/``"auto"`` -> None; ``"z"/"y"/"x"`` or ``0/1/2`` (also as text) -> int."""
    if axis is None or axis == "auto":
        return None
    if isinstance(axis, str):
        a = axis.strip().lower()
        if a in AXIS_NAMES:
            return AXIS_NAMES[a]
        if a.lstrip("-").isdigit():
            axis = int(a)
        else:
            raise InputError(f"unknown axis {axis!r}; expected z, y, x, 0, 1, 2 or auto")
    if int(axis) not in (0, 1, 2):
        raise InputError(f"axis must be 0, 1 or 2 (z, y, x); got {axis}")
    return int(axis)


def parse_percentiles(text: "str | tuple[float, float]") -> tuple[float, float]:
    """``"1,99"`` -> ``(1.0, 99.0)``."""
    try:
        lo, hi = (float(x) for x in (text.split(",") if isinstance(text, str) else text))
    except (TypeError, ValueError):
        raise InputError(f"expected LOW,HIGH like 1,99; got {text!r}") from None
    return lo, hi


def parse_window(text: str) -> "str | tuple[float, float]":
    """A preset name / mode, or ``"L,W"`` -> ``(level, width)`` with width > 0."""
    t = str(text).strip().lower()
    if "," in t:
        try:
            lv, wd = (float(x) for x in t.split(","))
        except ValueError:
            raise InputError(f"window must be a preset or 'LEVEL,WIDTH' like 40,400; got {text!r}") from None
        if not (wd > 0) or not np.isfinite(lv):
            raise InputError(f"window width must be > 0 and level finite; got level {lv}, width {wd}")
        return (lv, wd)
    return look_up_option(t, INTENSITY_MODES, "window")


@dataclass(frozen=True)
class VolumeConfig(ConfigDict):
    """Options of `segment_volume` / `stack_labels`.

    Attributes:
        axis: slicing axis of the ``(D, H, W)`` array (0 = z, 1 = y, 2 = x), or None for the
            through-plane axis (largest spacing; ties -> 0).
        axes: ``"one"`` (slice along ``axis``) or ``"all"`` (segment along all three axes and
            fuse by Hungarian matching to the reference axis + majority vote).
        window: intensity mapping: ``auto``, ``percentile`` (1..99), ``minmax``, a CT preset
            (``soft-tissue``, ``lung``, ``bone``, ``brain``) or ``(level, width)`` in HU.
        percentiles: low/high percentile of the ``percentile`` mode.
        min_size: 3D fragments (connected pieces of a label other than its largest)
            smaller than this many voxels are merged into their neighbour (0 keeps them).
        min_label_size: whole labels smaller than this many voxels are merged too.
        split_disconnected: give every 3D connected component its own id (else a track's
            disconnected large pieces keep one id).
        resample_inplane: resample anisotropic slices to square pixels before segmenting.
        index: which volume of a 4-D file to use (None: 4-D input is an error).
        series: DICOM SeriesInstanceUID to read when the folder holds several.
        engine: the linking engine (`temporal.engine`; default its ``slices`` preset: a
            slice index is a time index, neighbouring slices are aligned).
        background: label value of the input meaning "no segment" (0 for most 2D instance
            segmenters), or None when every value is a segment (DiffSeg's own slices).
        clear_outside: (`segment_volume`) labels lying at least half outside the body or
            sample become 0: the region darker than Otsu's threshold that reaches the
            border of its slice (`volume.postprocess.outside_mask`): the air around a
            patient, the medium around cells. False: every voxel keeps a label.
        waist_ratio: after linking, a label whose area along the slicing axis shrinks to at
            most this fraction of its peak and grows again past an uncertain link (IoU below
            0.5) is cut there into two ids (two structures stacked end to end,
            `volume.postprocess.split_at_waists`); 0 = off.
        montage: write the quick-look PNG of the three mid-planes.
        write_json: write ``labels.json`` beside the labels.
        output_dtype: ``auto`` (smallest of uint8/int16/uint16/int32 that fits, by format),
            or ``int32``.
    """

    axis: "int | None" = field(default=None, metadata=cli(type=parse_axis, metavar="{z,y,x,0,1,2,auto}"))
    axes: Literal["one", "all"] = "one"
    window: "str | tuple[float, float]" = field(default="auto", metadata=cli(type=parse_window, metavar="WINDOW"))
    percentiles: tuple[float, float] = field(default=(1.0, 99.0), metadata=cli(type=parse_percentiles,
                                                                                metavar="LOW,HIGH"))
    min_size: int = 64
    min_label_size: int = 8
    split_disconnected: bool = False
    resample_inplane: bool = field(default=True, metadata=cli(
        flag="--no-resample", help="segment anisotropic slices as they are (default: square pixels first)"))
    index: "int | None" = None
    series: "str | None" = None
    engine: EngineConfig = field(default_factory=slices, metadata=cli(title="linking engine"))
    background: "int | None" = field(default=None, metadata=cli(type=parse_background, metavar="VALUE|none"))
    waist_ratio: float = 0.75
    clear_outside: bool = True
    montage: bool = True
    write_json: bool = field(default=True, metadata=cli(flag="--no-json", help="do not write labels.json"))
    output_dtype: Literal["auto", "int32"] = field(default="auto", metadata=cli(
        flag="--int32", const="int32", help="write int32 labels (default: the smallest type that fits)"))

    def __post_init__(self) -> None:
        object.__setattr__(self, "axis", parse_axis(self.axis))
        look_up_option(self.axes, ("one", "all"), "axes")
        if isinstance(self.window, (list, tuple)):
            object.__setattr__(self, "window", parse_window(",".join(str(v) for v in self.window)))
        else:
            object.__setattr__(self, "window", parse_window(self.window))
        lo, hi = (float(v) for v in self.percentiles)
        if not 0.0 <= lo < hi <= 100.0:
            raise InputError(f"percentiles must satisfy 0 <= low < high <= 100; got {self.percentiles}")
        object.__setattr__(self, "percentiles", (lo, hi))
        if int(self.min_size) < 0:
            raise InputError(f"min_size must be >= 0 voxels; got {self.min_size}")
        if int(self.min_label_size) < 0:
            raise InputError(f"min_label_size must be >= 0 voxels; got {self.min_label_size}")
        if self.index is not None and int(self.index) < 0:
            raise InputError(f"index must be >= 0; got {self.index}")
        if isinstance(self.engine, dict):  # from JSON / YAML: changes to the slices preset
            object.__setattr__(self, "engine", slices().replace(**self.engine))
        elif not isinstance(self.engine, EngineConfig):
            raise InputError(f"VolumeConfig.engine must be an EngineConfig or a mapping; got {type(self.engine).__name__}")
        if not 0.0 <= float(self.waist_ratio) < 1.0:
            raise InputError(f"waist_ratio must be in [0, 1); got {self.waist_ratio}")
        look_up_option(self.output_dtype, ("auto", "int32"), "output dtype")


@dataclass
class LabelInfo:
    """Statistics of one 3D label (one entry of ``labels.json``).

    Attributes:
        id: label id (>= 1).
        voxels: voxel count.
        volume: physical volume (``voxels * dz * dy * dx``) in ``volume_unit``.
        bbox: ``[d0, h0, w0, d1, h1, w1]`` half-open, in the ``(D, H, W)`` array order.
        slice_range: ``[first, last]`` slice index along the slicing axis (inclusive).
    """

    id: int
    voxels: int
    volume: float
    bbox: list[int]
    slice_range: list[int]


@dataclass
class VolumeResult:
    """What `segment_volume` / `stack_labels` produced.

    Attributes:
        shape: ``(D, H, W)`` of the label volume (the input's grid).
        n_labels: number of 3D labels (ids ``1..n_labels``).
        seconds: wall time of the whole job.
        labels_path: the label file written.
        json_path: ``labels.json`` or None.
        montage_path: the quick-look PNG or None.
        axis: slicing axis used (the reference axis with ``axes="all"``).
        spacing: ``(dz, dy, dx)`` of the input.
        warnings: human-readable notes on what was fixed in the input (NaN replaced...).
    """

    shape: tuple[int, int, int]
    n_labels: int
    seconds: float
    labels_path: Path
    json_path: "Path | None" = None
    montage_path: "Path | None" = None
    axis: int = 0
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    warnings: list[str] = field(default_factory=list)
