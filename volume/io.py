"""Read scalar / label volumes (NIfTI, DICOM series, TIFF stacks, .npy) and write labels back.

Array convention: every reader returns ``(D, H, W)`` data. NIfTI stores ``(i, j, k)`` =
``(x, y, z)``-like voxel axes; it is viewed transposed (``(k, j, i)``, no copy) and written
back transposed, with the input's affine and header, so nothing is ever reoriented. DICOM
series become ``(slice, row, column)`` with an affine built from the DICOM geometry (and are
written as NIfTI). TIFF is ZYX as tifffile reads it.
"""
from __future__ import annotations

import errno
import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from diffseg_core.errors import InputError, short_message
from diffseg_core.io import (atomic_path, atomic_save_npy, check_label_range, damage_reported_by, output_error,
                             temporary_name)

from .geometry import slabs
from .types import LazyStack, Volume

log = logging.getLogger("diffseg.volume")

NIFTI_EXTS = (".nii", ".nii.gz")
TIFF_EXTS = (".tif", ".tiff")
NRRD_EXTS = (".nrrd", ".nhdr")
LABEL_EXTS = NIFTI_EXTS + TIFF_EXTS + NRRD_EXTS + (".npy",)
#: NRRD's anatomical spaces: the sign that takes each axis to RAS+
_NRRD_SPACES = {"right-anterior-superior": (1, 1, 1), "ras": (1, 1, 1), "left-anterior-superior": (-1, 1, 1),
                "las": (-1, 1, 1), "left-posterior-superior": (-1, -1, 1), "lps": (-1, -1, 1)}
#: ``(d, h, w) -> (i, j, k)`` = ``(w, h, d)``: the NIfTI axis permutation (self-inverse).
_PERM = np.array([[0, 0, 1, 0], [0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1]], dtype=np.float64)


class VolumeWarning(UserWarning):
    """Something in the input was fixed or assumed; the message says what was done."""


def _warn(msg: str) -> None:
    warnings.warn(msg, VolumeWarning, stacklevel=3)


def file_format(path: "str | os.PathLike") -> str:
    """``nifti``, ``tiff``, ``npy``, ``ome-zarr`` (a Zarr folder), ``slices`` (a folder of 2-D
    slice images and no DICOM file) or ``dicom`` (another folder or a ``.dcm`` file) from the path."""
    from .omezarr import is_zarr

    p = Path(path)
    name = p.name.lower()
    if is_zarr(p) or name.endswith(".zarr"):
        return "ome-zarr"
    if p.is_dir():
        return "slices" if slice_files(p) else "dicom"
    if name.endswith(".nii") or name.endswith(".nii.gz"):
        return "nifti"
    if name.endswith(".tif") or name.endswith(".tiff"):
        return "tiff"
    if name.endswith(".npy"):
        return "npy"
    if name.endswith(NRRD_EXTS):
        return "nrrd"
    if name.endswith(".dcm") or name.endswith(".ima"):
        return "dicom"
    raise InputError(
        f"{p}: unknown volume format; expected .nii, .nii.gz, .nrrd, .tif, .tiff, .npy, an OME-Zarr folder, a DICOM "
        "folder or a folder of slice images"
    )


def _check_file(p: Path) -> None:
    if not p.exists():
        raise InputError(f"{p}: no such file or folder")
    if p.is_file() and p.stat().st_size == 0:
        raise InputError(f"{p}: file is empty (0 bytes)")


def read_volume(path: "str | os.PathLike", index: "int | None" = None,
                series: "str | None" = None) -> Volume:
    """Read a scalar volume.

    Args:
        path: ``.nii``/``.nii.gz``, ``.tif``/``.tiff`` (ZYX), ``.npy``, an OME-Zarr folder
            (``.ome.zarr``, read lazily) or a DICOM folder (or one ``.dcm`` file of the series).
        index: volume to take from 4-D input (time/channel); 4-D input without it is an error.
        series: DICOM SeriesInstanceUID when the folder holds several series; the image of
            an OME-Zarr ``bioformats2raw`` folder (``0``, ``1``...).

    Returns:
        A `Volume` with ``(D, H, W)`` data in its native dtype.

    Raises:
        InputError: unreadable, empty, non-3-D, bad spacing, inconsistent DICOM series.
    """
    p = Path(path)
    _check_file(p)
    fmt = file_format(p)
    if fmt == "nifti":
        return _read_nifti(p, index)
    if fmt == "tiff":
        return _read_tiff(p, index)
    if fmt == "npy":
        return _read_npy(p, index)
    if fmt == "slices":
        return _read_slices(p)
    if fmt == "nrrd":
        return _read_nrrd(p, index)
    if fmt == "ome-zarr":
        from .omezarr import read_ome_zarr

        return read_ome_zarr(p, index, series)
    from .dicom import read_dicom_series

    return read_dicom_series(p, series=series)


