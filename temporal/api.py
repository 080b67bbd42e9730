"""Video jobs as plain functions (the CLI and the distributed runner call these).

`segment_video`: DiffSeg (or any segmenter) on a video + tracking.
`track_segments`: link bring-your-own per-frame label maps into tracks.
`join_run`: join the tracks of one object in a finished run (`temporal.engine.join`).
All stream frames, write outputs progressively and atomically (see `temporal.writer`) and
return a `VideoResult`. A decode failure at frame n stops the job with ``complete=False``
and the error recorded; outputs of the frames before n are kept.
"""
from __future__ import annotations

import dataclasses
import os
import time
from collections import deque
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional, Sequence

import numpy as np

from diffseg_core.errors import InputError
from diffseg_core.progress import progress
from diffseg_core.types import resolve_segmenter

from .config import TrackerConfig
from .io import DecodeError, Frame, FrameSource, read_segment_labels
from .proposals import segmentation_from_labels
from .tracker import VideoSegmenter, segmenter_batch_size
from .types import TrackedFrame, VideoResult
from .writer import WRITER_FIELDS, VideoOutputWriter

__all__ = ["segment_video", "track_segments", "join_run", "track_stream", "segment_frames", "save_segmentation", "load_segmentation",
           "link_segmentations", "VideoResult", "TrackerConfig"]


def _segs_until_failure(segs: Iterator[Any], failure: list) -> Iterator[Any]:
    """``segs`` until a frame fails to decode: the run stops there (incomplete), and the
    segmentations of the frames after it are neither read nor a length mismatch."""
    while not failure:
        try:
            yield next(segs)
        except StopIteration:
            return


def _run(source: Any, out_dir: Path, vs: VideoSegmenter, id_offset: int, write_overlay: bool,
         meta: dict[str, Any], segs_for: Any, desc: str) -> VideoResult:
    t0 = time.time()
    naming = getattr(getattr(vs.segmenter, "config", None), "naming", None)
    writer = VideoOutputWriter(out_dir, fps=source.fps, write_overlay=write_overlay, meta=meta,
                               label_hw=getattr(source, "full_hw", None),
                               min_score=getattr(naming, "min_score", None))
    pending: deque = deque()
    failure: list[DecodeError] = []
    ended: list[bool] = []

    def frames() -> Iterator[np.ndarray]:
        try:
            for fr in source:
                pending.append((fr.stem, fr.rgb))
                yield fr.rgb
        except DecodeError as exc:  # stop cleanly: frames before it are still tracked/written
            failure.append(exc)
        ended.append(True)  # the segmentations read from the frames (`segs_for`) end here too

    state = vs.init_state(id_offset)
    n_key = 0
    bar = progress(total=len(source) if hasattr(source, "__len__") else None, desc=desc, unit="frame")
    try:
        seg_iter = _segs_until_failure(segs_for(pending, ended), failure) if segs_for is not None else None
        for tf in vs.iter_video(frames(), seg_iter, state=state):
            stem, rgb = pending.popleft()
            writer.put(stem, rgb, tf)
            n_key += tf.keyframe
            bar.update(1)
    except ValueError as exc:
        writer.abort(str(exc))
        where = f"frame {pending[0][0]}: " if pending else ""  # none pending: the input as a whole
        raise InputError(f"{source.path}: {where}{exc}") from exc
    except BaseException as exc:
        writer.abort(f"{type(exc).__name__}: {exc}")
        raise
    finally:
        bar.close()
    error = str(failure[0]) if failure else None
    info = writer.close(complete=error is None, error=error)
    return VideoResult(n_frames=info["n_frames"], n_tracks=info["n_tracks"], complete=error is None, error=error,
                       seconds=time.time() - t0, out_dir=Path(out_dir), labels_dir=writer.labels_dir,
                       tracks_json=writer.tracks_json, overlay=info["overlay"],
                       max_track_id=max(info["max_track_id"], state.registry.max_id), keyframes=n_key)


#: where `segment_video` keeps the segmentations of a run until it completes (resume)
SEGMENTATION_CACHE = Path(".diffseg") / "video-segmentations"


