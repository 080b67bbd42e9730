"""Frozen configuration dataclasses with the paper's defaults."""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Literal

from .errors import InputError, look_up_option

DEFAULT_MODEL = "CompVis/stable-diffusion-v1-4"
DTYPES = ("auto", "float32", "float16", "bfloat16")
DEVICES_HINT = "auto, cpu, cuda, cuda:N"


def cli(spec: "dict[str, Any] | bool" = True, **kw: Any) -> dict[str, Any]:
    """Field metadata for the command line (`diffseg_core.cli_args.add_options`):
    ``field(default=..., metadata=cli(flag="--vocab", type=parse_vocabulary))``. Keys:
    ``flag`` (the option, default ``--field-name``), ``aliases``, ``type`` (text -> value),
    ``metavar``, ``const`` (a switch that sets this value), ``title`` (a nested group's
    heading), ``help`` (instead of the docstring's sentence). ``cli(False)``: no option (say
    why beside it)."""
    return {"cli": False} if spec is False else {"cli": dict(kw)}


def parse_thresholds(text: str) -> tuple[float, ...]:
    """``"1.1"`` or ``"1.1,1.0,0.9"`` -> KL thresholds (one value: the same for 3 iterations)."""
    import argparse

    try:
        vals = tuple(float(x) for x in text.replace(" ", "").split(",") if x)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers like 1.1 or 1.1,1.1,1.1; got {text!r}") from None
    if not vals:
        raise argparse.ArgumentTypeError("expected at least one threshold")
    return vals if len(vals) > 1 else vals * 3


def parse_background(text: "str | int | None") -> "int | None":
    """A label value meaning "no segment" (``"0"``), or None for ``"none"`` (every value is a
    segment)."""
    if text is None or str(text).strip().lower() in ("none", "no", "-"):
        return None
    try:
        return int(text)
    except ValueError:
        raise InputError(f"expected an integer label value or 'none'; got {text!r}") from None


def _vocabulary(text: str) -> tuple[str, ...]:
    from .naming import parse_vocabulary

    return parse_vocabulary(text)


class ConfigDict:
    """``to_dict``/``from_dict`` for frozen config dataclasses (tuples become lists; unknown
    keys are refused with the list of valid ones)."""

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)  # type: ignore[arg-type]
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]):
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(d) - names)
        if unknown:
            raise InputError(
                f"unknown {cls.__name__} option(s) {unknown}; expected some of {sorted(names)}"
            )
        return cls(**d)


@dataclass(frozen=True)
class MergeConfig(ConfigDict):
    """The post-UNet algorithm: iterative KL merging, NMS and optional K-means refinement.

    Attributes:
        kl_threshold: symmetric-KL threshold of each merge iteration (paper: ``[1.1] * 3``).
        grid: anchors along the shorter side of the latent grid (paper: 16, i.e. 16x16 = 256
            anchors on a square 64x64 latent).
        refine: K-means refinement of the merged proposals (the original's ``refine=True``).
        faithful_fp16: round anchors and maps of the first merge to float16 before the KL, as
            the original implementation does (it reproduces the original's labels exactly);
            ``False`` computes in float32 with eps clamping.
        refine_max_iter: Lloyd iterations of the K-means refinement (sklearn default 300).
    """

    kl_threshold: tuple[float, ...] = field(default=(1.1, 1.1, 1.1),
                                            metadata=cli(type=parse_thresholds, metavar="T[,T,T]"))
    grid: int = 16
    refine: bool = False
    faithful_fp16: bool = field(default=True, metadata=cli(
        flag="--no-fp16-merge", help="first merge in float32 instead of the original's float16 rounding"))
    refine_max_iter: int = 300

    def __post_init__(self) -> None:
        kl = self.kl_threshold
        if isinstance(kl, (int, float)):
            kl = (float(kl),) * 3
        kl = tuple(float(x) for x in kl)
        object.__setattr__(self, "kl_threshold", kl)
        if not kl or any(not (x > 0) for x in kl):
            raise InputError(f"kl_threshold must be one or more positive numbers; got {list(kl)}")
        if int(self.grid) < 1:
            raise InputError(f"grid must be >= 1; got {self.grid}")
        if int(self.refine_max_iter) < 1:
            raise InputError(f"refine_max_iter must be >= 1; got {self.refine_max_iter}")


@dataclass(frozen=True)
class CaptureConfig(ConfigDict):
    """How self-attention is captured from the UNet.

    Attributes:
        query_chunk: queries per chunk when computing attention probabilities; bounds the
            memory of the ``(batch*heads, chunk, N)`` score tensor on big maps. 256: the SD
            1.5 UNet with capture on 2 CPU cores, 512 px, was 6 % faster in float32 and 7 %
            in bfloat16 than with 1024 (benchmarks/RESULTS.md); 128-512 within 2 %.
        layers: which attention layers to capture: ``"attn1"`` (self-attention, the paper).
    """

    query_chunk: int = 256
    layers: Literal["attn1"] = field(default="attn1", metadata=cli(False))  # one value: nothing to choose

    def __post_init__(self) -> None:
        if int(self.query_chunk) < 1:
            raise InputError(f"query_chunk must be >= 1; got {self.query_chunk}")
        look_up_option(self.layers, ("attn1",), "capture layers")