def _select_4d(arr: Any, p: Path, index: "int | None", axis: int, colour: str = "") -> Any:
    """Take ``index`` along ``axis`` of a 4-D array, or raise naming the choices. ``colour``
    (e.g. "axes QYXS"): the axis holds an RGB stack's colour channels, one of which is picked
    the same way (none is guessed)."""
    n = int(arr.shape[axis])
    what = "colour channels" if colour else "volumes"
    if n == 1:
        index = 0
    if index is None and colour:
        raise InputError(f"{p}: RGB stack ({colour}, {n} colour channels); expected one value per voxel: "
                         f"pick a channel with --index 0..{n - 1}, or convert the stack to grey first")
    if index is None:
        raise InputError(
            f"{p}: 4-D data of shape {tuple(arr.shape)} ({n} volumes); pick one with --index 0..{n - 1}"
        )
    if not 0 <= int(index) < n:
        raise InputError(f"{p}: --index {index} out of range; the file has {n} {what} (0..{n - 1})")
    sl: list[Any] = [slice(None)] * arr.ndim
    sl[axis] = int(index)
    return arr[tuple(sl)]


def _read_nifti(p: Path, index: "int | None") -> Volume:
    """One error boundary: whatever nibabel raises on a damaged header or data, at load or
    while the header is interpreted (a unit code out of range, a broken affine), becomes an
    `InputError` naming the file."""
    try:
        return _nifti_volume(p, index)
    except InputError:
        raise
    except Exception as exc:  # nibabel raises many types for corrupt files
        raise InputError(f"{p}: not a readable NIfTI file ({type(exc).__name__}: {exc})") from exc


def _nifti_volume(p: Path, index: "int | None") -> Volume:
    import nibabel as nib

    img = nib.load(str(p))
    hdr = img.header
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise InputError(f"{p}: not a NIfTI image ({type(img).__name__})")
    shape = tuple(int(s) for s in img.shape)
    raw = img.dataobj.get_unscaled() if hasattr(img.dataobj, "get_unscaled") else np.asarray(img.dataobj)
    raw = np.asanyarray(raw)
    if raw.dtype.names is not None or raw.dtype.kind == "V":
        raise InputError(f"{p}: NIfTI holds {raw.dtype} (RGB or structured) voxels; expected one value per voxel")
    if raw.dtype.kind == "c":
        raise InputError(f"{p}: NIfTI holds complex ({raw.dtype}) voxels; save the magnitude or phase as a real volume")
    while raw.ndim > 4 and raw.shape[-1] == 1:
        raw = raw[..., 0]
    if raw.ndim == 4:
        raw = _select_4d(raw, p, index, axis=3)
    if raw.ndim != 3:
        raise InputError(f"{p}: expected a 3-D NIfTI volume; got shape {shape}")
    zooms = [float(z) for z in hdr.get_zooms()[:3]]
    raw_zooms = _raw_pixdim(p, type(hdr))
    if raw_zooms is not None and any(z == 0 for z in raw_zooms):
        # nibabel silently reads a zero pixdim as 1: the geometry is unknown, not 1 mm
        raise InputError(f"{p}: voxel spacing (pixdim) must be positive; got {raw_zooms}")
    if any(not np.isfinite(z) or z <= 0 for z in zooms):
        raise InputError(f"{p}: voxel spacing (pixdim) must be positive; got {zooms}")
    # nibabel moves scl_slope/scl_inter from the header into the array proxy on load.
    slope = getattr(img.dataobj, "slope", None)
    inter = getattr(img.dataobj, "inter", None)
    if slope is None:
        slope, inter = hdr.get_slope_inter()
    affine_file = np.asarray(img.affine, dtype=np.float64)
    if not np.isfinite(affine_file).all() or abs(float(np.linalg.det(affine_file[:3, :3]))) < 1e-12:
        # checked before any work: writing labels in this geometry would fail at the end
        raise InputError(f"{p}: the NIfTI affine (sform/qform) is singular or not finite; fix the header "
                         "(e.g. nibabel: img.set_sform(np.diag([dx, dy, dz, 1])))")
    unit = (hdr.get_xyzt_units()[0] or "mm") if hasattr(hdr, "get_xyzt_units") else "mm"
    if unit == "unknown":
        unit = "mm"
    unit = {"meter": "m", "micron": "um"}.get(unit, unit)
    return Volume(
        data=raw.transpose(2, 1, 0),
        spacing=(zooms[2], zooms[1], zooms[0]),
        affine=affine_file @ _PERM,
        source_format="nifti",
        path=p,
        spacing_known=True,
        unit=unit,
        modality="",
        meta={"nifti_header": hdr.copy(), "nifti_class": type(img).__name__},
        slope=1.0 if slope is None or not np.isfinite(slope) or slope == 0 else float(slope),
        intercept=0.0 if inter is None or not np.isfinite(inter) else float(inter),
    )


