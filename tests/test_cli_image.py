"""`diffseg image`: outputs, bad inputs, duplicate names, missing model; in-process and subprocess."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from diffseg.cli import main
from diffseg_core.io import read_labels

from .conftest import REPO

FAST = ["--model", "tiny-random", "--device", "cpu", "--size", "64", "-q"]


def _rgb(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = np.zeros((h, w, 3), np.uint8)
    img[:, : w // 2] = (220, 30, 30)
    img[:, w // 2:] = (20, 40, 200)
    return np.clip(img.astype(int) + rng.integers(-10, 10, img.shape), 0, 255).astype(np.uint8)


def _save(path: Path, arr: np.ndarray, mode: "str | None" = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr, mode=mode).save(path) if mode else Image.fromarray(arr).save(path)
    return path


def test_writes_labels_overlay_and_npy(tmp_path, capsys):
    img = _save(tmp_path / "in" / "photo.jpg", _rgb(60, 90))
    out = tmp_path / "out"
    rc = main(["image", str(img), "-o", str(out), "--npy", *FAST])
    assert rc == 0
    labels = read_labels(out / "photo.png")
    assert labels.shape == (60, 90) and labels.dtype == np.int32
    assert labels.min() >= 1  # segments 1..K: 0 means "no segment" in DAVIS / napari / ITK tools
    side = json.loads((out / "photo.json").read_text())
    ids, area = np.unique(labels, return_counts=True)
    assert [(s["id"], s["area"]) for s in side["segments"]] == list(zip(ids.tolist(), area.tolist()))
    assert side["size"] == [60, 90] and side["labels"] == "photo.png"
    assert side["segmenter"]["random_weights"] is True and side["software"].startswith("diffseg-vv ")
    with Image.open(out / "photo.png") as im:
        assert im.mode == "P"
    np.testing.assert_array_equal(np.load(out / "photo.npy", allow_pickle=False), labels)
    with Image.open(out / "photo_overlay.png") as ov:
        assert ov.size == (90, 60) and ov.mode == "RGB"
    assert capsys.readouterr().out == ""  # the summary goes to stderr; -q hides it when all went well
    assert not [p for p in out.iterdir() if p.name.startswith(".tmp")]


def test_no_overlay_and_odd_image_modes(tmp_path):
    ins = [
        _save(tmp_path / "gray.png", _rgb(40, 50)[:, :, 0], "L"),
        _save(tmp_path / "rgba.png", np.dstack([_rgb(40, 50), np.full((40, 50), 128, np.uint8)])),
        _save(tmp_path / "deep.png", (_rgb(40, 50)[:, :, 0].astype(np.uint16) * 200)),  # 16-bit gray
    ]
    out = tmp_path / "out"
    assert main(["image", *map(str, ins), "-o", str(out), "--no-overlay", *FAST]) == 0
    for p in ins:
        assert read_labels(out / f"{p.stem}.png").shape == (40, 50)
        assert not (out / f"{p.stem}_overlay.png").exists()


def test_bad_inputs_fail_one_line_each_good_ones_written(tmp_path, capsys):
    good = _save(tmp_path / "good.png", _rgb(40, 40))
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"this is not a jpeg")
    folder = tmp_path / "adir"
    folder.mkdir()
    missing = tmp_path / "missing.png"
    out = tmp_path / "out"
    rc = main(["image", str(empty), str(good), str(junk), str(folder), str(missing), "-o", str(out), *FAST])
    assert rc == 2
    assert (out / "good.png").exists() and (out / "good_overlay.png").exists()
    cap = capsys.readouterr()
    errors = [line for line in cap.err.splitlines() if "error" in line]
    assert len(errors) == 4
    for p in (empty, junk, folder, missing):
        assert any(str(p) in line for line in errors), p
    assert "Traceback" not in cap.err
    assert "diffseg image: 1 done, 4 failed" in cap.err  # a failed run always says so, -q or not


def test_extreme_aspect_ratio_fails_alone_in_a_batch(tmp_path, capsys):
    good = _save(tmp_path / "good.png", _rgb(40, 60))
    strip = _save(tmp_path / "strip.png", _rgb(4, 2400))  # latent 8 x 4800 at --size 64: refused
    out = tmp_path / "out"
    rc = main(["image", str(strip), str(good), "-o", str(out), "--batch-size", "2", *FAST])
    assert rc == 2
    assert (out / "good.png").exists() and not (out / "strip.png").exists()
    err = capsys.readouterr().err
    assert str(strip) in err and "aspect ratio" in err and "Traceback" not in err


def test_duplicate_stems_do_not_overwrite(tmp_path, capsys):
    a = _save(tmp_path / "a" / "frame.png", _rgb(40, 40, 1))
    b = _save(tmp_path / "b" / "frame.png", _rgb(48, 32, 2))
    out = tmp_path / "out"
    assert main(["image", str(a), str(b), "-o", str(out), "--batch-size", "2", *FAST]) == 0
    assert read_labels(out / "frame.png").shape == (40, 40)
    assert read_labels(out / "frame-2.png").shape == (48, 32)
    assert "frame-2.png" in capsys.readouterr().err


def test_missing_model_is_one_line_exit_2(tmp_path, capsys):
    img = _save(tmp_path / "x.png", _rgb(32, 32))
    rc = main(["image", str(img), "-o", str(tmp_path / "out"), "--model", str(tmp_path / "nope"), "-q"])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "hf download" in err[0] and "Traceback" not in err[0]
    assert not (tmp_path / "out" / "x.png").exists()


def test_ckpt_needs_opt_in(tmp_path, capsys):
    img = _save(tmp_path / "x.png", _rgb(32, 32))
    ckpt = tmp_path / "m.ckpt"
    ckpt.write_bytes(b"junk")
    assert main(["image", str(img), "-o", str(tmp_path / "out"), "--model", str(ckpt), "-q"]) == 2
    assert "--allow-unsafe-ckpt" in capsys.readouterr().err


def test_bad_option_values_exit_2(tmp_path, capsys):
    img = _save(tmp_path / "x.png", _rgb(32, 32))
    assert main(["image", str(img), "-o", str(tmp_path / "o"), "--model", "tiny-random", "--size", "10", "-q"]) == 2
    assert "size" in capsys.readouterr().err


def test_subprocess_console_entry(tmp_path):
    img = _save(tmp_path / "shot.png", _rgb(48, 64))
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    proc = subprocess.run([sys.executable, "-m", "diffseg", "image", str(img), "-o", str(out), *FAST[:-1], "--json"],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    assert read_labels(out / "shot.png").shape == (48, 64)
    assert "diffseg image: 1 done, 0 failed" in proc.stderr  # the human line
    assert json.loads(proc.stdout) == {"done": 1, "failed": 0, "seconds": json.loads(proc.stdout)["seconds"],
                                       "output": str(out)}  # --json: the machine summary, alone on stdout




def test_shipped_example_is_made_by_its_script_and_segments(tmp_path):
    example = REPO / "examples" / "shapes.png"  # tracked: part of every checkout
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_example", REPO / "examples" / "make_example.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    with Image.open(example) as im:
        shipped = np.asarray(im.convert("RGB"))
    np.testing.assert_array_equal(mod.make_scene(0), shipped)
    assert example.stat().st_size < 200_000
    out = tmp_path / "out"
    assert main(["image", str(example), "-o", str(out), "--model", "tiny-random", "--size", "128", "-q"]) == 0
    assert read_labels(out / "shapes.png").shape == shipped.shape[:2]


def test_overlay_in_row_blocks_equals_the_whole_image_formula(monkeypatch):
    import diffseg_core.io as dio

    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (37, 29, 3), dtype=np.uint8)
    lab = rng.integers(0, 5, (37, 29)).astype(np.int32)
    lab[10:20, 5:15] = 7
    # the formula on the whole image at once: 50 % colour, white where the right or lower
    # neighbour differs
    col = dio.label_palette(8)[lab].astype(np.float32)
    expect = 0.5 * img.astype(np.float32) + 0.5 * col
    edge = np.zeros(lab.shape, bool)
    edge[:, :-1] |= lab[:, :-1] != lab[:, 1:]
    edge[:-1, :] |= lab[:-1, :] != lab[1:, :]
    expect[edge] = 255
    expect = np.clip(expect + 0.5, 0, 255).astype(np.uint8)
    for rows in (1, 4, 36, 512):
        monkeypatch.setattr(dio, "OVERLAY_ROWS", rows)
        np.testing.assert_array_equal(dio.overlay(img, lab), expect)
    keep = dio.overlay(img, lab, background=7)
    np.testing.assert_array_equal(keep[12:18, 7:13], img[12:18, 7:13])  # inside, off the contour


def test_a_folder_stands_for_its_images(tmp_path, capsys):
    # as in `run`: the images of a folder (natural order, hidden and other files skipped);
    # an empty folder is one error line, the rest is still written
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("p10.png", "p2.png"):
        _save(photos / name, _rgb(40, 48))
    (photos / "notes.txt").write_text("not an image")
    (tmp_path / "empty").mkdir()
    out = tmp_path / "out"
    rc = main(["image", str(photos), str(tmp_path / "empty"), "-o", str(out), "--no-overlay", *FAST[:-1], "--json"])
    cap = capsys.readouterr()
    assert rc == 2 and json.loads(cap.out)["done"] == 2
    assert sorted(p.name for p in out.glob("*.png")) == ["p10.png", "p2.png"]
    assert any("empty" in line and "no image files" in line for line in cap.err.splitlines())
