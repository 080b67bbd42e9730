"""DICOM series folders -> `Volume` (pydicom), with geometry checks; DICOM-SEG in and out.

Slices are grouped by SeriesInstanceUID, sorted by ImagePositionPatient projected on the
slice normal (row x column direction), rescaled with RescaleSlope/Intercept; the spacing
is PixelSpacing plus the distance between consecutive positions. The affine maps
``(slice, row, column)`` indices to RAS+ mm (DICOM's LPS with x and y negated). A DICOM
Segmentation (highdicom) is read as a label volume in the same array order as its source
series (`read_dicom_seg`).
"""
from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from diffseg_core.errors import InputError, short_message

from .types import Volume

log = logging.getLogger("diffseg.volume")
#: Relative deviation of slice gaps tolerated silently.
GAP_TOLERANCE = 0.01
#: A gap larger than this many median gaps means slices are missing: an error.
MISSING_FACTOR = 1.5
#: SOP Class UID of DICOM Segmentation Storage (a DICOM-SEG file).
SEG_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"


@dataclass
class _SeriesInfo:
    uid: str
    description: str = ""
    modality: str = ""
    files: list[Path] = field(default_factory=list)


def _candidate_files(folder: Path) -> list[Path]:
    return sorted(f for f in folder.rglob("*") if f.is_file() and not f.name.startswith(".")
                  and f.name.upper() != "DICOMDIR")


