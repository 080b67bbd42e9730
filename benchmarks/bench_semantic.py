"""Names for segments against labelled images: mIoU and pixel accuracy (issue 18).

    python benchmarks/bench_semantic.py --data FOLDER --model stable-diffusion-v1-5/stable-diffusion-v1-5
    python benchmarks/bench_semantic.py --davis ../shared/data/davis16_libby --classes "ground,dog" --model ...

FOLDER holds ``images/<stem>.png|jpg``, ``labels/<stem>.png`` (class id per pixel, 255 =
ignore) and ``classes.txt`` (class i on line i: the vocabulary). ``--davis`` takes a DAVIS
sequence folder (``frames/``, ``masks/``: 0 background, 1 object) with two class names.

Printed, per mode, over all images (confusion summed, then mIoU over the classes present):

* ``segments (Hungarian)``: the empty-prompt segments matched one-to-one to the image's
  classes (the paper's unsupervised protocol, per image);
* ``names, second pass``: each segment's name is its class (unknown = wrong), no matching;
* ``names, same pass``: segments and names from one prompted pass (``same_pass``), both
  ways scored, and how many pixels keep their segment against the empty prompt's
  (agreement after a one-to-one relabelling): what the prompt does to the segments;
* seconds per image of each mode.

Without real weights or without a labelled folder it says so and measures nothing (``tiny-random``
runs the path, its figures are meaningless).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from diffseg_core.errors import DiffSegError, ModelNotFoundError  # noqa: E402
from diffseg_core.evaluate import (confusion, match_segments_to_classes, mean_iou, names_to_classes,  # noqa: E402
                                   pixel_accuracy)


def load_folder(folder: Path, limit: int) -> tuple[list[str], list[tuple[str, np.ndarray, np.ndarray]]]:
    from diffseg_core.io import read_image, read_labels

    classes = [c.strip() for c in (folder / "classes.txt").read_text().splitlines() if c.strip()]
    items = []
    for p in sorted((folder / "images").iterdir()):
        lab = folder / "labels" / f"{p.stem}.png"
        if lab.exists():
            items.append((p.stem, read_image(p), read_labels(lab)))
        if len(items) >= limit:
            break
    return classes, items


def load_davis(seq: Path, classes: list[str], limit: int, step: int = 5) -> list[tuple[str, np.ndarray, np.ndarray]]:
    from diffseg_core.io import read_image, read_labels

    frames = sorted((seq / "frames").glob("*.jpg"))[::step][:limit]
    return [(f.stem, read_image(f), (read_labels(seq / "masks" / f"{f.stem}.png") > 0).astype(np.int32)) for f in frames]


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Pixels with the same segment in two segmentations after one-to-one relabelling."""
    from scipy.optimize import linear_sum_assignment

    ka, kb = int(a.max()) + 1, int(b.max()) + 1
    ov = np.bincount(a.ravel().astype(np.int64) * kb + b.ravel(), minlength=ka * kb).reshape(ka, kb)
    r, c = linear_sum_assignment(-ov)
    return float(ov[r, c].sum() / a.size)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, help="labelled folder (images/, labels/, classes.txt)")
    ap.add_argument("--davis", type=Path, help="a DAVIS sequence folder instead (frames/, masks/)")
    ap.add_argument("--classes", default="ground,object", help="--davis: background and object words")
    ap.add_argument("--model", default="CompVis/stable-diffusion-v1-4")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--voting", default="mean", choices=("mean", "majority"))
    ap.add_argument("--limit", type=int, default=50, help="images at most")
    args = ap.parse_args()

    if args.davis is not None:
        if not (args.davis / "frames").is_dir():
            print(f"# {args.davis}: not a DAVIS sequence folder (frames/, masks/): nothing measured")
            return
        classes = [c.strip() for c in args.classes.split(",")]
        items = load_davis(args.davis, classes, args.limit)
    elif args.data is not None and (args.data / "classes.txt").is_file():
        classes, items = load_folder(args.data, args.limit)
    else:
        print("# no labelled folder (--data with images/, labels/, classes.txt, or --davis): nothing measured")
        return

    from diffseg_core.config import NamingConfig, SegmenterConfig
    from diffseg_core.segmenter import DiffSegSegmenter

    def segmenter(same: bool, vocab: tuple = ()) -> DiffSegSegmenter:
        return DiffSegSegmenter(SegmenterConfig(model=args.model, size=args.size, device=args.device, dtype=args.dtype,
                                                naming=NamingConfig(vocabulary=vocab, voting=args.voting,
                                                                    same_pass=same)))

    plain = segmenter(False)
    try:
        _ = plain.model
    except (ModelNotFoundError, DiffSegError) as exc:
        print(f"# no model weights: {exc}\n# nothing measured")
        return
    vocab = tuple(classes)
    second, same = segmenter(False, vocab), segmenter(True, vocab)
    second._model = same._model = plain.model
    C = len(classes)
    conf = {k: np.zeros((C, C + 1), np.int64) for k in ("hungarian", "second", "same_hungarian", "same_names")}
    secs = {"segments": 0.0, "second": 0.0, "same": 0.0}
    agree, unknown, px = 0.0, 0, 0
    plain.segment(items[0][1])  # warm-up (first-call allocations)
    for _stem, img, gt in items:
        t0 = time.perf_counter()
        s0 = plain.segment(img)[0]
        t1 = time.perf_counter()
        s1 = second.segment(img)[0]
        t2 = time.perf_counter()
        s2 = same.segment(img)[0]
        t3 = time.perf_counter()
        secs["segments"] += t1 - t0
        secs["second"] += t2 - t1
        secs["same"] += t3 - t2
        conf["hungarian"] += confusion(match_segments_to_classes(s0.labels, gt, C), gt, C)
        n1 = dict(enumerate(s1.names.names))
        conf["second"] += confusion(names_to_classes(s1.labels, n1, classes), gt, C)
        conf["same_hungarian"] += confusion(match_segments_to_classes(s2.labels, gt, C), gt, C)
        conf["same_names"] += confusion(names_to_classes(s2.labels, dict(enumerate(s2.names.names)), classes), gt, C)
        agree += agreement(s0.labels, s2.labels) * s0.labels.size
        unknown += int(sum(np.count_nonzero(s1.labels == k) for k, n in n1.items() if n is None))
        px += s0.labels.size
    n = len(items)
    m = plain.model
    print(f"## {n} images, {C} classes {classes}; model {m.model_id} ({'RANDOM weights: figures meaningless' if m.is_random else 'real weights'}), "
          f"{m.device} {str(m.dtype).replace('torch.', '')}, size {args.size}, voting {args.voting}")
    print("| mode | mIoU | pixel accuracy | seconds / image (the whole mode) |")
    print("|---|---|---|---|")
    print(f"| segments, Hungarian per image (empty prompt) | {mean_iou(conf['hungarian']):.3f} | "
          f"{pixel_accuracy(conf['hungarian']):.3f} | {secs['segments'] / n:.2f} |")
    print(f"| names, second pass | {mean_iou(conf['second']):.3f} | {pixel_accuracy(conf['second']):.3f} | "
          f"{secs['second'] / n:.2f} |")
    print(f"| same pass: segments, Hungarian | {mean_iou(conf['same_hungarian']):.3f} | "
          f"{pixel_accuracy(conf['same_hungarian']):.3f} | |")
    print(f"| same pass: names | {mean_iou(conf['same_names']):.3f} | {pixel_accuracy(conf['same_names']):.3f} | "
          f"{secs['same'] / n:.2f} |")
    print(f"same-pass segments agree with the empty prompt's on {agree / px:.3f} of the pixels; "
          f"{unknown / px:.3f} of the pixels are in unnamed segments (second pass)")


if __name__ == "__main__":
    main()
