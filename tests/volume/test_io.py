"""Readers and writers: geometry round trips and clear errors on bad input."""
from __future__ import annotations

import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import tifffile

from diffseg_core.errors import InputError
from tests.volume.helpers import write_dicom_series
from volume.io import read_label_volume, read_volume, write_labels


def _oblique_affine() -> np.ndarray:
    """An LPS-like, rotated, anisotropic affine (nothing axis-aligned or positive)."""
    th = np.deg2rad(20)
    rot = np.array([[np.cos(th), -np.sin(th), 0], [np.sin(th), np.cos(th), 0], [0, 0, 1]])
    flip = np.diag([-1.0, -1.0, 1.0])
    a = np.eye(4)
    a[:3, :3] = flip @ rot @ np.diag([0.8, 0.9, 3.0])
    a[:3, 3] = [12.5, -40.0, 7.0]
    return a


def test_nifti_roundtrip_keeps_affine_header_and_array_order(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    data = rng.integers(-1000, 1000, size=(14, 11, 6)).astype(np.int16)  # file order (i, j, k)
    aff = _oblique_affine()
    img = nib.Nifti1Image(data, aff)
    img.set_qform(aff, 1)
    img.set_sform(aff, 4)
    p = tmp_path / "scan.nii.gz"
    nib.save(img, p)
    vol = read_volume(p)
    assert vol.shape == (6, 11, 14)  # (D, H, W) = (k, j, i)
    assert vol.spacing == pytest.approx((3.0, 0.9, 0.8))
    assert np.array_equal(vol.data, data.transpose(2, 1, 0))
    # The (d, h, w) affine maps a voxel to the same world point as the file affine.
    d, h, w = 4, 7, 9
    assert np.allclose(vol.affine @ [d, h, w, 1], aff @ [w, h, d, 1])

    labels = (vol.data > 0).astype(np.int32) * 3
    out = tmp_path / "labels.nii.gz"
    write_labels(out, labels, vol)
    back = nib.load(out)
    assert back.shape == data.shape
    assert np.allclose(back.affine, aff)
    assert int(back.header["qform_code"]) == 1 and int(back.header["sform_code"]) == 4
    assert nib.aff2axcodes(back.affine) == nib.aff2axcodes(aff)
    assert back.get_data_dtype() == np.uint8
    assert np.array_equal(np.asarray(back.dataobj), (data > 0) * 3)


def test_nifti_labels_keep_a_qform_that_differs_from_the_sform(tmp_path: Path) -> None:
    # ITK-based tools (3D Slicer, ITK-SNAP, SimpleITK) place a volume by its qform, nibabel
    # by its sform: a label file must carry both as the image had them, or the labels land
    # 70 mm away from the image in one kind of tool
    q = np.array([[-0.9, 0, 0, 90], [0, 0.9, 0, -100], [0, 0, 2.5, -40], [0, 0, 0, 1]])
    s = q.copy()
    s[:3, 3] += [70.0, 0.0, 0.0]
    img = nib.Nifti1Image(np.ones((12, 10, 5), np.int16), s)
    img.set_qform(q, 1)
    img.set_sform(s, 2)
    nib.save(img, tmp_path / "scan.nii.gz")
    vol = read_volume(tmp_path / "scan.nii.gz")
    write_labels(tmp_path / "labels.nii.gz", np.ones(vol.shape, np.int32), vol)
    back = nib.load(tmp_path / "labels.nii.gz")
    assert np.allclose(back.get_qform(), q) and int(back.header["qform_code"]) == 1
    assert np.allclose(back.get_sform(), s) and int(back.header["sform_code"]) == 2


def test_nifti_label_dtype_grows_with_ids(tmp_path: Path) -> None:
    vol = read_volume(_nifti(tmp_path / "a.nii", np.zeros((4, 5, 6), np.float32)))
    lab = np.zeros(vol.shape, np.int32)
    lab[0, 0, 0] = 40000
    write_labels(tmp_path / "l.nii.gz", lab, vol)
    assert nib.load(tmp_path / "l.nii.gz").get_data_dtype() == np.uint16
    lab[0, 0, 1] = 70000
    write_labels(tmp_path / "l2.nii.gz", lab, vol)
    img = nib.load(tmp_path / "l2.nii.gz")
    assert img.get_data_dtype() == np.int32
    assert int(np.asarray(img.dataobj).max()) == 70000


def _nifti(p: Path, data: np.ndarray, zooms=(1.0, 1.0, 1.0)) -> Path:
    img = nib.Nifti1Image(data, np.diag(list(zooms) + [1.0]))
    nib.save(img, p)
    return p


def test_nifti_4d_needs_index(tmp_path: Path) -> None:
    data = np.arange(2 * 3 * 4 * 3, dtype=np.float32).reshape(2, 3, 4, 3)
    p = _nifti(tmp_path / "t.nii.gz", data)
    with pytest.raises(InputError, match="--index"):
        read_volume(p)
    v = read_volume(p, index=2)
    assert np.array_equal(v.data, data[..., 2].transpose(2, 1, 0))
    with pytest.raises(InputError, match="out of range"):
        read_volume(p, index=3)


def test_nifti_scaling_applied_per_slice(tmp_path: Path) -> None:
    data = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
    img = nib.Nifti1Image(data, np.eye(4))
    img.header.set_slope_inter(2.0, -5.0)
    nib.save(img, tmp_path / "s.nii")
    v = read_volume(tmp_path / "s.nii")
    assert v.data.dtype == np.int16  # no float copy of the volume
    assert np.allclose(v.slice_values(0, 1), data[:, :, 1].T * 2.0 - 5.0)


@pytest.mark.parametrize("content", [b"", b"\x00garbage" * 50])
@pytest.mark.parametrize("name", ["x.nii.gz", "x.nii", "x.tif", "x.npy"])
def test_empty_and_random_files_are_input_errors(tmp_path: Path, name: str, content: bytes) -> None:
    p = tmp_path / name
    p.write_bytes(content)
    with pytest.raises(InputError, match=str(p.name)):
        read_volume(p)


@pytest.mark.parametrize("dz", [0.0, -2.0])
def test_zero_or_negative_spacing_is_an_error(tmp_path: Path, dz: float) -> None:
    p = tmp_path / "z.tif"
    tifffile.imwrite(p, np.zeros((3, 4, 5), np.uint8), imagej=True, resolution=(2.0, 2.0),
                     metadata={"spacing": dz, "axes": "ZYX"})
    with pytest.raises(InputError, match="spacing"):
        read_volume(p)
    from volume.types import Volume

    with pytest.raises(InputError, match="spacing"):
        Volume(data=np.zeros((2, 2, 2)), spacing=(1.0, dz, 1.0))


def test_unknown_format_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="unknown volume format"):
        (tmp_path / "a.mha").write_bytes(b"x")
        read_volume(tmp_path / "a.mha")
    with pytest.raises(InputError, match="no such file"):
        read_volume(tmp_path / "missing.nii.gz")