def _read_nrrd(p: Path, index: "int | None") -> Volume:
    """NRRD (3D Slicer's format; pynrrd): axes ``(i, j, k)`` viewed as ``(k, j, i)``; the
    space directions and origin give the affine (any of NRRD's anatomical spaces, to RAS+);
    a non-spatial axis (a list, a vector, time) is a 4-D choice."""
    import nrrd

    try:
        raw, hdr = nrrd.read(str(p), index_order="F")
    except Exception as exc:  # noqa: BLE001 - pynrrd raises NRRDError, ValueError, OSError, zlib errors
        raise InputError(f"{p}: not a readable NRRD file ({type(exc).__name__}: {short_message(exc)})") from exc
    if raw.dtype.kind not in "uifb":
        raise InputError(f"{p}: unsupported NRRD data type {raw.dtype}")
    directions = hdr.get("space directions")
    spatial = list(range(raw.ndim))
    if directions is not None:  # a non-spatial axis has "none" (NaN) for its direction
        directions = np.asarray(directions, np.float64)
        spatial = [a for a in range(raw.ndim) if np.isfinite(directions[a]).all()]
    if raw.ndim == 4 and len(spatial) == 3:
        other = next(a for a in range(4) if a not in spatial)
        kind = str((hdr.get("kinds") or [""] * 4)[other]).lower()
        raw = _select_4d(raw, p, index, axis=other,
                         colour=f"NRRD kind {kind}" if kind in ("rgb-color", "rgba-color") else "")
        directions = directions[spatial] if directions is not None else None
    if raw.ndim != 3:
        raise InputError(f"{p}: expected a 3-D NRRD volume; got shape {raw.shape}")
    space = str(hdr.get("space", "")).lower()
    if directions is not None and space in _NRRD_SPACES:
        to_ras = np.diag([*_NRRD_SPACES[space], 1.0])
        ijk = np.eye(4)
        ijk[:3, :3] = directions.T  # column a: the step of axis a
        ijk[:3, 3] = np.asarray(hdr.get("space origin", np.zeros(3)), np.float64)
        affine = to_ras @ ijk
        if not np.isfinite(affine).all() or abs(float(np.linalg.det(affine[:3, :3]))) < 1e-12:
            raise InputError(f"{p}: the NRRD space directions are singular or not finite")
        spacing = tuple(float(np.linalg.norm(directions[a])) for a in (2, 1, 0))
        affine = affine @ _PERM
        known = True
    else:  # no anatomical space: spacings only, as a TIFF's
        affine = None
        sp = np.asarray(hdr.get("spacings", [np.nan] * 3), np.float64)
        known = directions is None and sp.shape == (3,) and bool(np.isfinite(sp).all() and (sp > 0).all())
        spacing = (float(sp[2]), float(sp[1]), float(sp[0])) if known else (1.0, 1.0, 1.0)
    units = hdr.get("space units") or []
    unit = {"mm": "mm", "um": "um", "microns": "um", "m": "m"}.get(str(units[0]).lower(), "mm") if units else "mm"
    return Volume(data=raw.transpose(2, 1, 0), spacing=spacing, affine=affine, source_format="nrrd", path=p,
                  spacing_known=known, unit=unit)


def _raw_pixdim(p: Path, header_class: Any) -> "list[float] | None":
    """pixdim[1:4] as stored in the file (nibabel's loader replaces zeros by 1), or None."""
    try:
        from nibabel.openers import ImageOpener

        with ImageOpener(str(p)) as f:
            hdr = header_class.from_fileobj(f, check=False)
        return [float(z) for z in hdr["pixdim"][1:4]]
    except Exception:
        return None


class PagedStack(LazyStack):
    """A ``(D, H, W)`` stack stored one page per slice, read lazily: indexing with a slice
    number decodes that page only (what the pipeline does slice by slice); any other access
    (a plane across the pages, ``np.asarray``) decodes the whole stack once and keeps it.
    Subclasses say how page ``k`` is read (`_page`)."""

    _whole: "np.ndarray | None" = None

    def _page(self, k: int) -> np.ndarray:
        raise NotImplementedError

    def __getitem__(self, key: Any) -> np.ndarray:
        if self._whole is not None:
            return self._whole[key]
        key = key if isinstance(key, tuple) else (key,)
        first = key[0] if key else slice(None)
        if isinstance(first, (int, np.integer)):
            k = int(first) + (self.shape[0] if int(first) < 0 else 0)
            if not 0 <= k < self.shape[0]:
                raise IndexError(f"slice {first} out of range for {self.shape[0]} slices")
            return self._page(k)[key[1:]] if len(key) > 1 else self._page(k)
        if isinstance(first, slice) and all(isinstance(k, slice) for k in key[1:]):
            pages = range(*first.indices(self.shape[0]))  # page by page: only the result is held
            rest = key[1:]
            parts = [self._page(k)[rest] for k in pages]
            return np.stack(parts) if parts else np.zeros((0, *self._page(0)[rest].shape), self.dtype)
        return np.asarray(self)[key]

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        if self._whole is None:
            self._whole = self._read_whole()
        return self._whole if dtype is None else self._whole.astype(dtype)

    def _read_whole(self) -> np.ndarray:
        return np.stack([self._page(k) for k in range(self.shape[0])])


class TiffPages(PagedStack):
    """A TIFF stack of one page per slice (`PagedStack`)."""

    def __init__(self, path: Path, shape: tuple[int, int, int], dtype: np.dtype) -> None:
        self.path, self.shape, self.dtype = Path(path), shape, np.dtype(dtype)

    def _page(self, k: int) -> np.ndarray:
        if getattr(self, "_pages", None) is None:  # one open file: the page list is parsed once
            import tifffile

            self._tf = tifffile.TiffFile(str(self.path))
            self._pages = self._tf.series[0].pages
        return np.asarray(self._pages[k].asarray())

    def __del__(self) -> None:
        tf = getattr(self, "_tf", None)
        if tf is not None:
            tf.close()

    def _read_whole(self) -> np.ndarray:
        import tifffile

        return tifffile.imread(str(self.path))


