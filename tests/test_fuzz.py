"""Bad input, tried on purpose, against every `diffseg` entry point.

Each case must end with exit code 2 and ONE error line that names the input and the
problem: no traceback, no hang, no output file left looking complete, and nothing that
was already in the output folder lost. Images in unusual but valid modes (RGBA, 16-bit,
grayscale, CMYK, palette) must instead be segmented (exit 0).

Most cases run in process through `diffseg.cli.main` (fast; the tiny model is loaded
once); a few run as subprocesses to check stderr for tracebacks. Cases are pytest
parameters, so ``pytest -q tests/test_fuzz.py`` reports how many were tried and passed.
"""
from __future__ import annotations

import errno
import json
import os
import struct
import subprocess
import sys
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from diffseg.cli import main

from .conftest import REPO, write_frames

pytestmark = pytest.mark.timeout(120)

FAKE = "tests.conftest:fake_segmenter"
MODEL = ["--model", "tiny-random", "--size", "64"]
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
SENTINEL = "finished_before.txt"


# ----------------------------------------------------------------------------- corpus
def _png_bytes(arr: np.ndarray, mode: "str | None" = None) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr, mode=mode).save(buf, format="PNG") if mode else Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _huge_header_png(w: int = 100_000, h: int = 100_000) -> bytes:
    """A PNG whose header claims w x h pixels, with a few bytes of data (a decompression bomb)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def _mp4_bytes(folder: Path, n: int = 8, hw: tuple[int, int] = (64, 64)) -> bytes:
    import av

    path = folder / "_valid.mp4"
    rng = np.random.default_rng(0)
    with av.open(str(path), "w") as c:
        s = c.add_stream("mpeg4", rate=10)
        s.height, s.width = hw
        s.pix_fmt = "yuv420p"
        for t in range(n):
            a = np.zeros(hw + (3,), np.uint8)
            a[:, : hw[1] // 2] = (200, 40, 40)
            a[10:30, 5 + 3 * t: 25 + 3 * t] = (30, 200, 30)
            a = np.clip(a.astype(int) + rng.integers(0, 10, a.shape), 0, 255).astype(np.uint8)
            for pkt in s.encode(av.VideoFrame.from_ndarray(a, format="rgb24")):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    data = path.read_bytes()
    path.unlink()
    return data


def _nii_bytes(arr: np.ndarray) -> bytes:
    import gzip
    import io

    import nibabel as nib

    img = nib.Nifti1Image(arr, np.eye(4))
    bio = io.BytesIO()
    file_map = nib.Nifti1Image.make_file_map({"image": bio, "header": bio})
    img.to_file_map(file_map)
    return gzip.compress(bio.getvalue())


def _patched_nii(gz: bytes, offset: int, value: int) -> bytes:
    """A gzipped NIfTI with one header byte replaced."""
    import gzip

    raw = bytearray(gzip.decompress(gz))
    raw[offset] = value
    return gzip.compress(bytes(raw))


def _npy_bytes(arr: np.ndarray, allow_pickle: bool = False) -> bytes:
    import io

    bio = io.BytesIO()
    np.save(bio, arr, allow_pickle=allow_pickle)
    return bio.getvalue()


def _ball(shape=(6, 32, 32)) -> np.ndarray:
    z, y, x = np.mgrid[: shape[0], : shape[1], : shape[2]]
    v = (((z - shape[0] / 2) ** 2 + (y - shape[1] / 2) ** 2 + (x - shape[2] / 2) ** 2) < 60).astype(np.float32)
    return v * 100 + np.random.default_rng(0).normal(0, 3, shape).astype(np.float32)


def _size_change_ts_bytes(folder: Path) -> bytes:
    """An MPEG-TS stream whose frame size changes after 6 frames (96x64 then 128x96): two
    streams of one codec, concatenated (MPEG-TS allows it; decord resizes silently)."""
    import av

    parts = []
    for k, (w, h) in enumerate(((96, 64), (128, 96))):
        path = folder / f"_part{k}.ts"
        with av.open(str(path), "w", format="mpegts") as c:
            s = c.add_stream("mpeg2video", rate=25)
            s.width, s.height, s.pix_fmt = w, h, "yuv420p"
            for t in range(6):
                a = np.zeros((h, w, 3), np.uint8)
                a[:, : w // 2] = (200, 40, 40)
                a[:, 4 * t: 4 * t + 8] = 255
                for pkt in s.encode(av.VideoFrame.from_ndarray(a, format="rgb24")):
                    c.mux(pkt)
            for pkt in s.encode():
                c.mux(pkt)
        parts.append(path.read_bytes())
        path.unlink()
    return b"".join(parts)


def _page_cut_tiff_bytes(folder: Path) -> bytes:
    """A 6-slice TIFF (no shape metadata) whose third page points past the end of the file:
    tifffile logs the damage and reads 3 slices, a shorter volume that looks whole."""
    import struct

    import tifffile

    tifffile.imwrite(folder / "seed_cut.tif", (_ball() > 50).astype(np.uint16), metadata=None)
    with tifffile.TiffFile(folder / "seed_cut.tif") as tf:
        page = tf.pages[2]
        ptr = page.offset + 2 + 12 * len(page.tags)  # classic TIFF: the next-IFD offset
    data = bytearray((folder / "seed_cut.tif").read_bytes())
    data[ptr:ptr + 4] = struct.pack("<I", len(data) + 1000)
    return bytes(data)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """Every bad (and oddly encoded) input, built once."""
    d = tmp_path_factory.mktemp("fuzz")
    rng = np.random.default_rng(1234)
    rgb = np.zeros((64, 64, 3), np.uint8)
    rgb[:, :32] = (200, 30, 30)
    rgb[20:50, 32:] = (30, 30, 200)
    png = _png_bytes(rgb)
    mp4 = _mp4_bytes(d)
    nii = _nii_bytes(_ball().astype(np.float32))
    npy = _npy_bytes(_ball((4, 24, 24)))
    small = _ball((3, 16, 16))
    files: dict[str, bytes] = {
        "empty.png": b"", "empty.mp4": b"", "empty.nii.gz": b"", "empty.npy": b"", "empty.tif": b"",
        "trunc.png": png[: len(png) // 2], "trunc.mp4": mp4[: len(mp4) // 3], "trunc.nii.gz": nii[: len(nii) // 2],
        "trunc.npy": npy[: len(npy) // 2],
        "random.mp4": rng.bytes(5000), "random.nii.gz": rng.bytes(5000), "random.png": rng.bytes(5000),
        "random.npy": rng.bytes(5000), "random.tif": rng.bytes(5000),
        "png_named.mp4": png, "mp4_named.png": mp4, "text.nii": b"this is not a volume\n" * 20,
        "text.png": b"hello\n", "huge_header.png": _huge_header_png(), "size_change.ts": _size_change_ts_bytes(d),
        "pickle.npy": _npy_bytes(np.array([{"a": 1}, None], dtype=object), allow_pickle=True),
        "vol4d.npy": _npy_bytes(np.zeros((2, 4, 16, 16), np.float32)),
        "vol4d.nii.gz": _nii_bytes(np.zeros((16, 16, 4, 2), np.float32)),
        # header fields that load but fail when interpreted: a unit code out of range (byte 123)
        "bad_units.nii.gz": _patched_nii(nii, 123, 5),
        "vol2d.npy": _npy_bytes(np.zeros((16, 16), np.float32)),
        "pages_cut.tif": _page_cut_tiff_bytes(d),
        "nan.npy": _npy_bytes(np.where(small > 50, np.nan, small).astype(np.float32)),
        "allnan.npy": _npy_bytes(np.full((3, 16, 16), np.nan, np.float32)),
        "inf.npy": _npy_bytes(np.where(small > 50, np.inf, small).astype(np.float32)),
        "ok.npy": npy, "ok.mp4": mp4, "ok.png": png,
        "labels_small.npy": _npy_bytes(np.ones((6, 16, 16), np.int32)),
        "labels_ok.npy": _npy_bytes((_ball() > 50).astype(np.int32)),
    }
    for name, data in files.items():
        (d / name).write_bytes(data)
    # Oddly encoded but valid pictures.
    from PIL import Image

    Image.fromarray(np.dstack([rgb, np.full((64, 64), 128, np.uint8)]), "RGBA").save(d / "rgba.png")
    Image.fromarray((rgb[:, :, 0].astype(np.uint16) * 257)).save(d / "gray16.png")
    Image.fromarray(rgb[:, :, 0]).save(d / "gray8.png")
    Image.fromarray(rgb).convert("CMYK").save(d / "cmyk.jpg")
    Image.fromarray(rgb).convert("P").save(d / "palette.png")
    # Folders.
    (d / "empty_dir").mkdir()
    (d / "only_text").mkdir()
    (d / "only_text" / "notes.txt").write_text("no frames here")
    mixed = write_frames(d / "mixed_sizes", 3, hw=(64, 64))
    Image.fromarray(np.zeros((48, 80, 3), np.uint8)).save(mixed / "00003.png")
    write_frames(d / "frames_ok", 4, hw=(64, 64))
    broken = write_frames(d / "frames_broken", 3, hw=(64, 64))
    (broken / "00003.png").write_bytes(png[:100])
    # Segments for `track`: right folder, one label map per frame, and broken variants.
    seg = d / "segs_ok"
    seg.mkdir()
    for t in range(4):
        np.save(seg / f"{t:05d}.npy", (np.arange(64)[None, :].repeat(64, 0) > 32).astype(np.int32))
    seg_bad = d / "segs_bad"
    seg_bad.mkdir()
    for t in range(4):
        (seg_bad / f"{t:05d}.png").write_bytes(rng.bytes(300))
    seg_small = d / "segs_wrong_size"
    seg_small.mkdir()
    for t in range(4):
        np.save(seg_small / f"{t:05d}.npy", np.ones((8, 16), np.int32))  # other aspect ratio
    # Evaluation folders.
    ev = d / "eval_gt"
    ev.mkdir()
    from diffseg_core.io import save_labels_png

    for t in range(3):
        save_labels_png(ev / f"{t:05d}.png", (np.arange(64)[None, :].repeat(64, 0) > 30).astype(np.int32))
    ev_small = d / "eval_pred_small"
    ev_small.mkdir()
    for t in range(3):
        save_labels_png(ev_small / f"{t:05d}.png", np.ones((16, 40), np.int32))  # other aspect ratio
    ev_rand = d / "eval_pred_random"
    ev_rand.mkdir()
    for t in range(3):
        (ev_rand / f"{t:05d}.png").write_bytes(rng.bytes(200))
    return d


# ----------------------------------------------------------------------------- checking
@dataclass
class Case:
    """One fuzz case.

    Attributes:
        id: test id.
        argv: command line; ``{c}`` = corpus folder, ``{o}`` = output folder.
        names: strings one of which the error line must contain (the input, the option).
        expect: ``error`` (exit 2, one error line naming one of ``names``), ``ok`` (exit 0) or
            ``ok_with_warning`` (exit 0, outputs written, and a warning line holding all of ``names``).
        patch: ``enospc`` / ``erofs``: every rename into place fails like a full /
            read-only file system.
    """

    id: str
    argv: list[str]
    names: tuple[str, ...]
    expect: str = "error"
    patch: "str | None" = None
    marks: list = field(default_factory=list)


def _fill(argv: list[str], c: Path, o: Path) -> list[str]:
    return [a.replace("{c}", str(c)).replace("{o}", str(o)) for a in argv]


def _outputs(o: Path) -> dict[str, bytes]:
    if not o.exists():
        return {}
    return {str(p.relative_to(o)): p.read_bytes() for p in o.rglob("*") if p.is_file()}


def _looks_complete(rel: str, data: bytes, after: dict[str, bytes]) -> bool:
    """Whether a file left after a failure would pass for a finished result.

    Per-frame label files kept beside a ``tracks.json`` that says ``complete: false`` are
    flagged partial results (the video tools keep the frames before a decode failure).
    """
    name = Path(rel).name
    parent = Path(rel).parent
    if parent.name == "labels":
        tj = str(parent.parent / "tracks.json") if str(parent.parent) != "." else "tracks.json"
        if tj in after and not json.loads(after[tj] or b"{}").get("complete", False):
            return False
    if name.startswith(".tmp-"):
        return True  # temporary files must be cleaned up
    if name == "tracks.json":
        return bool(json.loads(data or b"{}").get("complete", False))
    if name == "manifest.json":
        items = json.loads(data).get("items", {})
        return any(v.get("status") == "done" for v in items.values())
    if ".diffseg" in Path(rel).parts:
        return False  # job bookkeeping (records of failed items)
    return True


def run_case(case: Case, corpus: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / SENTINEL).write_text("an earlier result")
    before = _outputs(out)
    if case.patch:
        code = {"enospc": errno.ENOSPC, "erofs": errno.EROFS}[case.patch]
        real_replace = os.replace

        def failing_replace(src, dst, *a, **k):
            raise OSError(code, os.strerror(code), str(dst))

        monkeypatch.setattr(os, "replace", failing_replace)
    capsys.readouterr()
    try:
        rc = main(_fill(case.argv, corpus, out))
    except SystemExit as exc:  # argparse usage errors
        rc = exc.code
    finally:
        if case.patch:
            monkeypatch.setattr(os, "replace", real_replace)
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    after = _outputs(out)
    assert after.get(SENTINEL) == before[SENTINEL], "an existing output was lost"
    if case.expect == "ok":
        assert rc == 0, err[-2000:]
        return
    if case.expect == "ok_with_warning":
        assert rc == 0, err[-2000:]
        warned = [ln for ln in err.splitlines() if "warning" in ln.lower()]
        assert any(all(n.lower() in ln.lower() for n in case.names) for ln in warned), err[-2000:]
        new = sorted(rel for rel in after if rel != SENTINEL)
        assert new, "no output written"
        return
    assert rc == 2, f"exit code {rc}; stderr: {err[-2000:]}"
    lines = [ln for ln in err.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ": error:" in ln]
    assert len(errors) == 1, f"expected one error line; got {lines}"
    assert any(n.lower() in errors[0].lower() for n in case.names), f"error does not name {case.names}: {errors[0]}"
    left = [rel for rel, data in after.items() if rel != SENTINEL and _looks_complete(rel, data, after)]
    assert not left, f"outputs left looking complete after a failure: {left}"


# ----------------------------------------------------------------------------- the cases
def _image(f: str) -> list[str]:
    return ["image", "{c}/" + f, "-o", "{o}", *MODEL, "-q"]


def _video(f: str, *extra: str) -> list[str]:
    return ["video", "{c}/" + f, "-o", "{o}", *MODEL, "--no-overlay", "-q", *extra]


def _track(frames: str, segs: str) -> list[str]:
    return ["track", "{c}/" + frames, "--segments", "{c}/" + segs, "-o", "{o}", "-q", "--no-overlay"]


def _volume(f: str, *extra: str) -> list[str]:
    return ["volume", "{c}/" + f, "-o", "{o}/labels.nii.gz", *MODEL, "-q", *extra]


def _stack(f: str) -> list[str]:
    return ["stack", "{c}/" + f, "-o", "{o}/labels.nii.gz", "-q"]


def _run(f: str, *extra: str) -> list[str]:
    return ["run", "{c}/" + f, "-o", "{o}", "--segmenter-factory", FAKE, "--accelerator", "cpu", "-q", *extra]


def _cases() -> list[Case]:
    cs: list[Case] = []
    # image
    for f in ("empty.png", "trunc.png", "random.png", "mp4_named.png", "text.png", "huge_header.png", "missing.png"):
        cs.append(Case(f"image-{f}", _image(f), (f,)))
    cs.append(Case("image-dir", _image("empty_dir"), ("empty_dir",)))
    for f in ("rgba.png", "gray16.png", "gray8.png", "cmyk.jpg", "palette.png"):
        cs.append(Case(f"image-mode-{f}", _image(f), (f,), expect="ok"))
    cs.append(Case("image-size0", ["image", "{c}/ok.png", "-o", "{o}", "--model", "tiny-random", "--size", "0", "-q"],
                   ("size",)))
    cs.append(Case("image-size100000", ["image", "{c}/ok.png", "-o", "{o}", "--model", "tiny-random", "--size",
                                        "100000", "-q"], ("size",)))
    cs.append(Case("image-enospc", _image("ok.png"), ("space",), patch="enospc"))
    cs.append(Case("image-erofs", _image("ok.png"), ("read-only",), patch="erofs"))
    # video
    for f in ("empty.mp4", "trunc.mp4", "random.mp4", "png_named.mp4", "missing.mp4", "empty_dir", "only_text",
              "mixed_sizes", "frames_broken", "ok.png"):
        cs.append(Case(f"video-{f}", _video(f), (f, "00003")))
    cs.append(Case("video-size-change", _video("size_change.ts"), ("size_change.ts", "frame size changes")))
    cs.append(Case("track-size-change", ["track", "{c}/size_change.ts", "--segments", "{c}/empty_dir", "-o", "{o}",
                                         "-q"], ("size_change.ts",)))
    cs.append(Case("video-max-side-1", _video("ok.mp4", "--max-side", "1"), ("max-side", "max_side")))
    cs.append(Case("video-size0", ["video", "{c}/ok.mp4", "-o", "{o}", "--model", "tiny-random", "--size", "0", "-q"],
                   ("size",)))
    cs.append(Case("video-enospc", _video("frames_ok"), ("space",), patch="enospc"))
    cs.append(Case("video-erofs", _video("frames_ok"), ("read-only",), patch="erofs"))
    # track
    cs.append(Case("track-no-segments", _track("frames_ok", "missing_segs"), ("missing_segs",)))
    cs.append(Case("track-empty-segments", _track("frames_ok", "empty_dir"), ("empty_dir", "00000")))
    cs.append(Case("track-random-segments", _track("frames_ok", "segs_bad"), ("segs_bad", "00000")))
    cs.append(Case("track-wrong-size-segments", _track("frames_ok", "segs_wrong_size"), ("segs_wrong_size", "00000")))
    cs.append(Case("track-empty-frames", _track("empty_dir", "segs_ok"), ("empty_dir",)))
    cs.append(Case("track-random-video", _track("random.mp4", "segs_ok"), ("random.mp4",)))
    cs.append(Case("track-mixed-sizes", _track("mixed_sizes", "segs_ok"), ("mixed_sizes", "00003")))
    cs.append(Case("track-enospc", _track("frames_ok", "segs_ok"), ("space",), patch="enospc"))
    # volume
    for f in ("empty.nii.gz", "trunc.nii.gz", "random.nii.gz", "text.nii", "empty.npy", "trunc.npy", "random.npy",
              "random.tif", "empty.tif", "pickle.npy", "vol4d.npy", "vol4d.nii.gz", "vol2d.npy",
              "missing.nii.gz", "empty_dir", "ok.png", "bad_units.nii.gz", "pages_cut.tif"):
        cs.append(Case(f"volume-{f}", _volume(f), (f,)))
    for f in ("nan.npy", "inf.npy"):  # repaired, with a warning that counts the voxels
        cs.append(Case(f"volume-{f}", _volume(f), (f, "NaN/inf voxels replaced"), expect="ok_with_warning"))
    cs.append(Case("volume-allnan.npy", _volume("allnan.npy"), ("allnan.npy", "NaN or infinite")))
    cs.append(Case("volume-size0", ["volume", "{c}/ok.npy", "-o", "{o}/l.nii.gz", "--model", "tiny-random", "--size",
                                    "0", "-q"], ("size",)))
    cs.append(Case("volume-out-under-a-file", ["volume", "{c}/ok.npy", "-o", "{c}/ok.png/labels.nii.gz", *MODEL, "-q"],
                   ("ok.png",)))
    cs.append(Case("run-out-is-a-file", ["run", "{c}/ok.png", "-o", "{c}/ok.npy", "--segmenter-factory", FAKE, "-q"],
                   ("ok.npy",)))
    cs.append(Case("volume-enospc", _volume("ok.npy"), ("space",), patch="enospc"))
    cs.append(Case("volume-erofs", _volume("ok.npy"), ("read-only",), patch="erofs"))
    # stack
    for f in ("empty.nii.gz", "random.nii.gz", "trunc.npy", "pickle.npy", "vol4d.npy", "nan.npy", "missing.npy",
              "pages_cut.tif"):
        cs.append(Case(f"stack-{f}", _stack(f), (f,)))
    cs.append(Case("stack-enospc", _stack("labels_ok.npy"), ("space",), patch="enospc"))
    # run
    for f in ("empty.png", "random.mp4", "trunc.mp4", "empty.mp4", "text.nii", "empty_dir", "only_text", "missing.mp4",
              "random.nii.gz", "pickle.npy", "vol4d.npy", "mixed_sizes", "frames_broken", "huge_header.png"):
        cs.append(Case(f"run-{f}", _run(f), (f, "00003")))
    cs.append(Case("run-size0", ["run", "{c}/ok.png", "-o", "{o}", "--size", "0", "-q"], ("size",)))
    cs.append(Case("run-devices0", _run("ok.png", "--devices", "0"), ("devices",)))
    cs.append(Case("run-overlap", _run("ok.png", "--chunk-frames", "4", "--chunk-overlap", "4"), ("--chunk-overlap",)))
    for f in ("rgba.png", "gray16.png", "cmyk.jpg"):
        cs.append(Case(f"run-mode-{f}", _run(f), (f,), expect="ok"))
    cs.append(Case("run-enospc", _run("ok.png"), ("space",), patch="enospc"))
    cs.append(Case("run-erofs", _run("ok.png"), ("read-only",), patch="erofs"))
    # evaluate video / volume
    cs.append(Case("eval-video-missing", ["evaluate", "video", "{c}/nope", "{c}/eval_gt", "-q"], ("nope",)))
    cs.append(Case("eval-video-empty", ["evaluate", "video", "{c}/empty_dir", "{c}/eval_gt", "-q"], ("empty_dir",)))
    cs.append(Case("eval-video-size", ["evaluate", "video", "{c}/eval_pred_small", "{c}/eval_gt", "-q"],
                   ("eval_pred_small", "00000")))
    cs.append(Case("eval-video-random", ["evaluate", "video", "{c}/eval_pred_random", "{c}/eval_gt", "-q"],
                   ("eval_pred_random", "00000")))
    cs.append(Case("eval-video-gt-random", ["evaluate", "video", "{c}/eval_gt", "{c}/eval_pred_random", "-q"],
                   ("eval_pred_random", "00000")))
    for pred, gt, names in (("random.nii.gz", "labels_ok.npy", ("random.nii.gz",)),
                            ("labels_ok.npy", "empty.npy", ("empty.npy",)),
                            ("labels_small.npy", "labels_ok.npy", ("shape", "labels_small")),
                            ("pickle.npy", "labels_ok.npy", ("pickle.npy",)),
                            ("missing.npy", "labels_ok.npy", ("missing.npy",)),
                            ("labels_ok.npy", "vol4d.npy", ("vol4d.npy",)),
                            ("nan.npy", "labels_ok.npy", ("nan.npy",)),
                            ("pages_cut.tif", "labels_ok.npy", ("pages_cut.tif", "damaged"))):
        cs.append(Case(f"eval-volume-{pred}-{gt}", ["evaluate", "volume", "{c}/" + pred, "{c}/" + gt, "-q"], names))
    return cs


CASES = _cases()


@pytest.mark.parametrize("case", [pytest.param(c, marks=c.marks, id=c.id) for c in CASES])
def test_bad_input_in_process(case: Case, corpus, tmp_path, capsys, monkeypatch):
    run_case(case, corpus, tmp_path, capsys, monkeypatch)


def _without_dac_override() -> "list[str] | None":
    """A command prefix that runs a program without the capabilities that let root read any
    file (``setpriv`` from util-linux), or None when that does not block reads here."""
    import shutil
    import tempfile

    exe = shutil.which("setpriv")
    if exe is None:
        return None
    prefix = [exe, "--bounding-set=-dac_override,-dac_read_search", "--"]
    with tempfile.TemporaryDirectory() as d:
        f = Path(d) / "locked"
        f.write_text("x")
        f.chmod(0)
        try:
            p = subprocess.run([*prefix, sys.executable, "-c", f"open({str(f)!r}).read()"], capture_output=True)
        except OSError:
            return None
        return prefix if p.returncode != 0 else None


@pytest.mark.parametrize("entry", ["image", "video", "volume", "run"])
def test_unreadable_input(entry, corpus, tmp_path, capsys, monkeypatch):
    """A file the user cannot read is one clear error naming it. As root (CI, containers),
    chmod 000 blocks nobody, so the command runs in a subprocess without the capabilities
    that bypass file permissions."""
    src = {"image": "ok.png", "video": "ok.mp4", "volume": "ok.npy", "run": "ok.png"}[entry]
    locked = tmp_path / f"locked_{src}"
    locked.write_bytes((corpus / src).read_bytes())
    locked.chmod(0)
    try:
        argv = {"image": _image, "video": _video, "volume": _volume, "run": _run}[entry]("x")
        argv = [str(locked) if a == "{c}/x" else a for a in argv]
        if not IS_ROOT:
            run_case(Case(f"{entry}-unreadable", argv, (locked.name,)), corpus, tmp_path, capsys, monkeypatch)
            return
        prefix = _without_dac_override()
        if prefix is None:
            pytest.skip("running as root and setpriv cannot drop CAP_DAC_OVERRIDE here")
        out = tmp_path / "out"
        out.mkdir()
        (out / SENTINEL).write_text("an earlier result")
        env = dict(os.environ)
        env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
        p = subprocess.run([*prefix, sys.executable, "-m", "diffseg", *_fill(argv, corpus, out)], cwd=REPO,
                           env=env, capture_output=True, text=True, timeout=100)
        assert p.returncode == 2, p.stderr[-2000:]
        assert "Traceback" not in p.stderr
        errors = [ln for ln in p.stderr.splitlines() if ": error:" in ln]
        assert len(errors) == 1 and locked.name in errors[0], p.stderr[-2000:]
        assert (out / SENTINEL).read_text() == "an earlier result"
        assert sorted(q.name for q in out.iterdir()) == [SENTINEL]
    finally:
        locked.chmod(0o644)


# ----------------------------------------------------------------------------- subprocesses
SUBPROCESS_CASES = [
    ("video", ["video", "{c}/random.mp4", "-o", "{o}", *MODEL, "-q"], "random.mp4"),
    ("volume", ["volume", "{c}/random.nii.gz", "-o", "{o}/l.nii.gz", *MODEL, "-q"], "random.nii.gz"),
    ("run", ["run", "{c}/trunc.mp4", "-o", "{o}", "--model", "tiny-random", "--size", "64", "-q"], "trunc.mp4"),
    ("evaluate", ["evaluate", "volume", "{c}/pickle.npy", "{c}/labels_ok.npy", "-q"], "pickle.npy"),
]


@pytest.mark.parametrize("entry,argv,name", SUBPROCESS_CASES, ids=[c[0] for c in SUBPROCESS_CASES])
def test_bad_input_subprocess_no_traceback(entry, argv, name, corpus, tmp_path):
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    p = subprocess.run([sys.executable, "-m", "diffseg", *_fill(argv, corpus, tmp_path / "out")], cwd=REPO,
                       env=env, capture_output=True, text=True, timeout=100)
    assert p.returncode == 2, p.stderr[-2000:]
    assert "Traceback" not in p.stderr
    errors = [ln for ln in p.stderr.splitlines() if ": error:" in ln]
    assert len(errors) == 1 and name in errors[0], p.stderr[-2000:]
    # and nothing else: no decoder noise ("moov atom not found", decord's C++ log lines)
    others = [ln for ln in p.stderr.splitlines() if ln.strip() and ": error:" not in ln
              and "random weights" not in ln]  # (the tiny-random warning)
    assert not others, others


def test_pickled_npy_is_never_unpickled(corpus, tmp_path, monkeypatch):
    """Loading user .npy files must never unpickle: the object array's reduce is not called."""
    import pickle

    called = []
    real_loads = pickle.loads

    def spy(*a, **k):
        called.append(1)
        return real_loads(*a, **k)

    monkeypatch.setattr(pickle, "loads", spy)
    monkeypatch.setattr(pickle, "load", lambda *a, **k: called.append(1))
    for argv in (_volume("pickle.npy"), _stack("pickle.npy"), _run("pickle.npy"),
                 ["evaluate", "volume", "{c}/pickle.npy", "{c}/labels_ok.npy", "-q"]):
        out = tmp_path / f"o{len(called)}_{argv[0]}"
        try:
            main(_fill(argv, corpus, out))
        except SystemExit:
            pass
    assert not called


