"""Frame sources (video files through decord or PyAV, folders of images) and per-frame label maps.

Everything streams: a source yields one frame at a time; nothing holds the whole video.
Video files are read with decord where it is installed (its wheels exist for x86-64 only:
`pyproject.toml` installs it there) and with PyAV everywhere else; PyAV is also the
fallback that names the first frame a damaged file cannot decode. ``-v`` says which.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import cv2
import numpy as np

from diffseg_core.errors import InputError
from diffseg_core.io import (IMAGE_EXTENSIONS, check_label_range, damage_reported_by, native_stderr_quiet,
                            natural_key, read_image, read_labels, to_rgb_uint8)

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv")
LABEL_EXTENSIONS = (".png", ".npy", ".tif", ".tiff")


class DecodeError(InputError):
    """A video frame could not be decoded (corrupt or truncated file).

    Attributes:
        frame: index (in the file) of the frame that failed.
    """

    def __init__(self, message: str, frame: int) -> None:
        super().__init__(message)
        self.frame = frame


@dataclass
class Frame:
    """One decoded frame.

    Attributes:
        index: position in the source (file frame number, or image number in the folder).
        stem: output name (``00012`` for videos, the image's stem for folders).
        rgb: uint8 ``(H, W, 3)``.
    """

    index: int
    stem: str
    rgb: np.ndarray


def _resize_max_side(rgb: np.ndarray, max_side: Optional[int]) -> np.ndarray:
    if not max_side:
        return rgb
    h, w = rgb.shape[:2]
    s = max_side / max(h, w)
    if s >= 1:
        return rgb
    return cv2.resize(rgb, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)


class FrameSource:
    """Frames of a video file or an image folder, with ``start``/``end``/``stride``.

    Args:
        source: video file (mp4, mov, avi, mkv, webm, ...) or folder of images (natural sort).
        start: first frame (0-based) to read.
        end: stop before this frame (None = to the end).
        stride: read every ``stride``-th frame.
        max_side: downscale so the longer side is at most this (None = keep).

    Raises:
        InputError: missing/empty/unreadable source, bad range.
    """

    def __init__(self, source: "str | Path", start: int = 0, end: Optional[int] = None, stride: int = 1,
                 max_side: Optional[int] = None) -> None:
        self.path = Path(source)
        if start < 0:
            raise InputError(f"--start must be >= 0; got {start}")
        if end is not None and end <= start:
            raise InputError(f"--end ({end}) must be greater than --start ({start})")
        if stride < 1:
            raise InputError(f"--stride must be >= 1; got {stride}")
        if max_side is not None and max_side < 16:
            raise InputError(f"--max-side must be >= 16; got {max_side}")
        self.start, self.end, self.stride, self.max_side = start, end, stride, max_side
        self.fps = 25.0
        if not self.path.exists():
            raise InputError(f"{self.path}: no such file or folder")
        if self.path.is_dir():
            self.kind = "folder"
            files = [p for p in self.path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
                     and not p.name.startswith(".")]
            if not files:
                raise InputError(f"{self.path}: folder has no images ({', '.join(IMAGE_EXTENSIONS)})")
            files.sort(key=lambda p: natural_key(p.name))
            self._files = files
            n = len(files)
        else:
            self.kind = "video"
            if self.path.stat().st_size == 0:
                raise InputError(f"{self.path}: file is empty (0 bytes)")
            if self.path.suffix.lower() in IMAGE_EXTENSIONS:
                raise InputError(f"{self.path}: is an image; give a video file or a folder of frames")
            turns, sizes = _keyframes(self.path)
            self._vr = self._open_video(turns)
            n = len(self._vr)
            self._check_one_frame_size(sizes)
            try:
                self.fps = float(self._vr.get_avg_fps()) or 25.0
            except Exception:  # noqa: BLE001 - some containers have no rate
                self.fps = 25.0
        stop = n if end is None else min(end, n)
        if start >= stop:
            raise InputError(f"{self.path}: no frames in range start={start} end={end} (source has {n})")
        self._indices = range(start, stop, stride)
        if self.kind == "folder" and stride > 1:
            self.fps = self.fps / stride

    def _open_video(self, turns: int):
        """decord, or PyAV where decord is missing, cannot open the file or would ignore its
        display rotation (``turns``, `_keyframes`)."""
        try:
            import decord
        except ImportError:  # no wheel for this platform (arm64, aarch64): PyAV reads the file
            log.debug("%s: read with PyAV (decord is not installed)", self.path)
            return _PyAVVideo(self.path)
        if turns:  # decord ignores a display rotation (and returns garbled frames for one)
            log.info("%s: stored on its side (a %d-degree display rotation): read with PyAV and turned upright",
                     self.path, 90 * turns)
            return _PyAVVideo(self.path)
        log.debug("%s: read with decord", self.path)
        try:
            with native_stderr_quiet():  # FFmpeg's and decord's own lines ("moov atom not found")
                return decord.VideoReader(str(self.path), ctx=decord.cpu(0), num_threads=1)
        except (RuntimeError, decord._ffi.base.DECORDError) as exc:  # type: ignore[attr-defined]
            # decord needs a duration / frame count in the container (an animated GIF has
            # none); PyAV counts the frames: read with it, and refuse only what neither reads
            log.debug("%s: decord cannot open it (%s); trying PyAV", self.path, exc)
            try:
                return _PyAVVideo(self.path)
            except _StillImage:
                raise
            except InputError as refused:  # PyAV's line names the problem (decord's is a C++ log line)
                raise refused from exc

    def _check_one_frame_size(self, sizes: set) -> None:
        """Refuse a video whose frame size changes mid-stream (decord would resize every
        frame to the first size without a word): ``sizes``, the stored sizes of its keyframes
        (`_keyframes`: a new size starts at a keyframe)."""
        if isinstance(self._vr, _PyAVVideo):  # keyframes are decoded as stored: compare the stored size
            self._first_hw, (h, w) = self._vr.first_hw, self._vr.stored_hw
        else:
            try:
                h, w = self._first_hw = tuple(self._vr[0].shape[:2]) if len(self._vr) else (0, 0)
            except Exception:  # noqa: BLE001 - a damaged file is reported where its frames fail to decode
                return
        other = sorted(sz for sz in sizes if sz != (h, w))
        if other:
            shown = ", ".join(f"{b}x{a}" for a, b in [(h, w)] + other[:3])
            raise InputError(f"{self.path}: the frame size changes within the video ({shown}, width x height); "
                             "split it where the size changes or re-encode it at one size "
                             "(e.g. ffmpeg -i IN -vf scale=W:H OUT)")

    @property
    def full_hw(self) -> "tuple[int, int] | None":
        """``(H, W)`` of the source's frames before ``max_side`` shrank them (outputs are
        written back at this size), or None when frames are not shrunk."""
        if self.max_side is None:
            return None
        if self.kind == "folder":
            h, w = read_image(self._files[self._indices[0]]).shape[:2]
        else:
            h, w = getattr(self, "_first_hw", None) or (
                self._vr.first_hw if isinstance(self._vr, _PyAVVideo) else self._vr[0].shape[:2])  # (decoded once)
        return None if max(h, w) <= self.max_side else (int(h), int(w))

    def __len__(self) -> int:
        return len(self._indices)

    @property
    def indices(self) -> range:
        return self._indices

    def __iter__(self) -> Iterator[Frame]:
        if self.kind == "folder":
            for i in self._indices:
                p = self._files[i]
                yield Frame(i, p.stem, _resize_max_side(read_image(p), self.max_side))
            return
        if isinstance(self._vr, _PyAVVideo):
            yield from self._iter_pyav(list(self._indices))
            return
        import decord

        vr = self._vr
        errors = (RuntimeError, decord._ffi.base.DECORDError, IndexError)  # type: ignore[attr-defined]
        todo = list(self._indices)
        for k, i in enumerate(todo):
            try:
                with native_stderr_quiet():  # a broken packet: FFmpeg prints it itself
                    arr = vr[i].asnumpy()
            except errors:
                # decord's decoder thread reports a broken packet asynchronously, sometimes
                # frames before the broken one: decode the rest sequentially with PyAV, which
                # stops exactly at the first frame that cannot be decoded.
                yield from self._iter_pyav(todo[k:])
                return
            yield Frame(i, f"{i:05d}", _resize_max_side(to_rgb_uint8(arr, f"{self.path} frame {i}"), self.max_side))

    def _iter_pyav(self, indices: list[int]) -> Iterator[Frame]:
        """Sequential PyAV decoding of ``indices`` (sorted), naming the frame that fails."""
        import av

        want = set(indices)
        last = indices[-1]
        turns = getattr(self._vr, "turns", 0)
        n = 0
        try:
            with av.open(str(self.path)) as container:
                for frame in container.decode(video=0):
                    if n in want:
                        arr = frame.to_ndarray(format="rgb24")
                        if turns:
                            arr = np.ascontiguousarray(np.rot90(arr, turns))
                        yield Frame(n, f"{n:05d}", _resize_max_side(arr, self.max_side))
                    if n >= last:
                        return
                    n += 1
        except (av.error.FFmpegError, OSError, ValueError) as exc:
            msg = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
            raise DecodeError(f"{self.path}: decoding failed at frame {n} ({msg[-200:]})", n) from exc
        raise DecodeError(f"{self.path}: decoding failed at frame {n} (the video ends early: truncated file)", n)


def _quarter_turns(frame) -> int:
    """Counter-clockwise quarter turns that show a decoded frame upright: a phone's portrait
    video is stored on its side with a display rotation in its side data (PyAV >= 14 reads it)."""
    return round(float(getattr(frame, "rotation", 0) or 0) / 90) % 4


def _keyframes(path: Path) -> "tuple[int, set]":
    """One PyAV pass over a video file's keyframes (``skip_frame NONKEY``: milliseconds for
    most files): the `_quarter_turns` of the first and the stored ``(H, W)`` sizes seen.
    ``(0, set())`` where PyAV cannot decode them: the reader that opens the file then says
    what is wrong with it."""
    import av

    turns, sizes = 0, set()
    try:
        with native_stderr_quiet(), av.open(str(path)) as container:
            if not container.streams.video:
                return 0, set()
            stream = container.streams.video[0]
            stream.codec_context.skip_frame = "NONKEY"
            for frame in container.decode(stream):
                if not sizes:
                    turns = _quarter_turns(frame)
                sizes.add((frame.height, frame.width))
    except Exception:  # noqa: BLE001 - a damaged file is reported where its frames fail to decode
        return turns, set()
    return turns, sizes


class _StillImage(InputError):
    """A file FFmpeg reads as a still image, not a video."""


class _PyAVVideo:
    """What `FrameSource` needs of a video file when decord is not installed or cannot open
    it (PyAV): the number of frames (the stream's count, else its packets counted without
    decoding), the frame rate, the first frame's size as shown (``first_hw``) and as stored
    (``stored_hw``) and the quarter turns that show it upright (``turns``); frames are decoded
    in order (`FrameSource._iter_pyav`). A still image (a PNG named .mp4) is refused: `_StillImage`."""

    def __init__(self, path: Path) -> None:
        import av

        try:
            with native_stderr_quiet(), av.open(str(path)) as container:
                if not container.streams.video:
                    raise InputError(f"{path}: cannot open video (no video stream)")
                fmt = container.format.name
                if fmt == "image2" or fmt.endswith("_pipe"):  # FFmpeg's still-image readers (png_pipe, ...)
                    raise _StillImage(f"{path}: is a still image ({fmt.removesuffix('_pipe')}), not a video; give "
                                     "a video file or a folder of frames")
                stream = container.streams.video[0]
                self.fps = float(stream.average_rate or 25.0)
                n = int(stream.frames or 0)  # read while the container is open (PyAV >= 18.1.1 checks)
                first = next(container.decode(stream), None)
                self.stored_hw = (int(first.height), int(first.width)) if first is not None else (0, 0)
                self.turns = 0 if first is None else _quarter_turns(first)
                self.first_hw = self.stored_hw[::-1] if self.turns % 2 else self.stored_hw
            if n <= 0:
                with av.open(str(path)) as container:
                    n = sum(1 for p in container.demux(container.streams.video[0]) if p.size)
        except InputError:
            raise
        except (av.error.FFmpegError, OSError, ValueError, StopIteration) as exc:
            msg = (getattr(exc, "strerror", None) or str(exc).strip().splitlines()[0] if str(exc).strip()
                   else type(exc).__name__)  # FFmpeg's own words, without "[Errno N]" and the path
            raise InputError(f"{path}: cannot open video ({msg})") from exc
        self.n = n

    def __len__(self) -> int:
        return self.n

    def get_avg_fps(self) -> float:
        return self.fps


def find_label_file(seg_dir: Path, stem: str) -> Path:
    """The label map for ``stem`` in ``seg_dir`` (``.png``, ``.npy``, ``.tif``)."""
    for ext in LABEL_EXTENSIONS:
        p = seg_dir / f"{stem}{ext}"
        if p.exists():
            return p
    held = sorted((p.name for p in seg_dir.iterdir() if p.suffix.lower() in LABEL_EXTENSIONS),
                  key=natural_key) if seg_dir.is_dir() else []
    there = (f"it holds {len(held)} label map(s), {held[0]}" + (f" ... {held[-1]}" if len(held) > 1 else "")
             if held else "it holds no label maps")
    hint = ("; a video's frames are named by their index from 00000 (ffmpeg numbers the frames it extracts "
            "from 1): give the folder of frames the label maps were made from instead of the video, or name "
            "each label map by its frame's index" if stem.isdigit() and held else "")
    raise InputError(f"{seg_dir}: no label map for frame {stem!r} (looked for {stem}.png/.npy/.tif; "
                     f"{there}){hint}")


def read_segment_labels(seg_dir: Path, stem: str, hw: tuple[int, int]) -> np.ndarray:
    """Read one bring-your-own label map, resized (nearest) to the frame's ``hw`` if needed.

    Returns:
        int32 ``(H, W)`` arbitrary non-negative labels.
    """
    p = find_label_file(seg_dir, stem)
    if p.suffix.lower() in (".tif", ".tiff"):
        import tifffile

        try:
            with damage_reported_by("tifffile", p, "TIFF label map"):
                arr = np.asarray(tifffile.imread(p))
        except InputError:
            raise
        except Exception as exc:  # noqa: BLE001 - tifffile raises many types
            raise InputError(f"{p}: cannot read label map ({exc})") from exc
        if arr.ndim != 2 or arr.dtype.kind not in "iub":
            raise InputError(f"{p}: label map must be a 2-D integer image; got shape {arr.shape} dtype {arr.dtype}")
        check_label_range(arr, f"{p}: label map")  # as for .png / .npy: no negative or beyond-int32 ids
        lab = arr.astype(np.int32)
    else:
        lab = read_labels(p)
    if lab.shape != tuple(hw):
        if lab.shape[0] * hw[1] != lab.shape[1] * hw[0] and abs(lab.shape[0] / lab.shape[1] - hw[0] / hw[1]) > 0.02:
            turned = ("; it is the frame turned a quarter: a video stored on its side (a phone's) is read upright, "
                      "so label maps made on its frames as stored do not fit them" if lab.shape == tuple(hw)[::-1]
                      else "")
            raise InputError(f"{p}: label map is {lab.shape[1]}x{lab.shape[0]} but the frame is {hw[1]}x{hw[0]}"
                             f"{turned}")
        lab = cv2.resize(lab, (hw[1], hw[0]), interpolation=cv2.INTER_NEAREST)
    return lab
