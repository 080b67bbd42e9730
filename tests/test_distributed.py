"""`diffseg run`: planning, sharding, linking chunks in one pass, and 2 CPU processes == 1 process."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from diffseg_core.config import SegmenterConfig, config_hash
from diffseg.distributed import RunConfig, finalize_video, run_job
from diffseg_core.errors import InputError
from diffseg_core.io import read_labels
from diffseg.jobs import (InputSpec, WorkItem, chunk_ranges, classify_inputs, plan_items,
                               relabel_agreement, shard_items)

from .conftest import REPO, colour_classes, write_frames, write_images
from .conftest import subprocess_env as _env

FAKE = "tests.conftest:fake_segmenter"




# ----------------------------------------------------------------------------- planning
def test_chunk_ranges_cover_with_overlap():
    assert chunk_ranges(5, 8, 2) == [(0, 5)]
    assert chunk_ranges(20, 8, 2) == [(0, 8), (6, 14), (12, 20)]
    r = chunk_ranges(1000, 300, 8)
    assert r[0][0] == 0 and r[-1][1] == 1000
    for (a0, b0), (a1, b1) in zip(r, r[1:]):
        assert b0 - a1 == 8  # consecutive chunks share exactly `overlap` frames
        assert b1 - a1 <= 300
    with pytest.raises(ValueError):
        chunk_ranges(10, 4, 4)


def _items(n: int) -> list[WorkItem]:
    return [WorkItem(key=f"image:{i}", kind="image", source=f"/x/{i}.png", name=str(i), input_kind="image",
                     cost=1 + (i * 7) % 5) for i in range(n)]


@pytest.mark.parametrize("world", [1, 2, 3, 8])
def test_shard_items_is_a_partition(world):
    items = _items(23)
    shards = [shard_items(items, r, world) for r in range(world)]
    keys = [it.key for s in shards for it in s]
    assert sorted(keys) == sorted(it.key for it in items)  # every item exactly once
    assert shards == [shard_items(list(reversed(items)), r, world) for r in range(world)]  # order-free
    loads = [sum(it.cost for it in s) for s in shards]
    assert max(loads) - min(loads) <= max(it.cost for it in items)  # greedy balance bound


def test_plan_items_splits_long_videos():
    specs = [InputSpec("/v.mp4", "video", "v", 20), InputSpec("/a.png", "image", "a"),
             InputSpec("/s.nii.gz", "volume", "s")]
    items = plan_items(specs, chunk_frames=8, overlap=2)
    chunks = [it for it in items if it.kind == "video_chunk"]
    assert [(c.start, c.end) for c in chunks] == [(0, 8), (6, 14), (12, 20)]
    assert {c.num_chunks for c in chunks} == {3}
    assert len({it.key for it in items}) == len(items) == 5


def test_classify_inputs_folder(tmp_path, frames_dir, images_dir):
    np.save(tmp_path / "vol.npy", np.zeros((4, 16, 16), np.float32))
    (tmp_path / "notes.txt").write_text("hello")
    plan = classify_inputs([images_dir, frames_dir, tmp_path / "vol.npy"])
    kinds = {s.name: s.kind for s in plan.specs}
    assert kinds == {"cat": "image", "dog": "image", "clip": "frames", "vol": "volume"}
    assert [s.num_frames for s in plan.specs if s.kind == "frames"] == [10]
    with pytest.raises(InputError, match="notes.txt"):
        classify_inputs([tmp_path / "notes.txt"])
    with pytest.raises(InputError, match="no such file"):
        classify_inputs([tmp_path / "missing.mp4"])


def test_classify_rejects_bad_file_in_folder_but_keeps_the_rest(tmp_path):
    write_images(tmp_path / "in", ["a"])
    (tmp_path / "in" / "broken.mp4").write_bytes(os.urandom(2000))
    plan = classify_inputs([tmp_path / "in"])
    assert [s.name for s in plan.specs] == ["a"]
    assert len(plan.rejected) == 1 and "broken.mp4" in plan.rejected[0].error


def test_config_hash_is_stable_and_sensitive():
    a = RunConfig(segmenter=SegmenterConfig(model="tiny-random", size=64))
    b = RunConfig(segmenter=SegmenterConfig(model="tiny-random", size=64, device="cuda:3"), devices=4)
    c = RunConfig(segmenter=SegmenterConfig(model="tiny-random", size=128))
    assert config_hash(a.hash_for("image")) == config_hash(b.hash_for("image"))  # launch/device free
    assert config_hash(a.hash_for("image")) != config_hash(c.hash_for("image"))
    d = RunConfig(segmenter=a.segmenter, chunk_overlap=4)
    assert config_hash(a.hash_for("image")) == config_hash(d.hash_for("image"))
    assert config_hash(a.hash_for("video_chunk")) != config_hash(d.hash_for("video_chunk"))


@pytest.mark.parametrize("kw", [dict(devices=0), dict(num_nodes=0), dict(chunk_frames=1),
                                dict(chunk_frames=8, chunk_overlap=8), dict(strategy="dpp"),
                                dict(accelerator="tpu"), dict(max_side=5), dict(segmenter_factory="nocolon")])
def test_run_config_validation(kw):
    with pytest.raises(InputError):
        RunConfig(**kw)


def test_run_config_did_you_mean():
    with pytest.raises(InputError, match="did you mean 'ddp'"):
        RunConfig(strategy="dpp")


# ----------------------------------------------------------------------------- linking chunks
def _segment_chunks(out: Path, frames: Path, n: int, chunk: int, overlap: int) -> list:
    """Chunk segmentations of a frame folder (fake segmenter) as a run writes them."""
    from diffseg.jobs import WORK_DIR
    from temporal.api import segment_frames

    from .conftest import fake_segmenter

    items = []
    for i, (a, b) in enumerate(chunk_ranges(n, chunk, overlap)):
        segment_frames(frames, out / WORK_DIR / "chunks" / "clip" / f"c{i:04d}" / "segs",
                       fake_segmenter(SegmenterConfig()), start=a, end=b)
        items.append(WorkItem(key=f"video:clip#c{i:04d}", kind="video_chunk", source=str(frames), name="clip",
                              input_kind="frames", start=a, end=b, chunk_index=i, num_chunks=0, num_frames=n))
    return items


@pytest.mark.parametrize("chunk,overlap", [(3, 0), (4, 1), (10, 0)])
def test_chunks_are_linked_in_one_pass_whatever_the_chunking(tmp_path, chunk, overlap):
    """Linking the chunks' segmentations gives the labels of one pass over the video (the
    target of chunked runs: >= 0.99 agreement; here exactly equal), with the right ids."""
    frames = write_frames(tmp_path / "clip", 10, hw=(48, 64))
    spec = InputSpec(str(frames), "frames", "clip", 10)
    out = tmp_path / f"job{chunk}_{overlap}"
    items = _segment_chunks(out, frames, 10, chunk, overlap)
    outputs, written = finalize_video(spec, items, RunConfig(chunk_frames=chunk, chunk_overlap=overlap,
                                                             overlay=False), out)
    assert written == 10 and outputs == ["videos/clip/labels", "videos/clip/tracks.json"]
    got = np.stack([read_labels(out / "videos" / "clip" / "labels" / f"{t:05d}.png") for t in range(10)])
    one = tmp_path / "one"
    finalize_video(spec, _segment_chunks(one, frames, 10, 10, 0), RunConfig(chunk_frames=10, overlay=False), one)
    ref = np.stack([read_labels(one / "videos" / "clip" / "labels" / f"{t:05d}.png") for t in range(10)])
    np.testing.assert_array_equal(got, ref)
    assert relabel_agreement(colour_classes(frames), got) == 1.0 and len(np.unique(got)) == 3


def test_an_incomplete_chunk_is_a_clear_error(tmp_path):
    frames = write_frames(tmp_path / "clip", 6, hw=(32, 32))
    out = tmp_path / "job"
    items = _segment_chunks(out, frames, 6, 3, 0)
    (out / ".diffseg" / "chunks" / "clip" / "c0001" / "segs" / "frames.txt").unlink()  # killed before the end
    with pytest.raises(InputError, match="incomplete"):
        finalize_video(InputSpec(str(frames), "frames", "clip", 6), items, RunConfig(chunk_frames=3, overlay=False),
                       out)


# ----------------------------------------------------------------------------- engine, in process
def test_run_job_fake_segmenter_images_video_volume(tmp_path, images_dir, frames_dir):
    z, y, x = np.mgrid[:6, :32, :32]
    np.save(tmp_path / "ball.npy", (((z - 3) ** 2 + (y - 16) ** 2 + (x - 16) ** 2) < 60).astype(np.float32) * 100)
    cfg = RunConfig(segmenter_factory=FAKE, chunk_frames=4, chunk_overlap=1, accelerator="cpu",
                    volume={"min_size": 0, "montage": False})
    s = run_job([images_dir, frames_dir, tmp_path / "ball.npy"], tmp_path / "out", cfg)
    assert s.exit_code == 0, s.format()
    assert (s.done, s.failed, s.skipped, s.total) == (4, 0, 0, 4)
    out = tmp_path / "out"
    assert (out / "images" / "cat.png").exists()
    assert (out / "images" / "dog_overlay.png").exists()
    labels = sorted((out / "videos" / "clip" / "labels").glob("*.png"))
    assert len(labels) == 10
    assert (out / "volumes" / "ball.npy").exists()
    assert not (out / ".diffseg" / "chunks" / "clip").exists()  # chunk files removed after linking
    man = json.loads((out / "manifest.json").read_text())
    assert {k: v["status"] for k, v in man["items"].items()} == {
        "image:cat": "done", "image:dog": "done", "video:clip": "done", "volume:ball": "done"}
    assert s.frames == 2 + 10 + 6 + 2  # images + frames + slices + overlap frames segmented twice (3 chunks)
    # No temporary file left anywhere.
    assert not [p for p in out.rglob(".tmp-*")]


# ----------------------------------------------------------------------------- 2 processes == 1
@pytest.mark.timeout(300)
def test_two_cpu_processes_equal_one_process(tmp_path):
    """DDP on 2 CPU processes (gloo) gives the 1-process result, and both give the right one:
    the fake segmenter's colour classes, linked into one id per region through 3 chunks."""
    write_images(tmp_path / "in" / "photos", ["a", "b"], hw=(64, 64))
    frames = write_frames(tmp_path / "in" / "clip" / "frames", 8, hw=(64, 64))
    inputs = [str(tmp_path / "in" / "photos"), str(frames)]
    opts = ["--segmenter-factory", FAKE, "--accelerator", "cpu", "--chunk-frames", "4",
            "--chunk-overlap", "2", "--no-overlay", "-q"]
    one = subprocess.run([sys.executable, "-m", "diffseg", "run", *inputs, "-o", str(tmp_path / "one"),
                          "--devices", "1", *opts], cwd=REPO, env=_env(), capture_output=True, text=True,
                         timeout=240)
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run([sys.executable, "-m", "diffseg", "run", *inputs, "-o", str(tmp_path / "two"),
                          "--devices", "2", "--strategy", "ddp", *opts], cwd=REPO, env=_env(),
                         capture_output=True, text=True, timeout=240)
    assert two.returncode == 0, two.stderr[-3000:]
    assert "Traceback" not in two.stderr
    man = json.loads((tmp_path / "two" / "manifest.json").read_text())
    assert man["job"]["config"]["devices"] == 2
    # Both ranks did work (2 images + 3 chunks spread over 2 ranks).
    chunk_ranks = {r["rank"] for r in man["items"].values()}
    assert chunk_ranks == {0, 1}
    for name in ("a", "b"):
        a = read_labels(tmp_path / "one" / "images" / f"{name}.png")
        b = read_labels(tmp_path / "two" / "images" / f"{name}.png")
        np.testing.assert_array_equal(a, b)
        truth = colour_classes(tmp_path / "in" / "photos" / f"{name}.png")
        assert relabel_agreement(truth, a) == 1.0 and len(np.unique(a)) == len(np.unique(truth)) == 3
        assert a.min() == 1  # segments 1..K, as `diffseg image` writes them (0 = no segment)
    la = np.stack([read_labels(p) for p in sorted((tmp_path / "one" / "videos" / "clip" / "labels").glob("*.png"))])
    lb = np.stack([read_labels(p) for p in sorted((tmp_path / "two" / "videos" / "clip" / "labels").glob("*.png"))])
    assert la.shape == lb.shape == (8, 64, 64)
    np.testing.assert_array_equal(la, lb)
    assert relabel_agreement(colour_classes(frames), la) == 1.0 and len(np.unique(la)) == 3


