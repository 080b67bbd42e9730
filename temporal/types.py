"""Data types of the `temporal` package: tracked frames and job results."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from diffseg_core.types import Segmentation


@dataclass
class TrackedFrame:
    """One frame of a tracked video.

    Attributes:
        frame_index: index of the frame in the source (after ``start``/``stride``), 0-based.
        labels: int32 ``(H, W)`` permanent track id per pixel, ``>= 1``; 0 = no track.
        track_ids: int32 ``(M,)`` sorted ids present in ``labels`` (0 excluded).
        segmentation: the per-frame segmentation the ids were linked from (None on frames
            propagated by flow in keyframe mode).
        keyframe: True when the frame was segmented (not only propagated by flow).
        segment_to_track: int32 ``(K,)``: track id given to each segment of
            ``segmentation`` (0 when a segment got no track); empty on propagated frames.
        absorbed: ``{young id: older id}``: young tracks folded into older ones in this
            frame (a fragment of the older track, or its re-appearance, found out a few
            frames late); the young id's pixels in earlier frames should read the older id.
            `VideoSegmenter.iter_video` applies this to the frames it holds back
            (the engine's ``lifecycle.correction_window``); see `temporal.relabel`.
    """

    frame_index: int
    labels: np.ndarray
    track_ids: np.ndarray
    segmentation: Optional[Segmentation] = None
    keyframe: bool = True
    segment_to_track: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    absorbed: dict[int, int] = field(default_factory=dict)


@dataclass
class VideoResult:
    """What `temporal.api.segment_video` / `track_segments` did.

    Attributes:
        n_frames: frames processed and written.
        n_tracks: distinct track ids written.
        complete: False when the run stopped early (decode failure); outputs then hold the
            frames before the failure.
        error: the error message when ``complete`` is False, else None.
        seconds: wall-clock time of the job.
        out_dir: the output folder.
        labels_dir: ``out_dir/labels`` (one PNG per frame, track ids).
        tracks_json: ``out_dir/tracks.json``.
        overlay: ``out_dir/overlay.mp4`` or None when not written.
        max_track_id: the largest id used (next chunk's ``id_offset`` for the runner).
        resumed_frames: frames whose segmentation came from an earlier, interrupted run of
            `segment_video` (0 for a fresh run).
        keyframes: frames linked from a segmentation (the others were carried by flow:
            keyframe mode); ``n_frames`` when every frame was segmented.
    """

    n_frames: int
    n_tracks: int
    complete: bool
    error: Optional[str]
    seconds: float
    out_dir: Path
    labels_dir: Path
    tracks_json: Path
    overlay: Optional[Path] = None
    max_track_id: int = 0
    resumed_frames: int = 0
    keyframes: int = 0
