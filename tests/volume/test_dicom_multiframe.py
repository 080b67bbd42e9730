"""Multi-frame DICOM (Enhanced / Legacy Converted Enhanced CT and MR: a whole series in one
file, as recent scanners write it) reads as the same volume as its single-frame slices; a
DICOM-SEG of it is written, read back and placed on it."""
from __future__ import annotations

import shutil
import warnings

import numpy as np
import pytest

from diffseg.cli import main
from diffseg_core.errors import InputError
from tests.volume.helpers import write_dicom_series
from volume.api import read_labels
from volume.dicom import write_dicom_seg
from volume.io import read_volume

hd = pytest.importorskip("highdicom")
pydicom = pytest.importorskip("pydicom")

SHAPE = (6, 24, 28)
DESCENDING = {"row_dir": (0.0, 1.0, 0.0), "col_dir": (1.0, 0.0, 0.0)}  # normal -z: slices stored descending


def stored() -> np.ndarray:
    z, y, x = np.mgrid[:SHAPE[0], :SHAPE[1], :SHAPE[2]]
    return (900 + 40 * z + 3 * y + x).astype(np.uint16)  # every slice, row and column differs


def single_and_multiframe(tmp_path, **geometry):
    """The same series as single-frame files (``tmp/single``) and converted by highdicom into
    one Legacy Converted Enhanced CT file (``tmp/multi/enhanced.dcm``)."""
    write_dicom_series(tmp_path / "single", stored(), **geometry)
    files = sorted((tmp_path / "single").iterdir())
    dss = [pydicom.dcmread(p) for p in files]
    for p, ds in zip(files, dss):  # what the converter needs of a real scanner's files
        ds.FrameOfReferenceUID = "1.2.826.0.1.3680043.8.498.1"
        ds.StudyInstanceUID = dss[0].StudyInstanceUID
        for name, value in (("PatientID", "p1"), ("PatientName", "Doe^Jane"), ("StudyID", "1"),
                            ("StudyDate", "20260101"), ("StudyTime", "000000"), ("Manufacturer", "test")):
            setattr(ds, name, value)
        for name in ("PatientBirthDate", "PatientSex", "AccessionNumber", "ReferringPhysicianName"):
            setattr(ds, name, "")
        ds.save_as(p)
    (tmp_path / "multi").mkdir()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the converter's notes on attributes a test series lacks
        enh = hd.legacy.LegacyConvertedEnhancedCTImage(legacy_datasets=dss, series_instance_uid=hd.UID(),
                                                       series_number=2, sop_instance_uid=hd.UID(), instance_number=1)
    enh.save_as(tmp_path / "multi" / "enhanced.dcm")
    return tmp_path / "single", tmp_path / "multi"


@pytest.mark.parametrize("geometry", [{}, DESCENDING], ids=["axial", "slices-descending-in-z"])
def test_a_multiframe_file_reads_as_its_single_frame_series(tmp_path, geometry):
    # it was refused: "multi-frame (enhanced) DICOM is not supported; export single-frame slices"
    single, multi = single_and_multiframe(tmp_path, **geometry)
    a, b = read_volume(single), read_volume(multi)
    assert b.shape == a.shape == SHAPE and b.spacing == pytest.approx(a.spacing)
    np.testing.assert_allclose(b.affine, a.affine, atol=1e-6)
    hu = np.asarray(a.data, np.float64) * a.slope + a.intercept
    np.testing.assert_allclose(np.asarray(b.data, np.float64) * b.slope + b.intercept, hu)
    assert b.meta["dicom_multiframe"] and b.modality == "CT"


@pytest.mark.parametrize("geometry", [{}, DESCENDING], ids=["axial", "slices-descending-in-z"])
def test_a_dicom_seg_of_a_multiframe_series_is_written_and_placed_on_it(tmp_path, geometry):
    _, multi = single_and_multiframe(tmp_path, **geometry)
    img = read_volume(multi)
    lab = np.zeros(SHAPE, np.int32)
    lab[1:5, 2:10, 3:20] = 1
    lab[1, 12:20, 5:9] = 2  # on one slice only: the slice order shows
    lab[2:5, 15:22, 20:26] = 3  # slices 0 and 5 are empty: left out of the SEG
    write_dicom_seg(tmp_path / "l.dcm", lab, img)
    got, vol = read_labels(tmp_path / "l.dcm", on=img)
    np.testing.assert_array_equal(got, lab)
    write_dicom_seg(tmp_path / "again.dcm", got, vol)  # a SEG placed on the series writes back as one
    np.testing.assert_array_equal(read_labels(tmp_path / "again.dcm", on=img)[0], lab)
    elsewhere = read_volume(multi)
    elsewhere.affine[:3, 3] += 5.0  # the grid of another series
    with pytest.raises(InputError, match="not a segmentation of the series"):
        read_labels(tmp_path / "l.dcm", on=elsewhere)


def test_diffseg_volume_of_a_multiframe_series_equals_its_single_frame_run(tmp_path):
    single, multi = single_and_multiframe(tmp_path, **DESCENDING)
    for src in (single, multi):
        assert main(["volume", str(src), "-o", str(tmp_path / f"out_{src.name}"), "--model", "tiny-random",
                     "--size", "64", "-q"]) == 0
    a = read_labels(tmp_path / "out_single" / "labels.dcm", on=read_volume(single))[0]
    b = read_labels(tmp_path / "out_multi" / "labels.dcm", on=read_volume(multi))[0]
    assert a.max() >= 2
    np.testing.assert_array_equal(b, a)


def test_a_multiframe_file_among_others_is_refused_naming_it(tmp_path):
    single, multi = single_and_multiframe(tmp_path)
    shutil.copy(multi / "enhanced.dcm", tmp_path / "x.dcm")
    ds = pydicom.dcmread(tmp_path / "x.dcm")
    ds.SeriesInstanceUID = pydicom.dcmread(next(single.iterdir())).SeriesInstanceUID  # one series, mixed files
    ds.save_as(single / "enhanced.dcm")
    with pytest.raises(InputError, match="enhanced.dcm is a multi-frame image"):
        read_volume(single)