def test_tiff_roundtrip_keeps_spacing(tmp_path: Path) -> None:
    data = np.random.default_rng(1).integers(0, 4000, (5, 16, 20)).astype(np.uint16)
    p = tmp_path / "stack.tif"
    tifffile.imwrite(p, data, imagej=True, resolution=(1 / 0.25, 1 / 0.25),
                     metadata={"spacing": 1.5, "unit": "um", "axes": "ZYX"})
    vol = read_volume(p)
    assert vol.shape == (5, 16, 20) and vol.spacing_known
    assert vol.spacing == pytest.approx((1.5, 0.25, 0.25), rel=1e-4)
    lab = (data > 2000).astype(np.int32)
    write_labels(tmp_path / "lab.tif", lab, vol)
    back = read_volume(tmp_path / "lab.tif")
    assert np.array_equal(back.data, lab)
    assert back.spacing == pytest.approx(vol.spacing, rel=1e-4)
    assert back.unit == "um"


def test_tiff_without_metadata_has_unknown_spacing(tmp_path: Path) -> None:
    tifffile.imwrite(tmp_path / "p.tif", np.zeros((3, 8, 8), np.uint8), photometric="minisblack")
    vol = read_volume(tmp_path / "p.tif")
    assert not vol.spacing_known and vol.spacing == (1.0, 1.0, 1.0)


def test_tiff_2d_is_an_error(tmp_path: Path) -> None:
    tifffile.imwrite(tmp_path / "one.tif", np.zeros((8, 8), np.uint8))
    with pytest.raises(InputError, match="2-D"):
        read_volume(tmp_path / "one.tif")