class _SegmentationCache:
    """A segmenter whose results are kept on disk by frame content until the run completes,
    so that a killed `video` run, started again, links the frames it had segmented without
    running the model on them again (linking from frame 0 is cheap and deterministic: the
    outputs equal those of an uninterrupted run).

    Results are stored as `save_segmentation` writes them and always handed on in that form
    (labels int32, proposals float32), fresh or loaded, so both runs link the same input.
    The folder is named by a hash of the segmenter's configuration: another model or other
    merge options never reuse a stale entry. A damaged entry is computed again.
    """

    def __init__(self, segmenter: Any, folder: Path) -> None:
        self.segmenter, self.folder = segmenter, folder
        self.config = getattr(segmenter, "config", None)  # batch size, as the segmenter's
        self.hits = 0  # segmentations an earlier run left (a frozen frame met again in this run is not one)
        self._earlier = {p.name for p in folder.glob("*.npz")} if folder.is_dir() else set()

    @staticmethod
    def key_of(segmenter: Any) -> "str | None":
        """Hash of the segmenter's configuration, or None (unknown segmenter: no cache)."""
        from diffseg_core.config import config_hash

        cfg = getattr(segmenter, "config", None)
        if cfg is None or not hasattr(cfg, "to_dict"):
            return None
        return config_hash(type(segmenter).__qualname__, cfg.to_dict())

    def segment(self, images: list) -> list:
        import hashlib

        paths = [self.folder / (hashlib.sha1(np.ascontiguousarray(im).tobytes()).hexdigest()
                                + f"_{im.shape[0]}x{im.shape[1]}.npz") for im in images]
        out: list = [None] * len(images)
        for i, p in enumerate(paths):
            if p.is_file():
                try:
                    out[i] = load_segmentation(p)
                    self.hits += p.name in self._earlier
                except (OSError, ValueError, KeyError, EOFError):
                    pass  # damaged (a killed write cannot leave one: atomic), computed again
        miss = [i for i, s in enumerate(out) if s is None]
        if miss:
            for i, s in zip(miss, self.segmenter.segment([images[i] for i in miss])):
                out[i] = save_segmentation(paths[i], s)
        return out


def _config_with_offset(config: TrackerConfig, id_offset: int) -> TrackerConfig:
    if not isinstance(config, TrackerConfig):
        raise TypeError(f"`config` must be a TrackerConfig; got {type(config).__name__}")
    return config if config.id_offset == id_offset else dataclasses.replace(config, id_offset=int(id_offset))


def segment_video(source: "str | Path", out_dir: "str | Path", segmenter: Any = None,
                  config: TrackerConfig = TrackerConfig(), *, start: int = 0, end: Optional[int] = None,
                  stride: int = 1, max_side: Optional[int] = None, id_offset: int = 0,
                  write_overlay: bool = True, resume: bool = True) -> VideoResult:
    """Segment a video with DiffSeg and track every segment with a stable id.

    Args:
        source: video file (decord: mp4, mov, avi, mkv, webm) or folder of frames.
        out_dir: output folder: ``labels/<stem>.png``, ``tracks.json``, ``overlay.mp4``.
        segmenter: object with ``segment(list[uint8 (H, W, 3)]) -> list[Segmentation]``, a
            `SegmenterConfig`, or None (default `DiffSegSegmenter`).
        config: tracker settings (`TrackerConfig`: keyframes, the engine's knobs).
        start, end, stride: frame range of the source.
        max_side: downscale frames so the longer side is at most this.
        id_offset: track ids start at ``id_offset + 1`` (chunks of one video).
        write_overlay: encode ``overlay.mp4``.
        resume: keep each frame's segmentation under ``out_dir/.diffseg/`` until the run
            completes, so that a run started again after a kill or a crash skips the model
            on the frames already segmented (outputs identical to an uninterrupted run; only
            for segmenters with a ``config``, e.g. `DiffSegSegmenter`).

    Returns:
        `VideoResult` (``resumed_frames``: segmentations taken from an earlier run).

    Raises:
        InputError: unreadable source, bad range, frame size changes.
    """
    import shutil

    from diffseg_core.models import segmenter_info

    src = FrameSource(source, start, end, stride, max_side)
    seg = resolve_segmenter(segmenter)
    key = _SegmentationCache.key_of(seg) if resume else None
    cache = _SegmentationCache(seg, Path(out_dir) / SEGMENTATION_CACHE / key) if key else None
    cfg = _config_with_offset(config, id_offset)
    vs = VideoSegmenter(cache or seg, cfg)
    meta = {"job": "video", "source": os.path.abspath(source), "start": start, "end": end, "stride": stride,
            "max_side": max_side, "id_offset": id_offset, "segmenter": segmenter_info(seg), "tracker": cfg.to_dict()}
    res = _run(src, Path(out_dir), vs, id_offset, write_overlay, meta, None, "video")
    if cache is not None:
        res.resumed_frames = cache.hits
        if res.complete:  # nothing left to resume: the segmentations go
            shutil.rmtree(cache.folder.parent, ignore_errors=True)
            if not any(cache.folder.parent.parent.iterdir()):
                cache.folder.parent.parent.rmdir()
    return res