def list_series(folder: "str | Path") -> dict[str, _SeriesInfo]:
    """SeriesInstanceUID -> files, description, modality of every DICOM image in ``folder``
    (segmentations beside the images, as a PACS export of a study puts them, are not images).

    Files that are not DICOM are skipped silently; DICOM files whose header cannot be read
    are skipped with one warning that counts them, so one broken file never hides the rest.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    folder = Path(folder)
    series: dict[str, _SeriesInfo] = {}
    broken: list[tuple[Path, BaseException]] = []
    for f in _candidate_files(folder):
        try:
            ds = pydicom.dcmread(str(f), stop_before_pixels=True)
            if "Rows" not in ds or "Columns" not in ds or str(ds.get("SOPClassUID", "")) == SEG_STORAGE:
                continue  # not an image (SR, presentation state, ...; a DICOM-SEG holds labels)
            int(ds.Rows), int(ds.Columns)  # a damaged size element raises here
            uid = str(getattr(ds, "SeriesInstanceUID", "") or "unknown")
            description = str(getattr(ds, "SeriesDescription", "") or "")
            modality = str(getattr(ds, "Modality", "") or "")
        except InvalidDicomError:
            continue  # not DICOM at all (notes, thumbnails, ...)
        except Exception as exc:  # pydicom raises many types for damaged headers
            broken.append((f, exc))
            continue
        info = series.setdefault(uid, _SeriesInfo(uid, description, modality))
        info.files.append(f)
    if broken:
        f, exc = broken[0]
        warnings.warn(f"{folder}: {len(broken)} damaged DICOM file(s) skipped, e.g. {f.name} "
                      f"({type(exc).__name__}: {short_message(exc)})", UserWarning, stacklevel=3)
    return series


def read_dicom_series(path: "str | Path", series: "str | None" = None) -> Volume:
    """Read one DICOM series as a ``(D, H, W)`` = ``(slice, row, column)`` `Volume`.

    Args:
        path: folder with the series (searched recursively), or one ``.dcm`` file of it.
        series: SeriesInstanceUID to read when there are several.

    Raises:
        InputError: no DICOM images, several series and none chosen (the message lists them),
            differing slice sizes or orientations, duplicate positions, missing slices.
    """
    path = Path(path)
    if path.is_file() and is_dicom_seg(path):
        return read_dicom_seg(path)
    folder = path if path.is_dir() else path.parent
    found = list_series(folder)
    if not found:
        raise InputError(f"{folder}: no DICOM image files found")
    if path.is_file() and series is None:
        import pydicom

        try:
            series = str(pydicom.dcmread(str(path), stop_before_pixels=True).SeriesInstanceUID)
        except Exception as exc:
            raise InputError(f"{path}: not a readable DICOM file ({exc})") from exc
    if series is None:
        if len(found) > 1:
            lines = "; ".join(f"{s.uid} ({s.modality or '?'} '{s.description}', {len(s.files)} files)"
                              for s in found.values())
            raise InputError(f"{folder}: {len(found)} DICOM series found, pick one with --series UID: {lines}")
        info = next(iter(found.values()))
    else:
        if series not in found:
            raise InputError(f"{folder}: no series {series!r}; found {', '.join(found)}")
        info = found[series]
    try:
        return _read_series(folder, info)
    except InputError:
        raise
    except Exception as exc:  # a damaged value that no check below names: still one line
        raise InputError(f"{folder}: series {info.uid} cannot be read ({type(exc).__name__}: {short_message(exc)})") from exc


def _number(f: Path, ds: Any, name: str, default: float, kind: type = float) -> float:
    """A numeric tag of one file (``default`` when absent or empty), or an `InputError` that
    names the file and the tag when its value is not a finite number."""
    try:
        v = getattr(ds, name, None)
    except Exception as exc:
        raise InputError(f"{f}: {name} cannot be read ({short_message(exc)})") from exc
    if v is None or v == "":
        return kind(default)
    try:
        x = float(v)
    except (TypeError, ValueError):
        raise InputError(f"{f}: {name} is not a number ({str(v)[:40]!r})") from None
    if not np.isfinite(x):
        raise InputError(f"{f}: {name} is not a finite number ({x})")
    return kind(x)


def _pixels(f: Path, ds: Any) -> np.ndarray:
    try:
        return ds.pixel_array
    except Exception as exc:  # truncated data, missing Photometric Interpretation, codecs
        raise InputError(f"{f}: cannot decode pixel data ({type(exc).__name__}: {short_message(exc)})") from exc


def _floats(ds: Any, name: str, n: int) -> "np.ndarray | None":
    v = getattr(ds, name, None)
    if v is None:
        return None
    try:
        a = np.array([float(x) for x in v], dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return a if a.shape == (n,) and np.isfinite(a).all() else None


def _read_series(folder: Path, info: _SeriesInfo) -> Volume:
    import pydicom

    dss = []
    for f in info.files:
        try:
            ds = pydicom.dcmread(str(f))
        except Exception as exc:
            raise InputError(f"{f}: not a readable DICOM file ({exc})") from exc
        if _number(f, ds, "NumberOfFrames", 1, int) > 1:
            if len(info.files) == 1:  # an enhanced CT / MR: the whole series in one file
                return _read_multiframe(folder, info, f, ds)
            raise InputError(f"{folder}: series {info.uid} holds {len(info.files)} files and {f.name} is a "
                             "multi-frame image: one volume is one multi-frame file or one file per slice; move "
                             "the multi-frame file to a folder of its own")
        dss.append((f, ds))
    shapes = [(_number(f, ds, "Rows", 0, int), _number(f, ds, "Columns", 0, int)) for f, ds in dss]
    for (f, _), (r, c) in zip(dss, shapes):
        if r < 1 or c < 1:
            raise InputError(f"{f}: image size Rows x Columns = {r} x {c} is empty")
    sizes = set(shapes)
    if len(sizes) > 1:
        raise InputError(f"{folder}: series {info.uid} has slices of different sizes {sorted(sizes)}")
    rows, cols = sizes.pop()

    iops = [_floats(ds, "ImageOrientationPatient", 6) for _, ds in dss]
    ipps = [_floats(ds, "ImagePositionPatient", 3) for _, ds in dss]
    ps = _floats(dss[0][1], "PixelSpacing", 2)
    if ps is None:
        warnings.warn(f"{folder}: no PixelSpacing; assuming 1 mm pixels", UserWarning, stacklevel=3)
        ps = np.array([1.0, 1.0])
    if (ps <= 0).any():
        raise InputError(f"{folder}: PixelSpacing must be positive; got {ps.tolist()}")
    geometry = all(o is not None for o in iops) and all(p is not None for p in ipps)
    if geometry:
        iop0 = iops[0]
        if any(np.abs(o - iop0).max() > 1e-3 for o in iops):  # type: ignore[operator]
            raise InputError(f"{folder}: series {info.uid} mixes slice orientations (ImageOrientationPatient differs)")
        rowdir, coldir = iop0[:3], iop0[3:]  # type: ignore[index]
        normal = np.cross(rowdir, coldir)
        pos = np.array([float(np.dot(p, normal)) for p in ipps])  # type: ignore[arg-type]
        order = np.argsort(pos, kind="stable")
        pos_sorted = pos[order]
        if len(pos) > 1:
            gaps = np.diff(pos_sorted)
            if (gaps < 1e-4).any():
                k = int(np.argmax(gaps < 1e-4))
                raise InputError(
                    f"{folder}: series {info.uid} has two slices at the same position {pos_sorted[k]:.3f} mm "
                    f"({dss[order[k]][0].name}, {dss[order[k + 1]][0].name}); several acquisitions in one series?"
                )
            med = float(np.median(gaps))
            if gaps.max() > MISSING_FACTOR * med:
                k = int(np.argmax(gaps))
                raise InputError(
                    f"{folder}: series {info.uid} has a gap of {gaps[k]:.3f} mm between slices at "
                    f"{pos_sorted[k]:.3f} and {pos_sorted[k + 1]:.3f} mm (usual spacing {med:.3f} mm): slices missing"
                )
            dz = float((pos_sorted[-1] - pos_sorted[0]) / (len(pos) - 1))
            if (np.abs(gaps - dz) > GAP_TOLERANCE * dz).any():
                warnings.warn(
                    f"{folder}: slice spacing varies from {gaps.min():.4f} to {gaps.max():.4f} mm; "
                    f"using the mean {dz:.4f} mm (output geometry assumes uniform spacing)",
                    UserWarning, stacklevel=3,
                )
            step = (ipps[order[-1]] - ipps[order[0]]) / (len(pos) - 1)  # type: ignore[operator]
        else:
            dz = _number(dss[0][0], dss[0][1], "SliceThickness", 1.0)
            step = normal * dz
        origin = ipps[order[0]]
    else:
        warnings.warn(
            f"{folder}: slices lack ImagePositionPatient/ImageOrientationPatient; sorted by InstanceNumber, "
            "spacing from SliceThickness, axis-aligned geometry assumed", UserWarning, stacklevel=3,
        )
        order = np.argsort([_number(f, ds, "InstanceNumber", i, int) for i, (f, ds) in enumerate(dss)],
                           kind="stable")
        dz = _number(dss[0][0], dss[0][1], "SliceThickness", 1.0)
        rowdir, coldir = np.array([1.0, 0, 0]), np.array([0, 1.0, 0])
        step = np.array([0, 0, dz])
        origin = np.zeros(3)
    if not dz > 0:
        raise InputError(f"{folder}: slice spacing must be positive; got {dz}")

    scale = [(_number(f, ds, "RescaleSlope", 1.0) or 1.0, _number(f, ds, "RescaleIntercept", 0.0)) for f, ds in dss]
    slopes = {a for a, _ in scale}
    inters = {b for _, b in scale}
    uniform = len(slopes) == 1 and len(inters) == 1
    data: "np.ndarray | None" = None
    for i, k in enumerate(order):
        f, ds = dss[k]
        px = _pixels(f, ds)
        if px.shape != (rows, cols):
            raise InputError(f"{f}: pixel data shape {px.shape} differs from Rows x Columns {(rows, cols)}")
        if data is None:
            data = np.empty((len(dss), rows, cols), dtype=px.dtype if uniform else np.float32)
        if uniform:
            data[i] = px
        else:  # per-slice rescale: apply here (float32)
            data[i] = px * scale[k][0] + scale[k][1]
    assert data is not None
    dy, dx = float(ps[0]), float(ps[1])
    lps = np.eye(4)
    lps[:3, 0] = step
    lps[:3, 1] = np.asarray(coldir) * dy
    lps[:3, 2] = np.asarray(rowdir) * dx
    lps[:3, 3] = origin
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps  # LPS -> RAS
    return Volume(
        data=data, spacing=(dz, dy, dx), affine=affine, source_format="dicom", path=folder,
        spacing_known=True, unit="mm", modality=info.modality,
        meta={"dicom_series": info.uid, "dicom_description": info.description,
              "dicom_files": [str(dss[k][0]) for k in order],  # slice order: DICOM-SEG references them
              "dicom_sop_uids": [str(dss[k][1].get("SOPInstanceUID", "")) for k in order]},
        slope=next(iter(slopes)) if uniform else 1.0, intercept=next(iter(inters)) if uniform else 0.0,
    )


def _our_grid(data: np.ndarray, lps: np.ndarray) -> "tuple[np.ndarray, tuple[float, float, float], np.ndarray]":
    """A highdicom volume's array and its ``(slice, row, column) -> LPS mm`` affine in the
    order `read_dicom_series` reads a series: slices ascending along row x column direction
    (highdicom may stack them the other way), affine to RAS+. Returns data, spacing, affine."""
    lps = np.asarray(lps, np.float64).copy()
    dy, dx = float(np.linalg.norm(lps[:3, 1])), float(np.linalg.norm(lps[:3, 2]))
    normal = np.cross(lps[:3, 2] / dx, lps[:3, 1] / dy)  # row direction x column direction
    if float(np.dot(lps[:3, 0], normal)) < 0:
        data = data[::-1].copy()
        lps[:3, 3] += (data.shape[0] - 1) * lps[:3, 0]
        lps[:3, 0] *= -1
    dz = float(np.linalg.norm(lps[:3, 0]))
    return data, (dz, dy, dx), np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps


def _read_multiframe(folder: Path, info: _SeriesInfo, f: Path, ds: Any) -> Volume:
    """One multi-frame image (Enhanced CT / MR, Legacy Converted Enhanced): highdicom places
    its frames by their per-frame plane positions and applies the rescale (CT: HU)."""
    import highdicom as hd

    try:
        hv = hd.imread(str(f)).get_volume(dtype=np.float32)
    except Exception as exc:  # frames off one regular grid, several stacks, a missing position
        raise InputError(f"{f}: multi-frame DICOM cannot be read as one volume ({type(exc).__name__}: "
                         f"{short_message(exc)})") from exc
    arr = np.asarray(hv.array)
    if arr.ndim != 3:
        raise InputError(f"{f}: multi-frame DICOM holds {arr.shape[3:]} samples per voxel (colour); expected one")
    data, spacing, affine = _our_grid(arr, hv.affine)
    return Volume(data=data, spacing=spacing, affine=affine, source_format="dicom", path=folder,
                  spacing_known=True, unit="mm", modality=info.modality,
                  meta={"dicom_series": info.uid, "dicom_description": info.description,
                        "dicom_files": [str(f)], "dicom_sop_uids": [str(ds.get("SOPInstanceUID", ""))],
                        "dicom_multiframe": True})


def _place(data: np.ndarray, affine: np.ndarray, like: Volume, path: Path) -> np.ndarray:
    """Labels on a grid of slices (``affine`` RAS) put on the slices of ``like`` (the same
    grid, perhaps fewer slices: a segmentation that leaves out empty slices at its ends)."""
    step = np.asarray(like.affine[:3, 0], np.float64)
    k = float(np.dot(affine[:3, 3] - like.affine[:3, 3], step) / np.dot(step, step))
    k0 = int(round(k))
    same = (data.shape[1:] == tuple(like.shape[1:]) and abs(k - k0) < 0.1 and 0 <= k0
            and k0 + data.shape[0] <= like.shape[0] and np.allclose(affine[:3, :3], like.affine[:3, :3], atol=1e-3)
            and np.linalg.norm(affine[:3, 3] - (like.affine[:3, 3] + k0 * step)) < 0.1 * np.linalg.norm(step))
    if not same:
        raise InputError(f"{path}: not a segmentation of the series {like.path} (its frames lie elsewhere)")
    out = np.zeros(like.shape, np.int32)
    out[k0:k0 + data.shape[0]] = data
    return out


def is_dicom_seg(path: Path) -> bool:
    """Whether ``path`` is a DICOM Segmentation file (False for anything else, unreadable too)."""
    import pydicom

    try:
        ds = pydicom.dcmread(str(path), stop_before_pixels=True, specific_tags=["SOPClassUID"])
    except Exception:  # not DICOM, or damaged: the series reader names the problem
        return False
    return str(ds.get("SOPClassUID", "")) == SEG_STORAGE


def read_dicom_seg(path: "str | Path", like: "Volume | None" = None) -> Volume:
    """Read a DICOM Segmentation (highdicom) as a label volume: each voxel holds the
    number of the segment it is in (0: none), as `write_dicom_seg` numbers labels.

    The array order is its source series' as `read_dicom_series` reads it: ``(slice, row,
    column)``, slices ascending along the normal (row x column direction); the affine maps
    it to RAS+ mm. With ``like`` (the source series, read by `read_dicom_series`) the frames
    are placed on its slices by the source instance each frame references, so a
    segmentation that leaves out its empty slices (most tools do, `write_dicom_seg` too) gets
    the series' full extent; without it every slice the segmentation references must have
    its frames.

    Raises:
        InputError: unreadable, FRACTIONAL, overlapping segments (a label volume holds one
            segment per voxel), frames not on one regular grid, empty slices left out and no
            ``like``, or ``like`` not its source series.
    """
    import highdicom as hd

    path = Path(path)
    try:
        seg = hd.seg.segread(str(path))
    except Exception as exc:
        raise InputError(f"{path}: not a readable DICOM-SEG ({type(exc).__name__}: {short_message(exc)})") from exc
    if seg.segmentation_type == hd.seg.SegmentationTypeValues.FRACTIONAL:
        raise InputError(f"{path}: a FRACTIONAL DICOM-SEG holds probabilities, not labels; threshold it into a "
                         "BINARY one first")
    names = {int(d.SegmentNumber): str(d.get("SegmentLabel", "")) or None for d in seg.SegmentSequence}
    try:
        if like is not None:
            sops = like.meta.get("dicom_sop_uids") or []  # recorded by read_dicom_series
            if not sops:
                raise InputError(f"{path}: {like.path} is not a DICOM series to place the segmentation on")
            if like.meta.get("dicom_multiframe"):  # frames placed by their positions on the series' grid
                hv = seg.get_volume(combine_segments=True, dtype=np.int32)
                if hv is None:
                    raise InputError(f"{path}: its frames do not lie on one regular grid of slices")
                placed, _, affine = _our_grid(np.asarray(hv.array, np.int32), hv.affine)
                data = _place(placed, affine, like, path)
            else:
                try:
                    data = seg.get_pixels_by_source_instance(source_sop_instance_uids=sops, combine_segments=True,
                                                             dtype=np.int32)
                except KeyError as exc:  # highdicom: instances the segmentation does not reference
                    raise InputError(f"{path}: not a segmentation of the series {like.path} (it references other "
                                     "slices)") from exc
            return Volume(data=data, spacing=like.spacing, affine=like.affine, source_format="dicom-seg", path=path,
                          spacing_known=True, unit="mm", modality="SEG",
                          meta={"dicom_files": like.meta["dicom_files"], "dicom_sop_uids": sops,
                                "dicom_multiframe": bool(like.meta.get("dicom_multiframe")), "segment_labels": names})
        vol = seg.get_volume(combine_segments=True, dtype=np.int32)
    except InputError:
        raise
    except RuntimeError as exc:  # highdicom: "segments overlap"
        raise InputError(f"{path}: cannot be read as one label volume: {short_message(exc)} (a label volume holds "
                         "one segment per voxel)") from exc
    except Exception as exc:  # frames off a regular grid, instances not in the segmentation, ...
        raise InputError(f"{path}: cannot be read as a label volume ({type(exc).__name__}: "
                         f"{short_message(exc)})") from exc
    if vol is None:
        raise InputError(f"{path}: its frames do not lie on one regular grid of slices")
    referenced = sum(len(s.get("ReferencedInstanceSequence", [])) for s in seg.get("ReferencedSeriesSequence", []))
    data = np.asarray(vol.array, np.int32)
    if referenced > data.shape[0]:
        raise InputError(f"{path}: the segmentation leaves out {referenced - data.shape[0]} of the "
                         f"{referenced} slices of its source series (empty ones); give the series it was made "
                         "on to place its frames (`diffseg stack --image DIR`, `diffseg evaluate volume "
                         "--series DIR`; Python: `volume.api.read_labels(path, on=read_volume(DIR))`)")
    data, spacing, affine = _our_grid(data, vol.affine)
    return Volume(data=data, spacing=spacing, affine=affine, source_format="dicom-seg", path=path, spacing_known=True,
                  unit="mm", modality="SEG",
                  meta={"segment_labels": names})


#: DICOM attributes of type 2 (present, may be empty) that a DICOM-SEG copies from its source
#: images; a source without them (a de-identified or hand-made series) gets them empty
_SOURCE_TYPE2 = ("PatientID", "PatientName", "PatientBirthDate", "PatientSex", "StudyID", "StudyDate",
                 "StudyTime", "AccessionNumber", "ReferringPhysicianName")


def algorithm_parameters(provenance: dict) -> dict[str, str]:
    """The model's identity from the provenance as DICOM algorithm parameters (flat strings)."""
    seg = provenance.get("segmenter") or {}
    cfg = seg.get("config") or {}
    out = {k: str(cfg[k]) for k in ("model", "revision", "variant", "dtype", "size") if cfg.get(k) is not None}
    if "random_weights" in seg:
        out["random_weights"] = str(bool(seg["random_weights"]))
    return out


