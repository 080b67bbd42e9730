"""`diffseg volume`, `diffseg stack` and `diffseg evaluate volume` (thin wrappers of `volume.api`)."""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import warnings
from contextlib import contextmanager
from typing import Iterator

from diffseg_core.cli_args import CommandResult
from diffseg_core.errors import InputError

VOLUME_EPILOG = """examples:
  diffseg volume scan.nii.gz -o labels.nii.gz --window soft-tissue
  diffseg volume dicom_folder/ -o out/ --series 1.2.840.113619.2.55.3 --window lung
  diffseg volume nuclei.tif -o labels.tif --window percentile --axes all
  diffseg volume scan.nii.gz -o labels.npy --axis x --min-size 200 --size 256 --batch-size 8
outputs: the labels (format from the -o extension: .nii.gz/.nii with the input's affine,
.tif with ImageJ spacing, .npy; a folder gets labels.<input format>), labels.json beside
them (per label: voxels, volume, bbox, slice range) and <name>_montage.png (mid-planes).
"""

STACK_EPILOG = """examples:
  diffseg stack cellpose_slices.tif -o labels.tif                # 0 = background
  diffseg stack diffseg_slices.nii.gz -o labels.nii.gz --background none --image scan.nii.gz
"""


def _axis(text: str) -> "int | None":
    from .types import parse_axis

    try:
        return parse_axis(text)
    except InputError as exc:
        raise argparse.ArgumentTypeError(str(exc))


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number; got {text!r}") from None
    if not v > 0 or v == float("inf"):
        raise argparse.ArgumentTypeError(f"must be > 0; got {text}")
    return v


#: the options of each command: `VolumeConfig` fields as generated options, from the
#: command's preset (its defaults); `volume`'s --background auto|none is `clear_outside`
def _presets():
    from .types import VolumeConfig

    return {"volume": (VolumeConfig(), ("background", "clear_outside")),
            "stack": (VolumeConfig(background=0, min_size=0, min_label_size=0),  # bring-your-own: trusted pieces
                      ("clear_outside", "resample_inplane"))}


def _add_common(p: argparse.ArgumentParser, command: str) -> None:
    p.add_argument("-o", "--output", required=True,
                   help="label file (.nii.gz, .nii, .tif, .npy) or a folder (labels in the input's format)")
    from diffseg_core.cli_args import add_options

    preset, skip = _presets()[command]
    add_options(p, preset, "volume", "volume", skip=skip)
    p.add_argument("--join", metavar="OUT", default=None,
                   help="then join the labels of one structure that the segmenter cut into pieces (as diffseg "
                        "join, default settings; for microscopy stacks, not CT / MR) into this new label file or "
                        "folder; -o is kept as it is")


def volume_options(args: argparse.Namespace, command: str):
    """The `VolumeConfig` of a command's options (``diffseg volume``: ``--background
    auto|none`` sets ``clear_outside``)."""
    from diffseg_core.cli_args import options_config

    cfg = options_config(args, _presets()[command][0], "volume")
    if command == "volume":
        cfg = dataclasses.replace(cfg, clear_outside=args.background == "auto")
    return cfg


@contextmanager
def _warnings_as_lines(command: str) -> Iterator[None]:
    """Print every warning as one 'diffseg CMD: warning: ...' line on stderr."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield
        finally:
            seen = set()
            for w in caught:
                msg = str(w.message)
                if msg not in seen and not issubclass(w.category, (DeprecationWarning, FutureWarning)):
                    seen.add(msg)
                    print(f"diffseg {command}: warning: {msg}", file=sys.stderr)


def _report(result, command: str) -> CommandResult:
    extra = f", {result.json_path.name}" if result.json_path else ""
    extra += f", {result.montage_path.name}" if result.montage_path else ""
    doc = {"labels": str(result.labels_path), "n_labels": result.n_labels, "shape": list(result.shape),
           "axis": "zyx"[result.axis], "seconds": round(result.seconds, 2),
           "labels_json": str(result.json_path) if result.json_path else None,
           "montage": str(result.montage_path) if result.montage_path else None}
    return CommandResult(f"diffseg {command}: {result.n_labels} labels, shape {list(result.shape)}, axis "
                         f"{'zyx'[result.axis]} in {result.seconds:.1f} s -> {result.labels_path}{extra}", doc)


def _check_join(args: argparse.Namespace, cfg, command: str) -> None:
    """Refuse ``--join`` before anything is computed when it could not run."""
    if args.join is None:
        return
    if os.path.abspath(args.join) == os.path.abspath(args.output):
        raise InputError(f"--join {args.join}: give another output than -o; the run is kept as it is")
    if not cfg.write_json:
        raise InputError("--join needs the run's labels.json; drop --no-json")
    if command == "stack" and args.image is None:  # the join's grey test needs the image (volume: its scan)
        raise InputError("--join needs the intensity volume the labels belong to (--image)")


def _then_join(args: argparse.Namespace, result, command: str) -> CommandResult:
    """The run's report, then (``--join OUT``) `join_volume` of the run into OUT."""
    report = _report(result, command)
    if args.join is None:
        return report
    from .api import join_volume

    joined = join_volume(result.labels_path, args.join)
    report.doc["joined"] = {"labels": str(joined.labels_path), "n_labels": joined.n_labels,
                            "seconds": round(joined.seconds, 2)}
    report.line += f"; joined: {joined.n_labels} labels in {joined.seconds:.1f} s -> {joined.labels_path}"
    return report


def volume_config_from_args(args: argparse.Namespace):
    """The `VolumeConfig` of ``diffseg volume``'s options (``--background auto|none``)."""
    return volume_options(args, "volume")