def track_segments(frames_source: "str | Path", segments_dir: "str | Path", out_dir: "str | Path",
                   config: TrackerConfig = TrackerConfig(), *, start: int = 0, end: Optional[int] = None,
                   stride: int = 1, max_side: Optional[int] = None, id_offset: int = 0,
                   write_overlay: bool = True, background: "int | None" = None) -> VideoResult:
    """Link per-frame label maps made by any segmenter into tracks.

    Args:
        frames_source: folder of frames or video file (stems ``00000``, ``00001``, ... for
            videos: the file's frame number).
        segments_dir: one label map per frame with the frame's stem: PNG 8/16-bit
            (palette or gray), ``.npy`` or ``.tif``; labels independent per frame.
            Proposal maps are derived from the masks (`temporal.proposals`). Or a
            segmentation with its attention, ``<stem>.npz`` as `save_segmentation` writes
            it (labels ``0..K-1``, ``-1`` none, the proposal maps and, when the segments
            were named, their names' scores: the tracks are then named too).
        out_dir, config, start, end, stride, max_side, id_offset, write_overlay: see
            `segment_video`.
        background: the label value meaning "no segment" (0 for DAVIS, SAM 2 or Cellpose
            masks: those pixels get no track), or None (every value is a segment).

    Returns:
        `VideoResult`.
    """
    seg_dir = Path(segments_dir)
    if not seg_dir.is_dir():
        raise InputError(f"{seg_dir}: segments folder not found")
    src = FrameSource(frames_source, start, end, stride, max_side)
    cfg = _config_with_offset(config, id_offset)
    vs = VideoSegmenter(None, cfg)

    def segs_for(pending: deque, ended: list) -> Iterator[Any]:
        # The frame generator appends (stem, rgb) just before yielding; iter_video pulls the
        # frame first, so pending[-1] is the frame this segmentation belongs to; once the
        # frames have ended (``ended``), so have the segmentations.
        while True:
            if not pending or ended:
                return
            stem, rgb = pending[-1]
            npz = seg_dir / f"{stem}.npz"
            if npz.is_file():  # a segmentation with its attention (and names)
                yield _saved_segmentation(npz, rgb.shape[:2])
                continue
            lab = read_segment_labels(seg_dir, stem, rgb.shape[:2])
            yield segmentation_from_labels(lab, work_side=cfg.engine.predict.work_side, background=background)

    meta = {"job": "track", "source": os.path.abspath(frames_source), "segments": os.path.abspath(seg_dir),
            "start": start, "end": end, "stride": stride, "max_side": max_side, "id_offset": id_offset,
            "background": background, "tracker": cfg.to_dict()}
    return _run(src, Path(out_dir), vs, id_offset, write_overlay, meta, segs_for, "track")


