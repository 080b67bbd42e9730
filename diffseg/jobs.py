"""Job planning and bookkeeping of `diffseg run`: inputs → work items, the manifest, resume.

Nothing here imports torch or Lightning: the planner classifies input paths into small,
picklable `WorkItem` descriptors (never frames), and `JobManifest` records which items and
video chunks are finished so that rerunning the same command skips them.

Layout of a job folder ``OUTDIR``::

    OUTDIR/manifest.json                 merged manifest (atomic), rewritten by rank 0
    OUTDIR/.diffseg/records/<key>.json   one record per finished/failed item (atomic),
                                         written by whichever rank ran it; survives SIGKILL
    OUTDIR/.diffseg/chunks/<video>/cNNNN chunk segmentations before linking
    OUTDIR/images/<name>.png             final outputs (see docs/scale.md)
    OUTDIR/videos/<name>/labels/NNNNN.png, tracks.json, overlay/
    OUTDIR/volumes/<name>.<ext>
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Literal, Sequence

import numpy as np

from diffseg_core.errors import InputError
from diffseg_core.io import IMAGE_EXTENSIONS, atomic_write_text, full_suffix, natural_key
from temporal.io import VIDEO_EXTENSIONS  # what the video reader opens
VOLUME_EXTENSIONS = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".npy", ".dcm", ".ome.zarr", ".zarr")
#: Multi-page TIFFs are volumes; single-page TIFFs are images.
TIFF_EXTENSIONS = (".tif", ".tiff")

ItemKind = Literal["image", "video_chunk", "volume"]
InputKind = Literal["image", "video", "frames", "volume"]
Status = Literal["done", "failed"]

MANIFEST_NAME = "manifest.json"
WORK_DIR = ".diffseg"
MANIFEST_VERSION = 1


# ----------------------------------------------------------------------------- inputs
@dataclass(frozen=True)
class InputSpec:
    """One classified input.

    Attributes:
        path: absolute path of the file or folder.
        kind: ``image`` (one picture), ``video`` (a video file), ``frames`` (a folder of
            frames = one video), ``volume`` (NIfTI, DICOM folder, TIFF stack, ``.npy``).
        name: output name, unique within the job (path-derived, filesystem safe).
        num_frames: frames of a video / frame folder (0 for images and volumes).
    """

    path: str
    kind: InputKind
    name: str
    num_frames: int = 0


def _is_dicom_file(p: Path) -> bool:
    if p.suffix.lower() == ".dcm":
        return True
    try:
        with open(p, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def image_files(folder: Path) -> list[Path]:
    """The image files of a folder (not recursive, hidden files skipped), in natural order."""
    files = [p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")
             and p.suffix.lower() in IMAGE_EXTENSIONS]
    return sorted(files, key=lambda p: natural_key(p.name))


def _tiff_is_stack(p: Path) -> bool:
    """True for a multi-page / 3-D grayscale TIFF (a volume), False for a 2-D picture."""
    try:
        import tifffile

        with tifffile.TiffFile(p) as tf:
            series = tf.series[0] if tf.series else None
            if series is None:
                return False
            shape = tuple(series.shape)
            axes = str(getattr(series, "axes", ""))
    except Exception:
        return False  # not a TIFF tifffile can parse: let the image reader report it
    if len(shape) == 2:
        return False
    if len(shape) == 3 and (axes.endswith("S") or shape[-1] in (3, 4)) and "Z" not in axes and "Q" not in axes[:1]:
        return False  # (H, W, 3/4): a colour picture
    return len(shape) >= 3


def frame_count(path: Path) -> int:
    """Number of frames of a video file (container metadata, or decoding when missing).

    Raises:
        InputError: the file cannot be opened as a video or holds no video frames.
    """
    try:
        from temporal.io import FrameSource  # the decoder the tracker uses: same frame count
    except ImportError:
        FrameSource = None  # type: ignore[assignment]
    if FrameSource is not None:
        n = len(FrameSource(path))
        if n <= 0:
            raise InputError(f"{path}: video has no frames")
        return n
    try:
        import av

        with av.open(str(path)) as container:
            if not container.streams.video:
                raise InputError(f"{path}: no video stream")
            stream = container.streams.video[0]
            n = int(stream.frames or 0)
            if n <= 0:
                n = sum(1 for _ in container.decode(stream))
    except InputError:
        raise
    except Exception as exc:  # av raises its own InvalidDataError, OSError, ...
        raise InputError(f"{path}: not a readable video ({type(exc).__name__}: {exc})") from exc
    if n <= 0:
        raise InputError(f"{path}: video has no frames")
    return n


def _looks_like_frames(folder: Path, images: list[Path], folder_mode: str) -> bool:
    if folder_mode == "frames":
        return True
    if folder_mode == "images":
        return False
    # auto: a folder called frames/ or whose pictures are numbered like video frames
    # (00000.jpg, frame_0001.png); camera names such as IMG_0001.jpg stay separate images.
    if folder.name.lower() in ("frames", "jpegimages", "images_seq"):
        return True
    return len(images) >= 2 and all(re.fullmatch(r"(?:frame|frm|f)?[_\-]?\d+", p.stem, re.IGNORECASE)
                                    for p in images)


@dataclass(frozen=True)
class RejectedInput:
    """An input found while scanning folders that cannot be used.

    Attributes:
        path: the file or folder.
        error: one line naming the path and the problem.
    """

    path: str
    error: str


@dataclass
class InputPlan:
    """Result of `classify_inputs`: usable inputs and the ones rejected up front."""

    specs: list[InputSpec]
    rejected: list[RejectedInput]


def classify_inputs(paths: Sequence["str | os.PathLike"], folder_mode: str = "auto") -> InputPlan:
    """Classify input files and folders into images, videos, frame folders and volumes.

    A folder is scanned one level deep: video, volume and image files inside it are inputs,
    a sub-folder of DICOM files is a volume and a sub-folder of pictures is a frame folder
    (one video). Pictures directly inside a folder given on the command line are one frame
    folder when ``folder_mode="frames"`` (or ``auto`` and they are numbered like
    ``00000.jpg``), else separate images.

    Args:
        paths: files and folders given by the user.
        folder_mode: ``auto``, ``images`` or ``frames``.

    Returns:
        Specs in a deterministic order with unique output names, and the inputs rejected
        (unreadable videos, unknown types found inside folders) so that the job can record
        them as failed and go on with the rest.

    Raises:
        InputError: a path given by the user does not exist or is unreadable, or nothing
            usable was found at all (the message is the first problem).
    """
    from diffseg_core.errors import look_up_option

    look_up_option(folder_mode, ("auto", "images", "frames"), "folder mode")
    if not paths:
        raise InputError("no inputs given")
    found: list[tuple[Path, InputKind, Path]] = []  # (path, kind, root for naming)
    rejected: list[RejectedInput] = []
    for raw in paths:
        p = Path(raw).expanduser()
        if not p.exists():
            raise InputError(f"{p}: no such file or directory")
        if not os.access(p, os.R_OK) or (p.is_dir() and not os.access(p, os.X_OK)):
            raise InputError(f"{p}: permission denied (cannot read)")
        p = p.resolve()
        if p.is_dir():
            found.extend(_scan_folder(p, folder_mode, top=True, rejected=rejected))
        else:
            try:
                found.append((p, _classify_file(p), p.parent))
            except InputError as exc:
                rejected.append(RejectedInput(str(p), str(exc)))
    specs: list[InputSpec] = []
    used: set[str] = set()
    for path, kind, root in found:
        nframes = 0
        try:
            if kind == "video":
                nframes = frame_count(path)
            elif kind == "frames":
                nframes = len(image_files(path))
        except InputError as exc:
            rejected.append(RejectedInput(str(path), str(exc)))
            continue
        name = _unique_name(path, root, used)
        specs.append(InputSpec(path=str(path), kind=kind, name=name, num_frames=nframes))
    if not specs:
        if rejected:
            raise InputError(rejected[0].error)
        raise InputError(f"{', '.join(map(str, paths))}: no images, videos or volumes found")
    return InputPlan(specs=specs, rejected=rejected)


def _classify_file(p: Path) -> InputKind:
    suf = full_suffix(p.name).lower()
    if p.stat().st_size == 0:
        raise InputError(f"{p}: file is empty (0 bytes)")
    if suf in VIDEO_EXTENSIONS:
        return "video"
    if suf in VOLUME_EXTENSIONS:
        return "volume"
    if suf in TIFF_EXTENSIONS:
        return "volume" if _tiff_is_stack(p) else "image"
    if suf in IMAGE_EXTENSIONS:
        return "image"
    if _is_dicom_file(p):
        return "volume"
    raise InputError(
        f"{p}: unknown file type {suf or '(no extension)'!r}; expected an image "
        f"({', '.join(IMAGE_EXTENSIONS)}), a video ({', '.join(VIDEO_EXTENSIONS)}) or a volume "
        f"({', '.join(VOLUME_EXTENSIONS + TIFF_EXTENSIONS)}, DICOM folder)"
    )


def _scan_folder(folder: Path, folder_mode: str, top: bool,
                 rejected: list[RejectedInput]) -> list[tuple[Path, InputKind, Path]]:
    from volume.omezarr import is_zarr

    if is_zarr(folder):  # an OME-Zarr image is one volume, whatever its chunk files
        return [(folder, "volume", folder.parent)]
    entries = sorted((e for e in folder.iterdir() if not e.name.startswith(".")),
                     key=lambda e: natural_key(e.name))
    files = [e for e in entries if e.is_file()]
    if files and all(_is_dicom_file(f) for f in files):
        return [(folder, "volume", folder.parent)]
    images = image_files(folder)
    out: list[tuple[Path, InputKind, Path]] = []
    if images and _looks_like_frames(folder, images, folder_mode):
        # A frame folder is one video; other files in it are ignored.
        return [(folder, "frames", folder.parent)]
    for f in files:
        suf = full_suffix(f.name).lower()
        if suf in VIDEO_EXTENSIONS + VOLUME_EXTENSIONS + TIFF_EXTENSIONS + IMAGE_EXTENSIONS:
            try:
                out.append((f, _classify_file(f), folder if top else folder.parent))
            except InputError as exc:
                rejected.append(RejectedInput(str(f), str(exc)))
    if top:
        for sub in (e for e in entries if e.is_dir()):
            out.extend(_scan_folder(sub, folder_mode, top=False, rejected=rejected))
    return out


def _unique_name(path: Path, root: Path, used: set[str]) -> str:
    if path.name.lower() in ("frames", "jpegimages", "images") and path.parent != path:
        # DAVIS-like layouts (clip/frames/00000.jpg): the clip's name is the folder above.
        path, root = path.parent, path.parent.parent
    try:
        rel = path.relative_to(root)
    except ValueError:
        rel = Path(path.name)
    stem = str(rel)
    for suf in (".nii.gz",) + VIDEO_EXTENSIONS + VOLUME_EXTENSIONS + TIFF_EXTENSIONS + IMAGE_EXTENSIONS:
        if stem.lower().endswith(suf):
            stem = stem[: -len(suf)]
            break
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", stem.replace(os.sep, "__")).strip("._") or "input"
    name, i = base, 1
    while name in used or f"{name}_overlay" in used:  # an image's overlay is images/<name>_overlay.png
        i += 1
        name = f"{base}_{i}"
    used.update((name, f"{name}_overlay"))
    return name


# ----------------------------------------------------------------------------- work items
@dataclass(frozen=True)
class WorkItem:
    """One unit of work run by one rank: an image, a volume or a chunk of a video.

    Items are small descriptors (never pixel data) so a DataLoader can shard them.

    Attributes:
        key: unique manifest key: ``image:NAME``, ``volume:NAME``, ``video:NAME#cNNNN``.
        kind: ``image``, ``volume`` or ``video_chunk``.
        source: absolute input path.
        name: output name of the input.
        input_kind: the `InputSpec.kind` (``video`` or ``frames`` for chunks).
        start: first frame of a chunk (inclusive).
        end: frame after the last of a chunk (exclusive); 0 for non-videos.
        chunk_index: index of the chunk within its video; 0 otherwise.
        num_chunks: chunks of the video; 1 otherwise.
        num_frames: frames of the whole video; 0 otherwise.
        cost: work estimate (frames) used to balance ranks.
    """

    key: str
    kind: ItemKind
    source: str
    name: str
    input_kind: InputKind
    start: int = 0
    end: int = 0
    chunk_index: int = 0
    num_chunks: int = 1
    num_frames: int = 0
    cost: int = 1


def chunk_ranges(num_frames: int, chunk_frames: int, overlap: int) -> list[tuple[int, int]]:
    """Frame ranges ``[start, end)`` of overlapping chunks covering ``0..num_frames``.

    Consecutive chunks share ``overlap`` frames; the last chunk ends at ``num_frames`` and
    may be shorter than ``chunk_frames``.

    Args:
        num_frames: total frames, >= 1.
        chunk_frames: frames per chunk, > overlap.
        overlap: frames shared by consecutive chunks, >= 0.

    Returns:
        ``[(start, end), ...]`` with ``start_{i+1} = end_i - overlap``.
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1; got {num_frames}")
    if not 0 <= overlap < chunk_frames:
        raise ValueError(f"need 0 <= overlap < chunk_frames; got overlap={overlap}, chunk_frames={chunk_frames}")
    if num_frames <= chunk_frames:
        return [(0, num_frames)]
    step = chunk_frames - overlap
    out: list[tuple[int, int]] = []
    start = 0
    while True:
        end = min(start + chunk_frames, num_frames)
        out.append((start, end))
        if end >= num_frames:
            break
        start += step
    return out