def test_npy_pickled_refused_and_4d(tmp_path: Path) -> None:
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(InputError, match="npy"):
        read_volume(tmp_path / "obj.npy")
    np.save(tmp_path / "four.npy", np.zeros((2, 3, 4, 5), np.float32))
    with pytest.raises(InputError, match="--index"):
        read_volume(tmp_path / "four.npy")
    assert read_volume(tmp_path / "four.npy", index=1).shape == (3, 4, 5)


@pytest.mark.parametrize("kind", ["tiff", "imagej", "npy"])
def test_an_rgb_stack_is_refused_or_one_channel_picked(tmp_path: Path, kind: str) -> None:
    # a plain RGB TIFF stack is QYXS to tifffile: the slices (Q) were taken for 5 "volumes"
    # and --index 0 segmented 32 slices 3 pixels wide; a (N, H, W, 3) .npy the same
    rgb = np.random.default_rng(0).integers(0, 255, (5, 32, 40, 3)).astype(np.uint8)
    p = tmp_path / ("rgb.npy" if kind == "npy" else "rgb.tif")
    if kind == "npy":
        np.save(p, rgb)
    else:
        tifffile.imwrite(p, rgb, photometric="rgb", imagej=kind == "imagej")
    with pytest.raises(InputError, match=r"RGB stack .*3 colour channels.*--index 0\.\.2"):
        read_volume(p)
    with pytest.raises(InputError, match="3 colour channels"):
        read_volume(p, index=3)
    v = read_volume(p, index=1)
    assert v.shape == (5, 32, 40)
    np.testing.assert_array_equal(np.asarray(v.data), rgb[..., 1])
    np.save(tmp_path / "vols.npy", np.zeros((3, 2, 6, 3), np.float32))  # slices 2 high: not colour
    assert read_volume(tmp_path / "vols.npy", index=2).shape == (2, 6, 3)


def test_label_volume_rejects_fractions_and_negatives(tmp_path: Path) -> None:
    np.save(tmp_path / "f.npy", np.full((2, 3, 3), 0.5, np.float32))
    with pytest.raises(InputError, match="integers"):
        read_label_volume(tmp_path / "f.npy")
    np.save(tmp_path / "n.npy", np.full((2, 3, 3), -1, np.int16))
    with pytest.raises(InputError, match="negative"):
        read_label_volume(tmp_path / "n.npy")