@dataclass(frozen=True)
class NamingConfig(ConfigDict):
    """Names for segments from the cross-attention of a vocabulary (`diffseg_core.naming`).

    Attributes:
        vocabulary: the words segments may be named with (``("person", "dog", "grass")``);
            empty = segments are not named (their ``name`` is null).
        voting: ``"mean"`` (the mean share of each word over a segment's pixels) or
            ``"majority"`` (the share of its pixels where the word leads), as the original.
        min_score: a segment (track, 3D label) is named only if its best word's share of
            the evidence leads the runner-up's by at least this much (0.1: ten points);
            otherwise its name is None ("unknown").
        same_pass: take the segments from the prompted UNet pass too (one pass, as the
            original's semantic mode: the prompt changes the self-attention, so the segments
            differ from unnamed ones); False = a second, prompted pass gives only the names
            and the segments are those of the empty prompt.
    """

    vocabulary: tuple[str, ...] = field(default=(), metadata=cli(
        flag="--vocab", type=_vocabulary, metavar="WORDS",
        help="words to name the segments with, comma-separated: 'person,dog,grass'"))
    voting: Literal["mean", "majority"] = "mean"
    min_score: float = 0.1
    same_pass: bool = False

    def __post_init__(self) -> None:
        v = self.vocabulary
        if isinstance(v, str) or v:
            from .naming import parse_vocabulary

            v = parse_vocabulary(v)
        object.__setattr__(self, "vocabulary", tuple(v))
        look_up_option(self.voting, ("mean", "majority"), "voting")
        if not 0.0 <= float(self.min_score) <= 1.0:
            raise InputError(f"min_score must be in [0, 1]; got {self.min_score}")


@dataclass(frozen=True)
class SegmenterConfig(ConfigDict):
    """Everything `DiffSegSegmenter` needs: model, input size, UNet pass and merging.

    Attributes:
        model: hub id, local diffusers folder, single ``.safetensors``/``.ckpt`` file, or
            ``"tiny-random"`` (test model with random weights: meaningless segments).
        device: ``"auto"`` (CUDA if available), ``"cpu"``, ``"cuda"``, ``"cuda:N"``.
        dtype: UNet/VAE precision; ``"auto"`` = float16 on CUDA, float32 on CPU.
        size: the image's shorter side is resized to this (rounded to a multiple of 64, so
            the latent sides are multiples of 8); the longer side keeps the aspect ratio.
        timestep: diffusion timestep of the single UNet pass (original: 300).
        add_noise: add scheduler noise at ``timestep`` to the latent (the original does not).
        batch_size: images per UNet forward.
        merge: the post-UNet algorithm.
        capture: attention capture settings.
        naming: names for segments from a vocabulary (none by default).
        allow_unsafe_ckpt: allow loading a single-file ``.ckpt`` (a Python pickle, which can
            run arbitrary code): only for trusted files. ``.safetensors`` never needs it.
        revision: hub revision (branch, tag or commit) of a hub ``model``; None = the default.
        variant: weights variant of a hub id or folder (``"fp16"``: the half-size files
            ``*.fp16.safetensors``); None = the full files.
    """

    model: str = DEFAULT_MODEL
    device: str = "auto"
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    size: int = 512
    timestep: int = 300
    add_noise: bool = False
    batch_size: int = 1
    merge: MergeConfig = field(default_factory=MergeConfig, metadata=cli(title="segmenter: merging"))
    capture: CaptureConfig = field(default_factory=CaptureConfig, metadata=cli(title="segmenter: attention capture"))
    naming: NamingConfig = field(default_factory=NamingConfig,
                                 metadata=cli(title="names (open vocabulary, from cross-attention)"))
    allow_unsafe_ckpt: bool = False
    revision: "str | None" = None
    variant: "str | None" = None

    def __post_init__(self) -> None:
        look_up_option(self.dtype, DTYPES, "dtype")
        if int(self.size) < 64:
            raise InputError(f"size must be >= 64 pixels; got {self.size}")
        if not 0 <= int(self.timestep) < 1000:
            raise InputError(f"timestep must be in [0, 1000); got {self.timestep}")
        if int(self.batch_size) < 1:
            raise InputError(f"batch_size must be >= 1; got {self.batch_size}")
        if isinstance(self.merge, dict):
            object.__setattr__(self, "merge", MergeConfig.from_dict(self.merge))
        if isinstance(self.capture, dict):
            object.__setattr__(self, "capture", CaptureConfig.from_dict(self.capture))
        if isinstance(self.naming, dict):
            object.__setattr__(self, "naming", NamingConfig.from_dict(self.naming))


def config_hash(*parts: Any) -> str:
    """Stable 16-hex-digit hash of JSON-serialisable parts (dict keys sorted)."""
    blob = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]