def join_run(run_dir: "str | Path", out_dir: "str | Path", frames_source: "str | Path | None" = None,
             config: Any = None, write_overlay: bool = True) -> VideoResult:
    """Join the tracks of one object in a finished run, into a new output folder.

    A pass over the whole run (`temporal.engine.join`: tracks that trade pixels from frame
    to frame and look alike are one object), for segmenters that cut objects into pieces
    that change from frame to frame. The run read is left as it is; the joined run has the
    same files (labels, ``tracks.json`` with ``joined``: ``{id: the id it joined}``,
    overlay). Each id takes the smallest id of its group; names are carried from the run.

    Args:
        run_dir: output folder of a complete `segment_video` / `track_segments` run.
        out_dir: the joined run's folder (not ``run_dir``).
        frames_source: the run's frames (video file or folder); default: the source its
            ``tracks.json`` names, with its start / end / stride.
        config: `temporal.engine.join.JoinConfig` (default: its defaults).
        write_overlay: encode ``overlay.mp4``.

    Raises:
        InputError: not a complete run, the same folder, frames missing or not the run's.
    """
    from .engine.join import Exchange, JoinConfig, apply_joins, name_donors
    from .export import TrackedVideo

    t0 = time.time()
    config = JoinConfig() if config is None else config
    run = TrackedVideo.open(run_dir)
    out = Path(out_dir)
    if out.resolve() == run.folder.resolve():
        raise InputError(f"{out}: give another output folder than the run's (the run is kept as it is)")
    doc = run.doc
    source = frames_source if frames_source is not None else doc.get("source")
    if source is None:
        raise InputError(f"{run.folder}: tracks.json names no source; give the run's frames")
    if frames_source is None and not Path(source).exists():
        raise InputError(f"{source}: the run's frames are not there any more; give them (--frames)")
    stems = run.stems

    def frames(desc: str) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
        # the frames at the labels' size (no --max-side: labels are written at the source's)
        src = FrameSource(source, int(doc.get("start") or 0), doc.get("end"), int(doc.get("stride") or 1))
        if len(src) != len(stems):
            raise InputError(f"{source}: {len(src)} frames, but the run has {len(stems)}; give the run's frames")
        bar = progress(total=len(stems), desc=desc, unit="frame")
        try:
            for (_, stem, lab), fr in zip(run.labels(), src):
                if fr.stem != stem or fr.rgb.shape[:2] != lab.shape:
                    raise InputError(f"{source}: frame {fr.stem} {fr.rgb.shape[:2]} is not the run's frame {stem} "
                                     f"{lab.shape}; give the run's frames")
                yield stem, fr.rgb, lab
                bar.update(1)
        except DecodeError as exc:
            raise InputError(f"{source}: {exc}; joining needs every frame") from exc
        finally:
            bar.close()

    ex = Exchange()
    for _, rgb, lab in frames("join: count"):
        ex.add(lab, rgb)
    mapping = ex.groups(config)
    names = {int(t["id"]): {"name": t.get("name"), "name_score": t.get("name_score")} for t in run.tracks()}
    area = ex.area
    named = {t for t, n in names.items() if n["name"] is not None}
    for root, donor in name_donors(mapping, named, dict(enumerate(area.tolist()))).items():
        names[root] = names[donor]
    meta = {k: v for k, v in doc.items() if k not in WRITER_FIELDS}
    meta.update(joined_from=os.path.abspath(run.folder), join=config.to_dict(),
                joined={str(k): int(v) for k, v in sorted(mapping.items())})
    writer = VideoOutputWriter(out, fps=float(doc.get("fps") or 25.0), write_overlay=write_overlay, meta=meta,
                               names=names)
    try:
        for pos, (stem, rgb, lab) in enumerate(frames("join: write")):
            joined = apply_joins(lab, mapping)
            ids = np.flatnonzero(np.bincount(joined.ravel()))  # counted, not sorted: O(pixels)
            writer.put(stem, rgb, TrackedFrame(pos, joined, ids[ids > 0].astype(np.int32)))
    except BaseException as exc:
        writer.abort(f"{type(exc).__name__}: {exc}")
        raise
    info = writer.close()
    return VideoResult(n_frames=info["n_frames"], n_tracks=info["n_tracks"], complete=True, error=None,
                       seconds=time.time() - t0, out_dir=out, labels_dir=writer.labels_dir,
                       tracks_json=writer.tracks_json, overlay=info["overlay"],
                       max_track_id=int(doc.get("max_track_id") or info["max_track_id"]))


