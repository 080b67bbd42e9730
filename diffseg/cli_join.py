"""`diffseg join`: the tracks (video) or labels (volume) of one object in a finished run,
joined into a new output (`temporal.api.join_run`, `volume.api.join_volume`)."""
from __future__ import annotations

import argparse
from pathlib import Path

from diffseg_core.cli_args import CommandResult, add_options, options_config
from diffseg_core.errors import InputError


def _join(args: argparse.Namespace) -> CommandResult:
    from temporal.engine.join import JoinConfig

    config = options_config(args, JoinConfig(), "join")
    if (Path(args.tracked) / "tracks.json").is_file():  # a video run
        if args.image is not None:
            raise InputError(f"--image is for a volume run; {args.tracked} is a video run (its frames: --frames)")
        from diffseg_core.io import output_lock, remove_stale_temporaries
        from temporal.api import join_run

        with output_lock(args.output, "diffseg join"):
            remove_stale_temporaries(args.output)
            res = join_run(args.tracked, args.output, args.frames, config, write_overlay=not args.no_overlay)
        return CommandResult(f"diffseg join: {res.n_frames} frames, {res.n_tracks} tracks in {res.seconds:.1f} s -> "
                             f"{res.out_dir}", {"frames": res.n_frames, "tracks": res.n_tracks, "complete": True,
                                                "seconds": round(res.seconds, 2), "output": str(res.out_dir)})
    from volume.api import join_volume, run_labels

    if Path(args.tracked).is_dir() and run_labels(args.tracked) == Path(args.tracked):
        raise InputError(f"{args.tracked}: neither a video run (a folder with tracks.json) nor a volume run (a label "
                         f"file with labels.json beside it)")
    if args.frames is not None:
        raise InputError(f"--frames is for a video run (a folder with tracks.json); {args.tracked} is not one")

    res = join_volume(args.tracked, args.output, args.image, config)
    return CommandResult(f"diffseg join: {res.n_labels} labels, shape {list(res.shape)}, axis "
                         f"{'zyx'[res.axis]} in {res.seconds:.1f} s -> {res.labels_path}",
                         {"labels": str(res.labels_path), "n_labels": res.n_labels, "shape": list(res.shape),
                          "axis": "zyx"[res.axis], "seconds": round(res.seconds, 2),
                          "labels_json": str(res.json_path) if res.json_path else None})


def register(sub, parent) -> None:
    """Add ``join`` to the ``diffseg`` subcommands."""
    from temporal.engine.join import JoinConfig

    j = sub.add_parser("join", parents=[parent], help="join the tracks / labels of one object in a finished run",
                       description="Join the tracks of a complete diffseg video / track run, or the labels of a "
                                   "diffseg volume / stack run, that trade pixels from frame to frame (slice to "
                                   "slice) and look alike: the pieces of one object that a segmenter cuts "
                                   "differently every frame. Writes a new output with the same files; the run "
                                   "is left as it is.",
                       epilog="examples:\n  diffseg join out/ -o out_joined/\n"
                              "  diffseg join nuclei_run/ -o nuclei_joined.tif --image nuclei.tif",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    j.add_argument("tracked", metavar="RUN", help="output folder of a complete diffseg video / track run, or the "
                                                  "output (folder or label file) of diffseg volume / stack")
    j.add_argument("--frames", default=None, help="video: the run's frames (video or folder) [the source "
                                                  "tracks.json names]")
    j.add_argument("--image", default=None, help="volume: the intensity volume (the grey test, the montage) "
                                                 "[the image labels.json names]")
    add_options(j, JoinConfig(), "join", "join")
    o = j.add_argument_group("outputs")
    o.add_argument("-o", "--output", required=True, help="video: output folder of the joined run; volume: label "
                                                         "file (.nii.gz, .nii, .tif, .npy) or folder")
    o.add_argument("--no-overlay", action="store_true", help="video: do not write overlay.mp4")
    j.set_defaults(func=_join)
