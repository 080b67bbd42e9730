"""`diffseg video`, `diffseg track` and `diffseg evaluate video` (thin wrappers of `temporal.api`)."""
from __future__ import annotations

import argparse
import json
import os

from diffseg_core.cli_args import CommandResult, add_options, argparse_type, options_config
from diffseg_core.config import parse_background
from diffseg_core.errors import InputError


def add_tracker_args(p: argparse.ArgumentParser) -> None:
    """Frame range and tracker options shared by `video` and `track`."""
    g = p.add_argument_group("frames")
    g.add_argument("--start", type=int, default=0, help="first frame (0-based) [%(default)s]")
    g.add_argument("--end", type=int, default=None, help="stop before this frame [end of video]")
    g.add_argument("--stride", type=int, default=1, help="use every n-th frame [%(default)s]")
    g.add_argument("--max-side", type=int, default=None, help="downscale frames to this longer side")
    from .config import TrackerConfig

    add_options(p, TrackerConfig(), "tracker", "tracker")
    o = p.add_argument_group("outputs")
    o.add_argument("-o", "--output", required=True, help="output folder")
    o.add_argument("--no-overlay", action="store_true", help="do not write overlay.mp4")
    o.add_argument("--join", metavar="DIR", default=None,
                   help="then join the tracks of one object (as diffseg join, default settings) into this new "
                        "folder; OUT is kept as it is")


def tracker_config_from_args(args: argparse.Namespace):
    """The `TrackerConfig` of the options (``--linker iou``: the IoU-only baseline's engine)."""
    from .config import TrackerConfig, iou_only_baseline

    cfg = options_config(args, TrackerConfig(), "tracker")
    if cfg.linker == "iou":
        try:
            return iou_only_baseline(keyframe_every=cfg.keyframe_every, keyframe_coverage=cfg.keyframe_coverage,
                                     keyframe_max_gap=cfg.keyframe_max_gap, batch_size=cfg.batch_size,
                                     id_offset=cfg.id_offset)
        except (TypeError, ValueError) as exc:
            raise InputError(str(exc)) from exc
    return cfg


def _report(res, command: str) -> CommandResult:
    doc = {"frames": res.n_frames, "tracks": res.n_tracks, "complete": res.complete,
           "error": res.error, "seconds": round(res.seconds, 2), "output": str(res.out_dir),
           "keyframes": res.keyframes}  # frames segmented; the others carried by flow
    if res.resumed_frames:
        doc["resumed_frames"] = res.resumed_frames
    keys = f" ({res.keyframes} segmented)" if res.keyframes != res.n_frames else ""
    resumed = f", {res.resumed_frames} segmentations resumed" if res.resumed_frames else ""
    if not res.complete:
        return CommandResult(f"diffseg {command}: stopped early: {res.error}; {res.n_frames} frames written "
                             f"-> {res.out_dir}", doc, 2)
    return CommandResult(f"diffseg {command}: {res.n_frames} frames{keys}, {res.n_tracks} tracks{resumed} in "
                         f"{res.seconds:.1f} s -> {res.out_dir}", doc)


def _check_join_folder(args: argparse.Namespace) -> None:
    """Refuse ``--join`` onto the run's own folder before anything is computed."""
    if args.join is not None and os.path.abspath(args.join) == os.path.abspath(args.output):
        raise InputError(f"--join {args.join}: give another folder than the run's (-o); the run is kept as it is")


def _then_join(args: argparse.Namespace, res, command: str) -> CommandResult:
    """The run's report, then (``--join DIR``, a complete run) `join_run` into DIR."""
    report = _report(res, command)
    if args.join is None:
        return report
    if not res.complete:
        report.line += f"; not joined into {args.join} (the run is incomplete)"
        return report
    from diffseg_core.io import output_lock, remove_stale_temporaries

    from .api import join_run

    with output_lock(args.join, f"diffseg {command} --join"):
        remove_stale_temporaries(args.join)
        joined = join_run(res.out_dir, args.join, write_overlay=not args.no_overlay)
    report.doc["joined"] = {"tracks": joined.n_tracks, "seconds": round(joined.seconds, 2),
                            "output": str(joined.out_dir)}
    report.line += f"; joined: {joined.n_tracks} tracks in {joined.seconds:.1f} s -> {joined.out_dir}"
    return report