class _StreamSource:
    """Adapts an iterable of ``(stem, uint8 (H, W, 3))`` to the frame-source interface."""

    def __init__(self, frames: Iterable[tuple[str, np.ndarray]], fps: float, name: str,
                 n_frames: Optional[int]) -> None:
        self._frames, self.fps, self.path, self._n = frames, fps, Path(name), n_frames

    def __iter__(self) -> Iterator[Frame]:
        for i, (stem, rgb) in enumerate(self._frames):
            yield Frame(i, str(stem), rgb)

    def __len__(self) -> int:
        return int(self._n or 0)


def track_stream(frames: Iterable[tuple[str, np.ndarray]], label_maps: Iterable[np.ndarray],
                 out_dir: "str | Path", config: TrackerConfig = TrackerConfig(), *, fps: float = 25.0,
                 n_frames: Optional[int] = None, id_offset: int = 0, write_overlay: bool = True,
                 source_name: str = "<stream>", background: "int | None" = None) -> VideoResult:
    """`track_segments` on in-memory streams (generators): frames and label maps in step.

    Args:
        frames: ``(stem, uint8 (H, W, 3))`` per frame.
        label_maps: int ``(H, W)`` per frame, labels independent per frame.
        out_dir, config, id_offset, write_overlay: see `segment_video`.
        background: see `track_segments`.
        fps: overlay frame rate.
        n_frames: length for the progress bar (optional).

    Returns:
        `VideoResult`.
    """
    cfg = _config_with_offset(config, id_offset)
    vs = VideoSegmenter(None, cfg)
    src = _StreamSource(frames, fps, source_name, n_frames)

    def segs_for(pending: deque, ended: list) -> Iterator[Any]:
        for lab in label_maps:
            yield segmentation_from_labels(np.asarray(lab), work_side=cfg.engine.predict.work_side,
                                           background=background)

    meta = {"job": "track", "source": source_name, "id_offset": id_offset, "tracker": cfg.to_dict()}
    return _run(src, Path(out_dir), vs, id_offset, write_overlay, meta, segs_for, "track")


# ----------------------------------------------------------------------------- chunks
FRAMES_LIST = "frames.txt"


def segment_frames(source: "str | Path", seg_dir: "str | Path", segmenter: Any = None, *, start: int = 0,
                   end: Optional[int] = None, max_side: Optional[int] = None, keyframe_every: int = 1) -> int:
    """Segment frames ``start..end-1`` of a video and save the segmentations, unlinked.

    The expensive half of `segment_video`, for a chunk of a long video on one rank: the
    linking runs later in one pass over all chunks (`load_segmentation`), so a chunked run
    gets the ids one pass gets. Only keyframes (global frame index divisible by
    ``keyframe_every``) are segmented.

    Writes ``seg_dir/<stem>.npz`` per keyframe (``labels`` int32 ``(H, W)``, ``proposals``
    float32 ``(K, h, w)``), each atomically, and last ``seg_dir/frames.txt`` with the stems
    of every frame of the range, in order (its presence marks the chunk complete).

    Returns:
        frames in the range.

    Raises:
        InputError: unreadable source or a frame that fails to decode.
    """
    from diffseg_core.io import atomic_write_text

    if not isinstance(keyframe_every, int) or keyframe_every < 1:
        raise InputError(f"keyframe_every must be an integer >= 1 here (frames are segmented before they are "
                         f"linked); got {keyframe_every!r}")
    src = FrameSource(source, start, end, 1, max_side)
    seg = resolve_segmenter(segmenter)
    out = Path(seg_dir)
    bs = segmenter_batch_size(seg)
    stems: list[str] = []
    batch: list[tuple[str, np.ndarray]] = []
    first: tuple = ()

    def flush() -> None:
        for (stem, _), s in zip(batch, seg.segment([rgb for _, rgb in batch])):
            save_segmentation(out / f"{stem}.npz", s)
        batch.clear()

    try:
        for fr in src:
            if stems and fr.rgb.shape != first:
                raise InputError(f"{src.path}: frame {fr.stem}: frame size changed within the video: "
                                 f"{first[:2]} then {fr.rgb.shape[:2]}")
            first = fr.rgb.shape
            stems.append(fr.stem)
            if fr.index % keyframe_every == 0:
                batch.append((fr.stem, fr.rgb))
                if len(batch) >= bs:
                    flush()
        if batch:
            flush()
    except DecodeError as exc:
        raise InputError(str(exc)) from exc
    atomic_write_text(out / FRAMES_LIST, "\n".join(stems) + "\n")
    return len(stems)


