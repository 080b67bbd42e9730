"""Command-line options of the segmenter, shared by `image`, `video`, `volume` and `run`."""
from __future__ import annotations

import argparse

from .config import DEFAULT_MODEL, DTYPES, CaptureConfig, MergeConfig, SegmenterConfig
from .errors import InputError


def _thresholds(text: str) -> tuple[float, ...]:
    try:
        vals = tuple(float(x) for x in text.replace(" ", "").split(",") if x)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers like 1.1 or 1.1,1.1,1.1; got {text!r}")
    if not vals:
        raise argparse.ArgumentTypeError("expected at least one threshold")
    return vals if len(vals) > 1 else vals * 3


def add_segmenter_args(parser: argparse.ArgumentParser) -> None:
    """Add --model --device --dtype --size --kl-threshold --grid --refine ... to ``parser``."""
    g = parser.add_argument_group("segmenter (DiffSeg)")
    g.add_argument("--model", default=DEFAULT_MODEL,
                   help="hub id, local diffusers folder, single .safetensors/.ckpt file, or "
                        "'tiny-random' (random test model: meaningless segments) [%(default)s]")
    g.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N [%(default)s]")
    g.add_argument("--dtype", default="auto", choices=DTYPES,
                   help="UNet/VAE precision; auto = float16 on CUDA, float32 on CPU [%(default)s]")
    g.add_argument("--size", type=int, default=512,
                   help="shorter image side fed to the model, multiple of 64 [%(default)s]")
    g.add_argument("--kl-threshold", type=_thresholds, default=(1.1, 1.1, 1.1),
                   help="symmetric-KL merge threshold, one value or one per iteration [1.1]")
    g.add_argument("--grid", type=int, default=16, help="anchors along the shorter latent side [%(default)s]")
    g.add_argument("--refine", action="store_true", help="K-means refinement of the merged segments")
    g.add_argument("--timestep", type=int, default=300, help="diffusion timestep of the UNet pass [%(default)s]")
    g.add_argument("--add-noise", action="store_true", help="noise the latent to --timestep (original: off)")
    g.add_argument("--batch-size", type=int, default=1, help="images per UNet forward [%(default)s]")
    g.add_argument("--no-fp16-merge", action="store_true",
                   help="first merge in float32 instead of the original's float16 rounding")
    g.add_argument("--allow-unsafe-ckpt", action="store_true",
                   help="allow a pickle .ckpt --model file (can run arbitrary code: trusted files only)")


def segmenter_config_from_args(args: argparse.Namespace) -> SegmenterConfig:
    """Build a validated `SegmenterConfig` from parsed `add_segmenter_args` options."""
    try:
        return SegmenterConfig(
            model=args.model, device=args.device, dtype=args.dtype, size=args.size,
            timestep=args.timestep, add_noise=args.add_noise, batch_size=args.batch_size,
            merge=MergeConfig(kl_threshold=tuple(args.kl_threshold), grid=args.grid,
                              refine=args.refine, faithful_fp16=not args.no_fp16_merge),
            capture=CaptureConfig(),
            allow_unsafe_ckpt=bool(getattr(args, "allow_unsafe_ckpt", False)),
        )
    except (TypeError, ValueError) as exc:
        raise InputError(str(exc)) from exc