def write_dicom_seg(path: "str | Path", labels: np.ndarray, like: Volume,
                    names: "dict[int, str | None] | None" = None, provenance: "dict | None" = None) -> Path:
    """Write a label volume as a DICOM Segmentation (highdicom, BINARY, one segment per label)
    that references the source series it was made from, atomically.

    Each label ``i`` (``1..n``) is segment ``i``: its ``SegmentLabel`` is its name (or
    ``label i``), its recommended display colour our overlay's, its algorithm ``diffseg-vv``
    (automatic); the segmented property category and type are the generic SNOMED code
    "Tissue" (unsupervised segments carry no anatomy). Empty frames are left out (as most
    tools write them: `read_dicom_seg` then needs the series to place the frames). The
    provenance's model id, revision, dtype and whether the weights are random are the
    algorithm's parameters (``AlgorithmParameters``).

    Raises:
        InputError: ``like`` is neither a DICOM series read by `read_dicom_series` nor a
            DICOM-SEG placed on one.
    """
    import highdicom as hd
    import pydicom
    from pydicom.sr.codedict import codes

    from diffseg_core import software_version
    from diffseg_core.io import atomic_path, label_palette

    files = like.meta.get("dicom_files")  # a series read by read_dicom_series, or a DICOM-SEG placed on one
    if not files:
        raise InputError(f"{path}: DICOM-SEG output needs a DICOM input series (it references the series' "
                         "slices); write .nii.gz instead")
    labels = np.asarray(labels)
    multiframe = bool(like.meta.get("dicom_multiframe"))
    slices = like.shape[0] if multiframe else len(files)
    if labels.shape[0] != slices:
        raise ValueError(f"labels have {labels.shape[0]} slices; the series has {slices}")
    sources = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    frame_of_reference = hd.UID()
    for ds in sources:
        for name in _SOURCE_TYPE2:
            if name not in ds:
                setattr(ds, name, "")
        if "FrameOfReferenceUID" not in ds:  # type 1 for CT / MR; a hand-made series may lack it
            ds.FrameOfReferenceUID = frame_of_reference
    ids = [int(i) for i in np.unique(labels) if i > 0]
    if not ids:
        raise InputError(f"{path}: no labels to write (every voxel is background); a DICOM-SEG needs at least "
                         "one segment: try --background none, or write .nii.gz")
    if ids != list(range(1, len(ids) + 1)):
        raise ValueError(f"DICOM-SEG needs labels 1..n; got {ids[:5]}...")
    names = names or {}
    pal = label_palette(max(ids, default=0) + 1)
    algorithm = hd.AlgorithmIdentificationSequence(name="diffseg-vv", version=software_version(),
                                                   family=codes.cid7162.ArtificialIntelligence,
                                                   parameters=algorithm_parameters(provenance or {}) or None)
    segments = [hd.seg.SegmentDescription(
        segment_number=i, segment_label=(names.get(i) or f"label {i}")[:64],
        segmented_property_category=codes.SCT.Tissue, segmented_property_type=codes.SCT.Tissue,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC, algorithm_identification=algorithm,
        tracking_uid=hd.UID(), tracking_id=f"label {i}",
        display_color=hd.color.CIELabColor.from_rgb(*(int(c) for c in pal[i]))) for i in ids]
    dtype = np.uint8 if len(ids) <= 255 else np.uint16
    pixels: Any = labels.astype(dtype, copy=False)
    if multiframe:  # frames matched to the source's by their positions (highdicom)
        pixels = hd.Volume(pixels, np.diag([-1.0, -1.0, 1.0, 1.0]) @ np.asarray(like.affine, np.float64),
                           "PATIENT", frame_of_reference_uid=str(sources[0].FrameOfReferenceUID))
    seg = hd.seg.Segmentation(
        source_images=sources, pixel_array=pixels, segmentation_type="BINARY",
        segment_descriptions=segments, series_instance_uid=hd.UID(), series_number=9901,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer="diffseg-vv",
        manufacturer_model_name="diffseg-vv", software_versions=software_version(), device_serial_number="none",
        series_description=f"diffseg-vv labels of {sources[0].get('SeriesDescription', '') or 'series'}"[:64])
    with atomic_path(path) as tmp:
        seg.save_as(str(tmp))
    return Path(path)