#: 2-D image files of a folder of slices (an image sequence: Fiji's "Image Sequence", the
#: label maps of a segmenter run slice by slice), one file per slice in natural name order
SLICE_EXTS = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp", ".npy")


def slice_files(folder: Path) -> list[Path]:
    """The slice images of a folder of slices in natural name order; [] for a folder that
    holds a DICOM file (the DICOM reader takes it) or no slice image."""
    from diffseg_core.io import natural_key

    files = [q for q in folder.iterdir() if q.is_file() and not q.name.startswith(".")]
    slices = [q for q in files if q.suffix.lower() in SLICE_EXTS]
    if not slices or any(_is_dicom_file(q) for q in files if q.suffix.lower() not in SLICE_EXTS):
        return []
    return sorted(slices, key=lambda q: natural_key(q.name))


def _is_dicom_file(p: Path) -> bool:
    """Named as DICOM, or with DICOM's "DICM" marker after its 128-byte preamble."""
    if p.suffix.lower() in (".dcm", ".ima"):
        return True
    try:
        with open(p, "rb") as f:
            return f.read(132)[128:] == b"DICM"
    except OSError:
        return False


def _slice_size(p: Path) -> "tuple[int, int]":
    """``(H, W)`` of a slice file from its header (nothing decoded)."""
    try:
        if p.suffix.lower() == ".npy":
            return tuple(np.load(str(p), mmap_mode="r", allow_pickle=False).shape[:2])  # type: ignore[return-value]
        if p.suffix.lower() in TIFF_EXTS:
            import tifffile

            with tifffile.TiffFile(str(p)) as tf:
                return tuple(tf.pages[0].shape[:2])  # type: ignore[return-value]
        from PIL import Image

        with Image.open(p) as im:
            return im.size[1], im.size[0]
    except Exception as exc:  # noqa: BLE001 - each reader raises its own types
        raise InputError(f"{p}: not a readable slice image ({type(exc).__name__}: {short_message(exc)})") from exc


def read_slice(p: Path) -> np.ndarray:
    """One slice image as a 2-D array in its own dtype (8/16-bit grey, a palette's indices,
    TIFF, .npy); grey stored as RGB(A) gives one channel, real colour is refused."""
    try:
        if p.suffix.lower() == ".npy":
            a = np.load(str(p), allow_pickle=False)
        elif p.suffix.lower() in TIFF_EXTS:
            import tifffile

            with damage_reported_by("tifffile", p, "TIFF slice"):
                a = tifffile.imread(str(p))
        else:
            from PIL import Image

            with Image.open(p) as im:
                a = np.asarray(im)
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - each reader raises its own types
        raise InputError(f"{p}: not a readable slice image ({type(exc).__name__}: {short_message(exc)})") from exc
    if a.ndim == 3 and a.shape[2] in (2, 3, 4):
        grey = a.shape[2] == 2 or ((a[..., 0] == a[..., 1]).all() and (a[..., 1] == a[..., 2]).all())
        if not grey:
            raise InputError(f"{p}: a colour slice; a volume holds one value per voxel: convert the slices to grey "
                             "first")
        a = a[..., 0]
    if a.ndim != 2 or a.dtype.kind not in "uifb":
        raise InputError(f"{p}: expected a 2-D slice image; got shape {a.shape} dtype {a.dtype}")
    return a


class SliceFiles(PagedStack):
    """A folder of slice images, one file per slice (`PagedStack`)."""

    def __init__(self, files: "list[Path]", shape: tuple[int, int, int], dtype: np.dtype) -> None:
        self.files, self.shape, self.dtype = files, shape, np.dtype(dtype)

    def _page(self, k: int) -> np.ndarray:
        a = read_slice(self.files[k])
        if a.shape != self.shape[1:] or a.dtype != self.dtype:
            raise InputError(f"{self.files[k]}: slice of shape {a.shape} {a.dtype}; the first slice "
                             f"({self.files[0].name}) is {self.shape[1:]} {self.dtype}: one volume's slices are alike")
        return a


def _read_slices(p: Path) -> Volume:
    files = slice_files(p)
    if len(files) < 2:
        raise InputError(f"{p}: a folder of slices needs at least 2 slice images; it holds {len(files)} "
                         "(one image: `diffseg image`)")
    first = read_slice(files[0])
    for f in files[1:]:  # headers only: a slice of another size is named before any work
        hw = _slice_size(f)
        if hw != first.shape:
            raise InputError(f"{f}: slice of {hw[1]}x{hw[0]} pixels; the first ({files[0].name}) is "
                             f"{first.shape[1]}x{first.shape[0]} (width x height): one volume's slices are one size")
    return Volume(data=SliceFiles(files, (len(files), *first.shape), first.dtype), source_format="slices", path=p,
                  meta={"slice_files": len(files)})