# ----------------------------------------------------------------------------- DICOM
def test_dicom_sorted_rescaled_with_affine(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    stored = rng.integers(0, 3000, (7, 9, 11)).astype(np.uint16)
    row, col = np.array([0.0, 1.0, 0.0]), np.array([0.0, 0.0, -1.0])  # sagittal, oblique-ish
    write_dicom_series(tmp_path / "s", stored, spacing=(2.0, 0.5, 0.6), origin=(10.0, -20.0, 30.0),
                       row_dir=row, col_dir=col, slope=2.0, intercept=-1000.0, order=[3, 0, 6, 1, 5, 2, 4])
    vol = read_volume(tmp_path / "s")
    assert vol.shape == (7, 9, 11) and vol.modality == "CT"
    assert vol.spacing == pytest.approx((2.0, 0.5, 0.6))
    assert np.array_equal(vol.data, stored)  # sorted by position, not by file order
    assert np.allclose(vol.slice_values(0, 3), stored[3] * 2.0 - 1000.0)
    # Voxel (d, h, w) sits at origin + d*dz*normal + h*dy*col + w*dx*row (LPS), RAS = (-x, -y, z).
    normal = np.cross(row, col)
    d, h, w = 5, 4, 7
    lps = np.array([10.0, -20.0, 30.0]) + d * 2.0 * normal + h * 0.5 * col + w * 0.6 * row
    assert np.allclose(vol.affine @ [d, h, w, 1], list(lps * [-1, -1, 1]) + [1])
    # Labels of DICOM input are written as NIfTI carrying that geometry.
    lab = (stored > 1500).astype(np.int32)
    write_labels(tmp_path / "lab.nii.gz", lab, vol)
    img = nib.load(tmp_path / "lab.nii.gz")
    assert np.allclose(img.affine @ [w, h, d, 1], vol.affine @ [d, h, w, 1])
    assert np.array_equal(np.asarray(img.dataobj).transpose(2, 1, 0), lab)


def test_dicom_several_series_listed_then_picked(tmp_path: Path) -> None:
    v = np.ones((3, 4, 5), np.uint16)
    a = write_dicom_series(tmp_path / "d", v, description="axial soft", prefix="a")
    b = write_dicom_series(tmp_path / "d", v * 2, description="bone", prefix="b")
    with pytest.raises(InputError) as ei:
        read_volume(tmp_path / "d")
    msg = str(ei.value)
    assert "--series" in msg and a in msg and b in msg and "bone" in msg
    vol = read_volume(tmp_path / "d", series=b)
    assert int(vol.data.max()) == 2
    with pytest.raises(InputError, match="no series"):
        read_volume(tmp_path / "d", series="1.2.3")


def test_dicom_missing_slice_and_size_mismatch(tmp_path: Path) -> None:
    v = np.ones((5, 4, 5), np.uint16)
    write_dicom_series(tmp_path / "gap", v, order=[0, 1, 3, 4])
    with pytest.raises(InputError, match="missing"):
        read_volume(tmp_path / "gap")
    uid = write_dicom_series(tmp_path / "size", v[:3])
    write_dicom_series(tmp_path / "size", np.ones((1, 6, 5), np.uint16), series_uid=uid, prefix="z",
                       origin=(-100.0, -80.0, 50.0 + 3 * 2.5))
    with pytest.raises(InputError, match="different sizes"):
        read_volume(tmp_path / "size")


def test_dicom_uneven_spacing_warns(tmp_path: Path) -> None:
    v = np.ones((1, 4, 5), np.uint16)
    uid = None
    for k, z in enumerate([0.0, 2.0, 4.1, 6.0]):
        uid = write_dicom_series(tmp_path / "u", v, series_uid=uid, origin=(0.0, 0.0, z), prefix=f"s{k}")
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        vol = read_volume(tmp_path / "u")
    assert vol.shape[0] == 4
    assert vol.spacing[0] == pytest.approx(2.0)
    assert any("spacing varies" in str(w.message) for w in rec)


def test_empty_folder_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "notes.txt").write_text("hello")
    with pytest.raises(InputError, match="no DICOM"):
        read_volume(tmp_path / "e")


