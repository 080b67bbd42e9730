"""Outputs never destroy inputs or each other, never look complete when they are not, and one
output folder takes one command at a time (issue 17, classes 4 and 5)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from diffseg.cli import main
from diffseg_core.errors import OutputError
from diffseg_core.io import (atomic_save_npy, output_lock, protect_inputs, remove_stale_temporaries,
                             save_image, temporary_name)

from .conftest import REPO, write_frames, write_images
from .conftest import subprocess_env as _env

FAKE = "tests.conftest:fake_segmenter"
TINY = ["--model", "tiny-random", "--size", "64", "-q"]




def test_image_never_writes_over_its_input(tmp_path):
    out = tmp_path / "out"
    (photo,) = write_images(out, ["photo"])
    before = photo.read_bytes()
    assert main(["image", str(photo), "-o", str(out), *TINY]) == 0
    assert photo.read_bytes() == before
    assert (out / "photo-2.png").exists() and (out / "photo-2_overlay.png").exists()


def test_inputs_whose_outputs_would_collide_get_distinct_names(tmp_path):
    a, b = write_images(tmp_path / "in", ["x", "x_overlay"])
    out = tmp_path / "out"
    assert main(["image", str(a), str(b), "-o", str(out), *TINY]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["x.json", "x.png", "x_overlay-2.json", "x_overlay-2.png", "x_overlay-2_overlay.png",
                     "x_overlay.png"]
    # x_overlay.png is x's overlay (RGB), x_overlay-2.png the second input's labels (palette)
    from PIL import Image

    assert Image.open(out / "x_overlay.png").mode == "RGB"
    assert Image.open(out / "x_overlay-2.png").mode == "P"


def test_atomic_path_refuses_a_protected_input(tmp_path):
    src = tmp_path / "scan.npy"
    np.save(src, np.zeros(3))
    with protect_inputs([tmp_path]):
        with pytest.raises(OutputError, match="it is one of the inputs"):
            atomic_save_npy(src, np.ones(3))
    assert np.load(src).sum() == 0
    atomic_save_npy(src, np.ones(3))  # outside the block the path is free again
    assert np.load(src).sum() == 3


def test_long_file_names_get_a_short_temporary_name(tmp_path):
    name = "a" * 240 + ".nii.gz"
    tmp = temporary_name(tmp_path / name)
    assert len(tmp.name.encode()) <= 255 and tmp.name.startswith(".tmp-") and tmp.name.endswith(".nii.gz")
    atomic_save_npy(tmp_path / ("b" * 245 + ".npy"), np.arange(4))
    assert np.load(tmp_path / ("b" * 245 + ".npy")).tolist() == [0, 1, 2, 3]


def test_a_short_write_is_never_published(tmp_path, monkeypatch):
    """An encoder that stops writing half-way (a full disk it did not notice) leaves nothing
    under the final name, and the error says what happened."""
    from PIL import Image

    real_save = Image.Image.save

    def half_save(self, fp, format=None, **kw):
        real_save(self, fp, format=format, **kw)
        data = Path(fp).read_bytes()
        Path(fp).write_bytes(data[: len(data) // 2])

    monkeypatch.setattr(Image.Image, "save", half_save)
    rgb = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    for name in ("o.jpg", "o.png"):
        with pytest.raises(OutputError, match="incomplete or unreadable"):
            save_image(tmp_path / name, rgb)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_numpy_short_write_reads_as_a_full_disk(tmp_path, monkeypatch):
    def short(*a, **k):
        raise OSError("327680 requested and 50144 written")

    monkeypatch.setattr(np, "save", short)
    with pytest.raises(OutputError, match="no space left on device"):
        atomic_save_npy(tmp_path / "x.npy", np.zeros(10))
    assert not list(tmp_path.iterdir())


def test_stale_temporaries_of_dead_processes_are_removed(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    (tmp_path / "labels").mkdir()
    stale = tmp_path / "labels" / f".tmp-{pid}-1f-00003.png"
    stale.write_bytes(b"half")
    mine = tmp_path / f".tmp-{os.getpid()}-1f-x.png"
    mine.write_bytes(b"in progress")
    other = tmp_path / ".tmp-notes.txt"
    other.write_text("not ours")
    assert remove_stale_temporaries(tmp_path) == 1
    assert not stale.exists() and mine.exists() and other.exists()


def test_output_lock_refuses_a_second_writer_and_takes_over_a_dead_ones(tmp_path):
    with output_lock(tmp_path, "diffseg video"):
        with pytest.raises(OutputError, match=rf"another diffseg video \(pid {os.getpid()} .*writing into this folder"):
            with output_lock(tmp_path, "diffseg run"):
                pass
    assert not (tmp_path / ".diffseg.lock").exists()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    import socket

    (tmp_path / ".diffseg.lock").write_text(json.dumps({"pid": int(dead.stdout), "host": socket.gethostname()}))
    with output_lock(tmp_path, "diffseg run") as lock:
        assert json.loads(lock.read_text())["pid"] == os.getpid()


def test_second_run_into_the_same_folder_is_refused(tmp_path, capsys):
    frames = write_frames(tmp_path / "clip", 4)
    out = tmp_path / "out"
    with output_lock(out, "diffseg run"):
        rc = main(["run", str(frames), "-o", str(out), "--segmenter-factory", FAKE, "--accelerator", "cpu", "-q"])
    err = capsys.readouterr().err
    assert rc == 2 and "is writing into this folder" in err and str(os.getpid()) in err
    assert not (out / "manifest.json").exists()


@pytest.mark.timeout(200)
@pytest.mark.parametrize("command", ["run", "video"])
def test_ctrl_c_prints_interrupted_and_exits_130(tmp_path, command):
    frames = write_frames(tmp_path / "clip" / "frames", 40)
    out = tmp_path / "out"
    if command == "run":
        argv = ["run", str(frames), "-o", str(out), "--segmenter-factory", FAKE, "--accelerator", "cpu",
                "--chunk-frames", "10", "--chunk-overlap", "2"]
    else:
        argv = ["video", str(frames), "-o", str(out), "--model", "tiny-random", "--size", "64", "--no-overlay"]
    # Ctrl-C's default action in the child, even when this test runs from a background job
    # (which inherits SIGINT ignored, and Python then never raises KeyboardInterrupt)
    proc = subprocess.Popen([sys.executable, "-m", "diffseg", *argv], cwd=REPO,
                            env=_env(DIFFSEG_FAKE_DELAY="0.2"), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    marker = out / (".diffseg" if command == "run" else "labels")
    while time.time() < deadline and not marker.exists() and proc.poll() is None:
        time.sleep(0.1)
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-6000:]
    assert f"diffseg {command}: interrupted" in err
    assert "Traceback" not in err
    assert not (out / ".diffseg.lock").exists()


def test_ctrl_c_while_a_command_loads_torch_is_delivered_after_the_import(tmp_path, monkeypatch, capsys):
    """A KeyboardInterrupt raised inside torch's import aborts the process (seen in the test
    above under load, exit -6): the command imports it with Ctrl-C held, then stops (130)."""
    import diffseg.cli as cli

    loaded = []

    def import_with_ctrl_c(name):
        signal.raise_signal(signal.SIGINT)  # Ctrl-C in the middle of the import...
        loaded.append(name)  # ...which runs to its end

    monkeypatch.setattr(cli, "import_module", import_with_ctrl_c)
    handler = signal.getsignal(signal.SIGINT)
    # Python's own handler, also when pytest runs in a background job (which inherits SIGINT ignored)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        rc = main(["image", str(write_frames(tmp_path / "f", 1)), "-o", str(tmp_path / "out")])
        after = signal.getsignal(signal.SIGINT)
    finally:
        signal.signal(signal.SIGINT, handler)
    assert rc == 130 and loaded == ["torch"]
    assert capsys.readouterr().err.strip() == "diffseg image: interrupted"
    assert not (tmp_path / "out" / ".diffseg.lock").exists()
    # called from Python (a notebook), the command leaves Ctrl-C working: it ignored it after
    # an interrupt, for the rest of the caller's process
    assert after is signal.default_int_handler


# ----------------------------------------------------------------------------- huge images
def test_an_image_above_pillows_bomb_limit_is_written_and_verified(tmp_path, monkeypatch):
    # a 16000 x 16000 label PNG is 256 MP, above Pillow's decompression-bomb limit (179 MP):
    # the check before publishing opened it with that limit and refused our own output
    from PIL import Image

    from diffseg_core.io import read_labels, save_image, save_labels_png

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # the same limit, at a test's size
    lab = (np.arange(60 * 80).reshape(60, 80) // 700).astype(np.int32)
    save_labels_png(tmp_path / "lab.png", lab)
    np.testing.assert_array_equal(read_labels(tmp_path / "lab.png"), lab)
    rgb = np.random.default_rng(0).integers(0, 255, (60, 80, 3), dtype=np.uint8)
    save_image(tmp_path / "im.png", rgb)
    assert Image.MAX_IMAGE_PIXELS == 1000  # restored


def test_huge_png_paths_give_the_same_pixels(tmp_path, monkeypatch):
    # above CV_READ_PIXELS a PNG is decoded by OpenCV into one writeable array; an overlay
    # handed over (consume=True) is blended and written in place: same pixels as Pillow's way
    import diffseg_core.io as dio

    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 255, (300, 410, 3), dtype=np.uint8)
    dio.save_image(tmp_path / "in.png", rgb)
    small = dio.read_image(tmp_path / "in.png")
    monkeypatch.setattr(dio, "CV_READ_PIXELS", 1000)
    big = dio.read_image(tmp_path / "in.png")
    np.testing.assert_array_equal(big, small)
    assert big.flags.writeable and not small.flags.writeable  # Pillow's array is a read-only copy
    lab = (np.arange(300)[:, None] // 50 + np.arange(410)[None, :] // 100).astype(np.int32)
    ref = dio.overlay(small, lab)
    out = dio.overlay(big, lab, out=big)
    assert out is big
    np.testing.assert_array_equal(out, ref)
    dio.save_image(tmp_path / "ov.png", out, consume=True)
    np.testing.assert_array_equal(dio.read_image(tmp_path / "ov.png"), ref)
    # a damaged huge PNG still gets the reader's error, not a partial image
    data = (tmp_path / "in.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    from diffseg_core.errors import InputError

    with pytest.raises(InputError, match="cut.png"):
        dio.read_image(tmp_path / "cut.png")


@pytest.mark.parametrize("argv,quiet", [(["-q", "stack"], True), (["stack", "-q"], True), (["stack"], False)])
def test_quiet_works_before_and_after_the_subcommand(argv, quiet, tmp_path):
    # the subcommand's own -q (default False) used to reset a -q given before it
    from diffseg_core.progress import progress_enabled, set_progress_enabled

    np.save(tmp_path / "lab.npy", np.ones((3, 8, 8), np.int32))
    try:
        assert main(argv + [str(tmp_path / "lab.npy"), "-o", str(tmp_path / "out.npy")]) == 0
        assert progress_enabled() is (not quiet)
    finally:
        set_progress_enabled(True)


@pytest.mark.parametrize("before", [True, False])
def test_every_command_ends_with_one_line_and_json_on_request(before, tmp_path, capsys):
    # stack: the human line on stderr, the JSON summary alone on stdout with --json (given
    # before or after the subcommand); -q drops the line of a successful run
    np.save(tmp_path / "lab.npy", np.ones((3, 8, 8), np.int32))
    args = ["stack", str(tmp_path / "lab.npy"), "-o", str(tmp_path / "out.npy")]
    assert main((["--json"] + args) if before else (args + ["--json"])) == 0
    cap = capsys.readouterr()
    doc = json.loads(cap.out)
    assert doc["labels"] == str(tmp_path / "out.npy") and doc["n_labels"] == 1 and doc["shape"] == [3, 8, 8]
    assert cap.err.strip().splitlines()[-1].startswith("diffseg stack: 1 labels")
    assert main(args + ["-q"]) == 0
    cap = capsys.readouterr()
    assert cap.out == "" and "diffseg stack:" not in cap.err


def test_a_closed_pipe_is_not_an_error(tmp_path):
    # `diffseg ... --json | head -c0`: stdout's reader is gone before the summary is written
    np.save(tmp_path / "lab.npy", np.ones((3, 8, 8), np.int32))
    r, w = os.pipe()
    os.close(r)
    try:
        p = subprocess.run([sys.executable, "-m", "diffseg", "stack", str(tmp_path / "lab.npy"), "-o",
                            str(tmp_path / "out.npy"), "-q", "--json"], cwd=REPO, env=_env(), stdout=w,
                           stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(w)
    assert p.returncode == 0 and "rror" not in p.stderr, p.stderr
    assert (tmp_path / "out.npy").exists()


def test_huge_image_helpers_agree_with_the_whole_array_formulas(tmp_path):
    # the row-block and narrow-type paths of the image writer (16k images) give what the
    # plain numpy formulas give: label areas, 1..K ids in place, PNGs of any integer type
    from diffseg_core.io import label_areas, read_labels, save_labels_png, segment_ids

    rng = np.random.default_rng(4)
    lab = rng.integers(0, 7, (300, 90)).astype(np.uint8)
    lab[lab == 3] = 0
    ids, area = label_areas(lab)
    ref_ids, ref_area = np.unique(lab, return_counts=True)
    np.testing.assert_array_equal(ids, ref_ids)
    np.testing.assert_array_equal(area, ref_area)
    big = np.array([[0, 70000], [70000, 5]], np.int64)
    np.testing.assert_array_equal(label_areas(big)[0], [0, 5, 70000])
    for dtype in (np.uint8, np.int16, np.int32):
        one = segment_ids(lab.astype(dtype), consume=True)
        assert one.dtype == dtype
        np.testing.assert_array_equal(one, lab.astype(np.int32) + 1)
        save_labels_png(tmp_path / f"{np.dtype(dtype).name}.png", one)
        np.testing.assert_array_equal(read_labels(tmp_path / f"{np.dtype(dtype).name}.png"), one)
    full = np.full((2, 3), 255, np.uint8)  # no room for 256 in uint8: an int32 copy
    out = segment_ids(full, consume=True)
    assert out.dtype == np.int32 and int(out.max()) == 256 and int(full.max()) == 255
    wide = (np.arange(600 * 4).reshape(600, 4) // 3).astype(np.int16)  # > 255: 16-bit PNG
    save_labels_png(tmp_path / "wide.png", wide[:, ::2])  # a strided view is copied, not misread
    np.testing.assert_array_equal(read_labels(tmp_path / "wide.png"), wide[:, ::2])


@pytest.mark.parametrize("command", ["image", "evaluate"])
def test_out_of_memory_is_one_line_with_a_hint_only_where_the_command_has_one(command, tmp_path, monkeypatch,
                                                                              capsys):
    def oom(*a, **k):
        raise MemoryError

    lab = tmp_path / "lab.npy"
    np.save(lab, np.ones((2, 4, 4), np.int32))
    if command == "image":
        import diffseg_core.segmenter

        monkeypatch.setattr(diffseg_core.segmenter, "DiffSegSegmenter", oom)
        argv = ["image", str(write_frames(tmp_path / "f", 1)), "-o", str(tmp_path / "out")]
    else:
        import volume.evaluate

        monkeypatch.setattr(volume.evaluate, "volume_dice", oom)
        argv = ["evaluate", "volume", str(lab), str(lab)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    if command == "image":
        assert err == "diffseg image: error: out of memory (try a smaller --size or --batch-size)"
    else:  # evaluate has neither flag
        assert err == "diffseg evaluate: error: out of memory"
