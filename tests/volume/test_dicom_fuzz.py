"""Mutated DICOM series: every reader outcome is a volume or one `InputError`, never another
exception (a traceback), and one broken file does not hide the rest of a folder."""
from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

from diffseg_core.errors import InputError
from tests.volume.helpers import write_dicom_series
from volume.io import read_volume


def _series(folder: Path, n: int = 4) -> list[Path]:
    rng = np.random.default_rng(0)
    write_dicom_series(folder, rng.integers(0, 2000, (n, 6, 7)).astype(np.uint16))
    return sorted(folder.glob("*.dcm"))


def _set_raw(path: Path, keyword: str, value: bytes) -> None:
    """Rewrite one element's raw value bytes (pydicom would refuse to write a malformed one)."""
    import pydicom
    from pydicom.dataelem import RawDataElement
    from pydicom.datadict import dictionary_VR, tag_for_keyword

    ds = pydicom.dcmread(str(path))
    tag = tag_for_keyword(keyword)
    ds[tag] = RawDataElement(pydicom.tag.Tag(tag), dictionary_VR(tag), len(value), value, 0, False, True)
    ds.save_as(str(path), enforce_file_format=True)


def _del(path: Path, keyword: str) -> None:
    import pydicom

    ds = pydicom.dcmread(str(path))
    delattr(ds, keyword)
    ds.save_as(str(path), enforce_file_format=True)


def _mutations() -> list[tuple[str, object]]:
    out: list[tuple[str, object]] = []
    for k in (3, 1):  # the file of slice 0 (read first; files are written in reverse) and another
        out += [
            (f"truncate-pixels-{k}", lambda fs, k=k: fs[k].write_bytes(fs[k].read_bytes()[:-30])),
            (f"truncate-header-{k}", lambda fs, k=k: fs[k].write_bytes(fs[k].read_bytes()[:300])),
            (f"instance-number-text-{k}", lambda fs, k=k: _set_raw(fs[k], "InstanceNumber", b"x1")),
            (f"rescale-slope-text-{k}", lambda fs, k=k: _set_raw(fs[k], "RescaleSlope", b"abc ")),
            (f"rescale-intercept-nan-{k}", lambda fs, k=k: _set_raw(fs[k], "RescaleIntercept", b"nan ")),
            (f"rows-bytes-{k}", lambda fs, k=k: _set_raw(fs[k], "Rows", b"\x01")),
            (f"no-photometric-{k}", lambda fs, k=k: _del(fs[k], "PhotometricInterpretation")),
            (f"no-bits-allocated-{k}", lambda fs, k=k: _del(fs[k], "BitsAllocated")),
            (f"pixel-spacing-text-{k}", lambda fs, k=k: _set_raw(fs[k], "PixelSpacing", b"a\\b ")),
            (f"position-text-{k}", lambda fs, k=k: _set_raw(fs[k], "ImagePositionPatient", b"1\\x\\3 ")),
            (f"slice-thickness-text-{k}", lambda fs, k=k: _set_raw(fs[k], "SliceThickness", b"thick ")),
            (f"frames-text-{k}", lambda fs, k=k: _set_raw(fs[k], "NumberOfFrames", b"many")),
        ]
    return out


MUTATIONS = _mutations()


@pytest.mark.parametrize("name, mutate", MUTATIONS, ids=[m[0] for m in MUTATIONS])
def test_mutated_series_gives_a_volume_or_one_clear_error(tmp_path: Path, name: str, mutate) -> None:
    files = _series(tmp_path / "s")
    mutate(files)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            vol = read_volume(tmp_path / "s")
        except InputError as exc:
            msg = str(exc)
            assert "\n" not in msg and str(tmp_path / "s") in msg, msg
            return
    assert vol.data.ndim == 3 and vol.data.shape[1:] == (6, 7)


@pytest.mark.parametrize("seed", range(30))
def test_random_byte_damage_gives_a_volume_or_one_clear_error(tmp_path: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    files = _series(tmp_path / "s")
    f = files[int(rng.integers(len(files)))]
    data = bytearray(f.read_bytes())
    for _ in range(int(rng.integers(1, 6))):
        pos = int(rng.integers(132, len(data)))
        data[pos] = int(rng.integers(256))
    if rng.random() < 0.3:
        data = data[: int(rng.integers(132, len(data)))]
    f.write_bytes(bytes(data))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            read_volume(tmp_path / "s")
        except InputError as exc:
            assert "\n" not in str(exc)


def test_a_broken_file_of_another_series_does_not_stop_the_folder(tmp_path: Path) -> None:
    files = _series(tmp_path / "s")
    other = tmp_path / "s" / "zz_broken.dcm"
    shutil.copy(files[0], other)
    _set_raw(other, "SeriesInstanceUID", b"1.2.3.4")
    _set_raw(other, "Rows", b"\x01")  # a 1-byte US value: the header cannot be read
    cut = tmp_path / "s" / "zz_cut.dcm"
    cut.write_bytes(files[1].read_bytes()[:400])  # cut in the middle of the header
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        vol = read_volume(tmp_path / "s")
    assert vol.shape == (4, 6, 7)
    assert any("1 damaged DICOM file(s) skipped, e.g. zz_broken.dcm" in str(w.message) for w in rec)


def test_a_damaged_slice_of_the_series_is_named(tmp_path: Path) -> None:
    files = _series(tmp_path / "s")
    _set_raw(files[2], "RescaleSlope", b"abc ")
    with pytest.raises(InputError, match=f"{files[2].name}: RescaleSlope is not a number"):
        read_volume(tmp_path / "s")
    files = _series(tmp_path / "t")
    # the helper writes slices in reverse order: the last file holds slice 0, read first
    files[-1].write_bytes(files[-1].read_bytes()[:-30])
    with pytest.raises(InputError, match="cannot decode pixel data"):
        read_volume(tmp_path / "t")