def save_segmentation(path: "str | Path", seg: Any) -> Any:
    """Write a `Segmentation`'s labels (int32) and proposals (float32) to ``path`` (``.npz``,
    atomically): what `load_segmentation` reads back and the linking needs.

    Returns:
        the `Segmentation` as stored (what `load_segmentation` will return).
    """
    from diffseg_core.io import atomic_path
    from diffseg_core.types import Segmentation

    seg = seg.numpy() if hasattr(seg, "numpy") else seg
    lab, props = np.asarray(seg.labels, np.int32), np.asarray(seg.proposals, np.float32)
    names = getattr(seg, "names", None)
    extra = {} if names is None else {  # the names' evidence travels with the segments (plain arrays, no pickle)
        "vocabulary": np.asarray(names.vocabulary, dtype=str), "name_scores": np.asarray(names.scores, np.float32),
        "names": np.asarray(["" if n is None else n for n in names.names], dtype=str)}
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, labels=lab, proposals=props, **extra)
    return Segmentation(labels=lab, proposals=props, image_hw=lab.shape, names=names)


def load_segmentation(path: "str | Path") -> Any:
    """A `Segmentation` saved by `segment_frames` / `save_segmentation`."""
    from diffseg_core.types import SegmentNames, Segmentation

    with np.load(path, allow_pickle=False) as z:
        lab = z["labels"]
        names = None
        if "vocabulary" in z.files:
            names = SegmentNames(vocabulary=tuple(str(w) for w in z["vocabulary"]), scores=z["name_scores"],
                                 names=[str(n) or None for n in z["names"]])
        return Segmentation(labels=lab, proposals=z["proposals"], image_hw=lab.shape, names=names)


def _saved_segmentation(path: Path, hw: tuple[int, int]) -> Any:
    """A `save_segmentation` file for a frame of ``hw``; a clear error when it is not one."""
    try:
        seg = load_segmentation(path)
    except (OSError, ValueError, KeyError, EOFError) as exc:
        raise InputError(f"{path}: not a saved segmentation (labels + proposals .npz): {exc}") from exc
    if tuple(seg.labels.shape) != tuple(hw):
        raise InputError(f"{path}: segmentation is {seg.labels.shape[1]}x{seg.labels.shape[0]} but the frame is "
                         f"{hw[1]}x{hw[0]}")
    return seg


def link_segmentations(frames_source: "str | Path", segmentations: "Sequence[str | Path | None]",
                       out_dir: "str | Path", config: TrackerConfig = TrackerConfig(), *,
                       max_side: Optional[int] = None, write_overlay: bool = True,
                       meta: "dict[str, Any] | None" = None) -> VideoResult:
    """Link segmentations saved by `segment_frames` in one pass (the chunks of a long video).

    Args:
        frames_source: the video file or frame folder they were made from (the frames are
            decoded again for the optical flow and the overlay).
        segmentations: one ``.npz`` path per frame in order, None on frames that were not
            segmented (between keyframes).
        out_dir, config, write_overlay: see `segment_video`; ``max_side`` as the segments.
        meta: extra fields for ``tracks.json``.

    Returns:
        `VideoResult` (``complete`` False when a frame failed to decode).
    """
    src = FrameSource(frames_source, max_side=max_side)
    vs = VideoSegmenter(None, config)

    def segs_for(pending: deque, ended: list) -> Iterator[Any]:
        for path in segmentations:
            yield None if path is None else load_segmentation(path)

    info = {"job": "link", "source": os.path.abspath(frames_source), "max_side": max_side, "tracker": config.to_dict(),
            **(meta or {})}
    return _run(src, Path(out_dir), vs, config.id_offset, write_overlay, info, segs_for, "link")