def _read_tiff(p: Path, index: "int | None") -> Volume:
    import tifffile

    try:
        with damage_reported_by("tifffile", p, "TIFF file"), tifffile.TiffFile(str(p)) as tf:
            if not tf.series:
                raise InputError(f"{p}: TIFF has no image data")
            s = tf.series[0]
            axes = s.axes
            # a big stack is not read whole: an uncompressed, contiguous one (Fiji / ImageJ saves
            # them so) is mapped, a compressed ZYX stack of one page per slice is decoded page by
            # page when the pipeline takes a slice (bounded memory for stacks bigger than RAM)
            if s.dataoffset is not None:
                arr = tifffile.memmap(str(p), series=0, mode="r")
            elif len(s.shape) == 3 and s.axes.endswith("YX") and s.shape[0] > 1 and len(s.pages) == s.shape[0] \
                    and all(pg is not None for pg in s.pages):
                arr = TiffPages(p, tuple(int(n) for n in s.shape), np.dtype(s.dtype))
            else:
                arr = s.asarray()
            ij = tf.imagej_metadata or {}
            page = tf.pages[0]
            xres = page.tags.get("XResolution")
            yres = page.tags.get("YResolution")
            runit = page.tags.get("ResolutionUnit")
            xres = xres.value if xres is not None else None
            yres = yres.value if yres is not None else None
            runit = int(runit.value) if runit is not None else 1
            description = page.description or ""
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"{p}: not a readable TIFF file ({type(exc).__name__}: {exc})") from exc
    # Drop singleton axes; a non-singleton T/C/other axis beyond ZYX is a 4-D choice.
    keep = [i for i, a in enumerate(axes) if arr.shape[i] > 1 or a in "YX"]
    if not isinstance(arr, TiffPages):  # (a lazy stack is already ZYX)
        arr = arr.reshape([arr.shape[i] for i in keep])
        axes = "".join(axes[i] for i in keep)
    if arr.ndim == 2:
        raise InputError(f"{p}: TIFF holds a single 2-D image {arr.shape}; expected a ZYX stack")
    if arr.ndim == 4:
        # colour samples (S: RGB pages; tifffile calls the slices of a plain multi-page file Q)
        # are channels like C: one is picked with --index, none is guessed
        extra = [i for i, a in enumerate(axes) if a not in "ZYX"]
        ax = axes.index("S") if "S" in axes else extra[0] if extra else 0
        colour = axes[ax] == "S" or (ax == 3 and arr.shape[3] in (3, 4))
        arr = _select_4d(arr, p, index, axis=ax, colour=f"TIFF axes {axes}" if colour else "")
    if arr.ndim != 3:
        raise InputError(f"{p}: expected a 3-D ZYX TIFF stack; got axes {axes!r} shape {arr.shape}")
    if arr.dtype.kind == "c" or arr.dtype.kind not in "uifb":
        raise InputError(f"{p}: unsupported TIFF data type {arr.dtype}")

    def _res(v: Any) -> "float | None":
        if v is None:
            return None
        try:
            num, den = v
            r = float(num) / float(den)
        except (TypeError, ValueError, ZeroDivisionError):
            return None
        return r if r > 0 and np.isfinite(r) else None

    rx, ry = _res(xres), _res(yres)
    known = False
    dx = dy = dz = 1.0
    unit = "voxel"
    if rx and ry and not (rx == 1.0 and ry == 1.0 and not ij.get("spacing")):
        dx, dy = 1.0 / rx, 1.0 / ry
        known = True
        unit = str(ij.get("unit", {2: "inch", 3: "cm"}.get(runit, "um"))).replace("\\u00B5", "u").replace("µ", "u")
    if "spacing" in ij:
        try:
            dz = float(ij["spacing"])
        except (TypeError, ValueError):
            raise InputError(f"{p}: ImageJ spacing {ij['spacing']!r} is not a number") from None
        if not np.isfinite(dz) or dz <= 0:
            raise InputError(f"{p}: ImageJ z spacing must be positive; got {ij['spacing']}")
        known = True
    if dz == 1.0 and known and "spacing" not in ij:
        dz = dx  # no z spacing stored: isotropic is the least surprising guess
    return Volume(
        data=arr, spacing=(dz, dy, dx), affine=None, source_format="tiff", path=p,
        spacing_known=known, unit=unit if known else "voxel",
        meta={"tiff_imagej": dict(ij), "tiff_description": description},
    )


def _read_npy(p: Path, index: "int | None") -> Volume:
    try:
        arr = np.load(str(p), mmap_mode="r", allow_pickle=False)
    except ValueError as exc:
        raise InputError(f"{p}: not a plain numeric .npy array ({exc})") from exc
    except Exception as exc:
        raise InputError(f"{p}: not a readable .npy file ({type(exc).__name__}: {exc})") from exc
    if arr.dtype.kind not in "uifb":
        raise InputError(f"{p}: unsupported .npy data type {arr.dtype}")
    if arr.ndim == 4 and arr.shape[3] in (3, 4) and arr.shape[3] < min(arr.shape[1:3]):
        # (N, H, W, 3): slices of an RGB image, not volumes of width 3
        arr = _select_4d(arr, p, index, axis=3, colour=f"shape {tuple(arr.shape)}")
    elif arr.ndim == 4:
        arr = _select_4d(arr, p, index, axis=0)
    if arr.ndim != 3:
        raise InputError(f"{p}: expected a 3-D (D, H, W) array; got shape {arr.shape}")
    return Volume(data=arr, source_format="npy", path=p)


