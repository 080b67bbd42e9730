"""Progressive, atomic outputs of a tracked video: label PNGs, overlay.mp4, tracks.json.

A writer thread takes frames from a bounded queue (the tracker never waits on disk unless
the queue is full); its exceptions are re-raised in the caller.
"""
from __future__ import annotations

import contextlib
import json
import queue
import threading
import time
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterator, Optional

import cv2
import numpy as np
from scipy import ndimage

from diffseg_core import software_version
from diffseg_core.errors import OutputError
from diffseg_core.io import atomic_path, draw_legend, overlay, save_labels_png
from diffseg_core.naming import NameVotes

from .types import TrackedFrame


class OverlayVideoWriter:
    """Encode RGB frames to MP4 progressively, renamed into place only by `close`.

    H.264 (``libx264``, yuv420p) through PyAV when available, else MPEG-4 Part 2.
    Odd frame sizes are padded to even (yuv420p needs even sides).
    """

    def __init__(self, path: "str | Path", fps: float) -> None:
        import av

        self.path = Path(path)
        self._stack = contextlib.ExitStack()
        self._tmp = self._stack.enter_context(atomic_path(self.path))
        # faststart: the index (moov) goes before the data, so players and browsers can start
        # the file before it is downloaded whole
        self._container = av.open(str(self._tmp), mode="w", format="mp4", options={"movflags": "faststart"})
        rate = Fraction(fps).limit_denominator(1001) if fps > 0 else Fraction(25)
        self.codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
        self._stream = self._container.add_stream(self.codec, rate=rate)
        self._stream.pix_fmt = "yuv420p"
        if self.codec == "libx264":
            self._stream.options = {"crf": "23", "preset": "veryfast"}
        self._size: Optional[tuple[int, int]] = None
        self.n = 0

    def write(self, rgb: np.ndarray) -> None:
        import av

        h, w = rgb.shape[:2]
        if self._size is None:
            self._size = (h + h % 2, w + w % 2)
            self._stream.height, self._stream.width = self._size
        H, W = self._size
        if (h, w) != (H, W):
            rgb = cv2.copyMakeBorder(rgb, 0, H - h, 0, W - w, cv2.BORDER_REPLICATE) if (H - h <= 1 and W - w <= 1) \
                else cv2.resize(rgb, (W, H), interpolation=cv2.INTER_AREA)
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        for pkt in self._stream.encode(frame):
            self._container.mux(pkt)
        self.n += 1

    def close(self) -> None:
        """Flush the encoder and rename the file into place."""
        try:
            for pkt in self._stream.encode():
                self._container.mux(pkt)
            self._container.close()
        except BaseException as exc:
            self._stack.__exit__(type(exc), exc, exc.__traceback__)
            raise
        self._stack.close()

    def abort(self) -> None:
        """Drop the partial file."""
        with contextlib.suppress(Exception):
            self._container.close()
        err = RuntimeError("aborted")
        with contextlib.suppress(BaseException):
            self._stack.__exit__(RuntimeError, err, None)


class TrackStats:
    """Per-track, per-frame area and bbox, kept compact (int32 rows, not Python objects)."""

    def __init__(self) -> None:
        self._rows: list[np.ndarray] = []
        self.stems: list[str] = []

    def add(self, frame_pos: int, labels: np.ndarray, ids: np.ndarray) -> None:
        """Record frame ``frame_pos`` (0-based output position).

        Args:
            labels: int32 ``(H, W)`` track ids.
            ids: sorted int32 ids present.
        """
        n = len(ids)
        if n == 0:
            return
        comp = np.searchsorted(ids, labels)
        comp = np.where((labels > 0) & (comp < n), comp + 1, 0)
        area = np.bincount(comp.ravel(), minlength=n + 1)[1:]
        objs = ndimage.find_objects(comp, max_label=n)
        rows = np.zeros((n, 7), np.int32)
        rows[:, 0] = frame_pos
        rows[:, 1] = ids
        rows[:, 2] = area
        for i, o in enumerate(objs):
            if o is not None:
                rows[i, 3:] = (o[1].start, o[0].start, o[1].stop - 1, o[0].stop - 1)
        self._rows.append(rows[area > 0])

    def iter_json_tracks(self) -> "Iterator[dict[str, Any]]":
        """One dict per track id (sorted), built lazily so a long video's tracks.json is
        never held as Python objects all at once."""
        if not self._rows:
            return
        allr = np.concatenate(self._rows)
        allr = allr[np.lexsort((allr[:, 0], allr[:, 1]))]
        ids, starts = np.unique(allr[:, 1], return_index=True)
        bounds = list(starts) + [len(allr)]
        for k, tid in enumerate(ids):
            r = allr[bounds[k]:bounds[k + 1]]
            yield {"id": int(tid), "first_frame": int(r[0, 0]), "last_frame": int(r[-1, 0]),
                   "n_frames": int(len(r)), "frames": r[:, 0].tolist(), "area": r[:, 2].tolist(),
                   "bbox": r[:, 3:7].tolist()}

    def n_tracks(self) -> int:
        return len(np.unique(np.concatenate([r[:, 1] for r in self._rows]))) if self._rows else 0


