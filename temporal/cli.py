"""`diffseg video`, `diffseg track` and `diffseg evaluate video` (thin wrappers of `temporal.api`)."""
from __future__ import annotations

import argparse
import json
import sys

from diffseg_core.errors import InputError


def add_tracker_args(p: argparse.ArgumentParser) -> None:
    """Frame range and tracker options shared by `video` and `track`."""
    g = p.add_argument_group("frames")
    g.add_argument("--start", type=int, default=0, help="first frame (0-based) [%(default)s]")
    g.add_argument("--end", type=int, default=None, help="stop before this frame [end of video]")
    g.add_argument("--stride", type=int, default=1, help="use every n-th frame [%(default)s]")
    g.add_argument("--max-side", type=int, default=None, help="downscale frames to this longer side")
    t = p.add_argument_group("tracker")
    t.add_argument("--flow", default="dis", choices=("dis", "farneback", "none"),
                   help="optical flow backend; none = IoU of unwarped masks [%(default)s]")
    t.add_argument("--dis-preset", default="ultrafast", choices=("ultrafast", "fast", "medium"),
                   help="DIS flow preset [%(default)s]")
    t.add_argument("--flow-fallback", default="medium", choices=("none", "ultrafast", "fast", "medium"),
                   help="DIS preset a frame pair's flow is redone with when the forward-backward check "
                        "confirms < 70%% of some track (fast motion, blur); none = never [%(default)s]")
    t.add_argument("--work-side", type=int, default=240,
                   help="shorter side (px) of the resolution flow and matching run at; 0 = full [%(default)s]")
    t.add_argument("--w-iou", type=float, default=1.0, help="weight of mask IoU in the cost [%(default)s]")
    t.add_argument("--w-kl", type=float, default=0.5, help="weight of proposal-map KL in the cost [%(default)s]")
    t.add_argument("--min-iou", type=float, default=0.05, help="gate: minimum IoU to match [%(default)s]")
    t.add_argument("--max-cost", type=float, default=0.9, help="gate: maximum cost to match [%(default)s]")
    t.add_argument("--max-missed", type=int, default=30,
                   help="frames a vanished track is remembered for re-identification [%(default)s]")
    t.add_argument("--no-reid", action="store_true", help="never re-identify vanished tracks")
    t.add_argument("--no-splits", action="store_true", help="never give one track several segments")
    t.add_argument("--no-merges", action="store_true", help="never carve merged segments")
    t.add_argument("--no-common-fate", action="store_true",
                   help="do not use motion to tell a track's pieces apart (a segment moving unlike a track "
                        "is otherwise never a piece of it)")
    t.add_argument("--id-correction-window", type=int, default=5,
                   help="frames the output is held back so that a young track found to be a piece or a "
                        "re-appearance of an older track gets the older id in all its frames; 0 = off [%(default)s]")
    t.add_argument("--keyframe-every", type=int, default=1,
                   help="segment every k-th frame, propagate by flow in between [%(default)s]")
    t.add_argument("--baseline", choices=("iou",), default=None,
                   help="use the IoU-only linker (no flow, KL, splits, merges, re-id) for comparison")
    t.add_argument("--id-offset", type=int, default=0, help="ids start at this + 1 [%(default)s]")
    o = p.add_argument_group("outputs")
    o.add_argument("-o", "--output", required=True, help="output folder")
    o.add_argument("--no-overlay", action="store_true", help="do not write overlay.mp4")


def tracker_config_from_args(args: argparse.Namespace):
    from .config import TrackerConfig, iou_only_baseline

    try:
        if args.baseline == "iou":
            return iou_only_baseline(keyframe_every=args.keyframe_every, max_missed=args.max_missed,
                                     work_side=args.work_side, id_offset=args.id_offset)
        return TrackerConfig(
            use_flow=args.flow != "none", flow_backend=args.flow if args.flow != "none" else "dis",
            dis_preset=args.dis_preset, flow_fallback_preset=args.flow_fallback, work_side=args.work_side, w_iou=args.w_iou, w_kl=args.w_kl,
            min_iou=args.min_iou, max_cost=args.max_cost, max_missed=args.max_missed, reid=not args.no_reid,
            handle_splits=not args.no_splits, handle_merges=not args.no_merges, common_fate=not args.no_common_fate,
            keyframe_every=args.keyframe_every, id_offset=args.id_offset,
            id_correction_window=args.id_correction_window)
    except (TypeError, ValueError) as exc:
        raise InputError(str(exc)) from exc


def _report(res) -> int:
    print(json.dumps({"frames": res.n_frames, "tracks": res.n_tracks, "complete": res.complete,
                      "error": res.error, "seconds": round(res.seconds, 2), "output": str(res.out_dir)}))
    if not res.complete:
        print(f"diffseg: stopped early: {res.error}; {res.n_frames} frames written", file=sys.stderr)
        return 2
    return 0


def _video(args: argparse.Namespace) -> int:
    from diffseg_core.cli_args import segmenter_config_from_args

    from .api import segment_video

    cfg = tracker_config_from_args(args)
    seg_cfg = segmenter_config_from_args(args)
    res = segment_video(args.source, args.output, seg_cfg, cfg, start=args.start, end=args.end,
                        stride=args.stride, max_side=args.max_side, id_offset=args.id_offset,
                        write_overlay=not args.no_overlay)
    return _report(res)


def _track(args: argparse.Namespace) -> int:
    from .api import track_segments

    cfg = tracker_config_from_args(args)
    res = track_segments(args.frames, args.segments, args.output, cfg, start=args.start, end=args.end,
                         stride=args.stride, max_side=args.max_side, id_offset=args.id_offset,
                         write_overlay=not args.no_overlay)
    return _report(res)


def register(sub, parent) -> None:
    """Add `video` and `track` to the `diffseg` parser."""
    from diffseg_core.cli_args import add_segmenter_args

    v = sub.add_parser("video", parents=[parent], help="segment a video with stable track ids",
                       description="Segment every frame of a video with DiffSeg and link the segments "
                                   "into tracks with stable ids (optical flow + attention KL). Writes "
                                   "OUT/labels/<stem>.png, OUT/tracks.json, OUT/overlay.mp4.",
                       epilog="example: diffseg video clip.mp4 -o out/ --keyframe-every 4")
    v.add_argument("source", help="video file (mp4, mov, avi, mkv, webm) or folder of frames")
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
    e.add_argument("pred", help="folder of predicted label maps (track ids, 0 = none)")
    e.add_argument("gt", help="folder of ground-truth label maps (object ids, 0 = background)")
    e.add_argument("--bound-th", type=float, default=0.008,
                   help="boundary tolerance as a fraction of the image diagonal (DAVIS) [%(default)s]")
    e.add_argument("--summary", action="store_true", help="omit per-object figures")
    e.add_argument("--json-out", default=None, help="also write the JSON here")
    e.set_defaults(func=_evaluate)
