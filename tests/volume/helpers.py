"""Synthetic volumes, a DICOM series writer and a fake slice segmenter for the volume tests."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from diffseg_core.types import Segmentation

REPO = Path(__file__).resolve().parents[2]


def shared_data() -> "Path | None":
    """``$DIFFSEG_SHARED/data`` or ``<repo>/../shared/data`` when present."""
    env = os.environ.get("DIFFSEG_SHARED")
    root = Path(env) if env else REPO.parent / "shared"
    d = root / "data"
    return d if d.is_dir() else None


def spheres(shape=(20, 40, 48), spacing=(1.0, 1.0, 1.0), touching: bool = True) -> np.ndarray:
    """int32 ``(D, H, W)``: ellipsoids 1, 2 (touching along a plane), a shell 3 around core 4."""
    D, H, W = shape
    dz, dy, dx = spacing
    z, y, x = np.meshgrid(np.arange(D) * dz, np.arange(H) * dy, np.arange(W) * dx, indexing="ij")
    Z, Y, X = D * dz, H * dy, W * dx
    lab = np.zeros(shape, np.int32)

    def ell(c, r):
        return ((z - c[0]) / r[0]) ** 2 + ((y - c[1]) / r[1]) ** 2 + ((x - c[2]) / r[2]) ** 2 < 1

    a = ell((Z * .5, Y * .3, X * .3), (Z * .4, Y * .2, X * .2))
    lab[a & (x < X * .3)] = 1
    lab[a & (x >= X * .3)] = 2 if touching else 0
    lab[ell((Z * .5, Y * .7, X * .7), (Z * .4, Y * .22, X * .22))] = 3
    lab[ell((Z * .5, Y * .7, X * .7), (Z * .2, Y * .1, X * .1))] = 4
    return lab


def stacked_ellipsoids(shape=(20, 40, 40), dz: float = 3.0) -> np.ndarray:
    """int32 ``(D, H, W)``: ellipsoid 1 (slices 1-9) and ellipsoid 2 (slices 10-18) end to end
    along axis 0 at the same in-plane place (their tips touch), background 0."""
    D, H, W = shape
    z, y, x = np.meshgrid(np.arange(D) * dz, np.arange(H) * 1.0, np.arange(W) * 1.0, indexing="ij")
    lab = np.zeros(shape, np.int32)

    def ell(c, r):
        return ((z - c[0]) / r[0]) ** 2 + ((y - c[1]) / r[1]) ** 2 + ((x - c[2]) / r[2]) ** 2 < 1

    lab[ell((5 * dz, H * .5, W * .5), (14 / 3 * dz, H * .225, W * .225))] = 1
    lab[ell((43 / 3 * dz, H * .5 + 1, W * .5), (14 / 3 * dz, H * .25, W * .25)) & (lab == 0)] = 2
    return lab


def shuffle_slices(lab: np.ndarray, seed: int = 0, axis: int = 0, keep_zero: bool = False) -> np.ndarray:
    """Relabel every slice along ``axis`` with a random permutation of ids (DiffSeg-like)."""
    rng = np.random.default_rng(seed)
    out = np.zeros_like(lab)
    top = int(lab.max()) + 1
    for i in range(lab.shape[axis]):
        perm = rng.permutation(top) + (1 if keep_zero else 0)
        if keep_zero:
            perm = np.concatenate([[0], perm[1:]])
        sl = [slice(None)] * 3
        sl[axis] = i
        out[tuple(sl)] = perm[lab[tuple(sl)]]
    return out


class ThresholdSegmenter:
    """Fake DiffSeg: segments = gray-level bands of the RGB slice (deterministic).

    ``segment(list of uint8 (H, W, 3)) -> list[Segmentation]`` with labels ``0..K-1`` at
    the image size and proposals = masks pooled on an 8x-smaller grid.
    """

    def __init__(self, edges=(40, 100, 160, 220), batch_size: int = 4) -> None:
        self.edges = np.asarray(edges)
        self.calls = 0
        self.sizes: list[tuple[int, int]] = []

        class _C:
            pass

        self.config = _C()
        self.config.batch_size = batch_size  # type: ignore[attr-defined]

    def segment(self, images) -> list[Segmentation]:
        out = []
        self.calls += 1
        for img in images:
            img = np.asarray(img)
            assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
            self.sizes.append(img.shape[:2])
            band = np.digitize(img[:, :, 0], self.edges)
            vals, lab = np.unique(band, return_inverse=True)
            lab = lab.reshape(band.shape).astype(np.int32)
            k = len(vals)
            h, w = max(1, img.shape[0] // 8), max(1, img.shape[1] // 8)
            props = np.full((k, h, w), 1e-3, np.float32)
            small = lab[: h * 8 : 8, : w * 8 : 8][:h, :w]
            for i in range(k):
                props[i][: small.shape[0], : small.shape[1]] += small == i
            props /= props.reshape(k, -1).sum(1)[:, None, None]
            out.append(Segmentation(labels=lab, proposals=props))
        return out


def write_dicom_series(folder: Path, volume: np.ndarray, spacing=(2.5, 0.8, 0.7), origin=(-100.0, -80.0, 50.0),
                       row_dir=(1.0, 0.0, 0.0), col_dir=(0.0, 1.0, 0.0), slope: float = 1.0,
                       intercept: float = -1024.0, series_uid: "str | None" = None, description: str = "test",
                       modality: str = "CT", order=None, prefix: str = "im") -> str:
    """Write ``volume`` ``(D, H, W)`` (stored values, uint16) as single-frame DICOM files.

    Slice k sits at ``origin + k * dz * normal`` (normal = row x col); files are written in
    ``order`` (default: reversed) so the reader must sort. Returns the SeriesInstanceUID.
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    uid = series_uid or generate_uid()
    study = generate_uid()
    rd, cd = np.asarray(row_dir, float), np.asarray(col_dir, float)
    normal = np.cross(rd, cd)
    D = volume.shape[0]
    order = list(range(D))[::-1] if order is None else order
    for n, k in enumerate(order):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        sop = generate_uid()
        meta.MediaStorageSOPInstanceUID = sop
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = sop
        ds.StudyInstanceUID = study
        ds.SeriesInstanceUID = uid
        ds.SeriesDescription = description
        ds.Modality = modality
        ds.InstanceNumber = n + 1
        ds.Rows, ds.Columns = int(volume.shape[1]), int(volume.shape[2])
        ds.PixelSpacing = [float(spacing[1]), float(spacing[2])]
        ds.SliceThickness = float(spacing[0])
        ds.ImageOrientationPatient = [float(v) for v in list(rd) + list(cd)]
        pos = np.asarray(origin, float) + k * spacing[0] * normal
        ds.ImagePositionPatient = [float(v) for v in pos]
        ds.RescaleSlope = slope
        ds.RescaleIntercept = intercept
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 0
        ds.PixelData = np.ascontiguousarray(volume[k].astype(np.uint16)).tobytes()
        ds.save_as(str(folder / f"{prefix}{n:03d}.dcm"), enforce_file_format=True)
    return uid
