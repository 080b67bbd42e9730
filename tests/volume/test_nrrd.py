"""NRRD (3D Slicer's format) in and out: the geometry of any anatomical space, detached
headers, a list axis picked with --index; our labels written back in the input's geometry."""
from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from diffseg.cli import main
from diffseg_core.errors import InputError
from volume.io import read_label_volume, read_volume, write_labels

nrrd = pytest.importorskip("nrrd")

#: an oblique (i, j, k) -> RAS affine: every axis tilted, anisotropic
OBLIQUE = np.array([[0.9, 0.1, 0.0, -50.0], [-0.1, 0.8, 0.2, 20.0], [0.0, -0.3, 2.5, 7.0], [0, 0, 0, 1.0]])


def image_ijk() -> np.ndarray:
    return np.random.default_rng(0).integers(-1000, 1000, (20, 16, 8)).astype(np.int16)


def write_nrrd(path, data, space="left-posterior-superior", **extra):
    flip = {"left-posterior-superior": [-1, -1, 1], "right-anterior-superior": [1, 1, 1]}[space]
    a = np.diag([*flip, 1.0]) @ OBLIQUE  # RAS -> the file's space
    header = {"space": space, "space directions": a[:3, :3].T, "space origin": a[:3, 3],
              "kinds": ["domain"] * 3, **extra}
    nrrd.write(str(path), data, header, index_order="F")


@pytest.mark.parametrize("space", ["left-posterior-superior", "right-anterior-superior"])
def test_an_nrrd_reads_with_the_geometry_of_the_same_nifti(tmp_path, space):
    nib.save(nib.Nifti1Image(image_ijk(), OBLIQUE), tmp_path / "ref.nii.gz")
    write_nrrd(tmp_path / "img.nrrd", image_ijk(), space)
    ref, got = read_volume(tmp_path / "ref.nii.gz"), read_volume(tmp_path / "img.nrrd")
    assert got.shape == ref.shape == (8, 16, 20) and got.source_format == "nrrd" and got.spacing_known
    np.testing.assert_allclose(got.affine, ref.affine, atol=1e-9)
    np.testing.assert_allclose(got.spacing, ref.spacing, rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(got.data), np.asarray(ref.data))


def test_a_detached_header_reads_as_the_attached_file(tmp_path):
    write_nrrd(tmp_path / "img.nrrd", image_ijk())
    write_nrrd(tmp_path / "img.nhdr", image_ijk(), encoding="raw")  # pynrrd writes img.raw beside it
    a, b = read_volume(tmp_path / "img.nrrd"), read_volume(tmp_path / "img.nhdr")
    np.testing.assert_array_equal(np.asarray(a.data), np.asarray(b.data))
    np.testing.assert_allclose(a.affine, b.affine)


def test_our_nrrd_labels_carry_the_input_geometry_and_provenance(tmp_path):
    write_nrrd(tmp_path / "img.nrrd", image_ijk())
    img = read_volume(tmp_path / "img.nrrd")
    lab = (np.asarray(img.data) > 0).astype(np.int32) + (np.asarray(img.data) > 500)
    write_labels(tmp_path / "labels.nrrd", lab, img, provenance={"model": "tiny-random"})
    got, vol = read_label_volume(tmp_path / "labels.nrrd")
    np.testing.assert_array_equal(np.asarray(got), lab)
    np.testing.assert_allclose(vol.affine, img.affine, atol=1e-9)
    data, header = nrrd.read(str(tmp_path / "labels.nrrd"))
    assert header["space"] == "left-posterior-superior" and header["encoding"] == "gzip" and data.dtype == np.uint8
    assert json.loads(header["diffseg_labels"])["diffseg_labels"]["model"] == "tiny-random"
    # a NIfTI input's labels as NRRD: the same place in the world
    nib.save(nib.Nifti1Image(image_ijk(), OBLIQUE), tmp_path / "ref.nii.gz")
    ref = read_volume(tmp_path / "ref.nii.gz")
    write_labels(tmp_path / "from_nifti.nrrd", lab, ref)
    np.testing.assert_allclose(read_volume(tmp_path / "from_nifti.nrrd").affine, ref.affine, atol=1e-9)


def test_a_list_axis_is_picked_with_index_and_bad_files_are_named(tmp_path):
    four = np.random.default_rng(1).random((3, 10, 12, 5)).astype(np.float32)  # (list, i, j, k)
    nrrd.write(str(tmp_path / "four.nrrd"), four,
               {"space": "left-posterior-superior", "kinds": ["list", "domain", "domain", "domain"],
                "space directions": [[np.nan] * 3, [1, 0, 0], [0, 1, 0], [0, 0, 2]]}, index_order="F")
    with pytest.raises(InputError, match=r"four.nrrd: 4-D data .*--index 0\.\.2"):
        read_volume(tmp_path / "four.nrrd")
    v = read_volume(tmp_path / "four.nrrd", index=1)
    assert v.shape == (5, 12, 10) and v.spacing == pytest.approx((2.0, 1.0, 1.0))
    np.testing.assert_array_equal(np.asarray(v.data), four[1].transpose(2, 1, 0))
    (tmp_path / "bad.nrrd").write_bytes(b"NRRD0004\ntype: float\ndimension: 3\nsizes: 4 4\n\n" + b"\0" * 64)
    with pytest.raises(InputError, match="bad.nrrd: not a readable NRRD file"):
        read_volume(tmp_path / "bad.nrrd")


def test_diffseg_volume_of_an_nrrd_writes_nrrd_labels_beside_their_sidecars(tmp_path):
    write_nrrd(tmp_path / "img.nrrd", image_ijk())
    assert main(["volume", str(tmp_path / "img.nrrd"), "-o", str(tmp_path / "out"), "--model", "tiny-random",
                 "--size", "64", "-q"]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "labels.ctbl", "labels.itksnap.txt", "labels.json", "labels.nrrd", "labels_montage.png"]
    got, vol = read_label_volume(tmp_path / "out" / "labels.nrrd")
    np.testing.assert_allclose(vol.affine, read_volume(tmp_path / "img.nrrd").affine, atol=1e-9)
    assert np.asarray(got).max() >= 1


def test_an_nrrd_without_an_anatomical_space_keeps_its_spacings(tmp_path):
    # microscopy: spacings per axis, no patient space
    data = np.random.default_rng(2).integers(0, 4000, (30, 20, 6)).astype(np.uint16)
    nrrd.write(str(tmp_path / "cells.nrrd"), data, {"spacings": [0.2, 0.2, 1.0], "kinds": ["domain"] * 3},
               index_order="F")
    v = read_volume(tmp_path / "cells.nrrd")
    assert v.affine is None and v.spacing_known and v.spacing == pytest.approx((1.0, 0.2, 0.2))
    nrrd.write(str(tmp_path / "plain.nrrd"), data, {"spacings": [1.0, 1.0, 1.0]}, index_order="F")
    assert read_volume(tmp_path / "plain.nrrd").spacing_known  # 1 x 1 x 1 said by the file is known