def release_pages(arr: Any) -> None:
    """Let a read-only memory-mapped input's pages leave this process (``MADV_DONTNEED``):
    they stay in the page cache, so reading them again is cheap, but a pass over a big
    mapped file no longer leaves the whole file in the process's RSS. No-op for anything
    else (arrays in RAM, writable maps, systems without ``madvise``)."""
    import mmap

    base = arr
    while base is not None and not isinstance(base, mmap.mmap):
        if isinstance(base, np.memmap) and getattr(base, "mode", "r") != "r":
            return  # a writable map holds results: leave it alone
        base = getattr(base, "base", None)
    if base is not None and hasattr(base, "madvise") and hasattr(mmap, "MADV_DONTNEED"):
        try:
            base.madvise(mmap.MADV_DONTNEED)
        except (OSError, ValueError):
            pass


# ----------------------------------------------------------------------------- labels in
def read_label_volume(path: "str | os.PathLike", index: "int | None" = None,
                      series: "str | None" = None) -> tuple[np.ndarray, Volume]:
    """Read an integer label volume: ``(labels, volume)``.

    Returns:
        ``labels``: integer ``(D, H, W)`` array (native dtype, possibly a memmap view);
        ``volume``: the `Volume` (geometry for writing back).

    Raises:
        InputError: float data with fractions, NaN, negative ids.
    """
    vol = read_volume(path, index=index, series=series)
    lab = vol.data
    if lab.dtype.kind == "b":
        lab = lab.astype(np.uint8)
    elif lab.dtype.kind == "f":
        f = np.asarray(lab)
        if not np.isfinite(f).all() or not (f == np.round(f)).all():
            raise InputError(f"{path}: label volume must hold integers; got non-integer {f.dtype} values")
        lab = f.astype(np.int64)
    if vol.slope != 1.0 or vol.intercept != 0.0:
        _warn(f"{path}: label volume has intensity scaling (slope {vol.slope}, inter {vol.intercept}); ignored")
    # Negative or beyond-int32 ids: checked slab-wise (bounded memory on memmaps).
    for sl in slabs(lab.shape):
        check_label_range(np.asarray(lab[sl]), f"{path}: label volume")
    release_pages(lab)  # (the check read the whole file)
    return lab, vol


# ----------------------------------------------------------------------------- labels out
#: Label volumes bigger than this many bytes are not held in RAM: `label_buffer` maps a
#: scratch file beside the output instead (1 GiB: an int32 512 x 512 x 1024 volume).
IN_MEMORY_LIMIT = 1 << 30


def label_buffer(shape: "tuple[int, ...]", near: "str | os.PathLike | None", dtype: Any = np.int32) -> np.ndarray:
    """A zeroed array for a label volume being built.

    Up to `IN_MEMORY_LIMIT` bytes (or with no ``near``) it is in RAM; above, it is a memory
    map of a scratch file in the folder of ``near`` (the output), whose pages the kernel
    writes out and drops as needed, so a volume bigger than RAM can be labelled. The space
    is reserved up front (a full disk is an `OutputError` now, not a crash later) and the
    file is unlinked at once: it disappears when the array does, even if the process is
    killed, and nothing is ever left beside the outputs.
    """
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape)) * dtype.itemsize
    if near is None or nbytes <= IN_MEMORY_LIMIT:
        return np.zeros(shape, dtype)
    folder = Path(near).parent
    scratch = temporary_name(folder / "scratch-labels.bin")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with open(scratch, "w+b") as f:
            try:
                os.posix_fallocate(f.fileno(), 0, nbytes)
            except (AttributeError, OSError) as exc:  # no fallocate here (macOS, some network file systems)
                if isinstance(exc, OSError) and exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                    raise
                f.truncate(nbytes)
            arr = np.memmap(f, dtype=dtype, mode="r+", shape=tuple(shape))
    except OSError as exc:
        raise output_error(near, exc) from exc
    finally:
        try:
            scratch.unlink()
        except OSError:
            pass
    log.debug("labels %s (%.1f GiB) in a scratch file mapped from %s", tuple(shape), nbytes / 2**30, folder)
    return arr


#: Label file extensions and the format each writes, longest first where one ends another
#: (``output_format``; `volume.report.side_paths` strips them to name the sidecars)
OUTPUT_EXTS = ((".nii.gz", "nifti"), (".nii", "nifti"), (".nrrd", "nrrd"), (".tiff", "tiff"), (".tif", "tiff"),
               (".npy", "npy"), (".ome.zarr", "ome-zarr"), (".zarr", "ome-zarr"), (".dcm", "dicom-seg"))


