"""Video files without decord (no wheel on arm64 / aarch64): PyAV reads them, with the same
frames, count, rate, ranges and errors."""
from __future__ import annotations

import sys

import cv2
import numpy as np
import pytest

from diffseg_core.errors import InputError
from temporal.io import DecodeError, FrameSource
from tests.conftest import REPO

CLIP = REPO / "examples" / "example_clip.mp4"


@pytest.fixture
def no_decord(monkeypatch):
    monkeypatch.setitem(sys.modules, "decord", None)  # `import decord` raises ImportError


def test_pyav_gives_the_frames_decord_gives(monkeypatch):
    ref = FrameSource(CLIP, start=1, end=20, stride=4)  # decord
    assert type(ref._vr).__name__ != "_PyAVVideo"
    expected = [(f.index, f.stem, f.rgb) for f in ref]
    monkeypatch.setitem(sys.modules, "decord", None)  # as on a machine without decord
    pyav = FrameSource(CLIP, start=1, end=20, stride=4)
    assert type(pyav._vr).__name__ == "_PyAVVideo"
    assert len(pyav) == len(ref) and pyav.fps == pytest.approx(ref.fps) and len(pyav._vr) == len(ref._vr)
    got = list(pyav)
    assert len(got) == len(expected)
    for (i, stem, b), f in zip(expected, got):
        assert (i, stem) == (f.index, f.stem) and f.rgb.shape == b.shape
        assert np.abs(f.rgb.astype(int) - b.astype(int)).mean() < 2.0  # one FFmpeg decoder, colour conversion aside


def test_pyav_max_side_and_full_size(no_decord):
    fs = FrameSource(CLIP, max_side=160)
    first = next(iter(fs))
    assert max(first.rgb.shape[:2]) == 160 and fs.full_hw == (192, 320)


def test_pyav_refuses_garbage_and_names_the_frame_of_a_truncated_file(no_decord, tmp_path):
    bad = tmp_path / "garbage.mp4"
    bad.write_bytes(b"\x00\x01not a video" * 100)
    with pytest.raises(InputError, match="garbage.mp4: cannot open video"):
        FrameSource(bad)
    data = bytearray(CLIP.read_bytes())
    n = len(data)
    data[int(n * 0.6):int(n * 0.75)] = bytes(int(n * 0.75) - int(n * 0.6))  # frames in the middle zeroed
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(bytes(data))
    fs = FrameSource(cut)
    got = []
    with pytest.raises(DecodeError, match="cut.mp4: decoding failed at frame") as e:
        for f in fs:
            got.append(f.index)
    assert e.value.frame == len(got) and 0 < len(got) < len(fs)


def test_an_animated_gif_is_read_where_decord_cannot_open_it(tmp_path):
    # decord needs a duration / frame count in the container, which a GIF lacks ("Failed to
    # measure duration/frame-count due to broken metadata"): PyAV reads it instead
    from PIL import Image

    rng = np.random.default_rng(0)
    frames = [Image.fromarray((rng.random((24, 32, 3)) * 255).astype(np.uint8)) for _ in range(5)]
    gif = tmp_path / "clip.gif"
    frames[0].save(gif, save_all=True, append_images=frames[1:], duration=100, loop=0)
    fs = FrameSource(gif)
    assert len(fs) == 5 and fs.fps == pytest.approx(10.0)
    got = [f.rgb for f in fs]
    with Image.open(gif) as im:  # the GIF's own (palette) frames, as Pillow decodes them
        expected = []
        for i in range(im.n_frames):
            im.seek(i)
            expected.append(np.asarray(im.convert("RGB")))
    assert len(got) == 5
    for a, b in zip(got, expected):
        assert a.shape == b.shape and np.abs(a.astype(int) - b.astype(int)).mean() < 2.0


def _sideways_video(path, turn: int, n: int = 6) -> np.ndarray:
    """A video stored 48 high x 64 wide with a display rotation of ``turn`` degrees (a phone's
    portrait clip); returns the stored frame (a white block in its top-left corner)."""
    import av

    rgb = np.zeros((48, 64, 3), np.uint8)
    rgb[:10, :20] = 255
    rgb[30:, 50:, 0] = 200  # a red block bottom-right: tells a turn from a flip
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264" if "libx264" in av.codecs_available else "mpeg4", rate=10)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        s.set_display_rotation(turn)
        for _ in range(n):
            for p in s.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return rgb


@pytest.mark.parametrize("reader", ["decord", "pyav"])
@pytest.mark.parametrize("turn", [90, -90, 180])
def test_a_video_stored_on_its_side_is_read_upright(tmp_path, monkeypatch, reader, turn):
    # decord ignores the display rotation (and gave 4-channel garbled frames of the turned size,
    # so the size check refused the video as one "whose frame size changes")
    if reader == "pyav":
        monkeypatch.setitem(sys.modules, "decord", None)
    stored = _sideways_video(tmp_path / "phone.mp4", turn)
    shown = np.rot90(stored, turn // 90)  # the display rotation turns counter-clockwise
    fs = FrameSource(tmp_path / "phone.mp4", max_side=32)
    assert fs.full_hw == shown.shape[:2]
    frames = list(fs)
    assert len(frames) == 6
    for f in frames:
        assert f.rgb.shape == (32, 24, 3) if turn % 180 else (24, 32, 3)
        small = cv2.resize(shown, f.rgb.shape[1::-1], interpolation=cv2.INTER_AREA)
        assert np.abs(f.rgb.astype(int) - small.astype(int)).mean() < 8.0


def test_a_file_with_no_video_says_so_in_plain_words(tmp_path):
    # decord's refusal was a C++ log line ("video_reader.cc:151: Check failed: st_nb >= 0 ...
    # cannot find video stream with wanted index: -1"); PyAV names the problem
    import av

    with av.open(str(tmp_path / "voice.mp4"), "w") as c:
        s = c.add_stream("aac", rate=16000)
        for i in range(5):
            f = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            f.sample_rate, f.pts = 16000, i * 1024
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    with pytest.raises(InputError, match=r"voice.mp4: cannot open video \(no video stream\)$"):
        FrameSource(tmp_path / "voice.mp4")
    (tmp_path / "junk.mp4").write_bytes(b"junk" * 400)
    with pytest.raises(InputError, match=r"junk.mp4: cannot open video \(Invalid data found when processing input\)$"):
        FrameSource(tmp_path / "junk.mp4")


def test_a_label_map_of_the_frame_as_stored_says_the_frame_is_turned(tmp_path):
    from PIL import Image

    from temporal.io import read_segment_labels

    Image.fromarray(np.ones((48, 64), np.uint8)).save(tmp_path / "00000.png")  # made on the stored 64 x 48 frame
    with pytest.raises(InputError, match="label map is 64x48 but the frame is 48x64; it is the frame turned a quarter"):
        read_segment_labels(tmp_path, "00000", (64, 48))
    Image.fromarray(np.ones((30, 64), np.uint8)).save(tmp_path / "00001.png")
    with pytest.raises(InputError, match=r"label map is 64x30 but the frame is 48x64$"):
        read_segment_labels(tmp_path, "00001", (64, 48))