def _run_volume(args: argparse.Namespace) -> CommandResult:
    from diffseg_core.cli_args import segmenter_config_from_args

    from .api import segment_volume

    from .api import middle_slice_rgb

    cfg = volume_config_from_args(args)
    _check_join(args, cfg, "volume")
    seg_cfg = segmenter_config_from_args(args, lambda: middle_slice_rgb(args.input, cfg))
    with _warnings_as_lines("volume"):
        result = segment_volume(args.input, args.output, seg_cfg, cfg)
        return _then_join(args, result, "volume")


def _run_stack(args: argparse.Namespace) -> CommandResult:
    from .api import stack_labels

    cfg = volume_options(args, "stack")
    _check_join(args, cfg, "stack")
    with _warnings_as_lines("stack"):
        result = stack_labels(args.labels, args.output, cfg, image_path=args.image)
        return _then_join(args, result, "stack")


def _run_evaluate(args: argparse.Namespace) -> int:
    from .api import read_labels
    from .evaluate import volume_dice

    with _warnings_as_lines("evaluate"):
        # a DICOM-SEG (either side) is placed on --series, else on the series the prediction's run
        # segmented (a series is read only for a DICOM-SEG)
        pred, pv = read_labels(args.pred, index=args.index, on=args.series)
        gt, gv = read_labels(args.gt, index=args.index, on=args.series, run=args.pred)
        if pv.shape != gv.shape:
            raise InputError(f"{args.pred}: shape {pv.shape} differs from ground truth {args.gt} {gv.shape}")
        scores = volume_dice(pred, gt, oracle=not args.no_oracle, axis=args.axis if args.axis is not None else 0,
                             gt_name=f"{args.gt}: ground truth", surface=not args.no_surface,
                             spacing=gv.spacing, tolerance=args.surface_tolerance)
    d = scores.to_dict()
    d["pred"], d["gt"] = str(args.pred), str(args.gt)
    print(json.dumps(d, indent=1 if args.pretty else None))
    return 0


def register(sub, parent) -> None:
    """Add ``volume`` and ``stack`` to the ``diffseg`` subcommands."""
    from diffseg_core.cli_args import add_segmenter_args

    p = sub.add_parser("volume", parents=[parent], help="segment a 3D scan (NIfTI, DICOM, TIFF, npy) into 3D labels",
                       description="Slice-wise DiffSeg, slices linked into consistent 3D labels in the input's geometry.",
                       epilog=VOLUME_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", help="NIfTI file, DICOM folder, TIFF stack (ZYX), .npy, OME-Zarr or a folder of "
                                 "2-D slice images (PNG/TIFF/JPEG, natural name order)")
    _add_common(p, "volume")
    p.add_argument("--background", choices=("auto", "none"), default="auto",
                   help="auto: labels lying mostly outside the body or sample (the dark region reaching the "
                        "sides of the slices: air around a patient, medium around cells) become 0; none: "
                        "every voxel keeps a label [auto]")
    add_segmenter_args(p)
    p.set_defaults(func=_run_volume)

    s = sub.add_parser("stack", parents=[parent], help="link independently labelled slices into 3D labels",
                       description="Bring your own 2D labels: link a volume whose slices were labelled "
                                   "independently (any 2D segmenter) into consistent 3D labels.",
                       epilog=STACK_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("labels", help="label volume (NIfTI, TIFF, npy, OME-Zarr, DICOM-SEG) or a folder of per-slice "
                                  "label maps (PNG/TIFF/npy, natural name order), ids independent per slice")
    s.add_argument("--image", default=None, help="intensity volume of the same shape (montage background)")
    _add_common(s, "stack")
    s.set_defaults(func=_run_stack)


def register_evaluate(ev_sub, parent) -> None:
    """Add ``evaluate volume``."""
    e = ev_sub.add_parser("volume", parents=[parent], help="3D Dice, HD95, surface Dice and instance F1 of a "
                                                           "label volume vs ground truth (JSON)",
                          description="Dice per ground-truth label after one Hungarian matching over the whole "
                                      "volume, the mean Dice, the per-slice-oracle Dice (each slice matched "
                                      "on its own: the upper bound that ignores id consistency), HD95 and "
                                      "surface Dice of the matched labels (in the ground truth's spacing units), "
                                      "and instance precision / recall / F1 / accuracy at IoU 0.5. JSON on stdout.")
    e.add_argument("pred", help="predicted label volume (0 = none), or the output folder of `diffseg volume` / "
                                "`stack` (its labels file)")
    e.add_argument("gt", help="ground-truth label volume (0 = background, not scored)")
    e.add_argument("--axis", type=_axis, default=None, help="slicing axis of the oracle [z]")
    e.add_argument("--index", type=int, default=None, help="volume index of 4-D input")
    e.add_argument("--series", default=None, metavar="DIR",
                   help="the DICOM series a DICOM-SEG (prediction or ground truth) was made on: its frames are "
                        "placed on its slices [the series the prediction's run segmented, if any]")
    e.add_argument("--no-oracle", action="store_true", help="skip the per-slice oracle")
    e.add_argument("--no-surface", action="store_true", help="skip HD95 and surface Dice (a distance transform per label)")
    e.add_argument("--surface-tolerance", type=_positive_float, default=1.0,
                   help="surface Dice tolerance in the spacing's units (mm for NIfTI / DICOM) [%(default)s]")
    e.add_argument("--pretty", action="store_true", help="indented JSON")
    e.set_defaults(func=_run_evaluate)