def output_format(path: "str | os.PathLike", like: "Volume | None" = None) -> str:
    """``nifti``/``tiff``/``npy``/``ome-zarr``/``dicom-seg`` from the output extension, or raise
    naming the choices; ``dicom-seg`` (``.dcm``) only for a DICOM input (``like``), whose series
    it references."""
    name = Path(path).name.lower()
    for ext, fmt in OUTPUT_EXTS:
        if name.endswith(ext):
            if fmt == "dicom-seg" and like is not None and not like.meta.get("dicom_files"):
                raise InputError(f"{path}: DICOM-SEG output needs a DICOM input series (it references its "
                                 "slices); write .nii.gz, .tif or .npy")
            return fmt
    raise InputError(f"{path}: unknown output extension; expected .nii.gz, .nii, .nrrd, .tif, .tiff, .npy, "
                     ".ome.zarr or .dcm (DICOM-SEG, for DICOM inputs)")


#: The label file a run writes into an output folder, by format (the input's own; a DICOM
#: series gives a DICOM-SEG or NIfTI): what `default_output_name` picks and `diffseg
#: evaluate volume` looks for in a run's folder.
OUTPUT_NAMES = {"nifti": "labels.nii.gz", "dicom-seg": "labels.dcm", "tiff": "labels.tif", "npy": "labels.npy",
                "ome-zarr": "labels.ome.zarr", "slices": "labels.tif", "nrrd": "labels.nrrd"}


def default_output_name(vol: Volume, dicom_seg: bool = False) -> str:
    """The label file name matching the input's own format (DICOM -> a DICOM-SEG with
    ``dicom_seg``, else NIfTI; a DICOM-SEG -> a DICOM-SEG when it was placed on its series,
    else NIfTI)."""
    fmt = vol.source_format
    if fmt == "dicom":
        fmt = "dicom-seg" if dicom_seg else "nifti"
    elif fmt == "dicom-seg" and not vol.meta.get("dicom_files"):
        fmt = "nifti"  # a DICOM-SEG read without its series: nothing for a DICOM-SEG to reference
    return OUTPUT_NAMES[fmt]


def label_dtype(max_id: int, fmt: str, policy: str = "auto") -> np.dtype:
    """Smallest integer dtype holding ``0..max_id`` that ``fmt`` writes well.

    NIfTI: uint8 / int16 / uint16 / int32; TIFF: uint8 / uint16 (ImageJ) or int32; npy: int32.
    """
    if policy == "int32" or fmt == "npy":
        return np.dtype(np.int32)
    if max_id <= 255:
        return np.dtype(np.uint8)
    if fmt == "nifti" and max_id <= 32767:
        return np.dtype(np.int16)
    if max_id <= 65535:
        return np.dtype(np.uint16)
    return np.dtype(np.int32)


def write_labels(path: "str | os.PathLike", labels: np.ndarray, like: Volume,
                 dtype_policy: str = "auto", names: "dict[int, str | None] | None" = None,
                 provenance: "dict | None" = None) -> Path:
    """Write a ``(D, H, W)`` label volume in ``like``'s geometry, atomically.

    The format comes from the extension of ``path``. NIfTI gets ``like``'s affine (and its
    header when the input was NIfTI: qform/sform codes, units), never reoriented; TIFF gets
    ImageJ ZYX metadata with the spacing; ``.npy`` is int32; an OME-Zarr label image is
    written slab by slab (``labels`` may be a memory map bigger than RAM).

    Args:
        path: output file (or ``.ome.zarr`` folder).
        labels: int ``(D, H, W)``, ids >= 0, same shape as ``like``.
        like: the input volume.
        dtype_policy: ``auto`` (smallest fitting dtype) or ``int32``.
        names: label id -> name (DICOM-SEG segment labels, OME-Zarr label properties).
        provenance: what made the labels (model, configuration, software, input): a NIfTI
            header extension, the TIFF's metadata, the OME-Zarr attributes, the DICOM-SEG's
            algorithm parameters. Besides, it marks a TIFF as labels (napari plugin).

    Returns:
        ``Path(path)``.
    """
    path = Path(path)
    fmt = output_format(path, like)
    if tuple(labels.shape) != like.shape:
        raise ValueError(f"labels {tuple(labels.shape)} and volume {like.shape} differ in shape")
    max_id = max((int(labels[sl].max()) for sl in slabs(labels.shape)), default=0)
    dt = label_dtype(max_id, fmt, dtype_policy)
    provenance = dict(provenance or {})
    if fmt == "ome-zarr":  # slab by slab: no copy of the whole volume
        from .omezarr import write_labels_ome_zarr

        return write_labels_ome_zarr(path, labels, like, dt, names, provenance)
    labels = np.asarray(labels)
    out = labels.astype(dt, copy=False)
    if fmt == "dicom-seg":
        from .dicom import write_dicom_seg

        write_dicom_seg(path, labels, like, names, provenance)
    elif fmt == "npy":
        atomic_save_npy(path, out)
    elif fmt == "nifti":
        _write_nifti(path, out, like, provenance)
    elif fmt == "nrrd":
        _write_nrrd(path, out, like, provenance)
    else:
        _write_tiff(path, out, like, provenance)
    return path