def test_a_damaged_tiff_gives_one_line_without_the_readers_log(tmp_path):
    # tifffile logs the tags it recovers from at ERROR level ("<TiffTag.fromfile> raised ...");
    # the user gets our one error line only (-v shows the library's lines)
    import tifffile

    tifffile.imwrite(tmp_path / "seed.tif", (np.arange(6 * 20 * 24).reshape(6, 20, 24) % 7).astype(np.uint16))
    data = bytearray((tmp_path / "seed.tif").read_bytes())
    rng = np.random.default_rng(1)
    for _ in range(10):
        data[rng.integers(0, min(len(data), 600))] = rng.integers(0, 256)
    (tmp_path / "bad.tif").write_bytes(bytes(data))
    # a subprocess: in process, pytest's log capture would hide the library's lines anyway
    p = subprocess.run([sys.executable, "-m", "diffseg", "stack", str(tmp_path / "bad.tif"), "-o",
                        str(tmp_path / "out"), "-q"], cwd=REPO, capture_output=True, text=True, timeout=120)
    err = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert p.returncode == 2 and len(err) == 1 and "bad.tif" in err[0], err


def test_damage_reported_by_a_reader_library_is_an_error(tmp_path, capsys):
    # ERROR records of the reader's logger, from this thread, while reading: one InputError
    # naming the file; the logger's level and propagation are restored; other threads' records
    # and warnings do not count
    import logging
    import threading

    from diffseg_core.errors import InputError
    from diffseg_core.io import damage_reported_by

    lg = logging.getLogger("tifffile")
    old = lg.level, lg.propagate
    lg.setLevel(logging.CRITICAL)  # as the CLI leaves it without -v
    try:
        with damage_reported_by("tifffile", tmp_path / "x.tif", "TIFF file"):
            lg.warning("an odd tag value")  # recovered without loss: not refused
            t = threading.Thread(target=lambda: lg.error("another file's damage"))
            t.start()
            t.join()
        with pytest.raises(InputError, match=r"x\.tif: damaged TIFF file \(invalid page offset 7846; 1 more\)"):
            with damage_reported_by("tifffile", tmp_path / "x.tif", "TIFF file"):
                lg.error("invalid page offset 7846\ndetails")
                lg.error("invalid page offset 7798")
        assert lg.level == logging.CRITICAL and lg.propagate is True
    finally:
        lg.setLevel(old[0])
        lg.propagate = old[1]
    assert "invalid page offset" not in capsys.readouterr().err


def test_a_damaged_label_tiff_is_refused_by_track(tmp_path):
    # the per-frame label maps of `track` go through the same check (a page list cut short)
    import struct

    import tifffile

    from diffseg_core.errors import InputError
    from temporal.io import read_segment_labels

    lab = (np.arange(32)[None, :].repeat(24, 0) > 15).astype(np.uint16)
    tifffile.imwrite(tmp_path / "00000.tif", np.stack([lab, lab]), metadata=None)
    with tifffile.TiffFile(tmp_path / "00000.tif") as tf:
        page = tf.pages[0]
        ptr = page.offset + 2 + 12 * len(page.tags)
    data = bytearray((tmp_path / "00000.tif").read_bytes())
    data[ptr:ptr + 4] = struct.pack("<I", len(data) + 999)
    (tmp_path / "00000.tif").write_bytes(bytes(data))
    with pytest.raises(InputError, match="00000.tif: damaged TIFF label map"):
        read_segment_labels(tmp_path, "00000", (24, 32))
