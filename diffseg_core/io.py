"""File I/O shared by every entry point: atomic writes, images in, label PNGs and overlays out."""
from __future__ import annotations

import errno
import hashlib
import logging
import os
import re
import sys
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from .errors import InputError, OutputError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
#: Refuse images above this many pixels (a decompression bomb or a mistake): 16k x 16k.
MAX_IMAGE_PIXELS = 16384 * 16384

_DISK_ERRNOS = {errno.ENOSPC: "no space left on device", errno.EROFS: "read-only file system",
                errno.EACCES: "permission denied", errno.EDQUOT: "disk quota exceeded",
                errno.EPERM: "operation not permitted"}


def natural_key(name: str) -> list:
    """Sort key that orders ``frame2`` before ``frame10`` (case-insensitive)."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def output_error(path: "str | os.PathLike", exc: OSError) -> OutputError:
    """An `OutputError` naming ``path`` and the reason (disk full, read-only, ...)."""
    reason = _DISK_ERRNOS.get(exc.errno or -1)
    if reason is None:
        text = str(exc)
        # numpy's tofile / PIL's encoders report a full disk as a short write, without errno
        short = "requested and" in text and "written" in text
        reason = f"no space left on device ({text})" if short else (exc.strerror or text)
    return OutputError(f"cannot write {os.fspath(path)}: {reason}")


#: Resolved paths of this process's inputs: `atomic_path` never replaces one of them.
_PROTECTED: set[str] = set()
#: Input roots (files or folders) already walked by an enclosing `protect_inputs`.
_PROTECTED_ROOTS: set[str] = set()
#: Longest file name most file systems take (bytes).
NAME_MAX = 255


@contextmanager
def protect_inputs(paths: "Iterable[str | os.PathLike]", max_files: int = 100_000) -> Iterator[None]:
    """While the block runs, refuse to write an output over any of these inputs (files, or
    every file below a folder, up to ``max_files`` of them)."""
    added: set[str] = set()
    roots = {os.path.realpath(p) for p in paths} - _PROTECTED_ROOTS
    for p in map(Path, sorted(roots)):
        try:
            files = [p] if not p.is_dir() else (f for f in p.rglob("*") if f.is_file())
            for f in files:
                if len(added) >= max_files:
                    break
                real = os.path.realpath(f)
                if real not in _PROTECTED:
                    added.add(real)
        except OSError:
            continue
    _PROTECTED.update(added)
    _PROTECTED_ROOTS.update(roots)
    try:
        yield
    finally:
        _PROTECTED.difference_update(added)
        _PROTECTED_ROOTS.difference_update(roots)


def full_suffix(name: str) -> str:
    """The file-type suffix of a name, two-part for ``.nii.gz`` (as written, not lowered)."""
    return name[-7:] if name.lower().endswith(".nii.gz") else Path(name).suffix


def temporary_name(path: Path) -> Path:
    """``.tmp-<pid>-<thread>-<name>`` beside ``path``, shortened (hash + full suffix) when that
    would pass the file-system name limit; the pid lets a later run recognise it as stale."""
    prefix = f".tmp-{os.getpid()}-{threading.get_ident():x}-"
    name = prefix + path.name
    if len(name.encode("utf-8")) > NAME_MAX:
        digest = hashlib.sha1(path.name.encode("utf-8")).hexdigest()[:16]
        name = prefix + digest + full_suffix(path.name)
    return path.with_name(name)


def remove_stale_temporaries(folder: "str | os.PathLike", max_depth: int = 4) -> int:
    """Delete ``.tmp-<pid>-...`` files left below ``folder`` by processes that no longer run
    (a killed run); returns how many. Files of running processes are left alone."""
    root = Path(folder)
    if not root.is_dir():
        return 0
    removed = 0
    for dirpath, dirnames, filenames in os.walk(root):
        if len(Path(dirpath).relative_to(root).parts) >= max_depth:
            dirnames[:] = []
        for fn in filenames:
            if not fn.startswith(".tmp-"):
                continue
            pid_text = fn[5:].split("-", 1)[0]
            if not pid_text.isdigit() or _pid_alive(int(pid_text)):
                continue
            try:
                os.unlink(os.path.join(dirpath, fn))
                removed += 1
            except OSError:
                pass
    return removed


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. another user's process: alive
        return True
    return True


@contextmanager
def atomic_path(path: "str | os.PathLike", verify: "Callable[[Path], None] | None" = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` only on success.

    The temporary name keeps the full suffix (``.nii.gz``) so writers that pick the format
    from the extension work; it starts with a dot so it never looks like a finished output.
    Before the rename the file is checked (it exists, is not empty, ``verify(tmp)`` passes:
    an encoder that missed a short write on a full disk is caught here) and flushed to disk
    (fsync). On any exception the temporary file is removed and ``path`` is left untouched.
    OS errors (disk full, read-only file system) become `OutputError` naming ``path``; a
    ``path`` that is one of the inputs (`protect_inputs`) is refused.
    """
    path = Path(path)
    if _PROTECTED and os.path.realpath(path) in _PROTECTED:
        raise OutputError(f"cannot write {path}: it is one of the inputs (choose another output folder)")
    tmp = temporary_name(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        if tmp.is_file():  # (writers of folders, e.g. a zarr store, are checked by themselves)
            if tmp.stat().st_size == 0:
                raise OutputError(f"cannot write {path}: the file came out empty (disk full?)")
            if verify is not None:
                try:
                    verify(tmp)
                except OutputError:
                    raise
                except Exception as exc:
                    raise OutputError(f"cannot write {path}: the written file is incomplete or unreadable "
                                      f"({type(exc).__name__}: {exc}); disk full?") from exc
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(tmp, path)
    except OSError as exc:
        _unlink_quiet(tmp)
        if isinstance(exc, OutputError):
            raise
        raise output_error(path, exc) from exc
    except BaseException:
        _unlink_quiet(tmp)
        raise


def _unlink_quiet(p: Path) -> None:
    try:
        p.unlink()
    except OSError:
        pass


def atomic_write_bytes(path: "str | os.PathLike", data: bytes) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)


