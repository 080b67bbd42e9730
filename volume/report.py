"""Side outputs of a label volume: ``labels.json`` and the quick-look montage PNG."""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np

from diffseg_core import software_version
from diffseg_core.io import atomic_write_text, draw_legend, label_palette, overlay, save_image

from .postprocess import label_stats
from .types import Volume

#: Longest side of each mid-plane panel in the montage.
PANEL_SIDE = 384


def write_color_table(path: "str | Path", ids: "list[int]", names: "dict[int, str | None] | None" = None) -> Path:
    """A 3D Slicer colour table (``.ctbl``: ``id name R G B A`` per line) of the label ids, in
    the colours of our overlays, so the labels show alike in Slicer (load it with the labels).
    A label's name is its word from ``names`` (spaces as ``_``), else ``label_<id>``."""
    pal = label_palette(max(ids, default=0) + 1)
    names = names or {}

    def name(i: int) -> str:
        n = names.get(i)
        return f"{'_'.join(n.split())}_{i}" if n else f"label_{i}"  # unique: two labels may share a word

    lines = ["# diffseg-vv label colours (3D Slicer colour table: id name R G B A)", "0 background 0 0 0 0"]
    lines += [f"{i} {name(i)} {pal[i][0]} {pal[i][1]} {pal[i][2]} 255" for i in ids if i > 0]
    atomic_write_text(path, "\n".join(lines) + "\n")
    return Path(path)


def write_itksnap_labels(path: "str | Path", ids: "list[int]", names: "dict[int, str | None] | None" = None) -> Path:
    """An ITK-SNAP label description file (``IDX R G B A VIS MSH "LABEL"`` per line; load it
    in ITK-SNAP with Segmentation > Import Label Descriptions) with our overlay colours and
    the labels' names (``"label 3"`` for unnamed ones)."""
    pal = label_palette(max(ids, default=0) + 1)
    names = names or {}
    lines = ["################################################",
             "# ITK-SnAP Label Description File (diffseg-vv)",
             "# File format:",
             "# IDX   -R-  -G-  -B-  -A--  VIS MSH  LABEL",
             "# Fields:",
             "#    IDX:   Zero-based index",
             "#    -R-:   Red color component (0..255)",
             "#    -G-:   Green color component (0..255)",
             "#    -B-:   Blue color component (0..255)",
             "#    -A-:   Label transparency (0.00 .. 1.00)",
             "#    VIS:   Label visibility (0 or 1)",
             "#    MSH:   Label mesh visibility (0 or 1)",
             "#  LABEL:   Label description",
             "################################################",
             f'{0:5d} {0:5d} {0:4d} {0:4d} {0:8d} {0:2d} {0:2d}    "Clear Label"']
    for i in (i for i in ids if i > 0):
        text = (names.get(i) or f"label {i}").replace('"', "'")
        r, g, b = (int(c) for c in pal[i])
        lines.append(f'{i:5d} {r:5d} {g:4d} {b:4d} {1:8d} {1:2d} {1:2d}    "{text}"')
    atomic_write_text(path, "\n".join(lines) + "\n")
    return Path(path)


def side_paths(labels_path: "str | Path") -> tuple[Path, Path]:
    """``labels.json`` and ``<stem>_montage.png`` beside the label file."""
    p = Path(labels_path)
    name = p.name
    from .io import OUTPUT_EXTS

    for ext, _ in OUTPUT_EXTS:
        if name.lower().endswith(ext):
            name = name[: -len(ext)]
            break
    json_name = "labels.json" if name == "labels" else f"{name}.json"
    return p.with_name(json_name), p.with_name(f"{name}_montage.png")


def write_labels_json(path: "str | Path", labels: np.ndarray, vol: Volume, axis: int,
                      extra: "dict[str, Any] | None" = None, votes: Any = None,
                      names: "dict[int, str | None] | None" = None) -> Path:
    """Write per-label statistics (voxels, volume, bbox, slice range) as JSON, atomically.

    Volumes are in ``unit**3`` (e.g. mm3) when the input has a spacing, else voxels. Every
    label has a ``name`` (null without a vocabulary); with ``votes`` (`NameVotes` over the
    slices) also ``name_score`` and the per-slice ``name_votes``; without, ``names`` (id ->
    name) gives the names.
    """
    stats = label_stats(labels, vol.spacing if vol.spacing_known else (1.0, 1.0, 1.0), axis)
    unit = f"{vol.unit}3" if vol.spacing_known else "voxels"
    stats_rows = [asdict(st) for st in stats]
    pal = label_palette(max([r["id"] for r in stats_rows], default=0) + 1)
    for r in stats_rows:  # the colour the overlays and the colour table give the label
        r["color"] = [int(c) for c in pal[r["id"]]]
        r.update(votes.record(r["id"]) if votes is not None else {"name": (names or {}).get(r["id"]), "name_score": None})
    doc: dict[str, Any] = {
        "software": f"diffseg-vv {software_version()}",
        "source": str(vol.path) if vol.path else None,
        "source_format": vol.source_format,
        "shape": list(labels.shape),
        "array_axes": "DHW (array order of the volume as read: NIfTI (k, j, i), DICOM (slice, row, column), TIFF and OME-Zarr ZYX)",
        "spacing": list(vol.spacing) if vol.spacing_known else None,
        "spacing_unit": vol.unit if vol.spacing_known else None,
        "volume_unit": unit,
        "slicing_axis": int(axis),
        "n_labels": len(stats),
        "vocabulary": list(votes.vocabulary) if votes is not None else [],
        "labels": stats_rows,
    }
    if extra:
        doc.update(extra)
    atomic_write_text(path, json.dumps(doc, indent=1) + "\n")
    return Path(path)