def test_folder_mode_numbered_frames_vs_photos(tmp_path):
    write_images(tmp_path / "cam", ["IMG_0001", "IMG_0002"])
    write_images(tmp_path / "seq", ["00000", "00001", "00002"])
    plan = classify_inputs([tmp_path / "cam", tmp_path / "seq"])
    assert sorted((s.name, s.kind) for s in plan.specs) == [
        ("IMG_0001", "image"), ("IMG_0002", "image"), ("seq", "frames")]
    forced = classify_inputs([tmp_path / "cam"], folder_mode="frames")
    assert [(s.kind, s.num_frames) for s in forced.specs] == [("frames", 2)]
    as_images = classify_inputs([tmp_path / "seq"], folder_mode="images")
    assert [s.kind for s in as_images.specs] == ["image"] * 3


def test_run_job_on_real_video_and_ct(shared_data, tmp_path):
    """Real DAVIS frames (first 6, chunked) and a real CT scan through one job."""
    import nibabel as nib

    from diffseg_core.io import read_image

    src = shared_data / "davis16_libby" / "frames"
    frames = tmp_path / "libby" / "frames"
    frames.mkdir(parents=True)
    for p in sorted(src.glob("*.jpg"))[:6]:
        (frames / p.name).symlink_to(p)
    ct = shared_data / "ct_totalseg_abdomen" / "image.nii.gz"
    cfg = RunConfig(segmenter_factory=FAKE, accelerator="cpu", chunk_frames=4, chunk_overlap=2, max_side=240,
                    overlay=False, volume={"montage": False})
    s = run_job([frames, ct], tmp_path / "out", cfg)
    assert s.exit_code == 0, s.format()
    assert s.done == 2
    labs = sorted((tmp_path / "out" / "videos" / "libby" / "labels").glob("*.png"))
    assert [p.name for p in labs] == [f"{t:05d}.png" for t in range(6)]
    h, w = read_image(frames / "00000.jpg").shape[:2]
    assert read_labels(labs[0]).shape == (h, w)  # --max-side 240 for the work, labels at the frames' 854x480
    out_ct = nib.load(tmp_path / "out" / "volumes" / "image.nii.gz")
    assert out_ct.shape == nib.load(ct).shape
    np.testing.assert_allclose(out_ct.affine, nib.load(ct).affine)


def test_run_writes_images_as_image_does_and_no_output_is_another_images_file(tmp_path):
    from tests.conftest import write_images

    write_images(tmp_path / "in", ["x", "x_overlay"])
    plan = classify_inputs([tmp_path / "in"])
    assert sorted(s.name for s in plan.specs) == ["x", "x_overlay_2"]  # x's overlay is images/x_overlay.png
    cfg = RunConfig(segmenter_factory=FAKE, accelerator="cpu")
    s = run_job([tmp_path / "in"], tmp_path / "out", cfg)
    assert s.done == 2
    names = sorted(p.name for p in (tmp_path / "out" / "images").iterdir())
    assert names == ["x.json", "x.png", "x_overlay.png", "x_overlay_2.json", "x_overlay_2.png",
                     "x_overlay_2_overlay.png"]
    doc = json.loads((tmp_path / "out" / "images" / "x.json").read_text())
    assert doc["segments"] and all(set(sg) == {"id", "name", "score", "area"} for sg in doc["segments"])
