"""Exports of a tracked video (the folder `diffseg video` / `track` / `run` writes: ``labels/``
and ``tracks.json``) to the formats other tools read.

* `export_davis`: DAVIS-2017 results (``OUT/<sequence>/<stem>.png``, palette PNGs, object ids
  ``1..N`` in order of first appearance, 0 = background): what davis2017-evaluation reads.
  Its unsupervised protocol takes at most 20 objects per sequence, so by default the 20
  tracks with the largest total area are kept (``max_objects``, at most 254: one byte, 255
  being DAVIS's void).
* `export_coco`: the tracks as one YouTube-VIS / COCO-video JSON (``videos``, ``categories``,
  ``annotations``: one per track with a COCO RLE, area and box per frame, null where the
  track is absent), encoded with pycocotools; TrackEval, SAM 2 / DEVA tooling and the COCO
  API read it. Categories are the tracks' names (`diffseg_core.naming`) when they have
  them, else one category, ``object``.
* `export_mot`: MOTChallenge text (``frame,id,x,y,w,h,conf,-1,-1,-1``, frames from 1) from
  the boxes of ``tracks.json``.

Every file is written atomically; a folder that is not a tracked video is one error line.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from diffseg_core.errors import InputError
from diffseg_core.io import atomic_path, atomic_write_text, read_labels, save_labels_png

from .writer import LABELS_DIR, TRACKS_JSON

__all__ = ["TrackedVideo", "export_davis", "export_coco", "export_mot", "DAVIS_MAX_OBJECTS"]

#: the DAVIS-2017 unsupervised evaluation scores at most this many objects per sequence
DAVIS_MAX_OBJECTS = 20


@dataclass
class TrackedVideo:
    """A tracked video's output folder: ``tracks.json`` and ``labels/<stem>.png``."""

    folder: Path
    doc: dict

    @classmethod
    def open(cls, folder: "str | Path") -> "TrackedVideo":
        folder = Path(folder)
        path = folder / TRACKS_JSON
        if not path.is_file():
            raise InputError(f"{folder}: not a tracked video (no tracks.json; `diffseg video` / `track` write one)")
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise InputError(f"{path}: unreadable tracks.json ({exc})") from exc
        if not isinstance(doc, dict) or not isinstance(doc.get("frames"), list) or not isinstance(doc.get("tracks"), list):
            raise InputError(f"{path}: not a tracks.json of diffseg-vv (no frames / tracks lists)")
        if doc.get("complete") is False:
            raise InputError(f"{path}: the run did not complete ({doc.get('error') or doc.get('status')}); "
                             "finish it before exporting")
        return cls(folder, doc)

    @property
    def stems(self) -> list[str]:
        return [str(s) for s in self.doc["frames"]]

    def labels(self) -> Iterator[tuple[int, str, np.ndarray]]:
        """``(position, stem, int32 track ids)`` per frame, in order."""
        for pos, stem in enumerate(self.stems):
            path = self.folder / LABELS_DIR / f"{stem}.png"
            if not path.is_file():
                raise InputError(f"{path}: missing (tracks.json lists frame {stem})")
            yield pos, stem, read_labels(path)

    def tracks(self) -> list[dict]:
        return list(self.doc["tracks"])


def export_davis(folder: "str | Path", out_dir: "str | Path", sequence: "str | None" = None,
                 max_objects: int = DAVIS_MAX_OBJECTS) -> dict[str, Any]:
    """Write DAVIS-2017 results: ``out_dir/<sequence>/<stem>.png``.

    Args:
        folder: the tracked video's output folder.
        sequence: the sequence's name (default: the folder's name).
        max_objects: tracks kept, largest total area first (1..254; 255 is DAVIS's void; DAVIS
            scores 20).

    Returns:
        ``{"frames", "objects", "dropped", "ids"}`` (``ids``: exported id -> track id).
    """
    if not 1 <= int(max_objects) <= 254:
        raise InputError(f"max_objects must be in 1..254 (one byte per pixel; 255 is DAVIS's void label); "
                         f"got {max_objects}")
    video = TrackedVideo.open(folder)
    tracks = video.tracks()
    kept = sorted(tracks, key=lambda t: -sum(t.get("area", [])))[: int(max_objects)]
    kept.sort(key=lambda t: (t["first_frame"], t["id"]))  # DAVIS: objects numbered by first appearance
    ids = {int(t["id"]): k + 1 for k, t in enumerate(kept)}
    top = max((int(t["id"]) for t in tracks), default=0)
    lut = np.zeros(top + 1, np.uint8)
    for tid, new in ids.items():
        lut[tid] = new
    seq_dir = Path(out_dir) / (sequence or video.folder.name)
    seq_dir.mkdir(parents=True, exist_ok=True)
    n = 0
    for _, stem, lab in video.labels():
        if lab.size and int(lab.max()) > top:
            raise InputError(f"{video.folder}/labels/{stem}.png: track id {int(lab.max())} is not in tracks.json")
        save_labels_png(seq_dir / f"{stem}.png", lut[lab])
        n += 1
    return {"frames": n, "objects": len(kept), "dropped": len(tracks) - len(kept), "sequence": seq_dir.name,
            "ids": {str(v): k for k, v in ids.items()}}