def _write_nifti(path: Path, labels: np.ndarray, like: Volume, provenance: dict) -> None:
    import nibabel as nib

    hdr = like.meta.get("nifti_header")
    if like.affine is not None:
        affine_file = like.affine @ _PERM
    else:
        # No geometry (TIFF/npy input): diagonal spacing, origin 0, array axes as (i, j, k).
        dz, dy, dx = like.spacing
        affine_file = np.diag([dx, dy, dz, 1.0])
    data = labels.transpose(2, 1, 0)  # (D, H, W) -> file order (i, j, k)
    cls = nib.Nifti2Image if like.meta.get("nifti_class") == "Nifti2Image" else nib.Nifti1Image
    if hdr is not None:
        hdr = hdr.copy()
        hdr.set_data_shape(data.shape)
        img = cls(data, affine_file, header=hdr)
        # Keep the input's qform and sform as they were, codes included: when they differ,
        # ITK-based tools (3D Slicer, ITK-SNAP, SimpleITK) read the qform and nibabel the
        # sform, so writing one over the other moves the labels away from the image in one
        # kind of tool (the constructor may reset them, hence set both again).
        qc, sc = int(hdr["qform_code"]), int(hdr["sform_code"])
        if qc == 0 and sc == 0:
            img.set_qform(affine_file, 0)
            img.set_sform(affine_file, 2)  # no code in the input: the affine is still the geometry we used
        else:
            img.set_qform(hdr.get_qform() if qc > 0 else affine_file, qc)
            img.set_sform(hdr.get_sform() if sc > 0 else affine_file, sc)
    else:
        img = cls(data, affine_file)
        img.set_qform(affine_file, 1)
        img.set_sform(affine_file, 1)
        img.header.set_xyzt_units("mm" if like.unit in ("mm", "voxel") else "micron" if like.unit == "um" else "unknown")
    img.set_data_dtype(labels.dtype)
    h = img.header
    h.set_slope_inter(1.0, 0.0)
    h["cal_min"], h["cal_max"] = 0, float(labels.max()) if labels.size else 0
    h["intent_code"] = 1002  # NIFTI_INTENT_LABEL
    h["descrip"] = b"diffseg-vv labels"
    if provenance:  # a comment extension (code 6) holding the provenance as JSON
        h.extensions.append(nib.nifti1.Nifti1Extension(6, provenance_json(provenance).encode("utf-8")))
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))


def _write_nrrd(path: Path, labels: np.ndarray, like: Volume, provenance: dict) -> None:
    """A gzip NRRD in LPS space (3D Slicer's convention) with ``like``'s geometry; a file
    named ``*label*`` / ``*seg*`` (ours: ``labels.nrrd``) opens in Slicer as a label map."""
    import nrrd

    if like.affine is not None:
        ijk = like.affine @ _PERM
    else:  # no geometry (TIFF/npy input): diagonal spacing, origin 0, as in NIfTI
        dz, dy, dx = like.spacing
        ijk = np.diag([dx, dy, dz, 1.0])
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ ijk
    header = {"space": "left-posterior-superior", "space directions": lps[:3, :3].T,  # (type: pynrrd's, from the data)
              "space origin": lps[:3, 3], "kinds": ["domain"] * 3, "encoding": "gzip",
              "space units": [like.unit if like.unit in ("mm", "um") else "mm"] * 3}
    if provenance:
        header["diffseg_labels"] = provenance_json(provenance)
    with atomic_path(path) as tmp:
        nrrd.write(str(tmp), labels.transpose(2, 1, 0), header, index_order="F")


def provenance_json(provenance: dict) -> str:
    """The provenance as compact JSON text (anything not JSON as its string)."""
    return json.dumps({"diffseg_labels": provenance}, default=str, separators=(",", ":"))


def tiff_provenance(path: "str | os.PathLike") -> "dict | None":
    """The provenance `write_labels` stored in a TIFF (so: a diffseg-vv label TIFF), else None."""
    import tifffile

    try:
        with tifffile.TiffFile(str(path)) as tf:
            texts = [str((tf.imagej_metadata or {}).get("Info", "")), tf.pages[0].description or ""]
    except Exception:
        return None
    for t in texts:
        try:
            doc = json.loads(t)
        except ValueError:
            continue
        if isinstance(doc, dict) and isinstance(doc.get("diffseg_labels"), dict):
            return doc["diffseg_labels"]
    return None


def _write_tiff(path: Path, labels: np.ndarray, like: Volume, provenance: dict) -> None:
    import tifffile

    dz, dy, dx = like.spacing
    kw: dict[str, Any] = {"compression": "zlib"}
    if labels.dtype in (np.uint8, np.uint16):
        md: dict[str, Any] = {"axes": "ZYX", "Info": provenance_json(provenance)}
        if like.spacing_known:
            md["spacing"] = float(dz)
            md["unit"] = like.unit
            kw["resolution"] = (1.0 / dx, 1.0 / dy)
        kw.update(imagej=True, metadata=md)
    else:
        kw["metadata"] = {"axes": "ZYX", "spacing": [float(dz), float(dy), float(dx)], "unit": like.unit,
                          "diffseg_labels": json.loads(provenance_json(provenance))["diffseg_labels"]}
        if like.spacing_known:
            kw["resolution"] = (1.0 / dx, 1.0 / dy)
    with atomic_path(path) as tmp:
        tifffile.imwrite(str(tmp), labels, **kw)
