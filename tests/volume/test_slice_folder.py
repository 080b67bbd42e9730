"""A folder of 2-D slice images (an image sequence: Fiji's export, a 2-D segmenter's label map
per slice) reads as a volume, one file per slice in natural name order, read lazily."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from diffseg.cli import main
from diffseg_core.errors import InputError
from tests.volume.helpers import write_dicom_series
from volume.io import SliceFiles, file_format, read_label_volume, read_volume


def grey_slices(folder, n=12, hw=(20, 26)) -> np.ndarray:
    folder.mkdir()
    vol = np.random.default_rng(0).integers(0, 65535, (n, *hw)).astype(np.uint16)
    for k in range(n):  # slice_2 sorts before slice_10 (natural order), not after
        Image.fromarray(vol[k]).save(folder / f"slice_{k}.png")
    return vol


def test_a_folder_of_16bit_slices_reads_as_a_volume_slice_by_slice(tmp_path):
    vol = grey_slices(tmp_path / "seq")
    (tmp_path / "seq" / "notes.txt").write_text("acquired 2026")  # a side file is no slice
    assert file_format(tmp_path / "seq") == "slices"
    v = read_volume(tmp_path / "seq")
    assert isinstance(v.data, SliceFiles) and v.shape == vol.shape and v.data.dtype == np.uint16
    np.testing.assert_array_equal(v.data[10], vol[10])  # one file read
    assert v.data._whole is None
    np.testing.assert_array_equal(np.asarray(v.data), vol)
    assert not v.spacing_known and v.source_format == "slices"


def test_per_slice_label_maps_are_stacked_into_3d_labels(tmp_path, capsys):
    # what a 2-D segmenter (Cellpose, SAM) run slice by slice leaves: ids independent per slice
    masks = tmp_path / "masks"
    masks.mkdir()
    for k in range(12):
        lab = np.zeros((30, 40), np.uint16)
        lab[4:14, 5:18] = 7 + k  # one object, another id on every slice
        lab[18:27, 20:36] = 300 - k
        Image.fromarray(lab).save(masks / f"img_{k:03d}_cp_masks.png")
    assert main(["stack", str(masks), "-o", str(tmp_path / "out.nii.gz"), "-q"]) == 0
    got, _ = read_label_volume(tmp_path / "out.nii.gz")
    got = np.asarray(got)
    assert got.shape == (12, 30, 40)
    a, b = got[:, 8, 10], got[:, 22, 30]
    assert len(set(a.tolist())) == 1 and len(set(b.tolist())) == 1 and a[0] != b[0] and 0 not in (a[0], b[0])


def test_bad_slice_folders_are_named(tmp_path):
    grey_slices(tmp_path / "sizes", n=4)
    Image.fromarray(np.zeros((21, 26), np.uint16)).save(tmp_path / "sizes" / "slice_2.png")
    with pytest.raises(InputError, match=r"slice_2.png: slice of 26x21 pixels; the first \(slice_0.png\) is 26x20"):
        read_volume(tmp_path / "sizes")
    (tmp_path / "colour").mkdir()
    rgb = np.random.default_rng(1).integers(0, 255, (3, 10, 12, 3)).astype(np.uint8)
    for k in range(3):
        Image.fromarray(rgb[k]).save(tmp_path / "colour" / f"{k}.png")
    with pytest.raises(InputError, match="0.png: a colour slice"):
        read_volume(tmp_path / "colour")
    (tmp_path / "greyrgb").mkdir()
    for k in range(3):  # grey saved as RGB: one channel
        Image.fromarray(np.repeat(rgb[k, ..., :1], 3, axis=2)).save(tmp_path / "greyrgb" / f"{k}.png")
    np.testing.assert_array_equal(np.asarray(read_volume(tmp_path / "greyrgb").data), rgb[..., 0])
    (tmp_path / "one").mkdir()
    Image.fromarray(rgb[0]).save(tmp_path / "one" / "x.png")
    with pytest.raises(InputError, match="needs at least 2 slice images; it holds 1"):
        read_volume(tmp_path / "one")


def test_a_dicom_folder_with_a_picture_in_it_is_read_as_dicom(tmp_path):
    write_dicom_series(tmp_path / "ct", np.full((4, 10, 12), 1100, np.uint16), prefix="im")
    for p in (tmp_path / "ct").iterdir():  # DICOM files named without an extension, as scanners do
        p.rename(p.with_suffix(""))
    Image.fromarray(np.zeros((10, 12), np.uint8)).save(tmp_path / "ct" / "screenshot.png")
    assert file_format(tmp_path / "ct") == "dicom"
    assert read_volume(tmp_path / "ct").shape == (4, 10, 12)
