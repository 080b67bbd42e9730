"""Command-line options of the segmenter, shared by `image`, `video`, `volume` and `run`."""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import Any, Callable

from .config import DEFAULT_MODEL, DTYPES, CaptureConfig, MergeConfig, NamingConfig, SegmenterConfig
from .errors import InputError

#: The captioner of ``--caption`` (BLIP base, as the original DiffSeg's semantic mode).
DEFAULT_CAPTIONER = "Salesforce/blip-image-captioning-base"


@dataclass
class CommandResult:
    """What a subcommand did, reported the same way by every command: ``line`` (one human
    sentence) on stderr, ``doc`` (JSON-able) on stdout with ``--json``, ``code`` the exit code.

    Attributes:
        line: ``"diffseg video: 24 frames, 5 tracks in 3.8 s -> out"``.
        doc: the machine summary (counts, paths, seconds).
        code: 0 ok, 2 when something failed (``line`` then says what).
    """

    line: str
    doc: dict = field(default_factory=dict)
    code: int = 0


def _thresholds(text: str) -> tuple[float, ...]:
    try:
        vals = tuple(float(x) for x in text.replace(" ", "").split(",") if x)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers like 1.1 or 1.1,1.1,1.1; got {text!r}")
    if not vals:
        raise argparse.ArgumentTypeError("expected at least one threshold")
    return vals if len(vals) > 1 else vals * 3


def background_value(text: str) -> "int | None":
    """argparse type of ``--background``: an integer label value, or none."""
    if text.strip().lower() in ("none", "no", "-"):
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer label value or 'none'; got {text!r}") from None


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
    n = parser.add_argument_group("names (open vocabulary, from cross-attention)")
    n.add_argument("--vocab", metavar="WORDS", help="name segments with these words: 'person,dog,grass'")
    n.add_argument("--vocab-file", metavar="FILE", help="the words, one per line ('#' comments)")
    n.add_argument("--caption", action="store_true",
                   help="add the nouns of a caption of the image (video: first frame; volume: middle slice) "
                        "to the vocabulary (needs --captioner's weights)")
    n.add_argument("--captioner", default=DEFAULT_CAPTIONER, metavar="MODEL",
                   help="BLIP captioning model for --caption: hub id or local folder [%(default)s]")
    n.add_argument("--voting", default="mean", choices=("mean", "majority"),
                   help="how a segment's pixels vote for a word [%(default)s]")
    n.add_argument("--min-score", type=float, default=NamingConfig.min_score,
                   help="a name's lead over the runner-up word needed to name a segment, else 'unknown' [%(default)s]")
    n.add_argument("--same-pass", action="store_true",
                   help="segments and names from one prompted UNet pass (faster; the prompt changes the segments)")


def segmenter_config_from_args(args: argparse.Namespace,
                               caption_image: "Callable[[], Any] | None" = None) -> SegmenterConfig:
    """Build a validated `SegmenterConfig` from parsed `add_segmenter_args` options.

    Args:
        caption_image: with ``--caption``, gives the uint8 RGB image whose caption's nouns
            join the vocabulary (a video's first frame, a volume's middle slice); None where
            a command cannot caption (then ``--caption`` is an error).
    """
    extra: tuple[str, ...] = ()
    if getattr(args, "caption", False):
        if caption_image is None:
            raise InputError("--caption is not available with this command (each input would need its own "
                             "vocabulary): give the words with --vocab or --vocab-file")
        from .caption import Captioner

        extra = Captioner(args.captioner, args.device).nouns(caption_image())
    try:
        return SegmenterConfig(
            model=args.model, device=args.device, dtype=args.dtype, size=args.size,
            timestep=args.timestep, add_noise=args.add_noise, batch_size=args.batch_size,
            merge=MergeConfig(kl_threshold=tuple(args.kl_threshold), grid=args.grid,
                              refine=args.refine, faithful_fp16=not args.no_fp16_merge),
            capture=CaptureConfig(),
            naming=naming_config_from_args(args, extra),
            allow_unsafe_ckpt=bool(getattr(args, "allow_unsafe_ckpt", False)),
        )
    except (TypeError, ValueError) as exc:
        raise InputError(str(exc)) from exc