def test_montage_shows_the_same_views_whatever_the_array_orientation(tmp_path: Path) -> None:
    # one phantom stored twice: RAS (i -> right, j -> anterior) and LPS-like (both flipped),
    # the same world content. The montage must be the same picture, in radiological views:
    # axial first with anterior at the top and the patient's right on the left
    from PIL import Image

    from volume.report import write_montage

    data = np.zeros((20, 24, 10), np.int16)  # file order (i, j, k)
    data[2:10, 2:20, 2:8] = 1                # a block on the left... in RAS: low i = patient's left
    data[14:18, 18:22, 4:6] = 2              # a marker: right (high i) and anterior (high j)
    ras = np.diag([1.0, 1.0, 2.0, 1.0])
    lps = np.diag([-1.0, -1.0, 2.0, 1.0])
    lps[:2, 3] = [19.0, 23.0]  # voxel (i, j) of the flipped array lands where (19 - i, 23 - j) did
    nib.save(nib.Nifti1Image(data, ras), tmp_path / "ras.nii.gz")
    nib.save(nib.Nifti1Image(data[::-1, ::-1].copy(), lps), tmp_path / "lps.nii.gz")
    pictures = []
    for name in ("ras", "lps"):
        vol = read_volume(tmp_path / f"{name}.nii.gz")
        lab = np.asarray(vol.data).astype(np.int32)
        out = write_montage(tmp_path / f"{name}.png", lab, vol.spacing, None, vol.affine)
        pictures.append(np.asarray(Image.open(out).convert("RGB")))
    np.testing.assert_array_equal(pictures[0], pictures[1])
    # the axial panel (first): the marker (label 2's colour) is in its top half (anterior)
    # and its left half (the patient's right)
    from diffseg_core.io import label_colors

    colour = label_colors(np.array([[2]]))[0, 0] * 0.45  # blended over black at alpha 0.45
    panel = pictures[0][:, : pictures[0].shape[1] // 3].astype(np.float32)
    hit = np.argwhere(np.abs(panel - colour).sum(2) < 6)
    assert len(hit) and hit[:, 0].mean() < panel.shape[0] / 2 and hit[:, 1].mean() < panel.shape[1] / 2


def test_an_uncompressed_tiff_stack_is_mapped_not_read(tmp_path: Path) -> None:
    import tifffile

    a = (np.random.default_rng(3).random((6, 20, 24)) * 3000).astype(np.uint16)
    tifffile.imwrite(tmp_path / "raw.tif", a, imagej=True, resolution=(2.0, 2.0), metadata={"spacing": 3.0})
    tifffile.imwrite(tmp_path / "zip.tif", a, compression="zlib")
    raw, zipped = read_volume(tmp_path / "raw.tif"), read_volume(tmp_path / "zip.tif")
    assert isinstance(raw.data, np.memmap) and not isinstance(zipped.data, np.memmap)
    assert raw.spacing == (3.0, 0.5, 0.5)
    for i in range(6):
        np.testing.assert_array_equal(raw.slice_values(0, i), zipped.slice_values(0, i))
    assert not raw.data.flags.writeable  # the input is never written through the map


def test_a_compressed_tiff_stack_is_decoded_page_by_page(tmp_path: Path) -> None:
    import tifffile

    from volume.io import TiffPages

    a = (np.random.default_rng(4).random((7, 20, 30)) * 1000).astype(np.uint16)
    tifffile.imwrite(tmp_path / "z.tif", a, compression="zlib")
    lazy = read_volume(tmp_path / "z.tif").data
    assert isinstance(lazy, TiffPages) and lazy.shape == a.shape and lazy.dtype == a.dtype
    np.testing.assert_array_equal(lazy[3], a[3])
    np.testing.assert_array_equal(lazy[-1, 2:5], a[-1, 2:5])
    np.testing.assert_array_equal(lazy[2:5, 1:4], a[2:5, 1:4])
    np.testing.assert_array_equal(lazy[::2, ::2, ::3], a[::2, ::2, ::3])
    assert lazy._whole is None  # slice-wise access never decoded the whole stack
    np.testing.assert_array_equal(lazy[:, 4], a[:, 4])  # a plane across the pages: decoded once, kept
    np.testing.assert_array_equal(np.asarray(lazy), a)


def test_compressed_and_uncompressed_stacks_segment_alike(tmp_path: Path) -> None:
    import tifffile

    from volume.api import segment_volume
    from volume.types import VolumeConfig
    from tests.volume.helpers import ThresholdSegmenter

    a = np.zeros((6, 32, 32), np.uint16)
    a[:, 8:24, 8:24] = 900
    a[:, 12:20, 12:20] = 1800
    tifffile.imwrite(tmp_path / "raw.tif", a, imagej=True)
    tifffile.imwrite(tmp_path / "zip.tif", a, compression="zlib")
    out = [segment_volume(tmp_path / f, tmp_path / f"o_{f}", ThresholdSegmenter(), VolumeConfig(window="minmax"))
           for f in ("raw.tif", "zip.tif")]
    np.testing.assert_array_equal(tifffile.imread(out[0].labels_path), tifffile.imread(out[1].labels_path))


def test_release_pages_lets_a_read_map_go_and_never_touches_results(tmp_path):
    from volume.io import release_pages

    data = np.arange(16 * 1024 * 1024, dtype=np.int32).reshape(64, 512, 512)  # 64 MiB
    np.save(tmp_path / "in.npy", data)
    ro = np.load(tmp_path / "in.npy", mmap_mode="r")

    def rss_file() -> float:
        return int(open("/proc/self/status").read().split("RssFile:")[1].split()[0]) / 1024

    if not Path("/proc/self/status").exists():
        pytest.skip("no /proc")
    assert int(ro.sum()) == int(data.sum())  # every page read
    before = rss_file()
    release_pages(ro.transpose(2, 1, 0))  # through a view, as NIfTI volumes are held
    assert before - rss_file() > 48  # MiB: the read pages left the process
    np.testing.assert_array_equal(ro[63], data[63])  # and read back from the page cache
    rw = np.lib.format.open_memmap(tmp_path / "out.npy", mode="w+", dtype=np.int32, shape=(4, 8, 8))
    rw[:] = 7
    release_pages(rw)  # a writable map holds results: untouched
    assert (rw == 7).all()
    del rw
    assert (np.load(tmp_path / "out.npy") == 7).all()
    release_pages(data)  # in RAM: nothing to do
    assert data[5, 5, 5] == 5 * 512 * 512 + 5 * 512 + 5
