"""Plain-Python jobs behind `diffseg volume` and `diffseg stack` (the CLI is a thin wrapper).

    segment_volume(input_path, output_path, segmenter, config) -> VolumeResult
    stack_labels(labels_path, output_path, config, image_path=None) -> VolumeResult

Both stream slices in order through the linking engine (`temporal.engine`, its ``slices``
preset: slice index = time index), write the
int32 ids into one label volume (the only full-size array besides the input), clean it up
in 3D (`postprocess`), and write labels, ``labels.json`` and a montage, each atomically.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from diffseg_core import software_version
from diffseg_core.errors import InputError
from diffseg_core.progress import progress
from diffseg_core.types import Segmenter, resolve_segmenter

from .geometry import inplane_spacing, resize_gray, resize_nearest, slabs, square_shape, take_slice, through_plane_axis
from .intensity import IntensityMap, gray_to_rgb, has_finite_value, plan_intensity, to_uint8
from .io import (OUTPUT_NAMES, VolumeWarning, default_output_name, label_buffer, output_format, read_label_volume,
                 read_volume, release_pages, write_labels)
from .postprocess import relabel_consecutive, remove_fragments, split_at_waists
from .report import side_paths, write_color_table, write_itksnap_labels, write_labels_json, write_montage
from .types import Volume, VolumeConfig, VolumeResult

log = logging.getLogger("diffseg.volume")


#: (segment index int (a, b) ``0..K-1`` with -1 = none, proposals float32 (K, h, w),
#:  uint8 (a, b) windowed image of the slice or None)
SliceSeg = tuple[np.ndarray, np.ndarray, "np.ndarray | None"]


#: A memory-mapped input's pages are let go (`release_pages`) every this many slices.
RELEASE_EVERY = 16


def resolve_output(output_path: "str | os.PathLike", vol: Volume, dicom_seg: bool = False) -> Path:
    """The label file to write: ``output_path`` if it names a label format, else a folder
    that receives ``labels.<input's own format>`` (a DICOM series: ``labels.dcm``, a
    DICOM-SEG, with ``dicom_seg``)."""
    p = Path(output_path)
    try:
        output_format(p, vol)
        return p
    except InputError:
        if p.suffix and not p.is_dir() and p.suffix.lower() in (".png", ".jpg", ".json", ".gz", ".dcm", ".mha", ".nrrd"):
            raise
        return p / default_output_name(vol, dicom_seg)


def choose_axis(config: VolumeConfig, vol: Volume) -> int:
    """``config.axis`` or the through-plane axis (largest spacing; ties -> 0)."""
    return through_plane_axis(vol.spacing) if config.axis is None else int(config.axis)


def link_volume(shape: tuple[int, int, int], axis: int, slices: Iterable[SliceSeg], config: VolumeConfig,
                out: "np.ndarray | None" = None, desc: str = "linking") -> np.ndarray:
    """Link per-slice segmentations along ``axis`` into one int32 id volume.

    Args:
        shape: ``(D, H, W)`` of the volume.
        axis: slicing axis.
        slices: per slice in order, ``(segment index, proposals, gray)``; the index is an
            int ``(a, b)`` array (the two other axes in order), ``0..K-1`` with ``-1`` = no
            segment, proposals one map per segment; gray is the uint8 slice image (the
            engine's look) or None.
        config: ``config.engine`` links, ``config.waist_ratio`` cuts stacked structures.
        out: int32 ``(D, H, W)`` array (or memmap: `label_buffer`) to fill; allocated in
            RAM when None.

    Returns:
        int32 ``(D, H, W)`` track ids (0 = none).
    """
    from temporal.engine import Linker

    if out is None:
        out = label_buffer(shape, None)
    linker = Linker(config.engine)
    state = linker.init_state()
    looks = bool(config.engine.evidence.hist_bins)
    n = shape[axis]
    for i, (seg, props, gray) in enumerate(progress(slices, total=n, desc=desc, unit="slice")):
        if i >= n:
            raise ValueError(f"more slices than the volume has along axis {axis} ({n})")
        rgb = gray_to_rgb(gray) if looks and gray is not None else None
        r = linker.step(state, seg, len(props), props, rgb, None, i)
        take_slice(out, axis, i)[...] = r.labels
        for j in range(max(0, i - config.engine.lifecycle.correction_window), i) if r.absorbed else ():
            sl = take_slice(out, axis, j)  # late corrections: a young track folded into an older one
            for young, old in r.absorbed.items():
                sl[sl == young] = old
    cuts = split_at_waists(out, axis, float(config.waist_ratio))
    if cuts:
        log.debug("axis %d: %d labels cut at a waist", axis, cuts)
    return out


def cleanup(labels: np.ndarray, config: VolumeConfig) -> int:
    """3D fragment removal (+ optional component split) and consecutive ids; returns n."""
    st = remove_fragments(labels, int(config.min_size), split_disconnected=config.split_disconnected,
                          min_label_size=int(config.min_label_size))
    if st.fragments:
        log.debug("merged %d fragments (%d voxels) into neighbours", st.fragments, st.voxels)
    return relabel_consecutive(labels)


# ----------------------------------------------------------------------------- DiffSeg path
class _SliceImages:
    """Slices of a volume along an axis as uint8 RGB at square pixels (bounded memory)."""

    def __init__(self, vol: Volume, axis: int, imap: IntensityMap, resample: bool) -> None:
        self.vol, self.axis, self.imap = vol, axis, imap
        self.hw = tuple(s for i, s in enumerate(vol.shape) if i != axis)
        self.seg_hw = square_shape(self.hw, inplane_spacing(vol.spacing, axis)) if resample else self.hw
        self.bad = 0

    def gray(self, i: int) -> np.ndarray:
        g, nb = to_uint8(self.vol.slice_values(self.axis, i), self.imap)
        self.bad += nb
        return g

    def rgb(self, gray: np.ndarray) -> np.ndarray:
        return gray_to_rgb(resize_gray(gray, self.seg_hw))


class _SliceNames:
    """The named segments of the slices along one axis, kept until the 3D labels are final
    (then each label's name is a vote over its slices: `votes`). Segment indices are kept
    as int16, one value per voxel, only when the segmenter names its segments."""

    def __init__(self, shape: tuple[int, int, int], axis: int, near: "Path | None" = None) -> None:
        self.shape, self.axis, self.near = shape, axis, near
        self.index: "np.ndarray | None" = None
        self.scores: dict[int, np.ndarray] = {}
        self.vocabulary: tuple[str, ...] = ()

    def keep(self, i: int, lab: np.ndarray, names: Any) -> None:
        if names is None:
            return
        if self.index is None:
            self.index = label_buffer(self.shape, self.near, np.int16)
            self.index -= 1
            self.vocabulary = tuple(names.vocabulary)
        take_slice(self.index, self.axis, i)[...] = lab
        self.scores[i] = np.asarray(names.scores, np.float32)

    def votes(self, labels: np.ndarray, min_score: "float | None") -> "Any | None":
        if self.index is None:
            return None
        from diffseg_core.naming import NameVotes

        votes = NameVotes(self.vocabulary, **({} if min_score is None else {"min_score": float(min_score)}))
        for i, sc in self.scores.items():
            votes.add(i, take_slice(labels, self.axis, i), take_slice(self.index, self.axis, i), sc)
        return votes


def middle_slice_rgb(input_path: "str | os.PathLike", config: VolumeConfig = VolumeConfig()) -> np.ndarray:
    """The middle slice of the main axis as `segment_volume` shows it to the segmenter
    (uint8 RGB): what ``--caption`` captions."""
    vol = read_volume(input_path, index=config.index, series=config.series)
    axis = choose_axis(config, vol)
    images = _SliceImages(vol, axis, plan_intensity(vol, config.window, config.percentiles), config.resample_inplane)
    return images.rgb(images.gray(vol.shape[axis] // 2))


def _diffseg_slices(images: _SliceImages, segmenter: Segmenter, batch: int,
                    names: "_SliceNames | None" = None) -> Iterator[SliceSeg]:
    n = images.vol.shape[images.axis]
    for b0 in range(0, n, batch):
        grays = [images.gray(i) for i in range(b0, min(n, b0 + batch))]
        if (b0 + len(grays)) // RELEASE_EVERY > b0 // RELEASE_EVERY:  # every RELEASE_EVERY slices
            release_pages(images.vol.data)
        segs = segmenter.segment([images.rgb(g) for g in grays])
        if len(segs) != len(grays):
            raise ValueError(f"segmenter returned {len(segs)} results for {len(grays)} slices")
        for k, (s, g) in enumerate(zip(segs, grays)):
            s = s.numpy() if hasattr(s, "numpy") else s
            lab = resize_nearest(np.asarray(s.labels), images.hw)  # back to the input grid
            if names is not None:
                names.keep(b0 + k, lab, getattr(s, "names", None))
            yield lab.astype(np.int32), np.asarray(s.proposals, np.float32), g


def segment_volume(input_path: "str | os.PathLike", output_path: "str | os.PathLike",
                   segmenter: "Segmenter | Any | None" = None, config: VolumeConfig = VolumeConfig(),
                   ) -> VolumeResult:
    """Segment a 3D scan slice by slice with DiffSeg and link the slices into 3D labels.

    Args:
        input_path: ``.nii``/``.nii.gz``, DICOM folder, ``.tif`` stack (ZYX) or ``.npy``.
        output_path: label file (``.nii.gz``, ``.nii``, ``.tif``, ``.npy``) or a folder
            (then ``labels.<input format>``). ``labels.json`` and ``<name>_montage.png`` go
            beside it.
        segmenter: an object with ``segment(list of uint8 RGB (H, W, 3)) -> list of
            Segmentation`` (e.g. `DiffSegSegmenter`), a `SegmenterConfig`, or None (default
            DiffSeg model).
        config: volume options.

    Returns:
        `VolumeResult`.

    Raises:
        InputError: unreadable input, bad options.
    """
    t0 = time.perf_counter()
    notes: list[str] = []
    vol = read_volume(input_path, index=config.index, series=config.series)
    labels_path = resolve_output(output_path, vol, dicom_seg=True)
    output_format(labels_path, vol)  # fail before any work on a bad extension
    imap = plan_intensity(vol, config.window, config.percentiles)
    if not has_finite_value(vol):
        raise InputError(f"{vol.path}: every voxel is NaN or infinite: nothing to segment")
    seg = resolve_segmenter(segmenter)
    batch = max(1, int(getattr(getattr(seg, "config", None), "batch_size", 1) or 1))
    log.info("%s: shape %s spacing (%s)%s, intensity %s", vol.path, vol.shape,
             ", ".join(f"{d:.4g}" for d in vol.spacing), f" {vol.unit}" if vol.spacing_known else " (unknown)",
             imap.mode)
    axis = choose_axis(config, vol)
    axes = [axis] if config.axes == "one" else [axis] + [a for a in range(3) if a != axis]
    results = []
    bad = 0
    names = _SliceNames(vol.shape, axis, labels_path)  # the names' evidence, from the main axis's slices
    for ax in axes:
        images = _SliceImages(vol, ax, imap, config.resample_inplane)
        results.append(link_volume(vol.shape, ax, _diffseg_slices(images, seg, batch, names if ax == axis else None),
                                   config, label_buffer(vol.shape, labels_path), desc=f"axis {'zyx'[ax]}"))
        bad = max(bad, images.bad)
    labels = results[0]
    if len(results) == 3:
        from .fusion import fuse_majority

        fuse_majority(labels, results[1:])
        del results
    if config.clear_outside:
        from .postprocess import clear_outside

        values = vol.data  # indexed slice by slice (a memory map or a lazy stack stays so)
        n_out = clear_outside(labels, -np.asarray(values) if vol.slope < 0 else values, axis)
        log.debug("%d labels outside the body / sample set to 0", n_out)
    if bad:
        msg = f"{vol.path}: {bad} NaN/inf voxels replaced by {imap.fill:g} (the low end of the intensity range)"
        warnings.warn(msg, VolumeWarning, stacklevel=2)
        notes.append(msg)
    n = cleanup(labels, config)
    gray = gray_slices(vol, config, imap)
    from diffseg_core.models import segmenter_info

    naming = getattr(getattr(seg, "config", None), "naming", None)
    votes = names.votes(labels, getattr(naming, "min_score", None))
    del names
    return _write_outputs(labels, vol, labels_path, axis, n, config, gray, t0, notes,
                          {"intensity": imap.mode, "slicing": config.axes, "segmenter": segmenter_info(seg),
                           "engine": config.engine.to_dict(), **_image_record(vol.path, config)}, votes)


# ----------------------------------------------------------------------------- bring your own
def _label_slices(lab: np.ndarray, axis: int, background: "int | None",
                  gray: "Callable[[int, int], np.ndarray] | None" = None) -> Iterator[SliceSeg]:
    from temporal.proposals import segmentation_from_labels

    for i in range(lab.shape[axis]):
        s = segmentation_from_labels(np.asarray(take_slice(lab, axis, i)), work_side=0, background=background)
        if i % RELEASE_EVERY == RELEASE_EVERY - 1:
            release_pages(lab)  # a mapped input streams through: its read slices leave the RSS
        yield s.labels, s.proposals, (gray(axis, i) if gray is not None else None)


def gray_slices(image: Volume, config: VolumeConfig,
                imap: "IntensityMap | None" = None) -> "Callable[[int, int], np.ndarray]":
    """``(axis, index) -> uint8`` slices of an intensity volume, mapped by ``config``'s window
    or by ``imap`` when the mapping was planned already (the linking's look, the montage)."""
    imap = imap if imap is not None else plan_intensity(image, config.window, config.percentiles)

    def gray(ax: int, i: int) -> np.ndarray:
        return to_uint8(image.slice_values(ax, i), imap)[0]

    return gray


def link_label_volume(lab: Any, config: VolumeConfig, axis: int = 0,
                      gray: "Callable[[int, int], np.ndarray] | None" = None,
                      near: "str | os.PathLike | None" = None) -> tuple[np.ndarray, int]:
    """Link a label array whose slices were labelled independently (what `stack_labels`
    does after reading the file): ``config.axes`` slicing axes, fused when all three, then
    fragments cleaned and ids made consecutive.

    Args:
        lab: int ``(D, H, W)`` (array or memmap); ``config.background`` is its "no segment" value.
        axis: the main slicing axis.
        gray: `gray_slices` of the intensity volume (the look), or None.
        near: the output path: big label volumes are built in a scratch file beside it
            (`label_buffer`), else in RAM.

    Returns:
        ``(int32 labels 1..n, n)``.
    """
    axes = [axis] if config.axes == "one" else [axis] + [a for a in range(3) if a != axis]
    results = [link_volume(tuple(lab.shape), ax, _label_slices(lab, ax, config.background, gray), config,
                           label_buffer(tuple(lab.shape), near), desc=f"axis {'zyx'[ax]}") for ax in axes]
    labels = results[0]
    if len(results) == 3:
        from .fusion import fuse_majority

        fuse_majority(labels, results[1:])
        del results
    return labels, cleanup(labels, config)


def stack_labels(labels_path: "str | os.PathLike", output_path: "str | os.PathLike",
                 config: VolumeConfig = VolumeConfig(background=0, min_size=0, min_label_size=0),
                 image_path: "str | os.PathLike | None" = None) -> VolumeResult:
    """Link a volume whose slices were labelled independently into consistent 3D labels.

    Args:
        labels_path: integer label volume (NIfTI, TIFF, npy, DICOM); every slice along the
            slicing axis has its own arbitrary ids.
        output_path: label file or folder, as in `segment_volume`.
        config: options; ``config.background`` is the "no segment" value of the input
            (0 for most 2D instance segmenters, None when every value is a segment).
        image_path: the intensity volume the labels belong to (same shape): an
            appearance cue for linking (intensity histograms) and the montage background.

    Returns:
        `VolumeResult`.
    """
    t0 = time.perf_counter()
    image = None
    if image_path is not None and dicom_seg_file(labels_path) is not None:
        # a DICOM-SEG is placed on the image when that is its DICOM series (else on its run's)
        image = read_volume(image_path, index=config.index, series=config.series)
    lab, vol = read_labels(labels_path, index=config.index, series=config.series,
                           on=image if image is not None and image.meta.get("dicom_files") else None)
    out_path = resolve_output(output_path, vol)
    output_format(out_path)
    axis = choose_axis(config, vol)
    if image_path is not None:
        if image is None:
            image = read_volume(image_path, index=config.index, series=config.series)
        if image.shape != vol.shape:
            raise InputError(f"{image_path}: image shape {image.shape} differs from labels {vol.shape}")
    gray_fn = gray_slices(image, config) if image is not None else None
    labels, n = link_label_volume(lab, config, axis, gray_fn, out_path)

    return _write_outputs(labels, vol, out_path, axis, n, config, gray_fn, t0, [],
                          {"slicing": config.axes, "engine": config.engine.to_dict(),
                           **_image_record(image_path, config)})


def _image_record(path: "str | os.PathLike | None", config: VolumeConfig) -> dict:
    """``labels.json``'s ``image``: the intensity volume's absolute path (the grey test of
    `join_volume`), its window and percentiles, and the 4-D index and DICOM series it was
    read with, when set."""
    rec: dict = {"image": None if path is None else os.path.abspath(path)}
    if path is not None:  # how its grey levels were mapped to the slices' look
        w = config.window
        rec.update(image_window=list(w) if isinstance(w, tuple) else w, image_percentiles=list(config.percentiles))
    if path is not None and config.index is not None:
        rec["image_index"] = int(config.index)
    if path is not None and config.series is not None:
        rec["image_series"] = config.series
    return rec


def _write_outputs(labels: np.ndarray, vol: Volume, labels_path: Path, axis: int, n: "int | list[int]",
                   config: "VolumeConfig | None", gray: "Callable[[int, int], np.ndarray] | None", t0: float,
                   notes: list[str], extra: dict, votes: Any = None,
                   names: "dict[int, str | None] | None" = None) -> VolumeResult:
    """Labels, ``labels.json`` (with ``extra``), colour tables and montage. ``n``: the ids
    ``1..n``, or the list of ids present; ``names`` (id -> name) where ``votes`` are not
    given; ``config`` None: the default outputs, no volume configuration in the provenance
    (a pass over a finished run, which did not read the input)."""
    ids = list(range(1, n + 1)) if isinstance(n, int) else list(n)
    names = {i: votes.name(i)[0] for i in ids} if votes is not None else dict(names or {})
    provenance = {"software": f"diffseg-vv {software_version()}",
                  "input": {"path": str(vol.path) if vol.path else None, "format": vol.source_format,
                            "shape": list(vol.shape)},
                  **({} if config is None else {"volume_config": config.to_dict()}), **extra}
    config = VolumeConfig() if config is None else config
    write_labels(labels_path, labels, vol, config.output_dtype, names, provenance)
    json_path, montage_path = side_paths(labels_path)
    jp = write_labels_json(json_path, labels, vol, axis, extra, votes, names) if config.write_json else None
    if config.write_json:  # the same colours (and names) in 3D Slicer and ITK-SNAP
        write_color_table(json_path.with_suffix(".ctbl"), ids, names)
        write_itksnap_labels(json_path.with_suffix(".itksnap.txt"), ids, names)
    shown = names if votes is not None or any(v is not None for v in names.values()) else None
    mp = write_montage(montage_path, labels, vol.spacing, gray, vol.affine, shown) if config.montage else None
    return VolumeResult(shape=vol.shape, n_labels=len(ids), seconds=time.perf_counter() - t0, labels_path=labels_path,
                        json_path=jp, montage_path=mp, axis=axis, spacing=vol.spacing, warnings=notes)


def run_labels(path: "str | os.PathLike") -> Path:
    """The label file of a volume run's output folder (the one label file that `stack` /
    `volume` wrote, `volume.io.OUTPUT_NAMES`, with its ``labels.json`` beside it), else
    ``path`` itself (a file, or a DICOM folder)."""
    d = Path(path)
    if d.is_dir():
        found = [d / name for name in sorted(set(OUTPUT_NAMES.values()))
                 if (d / name).exists() and side_paths(d / name)[0].is_file()]
        if len(found) == 1:
            return found[0]
    return d


def run_series(path: "str | os.PathLike") -> "Volume | None":
    """The DICOM series a volume run segmented (``image`` in the ``labels.json`` beside its
    labels, read as the run read it), or None (not a run, or its image is not a DICOM folder)."""
    import json

    try:
        doc = json.loads(side_paths(run_labels(path))[0].read_text())
    except (OSError, ValueError):
        return None
    image = doc.get("image") if isinstance(doc, dict) else None
    return read_volume(image, series=doc.get("image_series")) if image and Path(image).is_dir() else None


def dicom_seg_file(path: "str | os.PathLike") -> "Path | None":
    """The DICOM-SEG file ``path`` names (a file, or a run's folder holding one), else None."""
    from .dicom import is_dicom_seg

    p = run_labels(path)
    return p if p.is_file() and is_dicom_seg(p) else None


def _recorded_look(doc: dict, index: "int | None", series: "str | None") -> VolumeConfig:
    """The `VolumeConfig` that maps an image's grey levels as the run whose ``labels.json``
    is ``doc`` mapped them (`_image_record`; runs from before the window was recorded: the
    default), reading the volume ``index`` / DICOM ``series`` given."""
    look = VolumeConfig(index=index, series=series)
    if "image_window" not in doc:
        return look
    window = doc["image_window"]
    return dataclasses.replace(look, window=tuple(window) if isinstance(window, list) else window,
                               percentiles=tuple(doc.get("image_percentiles", look.percentiles)))


def read_labels(path: "str | os.PathLike", index: "int | None" = None,
                on: "Volume | str | os.PathLike | None" = None,
                run: "str | os.PathLike | None" = None, series: "str | None" = None) -> "tuple[np.ndarray, Volume]":
    """A label volume or a volume run's labels (`run_labels`): ``(labels, Volume)`` as
    `volume.io.read_label_volume` reads them. A DICOM-SEG is placed on the slices of the
    DICOM series ``on`` (a `Volume` or its folder), else on the series the run ``run``
    segmented (default: the DICOM-SEG's own run; `run_series`), else read alone
    (`volume.dicom.read_dicom_seg`: it must then have frames on every slice it references).
    The series is read only for a DICOM-SEG; ``index`` / ``series`` pick the volume of a
    file or folder that holds several, as in `volume.io.read_label_volume`."""
    from .dicom import read_dicom_seg

    p = dicom_seg_file(path)
    if p is None:
        return read_label_volume(run_labels(path), index=index, series=series)
    if on is None:
        on = run_series(p if run is None else run)
    elif not isinstance(on, Volume):
        on = read_volume(on)
    if on is not None and not on.meta.get("dicom_files"):
        raise InputError(f"{path}: a DICOM-SEG is placed on a DICOM series; {on.path} is not one")
    vol = read_dicom_seg(p, like=on)
    return vol.data, vol


def join_volume(run: "str | os.PathLike", output_path: "str | os.PathLike",
                image_path: "str | os.PathLike | None" = None, config: Any = None) -> VolumeResult:
    """Join the labels of one structure in a finished volume run, into a new label file.

    `temporal.engine.join` along the run's slicing axis (slice = frame): two labels are one
    structure when the voxels they trade from slice to slice are at least ``exchange`` of
    those plus the voxels each keeps, and their mean grey levels differ by at most
    ``colour_sd`` pooled standard deviations. For segmenters that cut a structure into
    pieces that change from slice to slice (nuclei under a fine watershed or graph-based
    segmenter); not for organs whose neighbours re-tile with them (docs/volume.md). The
    run is left as it is; ids keep their values (a joined group takes its smallest id).

    Args:
        run: the label file of a `segment_volume` / `stack_labels` run (its ``labels.json``
            beside it), or its output folder.
        output_path: label file or folder, as in `segment_volume` (not the run's file).
        image_path: the intensity volume (the grey test and the montage); default: the one
            the run's ``labels.json`` names (``image``: the scan of `segment_volume`, the
            ``--image`` of `stack_labels`).
        config: `temporal.engine.join.JoinConfig` (default: its defaults).

    Raises:
        InputError: not a run's labels, the run's own file, no image or one of another shape.
    """
    import json

    from temporal.engine.join import Exchange, JoinConfig, join_lut, name_donors

    t0 = time.perf_counter()
    config = JoinConfig() if config is None else config
    labels_path = run_labels(run)
    json_path = side_paths(labels_path)[0]
    if not labels_path.exists() or not json_path.is_file():
        raise InputError(f"{run}: not the output of diffseg volume / stack (no label file with a labels.json "
                         f"beside it)")
    try:
        doc = json.loads(json_path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{json_path}: unreadable ({exc})") from exc
    seg = dicom_seg_file(labels_path) is not None
    if not seg:  # a bad output extension is named before the image is read (a DICOM-SEG is read
        lab, vol = read_label_volume(labels_path)  # once its series is: its frames go on its slices)
        output_format(resolve_output(output_path, vol), vol)
    index = series = None  # a 4-D file's volume, a DICOM folder's series: as the run read its image
    if image_path is None:
        image_path, index, series = doc.get("image"), doc.get("image_index"), doc.get("image_series")
    if image_path is None:  # without the grey test neighbouring organs join (docs/volume.md)
        raise InputError(f"{run}: its labels.json names no image; give the intensity volume the labels belong to "
                         f"(--image)")
    if not Path(image_path).exists():
        raise InputError(f"{image_path}: the run's image is not there any more; give it (--image)")
    image = read_volume(image_path, index=index, series=series)
    if seg:
        lab, vol = read_labels(labels_path, on=image)
    out_path = resolve_output(output_path, vol)
    fmt = output_format(out_path, vol)
    if out_path.resolve() == labels_path.resolve():
        raise InputError(f"{output_path}: give another output than the run's labels (the run is kept as it is)")
    axis = int(doc.get("slicing_axis") or 0)
    if image.shape != vol.shape:
        raise InputError(f"{image_path}: image shape {image.shape} differs from the labels {vol.shape}")
    look = _recorded_look(doc, index, series)
    gray = gray_slices(image, look)
    ex = Exchange()
    n_slices = vol.shape[axis]
    for i in progress(range(n_slices), total=n_slices, desc="join: count", unit="slice"):
        ex.add(np.asarray(take_slice(lab, axis, i)), gray(axis, i))
    mapping = ex.groups(config)
    # the run's ids through a lookup table, slab by slab; the ids left: those counted, joined
    area = ex.area
    lut = join_lut(mapping, len(area) - 1)
    joined = np.empty(vol.shape, np.int32)
    for sl in slabs(lab.shape):
        joined[sl] = lut[np.asarray(lab[sl])]
    ids = [int(i) for i in np.unique(lut[np.flatnonzero(area)]) if i > 0]
    names = {int(r["id"]): r.get("name") for r in doc.get("labels", [])}
    named = {i for i, n in names.items() if n is not None}
    for root, donor in name_donors(mapping, named, dict(enumerate(area.tolist()))).items():
        names[root] = names[donor]
    extra = {"joined_from": os.path.abspath(labels_path), "join": config.to_dict(),
             "joined": {str(k): int(v) for k, v in sorted(mapping.items())},
             **_image_record(image_path, look), "vocabulary": doc.get("vocabulary") or []}
    if fmt == "dicom-seg" and ids != list(range(1, len(ids) + 1)):  # segment numbers are 1..n
        renumber = np.zeros(max(ids) + 1, np.int32)
        renumber[ids] = np.arange(1, len(ids) + 1)
        for sl in slabs(joined.shape):
            joined[sl] = renumber[joined[sl]]
        extra["renumbered"] = {str(k): i for k, i in enumerate(ids, 1)}
        names = {k: names.get(i) for k, i in enumerate(ids, 1)}
        ids = list(range(1, len(ids) + 1))
    return _write_outputs(joined, vol, out_path, axis, ids, None, gray, t0, [], extra,
                          names={i: names.get(i) for i in ids})