def plan_items(specs: Iterable[InputSpec], chunk_frames: int, overlap: int) -> list[WorkItem]:
    """Turn classified inputs into work items (videos split into overlapping chunks)."""
    items: list[WorkItem] = []
    for s in specs:
        if s.kind in ("video", "frames"):
            ranges = chunk_ranges(s.num_frames, chunk_frames, overlap)
            for i, (a, b) in enumerate(ranges):
                items.append(WorkItem(key=f"video:{s.name}#c{i:04d}", kind="video_chunk", source=s.path,
                                      name=s.name, input_kind=s.kind, start=a, end=b, chunk_index=i,
                                      num_chunks=len(ranges), num_frames=s.num_frames, cost=b - a))
        elif s.kind == "volume":
            items.append(WorkItem(key=f"volume:{s.name}", kind="volume", source=s.path, name=s.name,
                                  input_kind="volume", cost=_volume_cost(Path(s.path))))
        else:
            items.append(WorkItem(key=f"image:{s.name}", kind="image", source=s.path, name=s.name,
                                  input_kind="image", cost=1))
    return items


def _volume_cost(p: Path) -> int:
    # Cheap estimate of slices: file size in MB, at least 1 (balancing only).
    try:
        size = sum(f.stat().st_size for f in _files(p)) if p.is_dir() else p.stat().st_size
    except OSError:
        size = 0
    return max(1, size // (1 << 20))


def shard_items(items: Sequence[WorkItem], rank: int, world_size: int) -> list[WorkItem]:
    """Items of one rank: greedy longest-first assignment to the least loaded rank.

    Deterministic (ties broken by key), so every rank computes the same partition without
    communicating. Each item goes to exactly one rank.
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"bad rank {rank} of world size {world_size}")
    load = [0] * world_size
    mine: list[WorkItem] = []
    for it in sorted(items, key=lambda it: (-it.cost, it.key)):
        r = min(range(world_size), key=lambda k: (load[k], k))
        load[r] += it.cost
        if r == rank:
            mine.append(it)
    return mine


# ----------------------------------------------------------------------------- hashing
def source_signature(path: "str | os.PathLike") -> dict[str, int]:
    """Size and modification time of a file, or of every file in a folder (cheap)."""
    p = Path(path)
    try:
        if p.is_dir():
            files = _files(p)
            return {"files": len(files), "size": sum(f.stat().st_size for f in files),
                    "mtime_ns": max((f.stat().st_mtime_ns for f in files), default=0)}
        st = p.stat()
        return {"files": 1, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    except OSError:
        return {"files": 0, "size": 0, "mtime_ns": 0}


def _files(folder: Path) -> list[Path]:
    """The files of an input folder: its visible files (a DICOM series, frames), or every file
    below it for a Zarr store (chunks live in subfolders, metadata in dot files)."""
    from volume.omezarr import is_zarr

    if is_zarr(folder):
        return [f for f in folder.rglob("*") if f.is_file()]
    return [f for f in folder.iterdir() if f.is_file() and not f.name.startswith(".")]


# ----------------------------------------------------------------------------- manifest
@dataclass
class ItemRecord:
    """What the manifest knows about one item, chunk or linked video.

    Attributes:
        key: the `WorkItem.key` (or ``video:NAME`` for the stitched video).
        kind: ``image``, ``volume``, ``video_chunk`` or ``video``.
        source: input path.
        status: ``done`` or ``failed``.
        config_hash: hash of everything the outputs depend on.
        outputs: output paths relative to the job folder.
        error: one-line error message when failed.
        frames: frames / slices / images processed.
        seconds: wall time spent.
        rank: global rank that ran it.
        finished_at: UTC ISO time.
    """

    key: str
    kind: str
    source: str
    status: Status
    config_hash: str
    outputs: list[str] = field(default_factory=list)
    error: "str | None" = None
    frames: int = 0
    seconds: float = 0.0
    rank: int = 0
    finished_at: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ItemRecord":
        names = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in d.items() if k in names})


def _record_filename(key: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", key)[:80]
    return f"{safe}-{hashlib.sha1(key.encode()).hexdigest()[:8]}.json"


class JobManifest:
    """The job's manifest: per-item records plus the merged ``manifest.json``.

    Every rank writes the record of an item as soon as it finishes (one small JSON per item,
    atomic rename), so a SIGKILL loses at most the item in progress; rank 0 merges records
    into ``manifest.json`` (atomic) at the end and after each item in single-process runs.
    """

    def __init__(self, out_dir: "str | os.PathLike") -> None:
        self.out_dir = Path(out_dir)
        self.records: dict[str, ItemRecord] = {}

    @property
    def path(self) -> Path:
        return self.out_dir / MANIFEST_NAME

    @property
    def records_dir(self) -> Path:
        return self.out_dir / WORK_DIR / "records"

    def load(self) -> "JobManifest":
        """Read ``manifest.json`` and then every record file (records are newer)."""
        self.records = {}
        if self.path.exists():
            try:
                data = json.loads(self.path.read_text("utf-8"))
                for d in data.get("items", {}).values():
                    rec = ItemRecord.from_dict(d)
                    self.records[rec.key] = rec
            except (OSError, ValueError, TypeError, AttributeError) as exc:
                raise InputError(f"{self.path}: corrupt job manifest ({exc}); delete it to start over") from exc
        if self.records_dir.is_dir():
            for f in sorted(self.records_dir.glob("*.json")):
                if f.name.startswith("."):
                    continue
                try:
                    rec = ItemRecord.from_dict(json.loads(f.read_text("utf-8")))
                except (OSError, ValueError, TypeError):
                    continue  # a record is only a cache: a bad one means "redo the item"
                self.records[rec.key] = rec
        return self

    def is_done(self, key: str, chash: str) -> bool:
        """True when ``key`` finished with the same config hash and all its outputs exist."""
        rec = self.records.get(key)
        if rec is None or rec.status != "done" or rec.config_hash != chash:
            return False
        return all((self.out_dir / o).exists() for o in rec.outputs)

    def put(self, rec: ItemRecord) -> None:
        """Store a record in memory and on disk (atomically) at once."""
        if not rec.finished_at:
            rec.finished_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self.records[rec.key] = rec
        atomic_write_text(self.records_dir / _record_filename(rec.key),
                          json.dumps(rec.to_dict(), indent=1))

    def forget(self, key: str) -> None:
        """Drop a record (e.g. a chunk after its video was stitched)."""
        self.records.pop(key, None)
        try:
            (self.records_dir / _record_filename(key)).unlink()
        except OSError:
            pass

    def save(self, job: "dict[str, Any] | None" = None) -> None:
        """Write the merged ``manifest.json`` atomically."""
        data = {"version": MANIFEST_VERSION, "job": job or {},
                "items": {k: self.records[k].to_dict() for k in sorted(self.records)}}
        atomic_write_text(self.path, json.dumps(data, indent=1))


def relabel_agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Fraction of pixels whose ids agree after one optimal global relabelling of ``b``.

    The relabelling is a one-to-one map of ``b``'s ids onto ``a``'s ids that maximises the
    number of agreeing pixels (Hungarian assignment on the id co-occurrence matrix).

    Args:
        a: int label array, any shape (e.g. ``(T, H, W)``).
        b: int label array of the same shape.

    Returns:
        Agreement in [0, 1]; 1.0 means equal up to relabelling.
    """
    from scipy.optimize import linear_sum_assignment

    a = np.asarray(a).ravel()
    b = np.asarray(b).ravel()
    if a.shape != b.shape:
        raise ValueError(f"label arrays differ in size: {a.size} vs {b.size}")
    if a.size == 0:
        return 1.0
    ua, ia = np.unique(a, return_inverse=True)
    ub, ib = np.unique(b, return_inverse=True)
    co = np.bincount(ia.ravel() * ub.size + ib.ravel(), minlength=ua.size * ub.size)
    co = co.reshape(ua.size, ub.size)
    r, c = linear_sum_assignment(co, maximize=True)
    return float(co[r, c].sum()) / float(a.size)