def _video(args: argparse.Namespace) -> CommandResult:
    from diffseg_core.cli_args import segmenter_config_from_args

    from .api import segment_video

    _check_join_folder(args)
    cfg = tracker_config_from_args(args)

    def first_frame():  # --caption: the vocabulary from the first frame's caption
        from .io import FrameSource

        return next(iter(FrameSource(args.source, start=args.start, end=args.end, max_side=args.max_side))).rgb

    seg_cfg = segmenter_config_from_args(args, first_frame)
    res = segment_video(args.source, args.output, seg_cfg, cfg, start=args.start, end=args.end,
                        stride=args.stride, max_side=args.max_side, id_offset=cfg.id_offset,
                        write_overlay=not args.no_overlay, resume=not args.no_resume)
    return _then_join(args, res, "video")


def _track(args: argparse.Namespace) -> CommandResult:
    from .api import track_segments

    _check_join_folder(args)
    cfg = tracker_config_from_args(args)
    res = track_segments(args.frames, args.segments, args.output, cfg, start=args.start, end=args.end,
                         stride=args.stride, max_side=args.max_side, id_offset=cfg.id_offset,
                         write_overlay=not args.no_overlay, background=args.background)
    return _then_join(args, res, "track")


def register(sub, parent) -> None:
    """Add `video` and `track` to the `diffseg` parser (`join` is the app's: `diffseg.cli_join`)."""
    from diffseg_core.cli_args import add_segmenter_args

    v = sub.add_parser("video", parents=[parent], help="segment a video with stable track ids",
                       description="Segment every frame of a video with DiffSeg and link the segments "
                                   "into tracks with stable ids (optical flow + attention KL). Writes "
                                   "OUT/labels/<stem>.png, OUT/tracks.json, OUT/overlay.mp4.",
                       epilog="example: diffseg video clip.mp4 -o out/ --keyframe-every 4")
    v.add_argument("source", help="video file (mp4, mov, avi, mkv, webm) or folder of frames")
    v.add_argument("--no-resume", action="store_true",
                   help="segment every frame again (default: a run started again after a kill reuses the "
                        "segmentations kept in OUT/.diffseg/ until a run completes)")
    add_tracker_args(v)
    add_segmenter_args(v)
    v.set_defaults(func=_video, output_folder=True)
    t = sub.add_parser("track", parents=[parent], help="link your own per-frame label maps into tracks",
                       description="Link per-frame label maps made by any segmenter (PNG 8/16-bit or "
                                   ".npy with the frames' stems; labels independent per frame) into "
                                   "tracks with stable ids.",
                       epilog="example: diffseg track frames/ --segments seg/ -o out/")
    t.add_argument("frames", help="folder of frames or video file")
    t.add_argument("--segments", required=True, help="folder of per-frame label maps (same stems)")
    t.add_argument("--background", type=argparse_type(parse_background), default=None,
                   help="label value meaning 'no segment' (0 for DAVIS / SAM 2 / Cellpose masks) or none "
                        "(every value is a segment) [none]")
    add_tracker_args(t)
    t.set_defaults(func=_track, output_folder=True)


def _evaluate(args: argparse.Namespace) -> int:
    from .evaluate import evaluate_video_dirs

    res = evaluate_video_dirs(args.pred, args.gt, bound_th=args.bound_th)
    text = json.dumps(res.to_dict(per_object=not args.summary), indent=2)
    print(text)
    if args.json_out:
        from diffseg_core.io import atomic_write_text

        atomic_write_text(args.json_out, text + "\n")
    return 0