def atomic_write_text(path: "str | os.PathLike", text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_save_npy(path: "str | os.PathLike", array: np.ndarray) -> None:
    array = np.asarray(array)

    def complete(tmp: Path) -> None:  # header + data: a short write leaves it smaller
        if tmp.stat().st_size < array.nbytes:
            raise OutputError(f"cannot write {path}: wrote {tmp.stat().st_size} of at least {array.nbytes} bytes "
                              "(no space left on device?)")

    with atomic_path(path, verify=complete) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, array, allow_pickle=False)


# ----------------------------------------------------------------------------- palette
def label_palette(n: int = 256) -> np.ndarray:
    """uint8 ``(n, 3)``: the PASCAL VOC / DAVIS colour map (0 = black), then repeating."""
    pal = np.zeros((256, 3), dtype=np.uint8)
    for i in range(256):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal[i] = (r, g, b)
    if n <= 256:
        return pal[:n].copy()
    reps = -(-n // 255)
    tail = np.tile(pal[1:], (reps, 1))[: n - 1]
    return np.concatenate([pal[:1], tail], axis=0)


def label_colors(labels: np.ndarray) -> np.ndarray:
    """uint8 ``(H, W, 3)`` colours of an int label map (stable: colour depends on id only)."""
    labels = np.asarray(labels)
    if labels.size == 0:
        return np.zeros(labels.shape + (3,), np.uint8)
    top = int(labels.max())
    pal = label_palette(max(top + 1, 1))
    return pal[np.clip(labels, 0, None)]


# ----------------------------------------------------------------------------- labels
def segment_ids(labels: np.ndarray, consume: bool = False) -> np.ndarray:
    """A segmentation's labels ``0..K-1`` as the ids written to files: ``1..K``, so that 0
    means "no segment" as in DAVIS, napari, ITK-SNAP and 3D Slicer (segment 0 would otherwise
    be invisible or read as background). int32, or in place when ``consume`` and the
    labels' own integer type holds ``K`` (huge images; see ``compact_labels``)."""
    labels = np.asarray(labels)
    if consume and labels.dtype.kind in "iu" and labels.flags.writeable and \
            (labels.size == 0 or int(labels.max()) < np.iinfo(labels.dtype).max):
        labels += 1
        return labels
    return labels.astype(np.int32) + 1


def label_areas(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(ids, areas)`` of the non-negative int labels present, ascending, counted in row
    blocks (``np.unique`` sorts a copy: 1 GiB more for a 16k x 16k int32 map); negative
    values (no label) are not counted."""
    labels = np.asarray(labels)
    counts = np.zeros(0, np.int64)
    rows = labels.reshape(labels.shape[0], -1) if labels.ndim else labels.reshape(1, 1)
    for r in range(0, rows.shape[0], OVERLAY_ROWS):
        block = rows[r:r + OVERLAY_ROWS].ravel()
        c = np.bincount(block[block >= 0] if labels.dtype.kind == "i" and block.size and block.min() < 0 else block)
        if len(c) > len(counts):
            c[:len(counts)] += counts
            counts = c
        else:
            counts[:len(c)] += c
    ids = np.flatnonzero(counts)
    return ids, counts[ids]


def save_labels_png(path: "str | os.PathLike", labels: np.ndarray) -> None:
    """Write an int label map as a PNG, atomically.

    Labels ``<= 255`` become a palette PNG (mode ``P``, DAVIS colours, index = label);
    larger ids a 16-bit grayscale PNG. Ids above 65535 or below 0 are refused.
    """
    from PIL import Image

    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels must be (H, W); got shape {labels.shape}")
    lo, hi = (int(labels.min()), int(labels.max())) if labels.size else (0, 0)
    if lo < 0 or hi > 65535:
        raise ValueError(f"labels must be in 0..65535 for PNG; got range {lo}..{hi}")
    narrow = labels
    if labels.dtype != (np.uint8 if hi <= 255 else np.uint16) or not labels.flags.c_contiguous:
        narrow = np.empty(labels.shape, np.uint8 if hi <= 255 else np.uint16)
        for r in range(0, labels.shape[0], OVERLAY_ROWS):  # no whole-size temporaries (huge images)
            narrow[r:r + OVERLAY_ROWS] = labels[r:r + OVERLAY_ROWS]
    mode = "P" if hi <= 255 else "I;16"
    # frombuffer shares `narrow`'s memory (fromarray would copy it once more)
    img = Image.frombuffer(mode, narrow.shape[::-1], narrow, "raw", mode, 0, 1)
    if mode == "P":
        img.putpalette(label_palette(256).reshape(-1).tolist())
    with atomic_path(path, verify=verify_image) as tmp:
        img.save(tmp, format="PNG")


@contextmanager
def native_stderr_quiet(logger: str = "diffseg.native") -> Iterator[None]:
    """Keep what C code writes straight to file descriptor 2 off the terminal: FFmpeg inside
    decord (``moov atom not found``) and decord's C++ logger print there, not through
    Python. Inside the block, descriptor 2 goes to a temporary file; its lines are logged at
    DEBUG afterwards (``-v`` shows them). Keep the block short: Python's own writes to stderr
    from other threads in the meantime land there too."""
    import tempfile

    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no real descriptor 2 (embedded, pythonw)
        yield
        return
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            text = tmp.read().decode("utf-8", "replace")
            for line in text.splitlines():
                if line.strip():
                    logging.getLogger(logger).debug(line)


@contextmanager
def damage_reported_by(logger_name: str, path: "str | os.PathLike", what: str) -> Iterator[None]:
    """Refuse a file that a reader library loaded while logging damage at ERROR level.

    tifffile recovers from a damaged page list or tag (``invalid page offset``, ``corrupted
    tag list of page 4``) by logging it and returning what it could read: fewer slices, or
    an empty series. Inside this block such records (from this thread) raise `InputError`
    ``"<path>: damaged <what> (<the library's message>)"``; they are not shown on stderr.
    """
    records: list[logging.LogRecord] = []
    me = threading.get_ident()

    class _Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.thread == me:
                records.append(record)

    lg = logging.getLogger(logger_name)
    handler = _Collect(level=logging.ERROR)
    old_level, old_propagate = lg.level, lg.propagate
    if not lg.isEnabledFor(logging.ERROR):  # silenced (no -v): hear it, without printing it
        lg.setLevel(logging.ERROR)
        lg.propagate = False
    lg.addHandler(handler)
    try:
        yield
    finally:
        lg.removeHandler(handler)
        lg.setLevel(old_level)
        lg.propagate = old_propagate
    if records:
        msg = records[0].getMessage().splitlines()[0][:200]
        more = f"; {len(records) - 1} more" if len(records) > 1 else ""
        raise InputError(f"{os.fspath(path)}: damaged {what} ({msg}{more})")


@contextmanager
def _pillow_without_bomb_limit() -> Iterator[None]:
    """Pillow's decompression-bomb limit (179 MP) lifted: callers check sizes themselves
    (`MAX_IMAGE_PIXELS`) or read our own outputs (a 16000 x 16000 label map is 256 MP)."""
    from PIL import Image

    old = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = old


def read_labels(path: "str | os.PathLike") -> np.ndarray:
    """Read a label map (palette/8-bit/16-bit PNG, or ``.npy``) as int32 ``(H, W)``."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    try:
        if path.suffix.lower() == ".npy":
            arr = np.load(path, allow_pickle=False)
        else:
            with _pillow_without_bomb_limit(), Image.open(path) as img:
                if img.size[0] * img.size[1] > MAX_IMAGE_PIXELS:
                    raise InputError(f"{path}: label map is {img.size[0]}x{img.size[1]} pixels, above the "
                                     f"limit of {MAX_IMAGE_PIXELS}")
                if img.mode in ("RGB", "RGBA", "CMYK", "LA"):
                    raise InputError(
                        f"{path}: label image is colour ({img.mode}); expected a palette, 8-bit or 16-bit index PNG"
                    )
                arr = np.asarray(img)
    except InputError:
        raise
    except (OSError, ValueError, UnidentifiedImageError, EOFError) as exc:
        raise InputError(f"{path}: cannot read label map ({exc})") from exc
    if arr.ndim != 2:
        raise InputError(f"{path}: label map must be 2-D (H, W); got shape {arr.shape}")
    if arr.dtype.kind not in "iub":
        if arr.dtype.kind == "f" and np.isfinite(arr).all() and (arr == np.round(arr)).all():
            arr = arr.astype(np.int64)
        else:
            raise InputError(f"{path}: label map must hold integers; got dtype {arr.dtype}")
    check_label_range(arr, f"{path}: label map")
    return arr.astype(np.int32)


#: Largest label id: labels are int32 ``(H, W)`` / ``(D, H, W)`` everywhere.
MAX_LABEL_ID = int(np.iinfo(np.int32).max)


def check_label_range(arr: np.ndarray, what: str) -> None:
    """Raise `InputError` unless the integer ids of ``arr`` lie in ``0..MAX_LABEL_ID``
    (negative ids are not labels; larger ones would wrap around when stored as int32)."""
    if not arr.size or arr.dtype.kind == "b":
        return
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 0:
        raise InputError(f"{what} has negative values (min {lo}); ids must be >= 0")
    if hi > MAX_LABEL_ID:
        raise InputError(f"{what} has ids up to {hi}; at most {MAX_LABEL_ID} (int32) is supported")


# ----------------------------------------------------------------------------- images
def to_rgb_uint8(arr: np.ndarray, name: str = "image") -> np.ndarray:
    """Convert grayscale / RGBA / 16-bit / float arrays to uint8 RGB ``(H, W, 3)``.

    16-bit and float data are scaled by their own range (min..max), since a fixed /257
    turns most scientific 12-bit data nearly black.
    """
    a = np.asarray(arr)
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3 or a.shape[2] not in (1, 2, 3, 4):
        raise InputError(f"{name}: expected (H, W), (H, W, 3) or (H, W, 4); got shape {a.shape}")
    if a.shape[2] == 2:  # gray + alpha
        a = a[:, :, :1]
    if a.shape[2] == 4:  # RGBA: drop alpha
        a = a[:, :, :3]
    if a.dtype != np.uint8:
        if a.dtype == bool:
            a = a.astype(np.uint8) * 255
        else:
            f = a.astype(np.float64)
            if not np.isfinite(f).all():
                raise InputError(f"{name}: image has NaN or infinite values")
            lo, hi = float(f.min()), float(f.max())
            if a.dtype.kind in "ui" and lo >= 0 and hi <= 255:
                a = f.astype(np.uint8)
            else:
                a = np.zeros(f.shape, np.uint8) if hi <= lo else np.round((f - lo) / (hi - lo) * 255).astype(np.uint8)
    if a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    if min(a.shape[:2]) < 1:
        raise InputError(f"{name}: image is empty; got shape {a.shape}")
    return np.ascontiguousarray(a)


#: 8-bit RGB / grey PNG images of at least this many pixels are decoded by OpenCV, straight
#: into one writeable uint8 array (Pillow holds RGB at 4 bytes a pixel, then copies it out)
CV_READ_PIXELS = 16_000_000


def _read_cv2(path: Path, hw: tuple[int, int]) -> "np.ndarray | None":
    """uint8 RGB ``(H, W, 3)`` of a PNG decoded by OpenCV and converted in place; None when
    OpenCV cannot decode it (a truncated PNG, unlike a truncated JPEG, gives None)."""
    import cv2

    # EXIF orientation applied, as Pillow's exif_transpose. Decoded into `dst` where this
    # OpenCV takes one (4.10+): otherwise it decodes into a buffer and copies (2x the image).
    dst = np.empty((hw[0], hw[1], 3), np.uint8)
    try:
        arr = cv2.imread(str(path), dst, cv2.IMREAD_COLOR)
    except (TypeError, cv2.error):
        del dst
        arr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if arr is None:
        return None
    return swap_red_blue(arr)


def swap_red_blue(a: np.ndarray, rows: int = 256) -> np.ndarray:
    """RGB <-> BGR of a uint8 ``(H, W, 3)`` array in place, in row blocks (OpenCV's
    ``cvtColor(dst=src)`` still allocates a whole-image temporary)."""
    import cv2

    for r in range(0, a.shape[0], rows):
        blk = a[r:r + rows]
        blk[...] = cv2.cvtColor(blk, cv2.COLOR_RGB2BGR)
    return a


def read_image(path: "str | os.PathLike", max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """Read an image file as uint8 RGB ``(H, W, 3)``.

    Handles grayscale, palette, RGBA (alpha dropped), CMYK, 16-bit and float images and
    EXIF orientation. Raises `InputError` naming the file for anything unreadable.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a directory, expected an image file")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: file is empty (0 bytes)")
    try:
        with _pillow_without_bomb_limit(), Image.open(path) as img:
            w, h = img.size
            if w * h > max_pixels:
                raise InputError(
                    f"{path}: image is {w}x{h} = {w * h} pixels, above the limit of {max_pixels}; resize it first"
                )
            # (not img.getexif(): for a PNG it decodes the whole image to look for a late eXIf)
            if w * h >= CV_READ_PIXELS and img.mode in ("RGB", "L") and img.format == "PNG":
                arr = _read_cv2(path, (h, w))
                if arr is not None and arr.shape[:2] == (h, w):
                    return arr  # (a damaged file gives None: Pillow below names the problem)
            if img.getexif().get(0x0112, 1) not in (0, 1):  # rotated by its EXIF orientation
                img = ImageOps.exif_transpose(img)  # (a copy: only when needed, huge images)
            mode = img.mode
            if mode in ("RGB", "L"):
                arr = np.asarray(img)
            elif mode in ("P", "PA", "CMYK", "YCbCr", "LAB", "HSV", "1"):
                arr = np.asarray(img.convert("RGB"))
            elif mode in ("RGBA", "RGBa", "LA", "La"):
                arr = np.asarray(img.convert("RGBA" if mode.startswith("RGB") else "LA"))
            else:  # I;16, I, F and friends: keep the numbers, scale below
                arr = np.asarray(img)
    except InputError:
        raise
    except Image.DecompressionBombError as exc:  # pragma: no cover - MAX_IMAGE_PIXELS=None
        raise InputError(f"{path}: image too large ({exc})") from exc
    except UnidentifiedImageError as exc:
        raise InputError(f"{path}: not a readable image (unknown or corrupt format)") from exc
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise InputError(f"{path}: cannot read image ({exc})") from exc
    return to_rgb_uint8(arr, name=str(path))


def save_image(path: "str | os.PathLike", rgb: np.ndarray, consume: bool = False) -> None:
    """Write a uint8 RGB image atomically (format from the extension).

    ``consume=True``: the caller hands the array over (it is turned into BGR in place and
    written by OpenCV, PNG / JPEG): no copy of a huge image is made (Pillow holds an RGB
    image at 4 bytes a pixel: 1 GiB more for 16000 x 16000)."""
    fmt = _pil_format(path)
    rgb = np.asarray(rgb, dtype=np.uint8)
    if consume and fmt in ("PNG", "JPEG") and rgb.ndim == 3 and rgb.shape[2] == 3 and rgb.flags.writeable \
            and rgb.flags.c_contiguous:
        import cv2

        swap_red_blue(rgb)
        with atomic_path(path, verify=verify_image) as tmp:
            params = [cv2.IMWRITE_PNG_COMPRESSION, 3] if fmt == "PNG" else [cv2.IMWRITE_JPEG_QUALITY, 95]
            if not cv2.imwrite(str(tmp), rgb, params):
                raise OutputError(f"cannot write {path}: OpenCV could not encode it")
        return
    from PIL import Image

    with atomic_path(path, verify=verify_image) as tmp:
        Image.fromarray(rgb).save(tmp, format=fmt)


def verify_image(path: Path) -> None:
    """Check a written image (a truncated PNG or JPEG raises). PNG: every chunk's CRC up to
    IEND, without decoding the pixels (a 16000 x 16000 overlay would take 1 GiB to decode);
    other formats: decoded completely. No size limit: the file is our own output."""
    from PIL import Image

    with _pillow_without_bomb_limit(), Image.open(path) as img:
        if img.format == "PNG":
            img.verify()
        else:
            img.load()


def _pil_format(path: "str | os.PathLike") -> str:
    ext = Path(path).suffix.lower()
    return {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".tif": "TIFF", ".tiff": "TIFF",
            ".bmp": "BMP", ".webp": "WEBP"}.get(ext, "PNG")


# ----------------------------------------------------------------------------- overlays
def label_boundaries(labels: np.ndarray) -> np.ndarray:
    """bool ``(H, W)``: pixels whose right or lower neighbour has another label."""
    lab = np.asarray(labels)
    edge = np.zeros(lab.shape, dtype=bool)
    edge[:, :-1] |= lab[:, :-1] != lab[:, 1:]
    edge[:-1, :] |= lab[:-1, :] != lab[1:, :]
    return edge


#: Rows per block of `overlay`: bounds its float temporaries on huge images.
OVERLAY_ROWS = 128


def overlay(image: np.ndarray, labels: np.ndarray, alpha: float = 0.5, contours: bool = True,
            background: "int | None" = None, out: "np.ndarray | None" = None) -> np.ndarray:
    """Blend label colours over an RGB image and draw white contours.

    Computed in blocks of `OVERLAY_ROWS` rows, so the memory beyond the uint8 result is a few
    blocks, also for a 16k x 16k image.

    Args:
        image: uint8 ``(H, W, 3)``.
        labels: int ``(H, W)``; colour depends on the id only (stable across frames).
        alpha: colour opacity in [0, 1].
        contours: draw segment boundaries.
        background: a label left uncoloured (e.g. 0 = "no track"), or None.
        out: uint8 ``(H, W, 3)`` to write into; may be ``image`` itself (blended in place,
            block by block: a huge image is then not held twice).

    Returns:
        uint8 ``(H, W, 3)`` (``out`` when given).
    """
    image = np.asarray(image)
    labels = np.asarray(labels)
    if image.shape[:2] != labels.shape:
        raise ValueError(f"image {image.shape[:2]} and labels {labels.shape} differ in size")
    H = labels.shape[0]
    if out is None:
        out = np.empty(image.shape, np.uint8)
    elif out.shape != image.shape or out.dtype != np.uint8:
        raise ValueError(f"out must be uint8 {image.shape}; got {out.dtype} {out.shape}")
    for r0 in range(0, H, OVERLAY_ROWS):
        r1 = min(r0 + OVERLAY_ROWS, H)
        lab = labels[r0:r1]
        blk = image[r0:r1].astype(np.float32)
        mixed = (1 - alpha) * blk + alpha * label_colors(lab)  # colours depend on the id only
        blk = mixed if background is None else np.where((lab != background)[..., None], mixed, blk)
        if contours:
            # the block's own boundaries plus the row below it (a boundary looks one row down)
            edge = label_boundaries(labels[r0:min(r1 + 1, H)])[: r1 - r0]
            blk[edge] = 255.0
        out[r0:r1] = np.clip(blk + 0.5, 0, 255).astype(np.uint8)
    return out


def draw_legend(image: np.ndarray, entries: "Sequence[tuple[int, str]]") -> np.ndarray:
    """Draw a legend in the top-left corner of a uint8 RGB image, in place: one row per
    ``(label id, text)`` with the label's overlay colour and its text (names of segments,
    tracks and 3D labels). Rows that do not fit the image's height are left out, with a last
    row saying how many; text outside ASCII is drawn as ``?`` (OpenCV's Hershey fonts)."""
    import cv2

    if not entries or image.shape[0] < 16 or image.shape[1] < 32:
        return image
    H, W = image.shape[:2]
    scale = float(np.clip(min(H, W) / 600.0, 0.35, 1.2))
    thick = max(1, int(round(scale * 1.5)))
    (tw, th), base = cv2.getTextSize("Ag", cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
    row = th + base + 4
    fit = max(1, (H - 8) // row)
    shown = list(entries) if len(entries) <= fit else list(entries)[: fit - 1] + [(-1, f"... {len(entries) - fit + 1} more")]
    texts = [t.encode("ascii", "replace").decode("ascii") for _, t in shown]
    width = min(W - 4, max(cv2.getTextSize(t, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)[0][0] for t in texts) + row + 12)
    box = image[2:4 + row * len(shown), 2:2 + width]
    box[...] = (box.astype(np.float32) * 0.35).astype(np.uint8)  # darkened: the text reads on any scene
    pal = label_palette(max(i for i, _ in shown) + 1 if shown else 1)
    for k, ((lid, _), text) in enumerate(zip(shown, texts)):
        y = 4 + k * row
        if lid >= 0:
            cv2.rectangle(image, (6, y + 2), (6 + row - 6, y + row - 4), tuple(int(c) for c in pal[lid]), -1)
        cv2.putText(image, text, (10 + row - 4, y + th + 1), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255),
                    thick, cv2.LINE_AA)
    return image


# ----------------------------------------------------------------------------- output folder lock
LOCK_NAME = ".diffseg.lock"


@contextmanager
def output_lock(folder: "str | os.PathLike", command: str = "diffseg") -> Iterator[Path]:
    """Hold ``folder/.diffseg.lock`` while a command writes into ``folder``.

    A second command on the same folder is refused with an `OutputError` naming the holder
    (pid, host, command, start time) while that process runs; the lock of a process that no
    longer runs (killed) is taken over. Removed on exit.
    """
    import json
    import socket
    import time as _time

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / LOCK_NAME
    me = {"pid": os.getpid(), "host": socket.gethostname(), "command": command,
          "started": _time.strftime("%Y-%m-%dT%H:%M:%SZ", _time.gmtime())}
    for _ in range(3):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                held = json.loads(lock.read_text("utf-8"))
            except (OSError, ValueError):
                held = {}
            pid = int(held.get("pid", 0) or 0) if isinstance(held, dict) else 0
            same_host = isinstance(held, dict) and held.get("host") == me["host"]
            if pid and (not same_host or _pid_alive(pid)):
                raise OutputError(
                    f"{folder}: another {held.get('command', 'diffseg')} (pid {pid} on {held.get('host', '?')}, "
                    f"started {held.get('started', '?')}) is writing into this folder; wait for it to finish, "
                    f"or use another output folder (remove {lock} if that process is gone)")
            _unlink_quiet(lock)  # stale: its process is gone
            continue
        except OSError as exc:
            raise output_error(lock, exc) from exc
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(json.dumps(me))
        break
    else:
        raise OutputError(f"{folder}: cannot take the lock {lock}")
    try:
        yield lock
    finally:
        try:
            if json.loads(lock.read_text("utf-8")).get("pid") == me["pid"]:
                lock.unlink()
        except (OSError, ValueError):
            pass
