"""OME-Zarr (OME-NGFF 0.4 and 0.5) volumes in, label volumes out: chunked and lazy.

Reading: the highest resolution (``datasets[0]``) of the first multiscale image of the
group, as a `ZarrStack`: indexing a slice reads only the chunks it touches, so a volume
bigger than RAM is segmented slice by slice. Axes come from the ``axes`` metadata: the
three space axes are ``(D, H, W)``; a time or channel axis of length one is dropped, a
longer one is a 4-D choice (``--index``); the voxel size comes from the ``scale``
transformations (dataset and multiscale level multiplied), the unit from the space axes.
A ``bioformats2raw`` layout (images ``0/``, ``1/``... below the root) reads its first
image, or the one named with ``series``; a bare Zarr array (no OME metadata) reads as ZYX
with an unknown spacing.

Writing (`write_labels_ome_zarr`): OME-NGFF 0.4 (Zarr format 2, the version that napari's
reader, Fiji / MoBIE, QuPath and neuroglancer all open), a standalone label image: the
``multiscales`` of the labels (in-plane pyramid by taking every second pixel, so ids are
never blended), with ``image-label`` metadata (the colours of our overlays, names as
properties), so it opens as a Labels layer. It is written slab by slab from any array or
memory map (bounded memory) into a temporary folder renamed at the end: an interrupted
write never leaves a folder that looks complete.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from diffseg_core.errors import InputError
from diffseg_core.io import label_palette, output_error, temporary_name

from .geometry import slabs
from .types import LazyStack, Volume

#: OME-NGFF version written (0.4 = Zarr format 2: what the viewers read today).
NGFF_VERSION = "0.4"
#: Chunk of the written levels: one slice deep (the pipeline's and a viewer's access), 512 px.
CHUNK = (1, 512, 512)
#: Pyramid: halve in-plane until the longest side is at most this many pixels.
PYRAMID_MIN_SIDE = 256
_UNITS = {"micrometer": "um", "millimeter": "mm", "nanometer": "nm", "centimeter": "cm", "meter": "m"}
_NGFF_UNIT = {v: k for k, v in _UNITS.items()}


def _zarr() -> Any:
    try:
        import zarr
    except ImportError as exc:  # Python 3.10: zarr 3 is not installable
        raise InputError("OME-Zarr needs the zarr package (version 3, Python >= 3.11): pip install 'zarr>=3'") from exc
    return zarr


def is_zarr(p: Path) -> bool:
    """True for a Zarr group or array folder (``.zarr`` name, or its metadata files inside)."""
    return p.is_dir() and (p.name.lower().endswith(".zarr")
                           or any((p / f).is_file() for f in (".zgroup", ".zarray", "zarr.json")))


class ZarrStack(LazyStack):
    """A ``(D, H, W)`` view of a Zarr array with fixed indices on its other axes: indexing
    reads the chunks it touches (a slice along ``D``: one chunk row), ``np.asarray`` reads
    everything."""

    def __init__(self, array: Any, fixed: "dict[int, int]", space: "list[int]") -> None:
        self.array, self.fixed, self.space = array, dict(fixed), list(space)
        self.shape = tuple(int(array.shape[a]) for a in space)  # type: ignore[assignment]
        self.dtype = np.dtype(array.dtype)

    def __getitem__(self, key: Any) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        if len(key) > 3 or not all(isinstance(k, (slice, int, np.integer)) for k in key):
            return np.asarray(self)[key]  # (fancy indexing: read everything, as numpy would)
        full: list[Any] = [slice(None)] * len(self.array.shape)
        for a, v in self.fixed.items():
            full[a] = v
        for a, k in zip(self.space, key):
            full[a] = int(k) if isinstance(k, np.integer) else k
        return np.asarray(self.array[tuple(full)])


def _attrs(node: Any) -> dict:
    a = dict(node.attrs.asdict())
    return a.get("ome", a) if isinstance(a.get("ome"), dict) else a  # 0.5 nests under "ome"


def ome_attributes(p: "str | os.PathLike") -> dict:
    """The OME attributes of a Zarr group (0.4 at the top, 0.5 under ``ome``); ``{}`` for
    anything that is not a readable Zarr group."""
    try:
        return _attrs(_zarr().open_group(str(p), mode="r"))
    except Exception:
        return {}


def label_levels(p: "str | os.PathLike") -> list:
    """The arrays of every resolution level of an OME-Zarr image, finest first (lazy Zarr
    arrays: a viewer reads the chunks it shows)."""
    node = _zarr().open_group(str(p), mode="r")
    m = _multiscale_image(Path(p), node, None)[0]
    return [node[d["path"]] for d in m["datasets"]]


def _scale(transforms: "list[dict] | None", n: int) -> "np.ndarray | None":
    s = None
    for t in transforms or []:
        if isinstance(t, dict) and t.get("type") == "scale" and len(t.get("scale", [])) == n:
            s = np.asarray(t["scale"], np.float64) * (1.0 if s is None else s)
    return s


def read_ome_zarr(p: Path, index: "int | None" = None, series: "str | None" = None) -> Volume:
    """Read an OME-Zarr image (or a bare Zarr array) lazily as a `Volume`.

    Raises:
        InputError: no image in the group, not three space axes, an ambiguous 4-D choice.
    """
    zarr = _zarr()
    try:
        node = zarr.open(str(p), mode="r")
    except Exception as exc:
        raise InputError(f"{p}: not a readable Zarr store ({type(exc).__name__}: {exc})") from exc
    if isinstance(node, zarr.Array):
        return _bare_array(p, node, index)
    m, arr, version = _multiscale_image(p, node, series)
    axes = [a if isinstance(a, dict) else {"name": str(a), "type": "space" if a in "zyx" else ""}
            for a in m.get("axes", [{"name": n, "type": "space"} for n in "tczyx"[-len(arr.shape):]])]
    if len(axes) != len(arr.shape):
        raise InputError(f"{p}: {len(axes)} axes in the metadata for an array of shape {tuple(arr.shape)}")
    space = [i for i, a in enumerate(axes) if a.get("type") == "space"]
    names = [str(a.get("name", "?")) for a in axes]
    if len(space) == 2:
        raise InputError(f"{p}: OME-Zarr image with axes {names} is a single 2-D plane; expected a 3-D (z, y, x) image")
    if len(space) != 3:
        raise InputError(f"{p}: expected three space axes (z, y, x); the image has axes {names}")
    fixed = _fixed_axes(p, arr.shape, [i for i in range(len(axes)) if i not in space], names, index)
    scale = _scale(m["datasets"][0].get("coordinateTransformations"), len(axes))
    top = _scale(m.get("coordinateTransformations"), len(axes))
    if top is not None:
        scale = top if scale is None else scale * top
    known = scale is not None
    spacing = tuple(float(scale[i]) for i in space) if known else (1.0, 1.0, 1.0)
    unit = _UNITS.get(str(axes[space[-1]].get("unit", "")), str(axes[space[-1]].get("unit") or "voxel"))
    return Volume(data=ZarrStack(arr, fixed, space), spacing=spacing, affine=None, source_format="ome-zarr", path=p,
                  spacing_known=known, unit=unit if known else "voxel",
                  meta={"ome_zarr": {"axes": "".join(names), "name": m.get("name"), "version": version,
                                     "levels": len(m["datasets"])}})


def _multiscale_image(p: Path, node: Any, series: "str | None") -> tuple[dict, Any, Any]:
    """The first multiscale image of a group (or of its image ``series`` / ``0`` in a
    bioformats2raw layout): ``(its multiscales entry, its highest resolution, version)``."""
    attrs = _attrs(node)
    if "multiscales" not in attrs and ("bioformats2raw.layout" in attrs or series is not None):
        key = series if series is not None else "0"
        try:
            node = node[key]
        except KeyError:
            raise InputError(f"{p}: no image {key!r} in this Zarr group (images: "
                             f"{sorted(k for k, _ in node.groups())})") from None
        attrs = _attrs(node)
    ms = attrs.get("multiscales")
    if not isinstance(ms, list) or not ms or not isinstance(ms[0], dict) or not ms[0].get("datasets"):
        raise InputError(f"{p}: a Zarr group without OME-Zarr 'multiscales' image metadata; expected an "
                         "OME-Zarr image (OME-NGFF 0.4 or 0.5) or a plain Zarr array")
    m = ms[0]
    try:
        arr = node[m["datasets"][0]["path"]]
    except KeyError:
        raise InputError(f"{p}: the multiscales name the array {m['datasets'][0]['path']!r}, which is missing") from None
    return m, arr, m.get("version", attrs.get("version"))


def _fixed_axes(p: Path, shape: Any, other: "list[int]", names: "list[str]", index: "int | None") -> "dict[int, int]":
    """Indices of the non-space axes: 0 for length one, ``index`` for the one longer axis."""
    long = [a for a in other if int(shape[a]) > 1]
    if len(long) > 1:
        raise InputError(f"{p}: axes {names} of shape {tuple(shape)}: more than one time / channel axis longer "
                         "than one; export one 3-D image first")
    fixed = {a: 0 for a in other}
    if long:
        a = long[0]
        n = int(shape[a])
        if index is None:
            raise InputError(f"{p}: 4-D data of shape {tuple(shape)} ({n} along {names[a]!r}); pick one with "
                             f"--index 0..{n - 1}")
        if not 0 <= int(index) < n:
            raise InputError(f"{p}: --index {index} out of range; the image has {n} along {names[a]!r} (0..{n - 1})")
        fixed[a] = int(index)
    return fixed


def _bare_array(p: Path, arr: Any, index: "int | None") -> Volume:
    shape = tuple(int(s) for s in arr.shape)
    if len(shape) not in (3, 4):
        raise InputError(f"{p}: expected a 3-D (z, y, x) Zarr array; got shape {shape}")
    other = [0] if len(shape) == 4 else []
    fixed = _fixed_axes(p, shape, other, list("czyx"[-len(shape):]), index)
    return Volume(data=ZarrStack(arr, fixed, [a for a in range(len(shape)) if a not in other]),
                  source_format="ome-zarr", path=p, meta={"ome_zarr": {"axes": "zyx", "bare_array": True}})


# ----------------------------------------------------------------------------- labels out
def pyramid_factors(hw: "tuple[int, int]") -> list[int]:
    """In-plane downsampling factors of the levels: 1, 2, 4... while the longest side of the
    previous level is above `PYRAMID_MIN_SIDE`."""
    f = [1]
    while max(hw) // f[-1] > PYRAMID_MIN_SIDE:
        f.append(f[-1] * 2)
    return f


def _label_metadata(ids: "list[int]", names: "dict[int, str | None]") -> dict:
    pal = label_palette(max(ids, default=0) + 1)
    return {"version": NGFF_VERSION,
            "colors": [{"label-value": i, "rgba": [int(c) for c in pal[i]] + [255]} for i in ids],
            "properties": [{"label-value": i, **({"name": names[i]} if names.get(i) else {})} for i in ids]}


def write_labels_ome_zarr(path: "str | os.PathLike", labels: Any, like: Volume, dtype: np.dtype,
                          names: "dict[int, str | None] | None" = None,
                          provenance: "dict | None" = None) -> Path:
    """Write a ``(D, H, W)`` label volume as an OME-Zarr label image, slab by slab.

    Args:
        path: the ``.ome.zarr`` (or ``.zarr``) folder; an existing one is replaced only once
            the new one is complete.
        labels: int array or memory map, ids >= 0.
        like: the input volume (spacing and unit).
        dtype: stored integer dtype.
        names: label id -> name (``image-label`` properties).
        provenance: stored under ``diffseg`` in the group's attributes.

    Returns:
        ``Path(path)``.
    """
    zarr = _zarr()
    import numcodecs

    path = Path(path)
    tmp = temporary_name(path)
    d, h, w = (int(s) for s in labels.shape)
    factors = pyramid_factors((h, w))
    dz, dy, dx = like.spacing
    unit = _NGFF_UNIT.get(like.unit) if like.spacing_known else None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        g = zarr.open_group(str(tmp), mode="w", zarr_format=2)
        levels = [g.create_array(str(k), shape=(d, -(-h // f), -(-w // f)), dtype=dtype, fill_value=0,
                                 chunks=tuple(min(c, s) for c, s in zip(CHUNK, (d, -(-h // f), -(-w // f)))),
                                 compressors=numcodecs.Blosc(cname="zstd", clevel=3, shuffle=numcodecs.Blosc.BITSHUFFLE),
                                 chunk_key_encoding={"name": "v2", "separator": "/"})
                  for k, f in enumerate(factors)]
        present = np.zeros(1, bool)
        for sl in slabs((d, h, w)):
            block = np.asarray(labels[sl]).astype(dtype, copy=False)
            ids = np.unique(block)
            if ids.size and ids[-1] >= present.size:
                present = np.concatenate([present, np.zeros(int(ids[-1]) + 1 - present.size, bool)])
            present[ids] = True
            for arr, f in zip(levels, factors):
                arr[sl] = block[:, ::f, ::f]
        ids = [int(i) for i in np.flatnonzero(present) if i > 0]
        axes = [{"name": n, "type": "space", **({"unit": unit} if unit else {})} for n in "zyx"]
        g.attrs.update({
            "multiscales": [{
                "version": NGFF_VERSION, "name": path.name.split(".")[0], "axes": axes, "type": "nearest",
                "datasets": [{"path": str(k), "coordinateTransformations": [
                    {"type": "scale", "scale": [float(dz), float(dy) * f, float(dx) * f]}]}
                    for k, f in enumerate(factors)],
                "metadata": {"method": "every second pixel in-plane (ids are never blended)"}}],
            "image-label": _label_metadata(ids, names or {}),
            "diffseg": json.loads(json.dumps(provenance or {}, default=str)),
        })
        if path.exists():  # replace a previous result only now, and never leave neither
            old = temporary_name(path.with_name(path.name + ".old"))
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise output_error(path, exc) from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path