#: A tracked video's output folder: the label maps' subfolder and the track table beside it
#: (read back by `temporal.export.TrackedVideo` and `diffseg evaluate video`).
LABELS_DIR = "labels"
TRACKS_JSON = "tracks.json"


#: the fields of ``tracks.json`` that `VideoOutputWriter` fills itself; the others are the
#: run's ``meta`` (a joined run carries them over)
WRITER_FIELDS = ("complete", "status", "error", "n_frames", "n_tracks", "max_track_id", "fps", "frame_size",
                 "software", "seconds", "frames", "tracks")


class VideoOutputWriter:
    """Writes ``labels/<stem>.png``, ``overlay.mp4`` and ``tracks.json`` in a thread.

    Args:
        out_dir: output folder (created).
        fps: overlay frame rate.
        write_overlay: encode ``overlay.mp4``.
        meta: extra fields for ``tracks.json`` (source, config).
        queue_size: frames waiting for the writer at most (bounds memory).
        names: ``{track id: {"name", "name_score"}}`` known before the frames (a joined run
            carries its source run's), with ``meta["vocabulary"]``; otherwise the names come
            from the segmentations' votes.
    """

    def __init__(self, out_dir: "str | Path", fps: float = 25.0, write_overlay: bool = True,
                 meta: Optional[dict[str, Any]] = None, queue_size: int = 8,
                 label_hw: "tuple[int, int] | None" = None, min_score: "float | None" = None,
                 names: "dict[int, dict[str, Any]] | None" = None) -> None:
        self.out_dir = Path(out_dir)
        self.labels_dir = self.out_dir / LABELS_DIR
        self.tracks_json = self.out_dir / TRACKS_JSON
        self.overlay_path = self.out_dir / "overlay.mp4" if write_overlay else None
        try:
            self.labels_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"cannot create {self.labels_dir}: {exc.strerror or exc}") from exc
        self.fps = fps
        self.meta = dict(meta or {})
        self.frame_size: Optional[list[int]] = None  # [H, W] of the labels, from the first frame
        self.label_hw = label_hw  # labels written at this size (the source's, under --max-side)
        self.name_options = {} if min_score is None else {"min_score": float(min_score)}
        self.stats = TrackStats()
        self.votes: Optional[NameVotes] = None  # names of tracks, from keyframes with named segments
        self.names = names
        self._named = bool(names) and any(n.get("name") for n in names.values())
        self.max_id = 0
        self._q: "queue.Queue[Any]" = queue.Queue(maxsize=queue_size)
        self._exc: Optional[BaseException] = None
        self._video: Optional[OverlayVideoWriter] = None
        self._t0 = time.time()
        self._write_json(complete=False, error=None, status="running")
        self._thread = threading.Thread(target=self._run, name="diffseg-video-writer", daemon=True)
        self._thread.start()

    def put(self, stem: str, rgb: Optional[np.ndarray], tf: TrackedFrame) -> None:
        """Queue one tracked frame (``rgb`` may be None: no overlay frame then)."""
        self._raise()
        while True:
            try:
                self._q.put((stem, rgb, tf), timeout=0.5)
                return
            except queue.Full:
                self._raise()

    def _raise(self) -> None:
        if self._exc is not None:
            exc, self._exc = self._exc, None
            raise exc

    def _run(self) -> None:
        while True:
            item = self._q.get()
            if item is None:
                return
            if self._exc is not None:
                continue  # drain after a failure
            try:
                self._write_one(*item)
            except BaseException as exc:  # re-raised in the caller
                self._exc = exc

    def _write_one(self, stem: str, rgb: Optional[np.ndarray], tf: TrackedFrame) -> None:
        pos = len(self.stats.stems)
        labels = tf.labels  # at the size of the frames processed (the overlay's)
        if self.label_hw is not None and labels.shape != tuple(self.label_hw):
            # --max-side shrank the frames: ids go back to the source's size (nearest), so the
            # labels line up with the original frames and their ground truth
            h, w = self.label_hw
            labels = cv2.resize(labels.astype(np.int32), (w, h), interpolation=cv2.INTER_NEAREST)
        if self.frame_size is None:
            self.frame_size = [int(labels.shape[0]), int(labels.shape[1])]
        save_labels_png(self.labels_dir / f"{stem}.png", labels)
        self.stats.stems.append(stem)
        self.stats.add(pos, labels, tf.track_ids)
        if len(tf.track_ids):
            self.max_id = max(self.max_id, int(tf.track_ids[-1]))
        names = getattr(tf.segmentation, "names", None)
        if names is not None:
            if self.votes is None:
                self.votes = NameVotes(tuple(names.vocabulary), **self.name_options)
            if tuple(names.vocabulary) == self.votes.vocabulary:
                self.votes.add(pos, tf.labels, tf.segmentation.labels, names.scores)
        if self.overlay_path is not None and rgb is not None:
            if self._video is None:
                self._video = OverlayVideoWriter(self.overlay_path, self.fps)
            ov = overlay(rgb, tf.labels, alpha=0.5, contours=True, background=0)
            # the sticky names (a name does not flicker frame to frame), or those carried over
            name_of = (self.votes.shown if self.votes is not None else
                       (lambda t: self.names.get(t, {}).get("name")) if self._named else None)
            if name_of is not None:
                draw_legend(ov, [(int(t), f"{int(t)} {name_of(int(t)) or 'unknown'}") for t in tf.track_ids])
            self._video.write(ov)

    def _write_json(self, complete: bool, error: Optional[str], status: str) -> None:
        votes = self.votes
        head = {"complete": complete, "status": status, "error": error,
                "n_frames": len(self.stats.stems), "n_tracks": self.stats.n_tracks(), "max_track_id": self.max_id,
                "fps": self.fps, "frame_size": self.frame_size, "software": f"diffseg-vv {software_version()}",
                "seconds": round(time.time() - self._t0, 3), **self.meta,
                "vocabulary": list(votes.vocabulary) if votes is not None else [], "frames": self.stats.stems}
        if self.names is not None:
            head["vocabulary"] = list(self.meta.get("vocabulary") or [])
        # Streamed one track per line: memory stays flat however long the video is.
        with atomic_path(self.tracks_json) as tmp:
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(json.dumps(head)[:-1])
                f.write(', "tracks": [')
                for k, t in enumerate(self.stats.iter_json_tracks()):
                    t.update(votes.record(t["id"]) if votes is not None else
                             (self.names or {}).get(t["id"], {"name": None, "name_score": None}))
                    f.write(("\n" if k == 0 else ",\n") + json.dumps(t, separators=(",", ":")))
                f.write("\n]}\n")

    def close(self, complete: bool = True, error: Optional[str] = None) -> dict[str, Any]:
        """Finish: drain the queue, finalise the overlay, write ``tracks.json``.

        Returns:
            ``{"n_frames", "n_tracks", "max_track_id", "overlay"}``.
        """
        self._q.put(None)
        self._thread.join()
        exc, self._exc = self._exc, None
        overlay_ok = None
        if self._video is not None:
            if exc is None:
                self._video.close()
                overlay_ok = self.overlay_path
            else:
                self._video.abort()
        if exc is not None:
            self._write_json(False, f"{type(exc).__name__}: {exc}", "failed")
            raise exc
        self._write_json(complete, error, "complete" if complete else "incomplete")
        return {"n_frames": len(self.stats.stems), "n_tracks": self.stats.n_tracks(),
                "max_track_id": self.max_id, "overlay": overlay_ok}

    def abort(self, error: str) -> None:
        """Stop after an unexpected error; keep what was written and flag it."""
        self._q.put(None)
        self._thread.join()
        if self._video is not None:
            if self._exc is None:
                with contextlib.suppress(Exception):
                    self._video.close()
            else:
                self._video.abort()
        with contextlib.suppress(Exception):
            self._write_json(False, error, "failed")