def _rle(mask: np.ndarray) -> dict:
    from pycocotools import mask as mask_utils

    r = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(s) for s in r["size"]], "counts": r["counts"].decode("ascii")}


def export_coco(folder: "str | Path", out_path: "str | Path", video_name: "str | None" = None) -> dict[str, Any]:
    """Write the tracks as a YouTube-VIS / COCO-video JSON with one RLE per track and frame.

    Returns:
        ``{"frames", "tracks", "categories"}``.
    """
    video = TrackedVideo.open(folder)
    tracks = video.tracks()
    names = sorted({t["name"] for t in tracks if t.get("name")})
    categories = [{"id": k + 1, "name": w} for k, w in enumerate(names)] or [{"id": 1, "name": "object"}]
    if names and any(not t.get("name") for t in tracks):
        categories.append({"id": len(categories) + 1, "name": "unknown"})
    cat_of = {c["name"]: c["id"] for c in categories}
    stems = video.stems
    T = len(stems)
    ann = {int(t["id"]): {"id": int(t["id"]), "video_id": 1, "track_id": int(t["id"]),
                          "category_id": cat_of.get(t.get("name") or ("unknown" if names else "object"), 1),
                          "name": t.get("name"), "score": t.get("name_score"), "iscrowd": 0,
                          "segmentations": [None] * T, "areas": [None] * T, "bboxes": [None] * T}
           for t in tracks}
    hw = None
    for pos, stem, lab in video.labels():
        hw = hw or lab.shape
        present = np.unique(lab)
        for tid in present[present > 0].tolist():
            a = ann.get(int(tid))
            if a is None:
                raise InputError(f"{video.folder}/labels/{stem}.png: track id {tid} is not in tracks.json")
            m = lab == tid
            ys, xs = np.nonzero(m)
            a["segmentations"][pos] = _rle(m)
            a["areas"][pos] = int(m.sum())
            a["bboxes"][pos] = [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]
    h, w = hw if hw is not None else (video.doc.get("frame_size") or [0, 0])
    doc = {"info": {"software": video.doc.get("software"), "source": video.doc.get("source"),
                    "segmenter": video.doc.get("segmenter"), "fps": video.doc.get("fps")},
           "videos": [{"id": 1, "name": video_name or video.folder.name, "width": int(w), "height": int(h),
                       "length": T, "file_names": [f"{s}.png" for s in stems]}],
           "categories": categories, "annotations": list(ann.values())}
    with atomic_path(out_path) as tmp:
        tmp.write_text(json.dumps(doc, separators=(",", ":")) + "\n", encoding="utf-8")
    return {"frames": T, "tracks": len(ann), "categories": [c["name"] for c in categories]}


def export_mot(folder: "str | Path", out_path: "str | Path") -> dict[str, Any]:
    """Write MOTChallenge boxes: ``frame,id,x,y,w,h,1,-1,-1,-1`` per track and frame (frames
    numbered from 1 in the order of ``tracks.json``'s ``frames``), sorted by frame."""
    video = TrackedVideo.open(folder)
    rows = []
    for t in video.tracks():
        for pos, (x0, y0, x1, y1) in zip(t.get("frames", []), t.get("bbox", [])):
            rows.append((int(pos) + 1, int(t["id"]), x0, y0, x1 - x0 + 1, y1 - y0 + 1))
    rows.sort()
    atomic_write_text(out_path, "".join(f"{f},{i},{x},{y},{w},{h},1,-1,-1,-1\n" for f, i, x, y, w, h in rows))
    return {"frames": len(video.stems), "tracks": len(video.tracks()), "boxes": len(rows)}