def register_evaluate(sub, parent) -> None:
    """Add `evaluate video` (DAVIS-2017 unsupervised protocol + id switches + oracle)."""
    e = sub.add_parser("video", parents=[parent], help="J, F, J&F, id switches, per-frame oracle (JSON)",
                       description="Score predicted track-id label maps against ground-truth object "
                                   "masks (same stems): DAVIS-2017 unsupervised protocol.")
    e.add_argument("pred", help="folder of predicted label maps (track ids, 0 = none), or the output "
                                "folder of `diffseg video` / `track` (its labels/)")
    e.add_argument("gt", help="folder of ground-truth label maps (object ids, 0 = background)")
    e.add_argument("--bound-th", type=float, default=0.008,
                   help="boundary tolerance as a fraction of the image diagonal (DAVIS) [%(default)s]")
    e.add_argument("--summary", action="store_true", help="omit per-object figures")
    e.add_argument("--json-out", default=None, help="also write the JSON here")
    e.set_defaults(func=_evaluate)


def _export(args: argparse.Namespace) -> CommandResult:
    from . import export

    kind = args.export_kind
    if kind == "davis":
        r = export.export_davis(args.tracked, args.output, args.sequence, args.max_objects)
        dropped = f", {r['dropped']} smaller tracks left out (--max-objects {args.max_objects})" if r["dropped"] else ""
        return CommandResult(f"diffseg export davis: {r['frames']} frames, {r['objects']} objects{dropped} -> "
                             f"{args.output}/{r['sequence']}", r)
    if kind == "coco":
        r = export.export_coco(args.tracked, args.output)
        return CommandResult(f"diffseg export coco: {r['tracks']} tracks over {r['frames']} frames -> {args.output}", r)
    r = export.export_mot(args.tracked, args.output)
    return CommandResult(f"diffseg export mot: {r['boxes']} boxes of {r['tracks']} tracks -> {args.output}", r)


def register_export(sub, parent) -> None:
    """Add `export davis | coco | mot` (a tracked video's folder to other tools' formats)."""
    from .export import DAVIS_MAX_OBJECTS

    d = sub.add_parser("davis", parents=[parent], help="DAVIS-2017 results: palette PNGs, objects 1..N",
                       description="Write OUT/<sequence>/<stem>.png as davis2017-evaluation reads them: object "
                                   "ids 1..N in order of first appearance, the N largest tracks.")
    d.add_argument("tracked", help="output folder of diffseg video / track / run (labels/, tracks.json)")
    d.add_argument("-o", "--output", required=True, help="results folder (the sequence goes in a subfolder)")
    d.add_argument("--sequence", default=None, help="the sequence's name [the folder's name]")
    d.add_argument("--max-objects", type=int, default=DAVIS_MAX_OBJECTS,
                   help="keep this many tracks, largest first (DAVIS-2017 unsupervised scores 20; at most 254: 255 is void in DAVIS) "
                        "[%(default)s]")
    d.set_defaults(func=_export)
    c = sub.add_parser("coco", parents=[parent], help="YouTube-VIS / COCO-video JSON, one RLE per track and frame",
                       description="Write the tracks as one JSON: videos, categories (the tracks' names, or "
                                   "'object'), annotations with a COCO RLE, area and box per frame (pycocotools).")
    c.add_argument("tracked", help="output folder of diffseg video / track / run")
    c.add_argument("-o", "--output", required=True, help="JSON file to write")
    c.set_defaults(func=_export)
    m = sub.add_parser("mot", parents=[parent], help="MOTChallenge text: frame,id,x,y,w,h,1,-1,-1,-1",
                       description="Write the tracks' boxes as MOTChallenge text (frames numbered from 1).")
    m.add_argument("tracked", help="output folder of diffseg video / track / run")
    m.add_argument("-o", "--output", required=True, help="text file to write")
    m.set_defaults(func=_export)
