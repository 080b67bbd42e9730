from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from diffseg.cli import main
from diffseg_core.errors import InputError
from diffseg_core.io import read_labels
from temporal.api import segment_video, track_segments
from temporal.config import TrackerConfig
from temporal.io import FrameSource, natural_key

from .conftest import FakeSegmenter, Scene, seg_from_gt, shared_dir

TWO = [(1, 20, 10, 24, (220, 60, 60), 2, 1, 0, 99),
       (2, 55, 90, 20, (60, 60, 220), -1, -2, 0, 99)]


def write_scene(tmp: Path, n: int = 8, hw=(96, 128), big_ids: bool = False):
    """Frames as PNGs (frame1.png ... natural order) and per-frame label maps with
    independent labels (16-bit PNG with big values, or .npy)."""
    sc = Scene(TWO, hw=hw)
    rng = np.random.default_rng(5)
    fdir, sdir = tmp / "frames", tmp / "segs"
    fdir.mkdir()
    sdir.mkdir()
    gts = []
    for t in range(n):
        img, gt = sc.frame(t)
        Image.fromarray(img).save(fdir / f"frame{t + 1}.png")
        perm = rng.permutation(3) * (1000 if big_ids else 1) + (300 if big_ids else 0)
        lab = perm[gt]
        if t % 2 and not big_ids:
            np.save(sdir / f"frame{t + 1}.npy", lab.astype(np.int32))
        else:
            Image.fromarray(lab.astype(np.uint16 if big_ids else np.uint8)).save(sdir / f"frame{t + 1}.png")
        gts.append(gt)
    return sc, fdir, sdir, gts


def make_video(path: Path, sc: Scene, n: int) -> list[np.ndarray]:
    import av

    c = av.open(str(path), "w", format="mp4")
    s = c.add_stream("libx264", rate=Fraction(10))
    s.width, s.height = sc.hw[1], sc.hw[0]
    s.pix_fmt = "yuv420p"
    s.options = {"g": "5", "crf": "10"}
    gts = []
    for t in range(n):
        img, gt = sc.frame(t)
        gts.append(gt)
        for p in s.encode(__import__("av").VideoFrame.from_ndarray(img, format="rgb24")):
            c.mux(p)
    for p in s.encode():
        c.mux(p)
    c.close()
    return gts


def majority_ids(labels_dir: Path, stems, gts) -> list[dict]:
    out = []
    for s, gt in zip(stems, gts):
        lab = read_labels(labels_dir / f"{s}.png")
        d = {}
        for g in np.unique(gt):
            v, c = np.unique(lab[gt == g], return_counts=True)
            d[int(g)] = int(v[c.argmax()])
        out.append(d)
    return out


def test_track_cli_end_to_end(tmp_path, capsys):
    sc, fdir, sdir, gts = write_scene(tmp_path, n=10)
    out = tmp_path / "out"
    rc = main(["track", str(fdir), "--segments", str(sdir), "-o", str(out), "-q", "--json"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["frames"] == 10 and summary["complete"] is True
    stems = [f"frame{t + 1}" for t in range(10)]
    ids = majority_ids(out / "labels", stems, gts)
    assert all(d == ids[0] for d in ids) and len(set(ids[0].values())) == 3
    with Image.open(out / "labels" / "frame1.png") as im:
        assert im.mode == "P"
    tj = json.loads((out / "tracks.json").read_text())
    assert tj["complete"] is True and tj["error"] is None and tj["n_frames"] == 10
    assert tj["frames"] == stems  # natural sort: frame10 after frame9
    by_id = {t["id"]: t for t in tj["tracks"]}
    obj1 = by_id[ids[0][1]]
    assert obj1["first_frame"] == 0 and obj1["last_frame"] == 9 and obj1["n_frames"] == 10
    lab0 = read_labels(out / "labels" / "frame1.png")
    assert obj1["area"][0] == int((lab0 == obj1["id"]).sum())
    ys, xs = np.nonzero(lab0 == obj1["id"])
    assert obj1["bbox"][0] == [int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())]
    import av

    with av.open(str(out / "overlay.mp4")) as c:
        st = c.streams.video[0]
        assert st.codec_context.name in ("h264", "libx264", "mpeg4")
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(st)]
    assert len(frames) == 10 and frames[0].shape == (96, 128, 3)
    assert not list(out.glob(".tmp-*"))