def naming_config_from_args(args: argparse.Namespace, extra: "tuple[str, ...]" = ()) -> NamingConfig:
    """`NamingConfig` of ``--vocab`` / ``--vocab-file`` (plus ``extra`` words, e.g. a
    caption's nouns) and the voting options; no words: no names."""
    from .naming import parse_vocabulary, read_vocabulary

    words: list[str] = []
    if getattr(args, "vocab", None):
        words += parse_vocabulary(args.vocab)
    if getattr(args, "vocab_file", None):
        words += read_vocabulary(args.vocab_file)
    words += list(extra)
    return NamingConfig(vocabulary=parse_vocabulary(words) if words else (),
                        voting=getattr(args, "voting", "mean"),
                        min_score=getattr(args, "min_score", NamingConfig.min_score),
                        same_pass=bool(getattr(args, "same_pass", False)))


def _attribute_help(cls: type) -> dict[str, str]:
    """``{field: first sentence}`` from the ``Attributes:`` section of ``cls``'s docstring."""
    import inspect
    import re

    doc = inspect.getdoc(cls) or ""
    if "Attributes:" not in doc:
        return {}
    out: dict[str, str] = {}
    name = None
    for line in doc.split("Attributes:", 1)[1].splitlines():
        m = re.match(r"^    (\w+): (.*)$", line)
        if m:
            name, text = m.group(1), m.group(2)
            out[name] = text
        elif name and line.startswith("        "):
            out[name] += " " + line.strip()
        elif line.strip() and not line.startswith(" "):
            break
    return {k: re.split(r"(?<=[.;])\s", v, 1)[0].rstrip(".;") for k, v in out.items()}


def add_config_args(parser: argparse.ArgumentParser, preset: Any, title: str,
                    groups: "tuple[str, ...] | None" = None) -> None:
    """One option per field of a config made of group dataclasses (``preset``: an instance
    whose fields are dataclasses, e.g. `temporal.engine.EngineConfig`): ``--field-name``,
    typed from the field, help from the group's docstring, default shown from ``preset``.
    Options left out keep the preset's value (see `config_from_args`); ``groups`` limits
    the options to those groups (None: all)."""
    import dataclasses
    import typing

    for group in dataclasses.fields(preset):
        if groups is not None and group.name not in groups:
            continue
        sub = getattr(preset, group.name)
        helps = _attribute_help(type(sub))
        hints = typing.get_type_hints(type(sub))
        g = parser.add_argument_group(f"{title}: {group.name}")
        for f in dataclasses.fields(sub):
            hint, default = hints[f.name], getattr(sub, f.name)
            kw: dict[str, Any] = {"default": None, "dest": f"cfg_{group.name}__{f.name}",
                                  "help": f"{helps.get(f.name, '')} [{default}]".replace("%", "%%")}
            if typing.get_origin(hint) is typing.Literal:
                kw["choices"] = typing.get_args(hint)
            elif hint is bool:
                kw["action"] = argparse.BooleanOptionalAction
            else:
                kw["type"], kw["metavar"] = hint, f.name.upper()
            g.add_argument("--" + f.name.replace("_", "-"), **kw)


def config_from_args(args: argparse.Namespace, preset: Any) -> Any:
    """``preset`` with the options of `add_config_args` that were given on the command line."""
    changes: dict[str, dict[str, Any]] = {}
    for key, value in vars(args).items():
        if key.startswith("cfg_") and value is not None:
            group, name = key[4:].split("__", 1)
            changes.setdefault(group, {})[name] = value
    try:
        return preset.replace(**changes) if changes else preset
    except (TypeError, ValueError) as exc:
        raise InputError(str(exc)) from exc