def _panel(gray: np.ndarray, lab: np.ndarray, pix: tuple[float, float]) -> np.ndarray:
    """Overlay one plane and scale it to physical aspect, longest side `PANEL_SIDE`."""
    rgb = np.repeat(gray[:, :, None], 3, axis=2)
    ov = overlay(rgb, lab, alpha=0.45, contours=True, background=0)
    h, w = lab.shape
    ph, pw = h * pix[0], w * pix[1]
    s = PANEL_SIDE / max(ph, pw)
    size = (max(1, int(round(pw * s))), max(1, int(round(ph * s))))
    return cv2.resize(ov, size, interpolation=cv2.INTER_NEAREST)


def _view(affine: "np.ndarray | None", ax: int) -> "tuple[int, tuple[int, int], tuple[bool, bool]]":
    """How to show the array plane perpendicular to array axis ``ax``: ``(panel position,
    (row axis, column axis) among the two other array axes as 0/1, (flip rows, flip columns))``.

    With an affine (RAS+ world) the panels are the radiological views of 3D Slicer and
    ITK-SNAP whatever the array order: axial (superior-inferior normal), coronal, sagittal in
    that order, superior / anterior at the top, the patient's right on the left of axial and
    coronal views, anterior on the left of the sagittal view. Without one: the array planes
    as stored."""
    others = [a for a in range(3) if a != ax]
    if affine is None:
        return ax, (0, 1), (False, False)
    from nibabel.orientations import io_orientation

    orient = io_orientation(np.asarray(affine, np.float64))  # per array axis: (world axis, +1/-1)
    world = int(orient[ax, 0])  # 0 R, 1 A, 2 S: the plane's normal
    position = {2: 0, 1: 1, 0: 2}[world]  # axial, coronal, sagittal
    # the world axis shown down the rows: S (top = superior) unless the plane is axial (A)
    row_world = 1 if world == 2 else 2
    row = 0 if int(orient[others[0], 0]) == row_world else 1
    col = 1 - row
    flip_rows = orient[others[row], 1] > 0  # increasing index goes up the world axis: top = far end
    # columns (R or A): the patient's right on the left, anterior on the left (decreasing)
    flip_cols = orient[others[col], 1] > 0
    return position, (row, col), (bool(flip_rows), bool(flip_cols))


def write_montage(path: "str | Path", labels: np.ndarray, spacing: tuple[float, float, float],
                  gray_slice: "Callable[[int, int], np.ndarray] | None" = None,
                  affine: "np.ndarray | None" = None, names: "dict[int, str | None] | None" = None) -> Path:
    """Quick-look PNG: the three mid-planes side by side, labels overlaid.

    Args:
        path: PNG to write (atomically).
        labels: int ``(D, H, W)``.
        spacing: ``(dz, dy, dx)`` for the panels' aspect ratio.
        gray_slice: ``(axis, index) -> uint8 (a, b)`` image of that plane, or None (black).
        affine: ``(d, h, w)`` -> RAS+ mm, or None: with one, the panels are the axial,
            coronal and sagittal views in radiological orientation (`_view`), whatever the
            array order; without, the array planes of axes 0, 1, 2 as stored.
        names: label id -> name: a legend of the labels seen in the panels ("unknown" for
            None); None = no legend.
    """
    panels: list = [None, None, None]
    mids: list[int] = []
    signs = None
    if affine is not None:
        from nibabel.orientations import io_orientation

        signs = io_orientation(np.asarray(affine, np.float64))[:, 1]
    for ax in range(3):
        n = labels.shape[ax]
        # the middle plane in the world, not in the array: the same plane whichever way the
        # axis is stored (for an even count, the lower of the two middle ones)
        mid = n // 2 if signs is None else (n - 1) // 2 if signs[ax] > 0 else n - 1 - (n - 1) // 2
        mids.append(mid)
        lab = np.asarray(np.take(labels, mid, axis=ax)).astype(np.int64)
        gray = np.asarray(gray_slice(ax, mid) if gray_slice is not None else np.zeros(lab.shape, np.uint8), np.uint8)
        pix = [float(s) for i, s in enumerate(spacing) if i != ax]
        position, (row, _), (flip_rows, flip_cols) = _view(affine, ax)
        if row == 1:  # rows must run along the other in-plane axis
            lab, gray, pix = lab.T, gray.T, pix[::-1]
        if flip_rows:
            lab, gray = lab[::-1], gray[::-1]
        if flip_cols:
            lab, gray = lab[:, ::-1], gray[:, ::-1]
        panels[position] = _panel(np.ascontiguousarray(gray), np.ascontiguousarray(lab), (pix[0], pix[1]))
    h = max(p.shape[0] for p in panels)
    gap = np.full((h, 4, 3), 255, np.uint8)
    row_img = []
    for i, p in enumerate(panels):
        pad = np.zeros((h, p.shape[1], 3), np.uint8)
        pad[: p.shape[0]] = p
        row_img.append(pad)
        if i < 2:
            row_img.append(gap)
    img = np.concatenate(row_img, axis=1)
    if names is not None:
        seen = sorted(set(np.unique(np.concatenate([np.unique(np.take(labels, m, axis=a))
                                                       for a, m in enumerate(mids)]))) - {0})
        draw_legend(img, [(int(i), f"{int(i)} {names.get(int(i)) or 'unknown'}") for i in seen])
    save_image(path, img)
    return Path(path)