def test_track_16bit_labels_odd_size_and_id_offset(tmp_path):
    sc, fdir, sdir, gts = write_scene(tmp_path, n=4, hw=(77, 129), big_ids=True)
    res = track_segments(fdir, sdir, tmp_path / "o", TrackerConfig(), id_offset=300)
    assert res.complete and res.n_frames == 4 and res.n_tracks == 3
    lab = read_labels(res.labels_dir / "frame1.png")
    assert set(np.unique(lab).tolist()) == {301, 302, 303}
    with Image.open(res.labels_dir / "frame1.png") as im:
        assert im.mode in ("I;16", "I")
    assert res.max_track_id == 303 and res.overlay is not None and res.overlay.exists()


def test_missing_segment_file_is_an_input_error(tmp_path, capsys):
    sc, fdir, sdir, gts = write_scene(tmp_path, n=3)
    (sdir / "frame2.png").unlink(missing_ok=True)
    (sdir / "frame2.npy").unlink(missing_ok=True)
    rc = main(["track", str(fdir), "--segments", str(sdir), "-o", str(tmp_path / "o"), "-q"])
    err = capsys.readouterr().err
    assert rc == 2 and "frame2" in err and "Traceback" not in err
    tj = json.loads((tmp_path / "o" / "tracks.json").read_text())
    assert tj["complete"] is False


def test_label_maps_numbered_from_1_for_a_video_name_what_the_folder_holds(tmp_path, capsys):
    # ffmpeg numbers the frames it extracts from 1; a video's frames are named by index from 0
    clip = Path(__file__).resolve().parents[2] / "examples" / "example_clip.mp4"
    sdir = tmp_path / "masks"
    sdir.mkdir()
    for i in range(1, 5):
        Image.fromarray(np.ones((24, 32), np.uint8)).save(sdir / f"frame_{i:04d}.png")
    rc = main(["track", str(clip), "--segments", str(sdir), "-o", str(tmp_path / "o"), "--end", "4", "-q"])
    err = capsys.readouterr().err
    assert rc == 2 and "'00000'" in err and "4 label map(s), frame_0001.png ... frame_0004.png" in err
    assert "ffmpeg numbers the frames it extracts from 1" in err and "Traceback" not in err


def test_empty_folder_and_bad_range(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    rc = main(["track", str(tmp_path / "empty"), "--segments", str(tmp_path / "empty"), "-o", str(tmp_path / "o")])
    assert rc == 2 and "no images" in capsys.readouterr().err
    with pytest.raises(InputError, match="--end"):
        FrameSource(tmp_path, start=5, end=3)
    assert sorted(["f10", "f2", "f1"], key=natural_key) == ["f1", "f2", "f10"]


def test_segment_video_with_fake_segmenter_keyframes_and_range(tmp_path):
    sc = Scene(TWO)
    gts = make_video(tmp_path / "clip.mp4", sc, 12)

    class NearestGT(FakeSegmenter):
        # decoded frames differ from the originals (lossy codec): look up the GT by frame order
        def segment(self, images):
            out = []
            for _ in images:
                out.append(seg_from_gt(self.queue.pop(0), self.rng))
            self.calls += len(images)
            return out

    fake = NearestGT(sc)
    fake.queue = [gts[t] for t in range(2, 12, 2) if (t - 2) % 4 == 0]
    res = segment_video(tmp_path / "clip.mp4", tmp_path / "out", fake, TrackerConfig(keyframe_every=2),
                        start=2, stride=2)
    assert res.complete and res.n_frames == 5 and fake.calls == 3  # frames 2..10 step 2; keyframes 2, 6, 10
    tj = json.loads(res.tracks_json.read_text())
    assert tj["frames"] == ["00002", "00004", "00006", "00008", "00010"]
    ids = majority_ids(res.labels_dir, tj["frames"], [gts[t] for t in range(2, 12, 2)])
    assert all(d == ids[0] for d in ids)


def test_streams_of_different_lengths_are_named_and_a_decode_failure_is_not_a_mismatch(tmp_path):
    from temporal.api import link_segmentations, save_segmentation, track_stream

    sc = Scene(TWO, hw=(48, 64))
    frames, gts = zip(*(sc.frame(t) for t in range(6)))
    stream = [(f"{t:05d}", f) for t, f in enumerate(frames)]
    res = track_stream(stream, gts, tmp_path / "same", write_overlay=False)
    assert res.complete and res.n_frames == 6
    for frames_in, maps_in, says in ((stream, gts[:4], "more frames than segmentations"),
                                     (stream[:4], gts, "more segmentations than frames")):
        with pytest.raises(InputError, match=says):
            track_stream(frames_in, maps_in, tmp_path / "mismatch", write_overlay=False)
        tj = json.loads((tmp_path / "mismatch" / "tracks.json").read_text())
        assert tj["complete"] is False  # the frames written are not left looking complete
    # a video that fails to decode part-way with a segmentation for every frame: the run
    # stops at the failure (incomplete, frames before it kept), not with a length error
    make_video(tmp_path / "ok.mp4", sc, 30)
    data = bytearray((tmp_path / "ok.mp4").read_bytes())
    n = len(data)
    data[int(n * 0.6):int(n * 0.75)] = bytes(int(n * 0.75) - int(n * 0.6))
    (tmp_path / "bad.mp4").write_bytes(bytes(data))
    rng = np.random.default_rng(0)
    paths = []
    for t in range(30):
        paths.append(tmp_path / "segs" / f"{t:05d}.npz")
        paths[-1].parent.mkdir(exist_ok=True)
        save_segmentation(paths[-1], seg_from_gt(sc.frame(t)[1], rng))
    res = link_segmentations(tmp_path / "bad.mp4", paths, tmp_path / "linked", write_overlay=False)
    assert not res.complete and "decoding failed at frame" in res.error and 0 < res.n_frames < 30
    with pytest.raises(InputError, match="more segmentations than frames"):
        link_segmentations(tmp_path / "ok.mp4", paths + [paths[0]], tmp_path / "linked2", write_overlay=False)


def test_corrupt_video_keeps_frames_before_failure(tmp_path, capsys):
    sc = Scene(TWO, hw=(48, 64))
    make_video(tmp_path / "ok.mp4", sc, 30)
    data = bytearray((tmp_path / "ok.mp4").read_bytes())
    n = len(data)
    data[int(n * 0.6):int(n * 0.75)] = bytes(int(n * 0.75) - int(n * 0.6))
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(bytes(data))

    class Seg:
        def __init__(self):
            self.rng = np.random.default_rng(0)

        def segment(self, images):
            return [seg_from_gt(np.zeros(im.shape[:2], np.int32) + (im[..., 0] > 128), self.rng) for im in images]

    res = segment_video(bad, tmp_path / "out", Seg(), TrackerConfig())
    assert not res.complete and "decoding failed at frame" in res.error
    failed_at = int(res.error.split("frame ")[1].split()[0])
    assert 0 < failed_at < 30 and res.n_frames == failed_at
    import av

    n_ok = 0
    with pytest.raises(av.error.FFmpegError):
        with av.open(str(bad)) as c:
            for _ in c.decode(video=0):
                n_ok += 1
    assert failed_at == n_ok  # the first frame that cannot be decoded
    assert len(list(res.labels_dir.glob("*.png"))) == failed_at
    tj = json.loads(res.tracks_json.read_text())
    assert tj["complete"] is False and str(failed_at) in tj["error"]
    assert res.overlay is not None and res.overlay.exists()
    # the CLI reports it on one line and a non-zero exit code
    from temporal import cli as tcli

    r = tcli._report(res, "video")
    assert r.code == 2 and "stopped early" in r.line and r.doc["complete"] is False


def test_evaluate_video_cli(tmp_path, capsys):
    gt_dir, pr_dir = tmp_path / "gt", tmp_path / "pred"
    gt_dir.mkdir()
    pr_dir.mkdir()
    for t in range(3):
        g = np.zeros((20, 20), np.uint8)
        g[5:10, 5 + t:10 + t] = 1
        Image.fromarray(g).save(gt_dir / f"{t:05d}.png")
        Image.fromarray(g * 4).save(pr_dir / f"{t:05d}.png")
    rc = main(["evaluate", "video", str(pr_dir), str(gt_dir)])
    assert rc == 0
    d = json.loads(capsys.readouterr().out)
    assert d["J&F"] == 1.0 and d["oracle_J&F"] == 1.0 and d["objects"][0]["track"] == 4
    # a run's output folder (tracks.json beside labels/) is read through its label maps
    run = tmp_path / "run"
    run.mkdir()
    pr_dir = pr_dir.rename(run / "labels")
    (run / "tracks.json").write_text("{}")
    assert main(["evaluate", "video", str(run), str(gt_dir)]) == 0
    assert json.loads(capsys.readouterr().out)["J&F"] == 1.0
    (pr_dir / "00001.png").unlink()
    assert main(["evaluate", "video", str(pr_dir), str(gt_dir)]) == 2


def test_real_davis_sequence_with_gt_segments(tmp_path):
    seq = shared_dir() / "data" / "davis16_libby"
    if not (seq / "frames").is_dir():
        pytest.skip(f"shared data not found at {seq}")
    res = track_segments(seq / "frames", seq / "masks", tmp_path / "o", TrackerConfig(), end=12,
                         write_overlay=False)
    assert res.complete and res.n_frames == 12 and res.n_tracks == 2  # background + dog
    stems = json.loads(res.tracks_json.read_text())["frames"]
    gts = [(read_labels(seq / "masks" / f"{s}.png") > 0).astype(np.int32) for s in stems]
    ids = majority_ids(res.labels_dir, stems, gts)
    assert all(d == ids[0] for d in ids) and ids[0][0] != ids[0][1]
    for s, gt in zip(stems, gts):  # the GT masks are the segments: the dog's track is the mask
        lab = read_labels(res.labels_dir / f"{s}.png")
        np.testing.assert_array_equal(lab == ids[0][1], gt == 1)


@pytest.mark.parametrize("opt,path,want", [
    (["--fallback-preset", "none"], ("predict", "fallback_preset"), "none"),
    ([], ("predict", "fallback_preset"), "medium"),
    (["--correction-window", "0"], ("lifecycle", "correction_window"), 0),
    (["--segment-trust", "1.5"], ("associate", "segment_trust"), 1.5),
    (["--memory", "7"], ("lifecycle", "memory"), 7),
])
def test_engine_options_reach_the_tracker(tmp_path, opt, path, want):
    _, fdir, sdir, _ = write_scene(tmp_path, n=3)
    out = tmp_path / "out"
    assert main(["track", str(fdir), "--segments", str(sdir), "-o", str(out), "-q", "--no-overlay", *opt]) == 0
    info = json.loads((out / "tracks.json").read_text())
    assert info["tracker"]["engine"][path[0]][path[1]] == want and info["n_frames"] == 3


def test_bad_engine_option_is_a_clear_error(tmp_path, capsys):
    _, fdir, sdir, _ = write_scene(tmp_path, n=3)
    assert main(["track", str(fdir), "--segments", str(sdir), "-o", str(tmp_path / "bad"), "-q",
                 "--correction-window", "-1"]) == 2
    assert "--correction-window" in capsys.readouterr().err


def test_background_option_leaves_background_without_a_track(tmp_path):
    _, fdir, sdir, _ = write_scene(tmp_path, n=3)
    outs = {}
    for opt in ([], ["--background", "0"]):
        out = tmp_path / f"out{len(opt)}"
        assert main(["track", str(fdir), "--segments", str(sdir), "-o", str(out), "-q", "--no-overlay", *opt]) == 0
        outs[len(opt)] = [read_labels(out / "labels" / f"frame{t + 1}.png") for t in range(3)]
    segs = [read_labels(sdir / f"frame{t + 1}.png") if t % 2 == 0 else np.load(sdir / f"frame{t + 1}.npy")
            for t in range(3)]
    for seg, every, bg in zip(segs, outs[0], outs[2]):
        assert (every[seg == 0] > 0).all()  # label 0 is a segment like any other
        assert (bg[seg == 0] == 0).all() and (bg[seg > 0] > 0).all()


def _top_level_boxes(path) -> list[str]:
    """Names of the top-level boxes of an MP4 file, in order."""
    import struct

    data, out, pos = path.read_bytes(), [], 0
    while pos + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if size == 1:
            size = struct.unpack(">Q", data[pos + 8:pos + 16])[0]
        out.append(kind.decode("latin-1"))
        if size < 8:
            break
        pos += size
    return out


def test_video_outputs_say_what_made_them_and_stream(tmp_path):
    # provenance in tracks.json (a tiny-random result must not pass for a real one) and an
    # overlay whose index comes first (faststart: it plays before it is fully downloaded)
    from diffseg_core import software_version
    from diffseg.cli import main

    from ..conftest import write_frames

    frames = write_frames(tmp_path / "frames", 4, hw=(48, 64))
    assert main(["video", str(frames), "-o", str(tmp_path / "out"), "--model", "tiny-random", "--size", "64",
                 "-q"]) == 0
    tj = json.loads((tmp_path / "out" / "tracks.json").read_text())
    assert tj["frame_size"] == [48, 64] and tj["fps"] > 0
    assert tj["software"] == f"diffseg-vv {software_version()}"
    assert tj["segmenter"]["random_weights"] is True and tj["segmenter"]["config"]["model"] == "tiny-random"
    boxes = _top_level_boxes(tmp_path / "out" / "overlay.mp4")
    assert "moov" in boxes and "mdat" in boxes and boxes.index("moov") < boxes.index("mdat")


def test_max_side_labels_are_written_at_the_source_size(tmp_path):
    # --max-side shrinks the frames for the work; the label maps go back to the frames' own
    # size (nearest), so they line up with the source and its ground truth (DAVIS: 854x480)
    from tests.conftest import FakeSegmenter, colour_classes, write_frames
    from diffseg_core.config import SegmenterConfig
    from diffseg_core.io import read_labels
    from diffseg.jobs import relabel_agreement
    from temporal.api import segment_video

    frames = write_frames(tmp_path / "frames", 3, hw=(96, 128))
    res = segment_video(frames, tmp_path / "out", FakeSegmenter(SegmenterConfig()), max_side=64)
    assert res.complete
    labels = np.stack([read_labels(p) for p in sorted((tmp_path / "out" / "labels").glob("*.png"))])
    assert labels.shape == (3, 96, 128)
    assert json.loads(res.tracks_json.read_text())["frame_size"] == [96, 128]
    assert relabel_agreement(colour_classes(frames), labels) > 0.97  # regions in place, at full size


def test_track_cli_keyframe_every_auto(tmp_path, capsys):
    # the summary line says how many frames were linked from a segmentation; a slow scene
    # needs far fewer than all; a bad value is an argparse error; `run` refuses auto
    sc, fdir, sdir, gts = write_scene(tmp_path, n=10)
    rc = main(["track", str(fdir), "--segments", str(sdir), "-o", str(tmp_path / "out"), "-q",
               "--keyframe-every", "auto", "--keyframe-max-gap", "3", "--json"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["frames"] == 10 and 3 <= summary["keyframes"] <= 6
    ids = majority_ids(tmp_path / "out" / "labels", [f"frame{t + 1}" for t in range(10)], gts)
    assert all(d == ids[0] for d in ids)
    with pytest.raises(SystemExit) as e:
        main(["track", str(fdir), "--segments", str(sdir), "-o", str(tmp_path / "o2"), "--keyframe-every", "often"])
    assert e.value.code == 2 and "often" in capsys.readouterr().err
    from diffseg.distributed import RunConfig
    from temporal.api import segment_frames

    with pytest.raises(InputError, match="auto"):
        RunConfig(tracker={"keyframe_every": "auto"})
    with pytest.raises(InputError, match="keyframe_every"):
        segment_frames(fdir, tmp_path / "segs", FakeSegmenter(sc), keyframe_every="auto")
