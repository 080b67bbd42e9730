"""`DiffSegSegmenter`: RGB images -> `Segmentation` (the only module touching UNet and VAE).

Per image: resize so the shorter side is ``config.size`` and the longer keeps the aspect
ratio (both rounded to multiples of 64, so latent sides are multiples of 8; no centre crop,
unlike the original), VAE-encode (``latent_dist.mean * scaling_factor``), run the UNet once at
``config.timestep`` with the empty-prompt embedding while `capture_self_attention` records
every ``attn1`` layer, aggregate the resolutions, then merge + NMS at the input's own size.

With a vocabulary (``config.naming``), a second UNet pass with the vocabulary as prompt
captures the cross-attention of its words (self-attention layers keep their fused kernels
there) and every segment gets a name (`diffseg_core.naming`); with ``same_pass`` one
prompted pass gives both the segments and the names.

Images of different sizes in one call are grouped by model input size and sent through the
UNet ``config.batch_size`` at a time. The UNet may run in float16/bfloat16; the attention is
accumulated and post-processed in float32. Results are numpy on the CPU.
"""
from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .aggregate import aggregate, aggregate_cross
from .capture import capture_attention
from .config import SegmenterConfig
from .errors import InputError
from .models import LoadedModel, load_model
from .naming import PromptPlan, parse_vocabulary, pick_names, plan_prompts, word_maps, word_scores
from .pipeline import segment_aggregated
from .runtime import tune_cpu_allocator
from .types import AttentionMaps, SegmentNames, Segmentation

__all__ = ["DiffSegSegmenter", "model_input_size", "MAX_LATENT_TOKENS", "as_image_list"]

#: Refuse model inputs whose finest attention has more tokens than this (a 1024x1024 px
#: input): the captured ``(N, N)`` map and the aggregated ``(N, h, w)`` tensor grow as N^2.
MAX_LATENT_TOKENS = 128 * 128


def model_input_size(image_hw: tuple[int, int], size: int = 512, multiple: int = 64) -> tuple[int, int]:
    """The ``(H', W')`` an image of ``image_hw`` is resized to before the VAE.

    The shorter side becomes ``size`` and the longer side keeps the aspect ratio; both are
    rounded to the nearest multiple of ``multiple`` (at least ``multiple``).

    Example:
        >>> model_input_size((480, 854))
        (512, 896)
    """
    h, w = int(image_hw[0]), int(image_hw[1])
    if h < 1 or w < 1:
        raise ValueError(f"image_hw must be positive; got {image_hw}")
    short = max(multiple, int(round(size / multiple)) * multiple)

    def side(n: int) -> int:
        return max(multiple, int(round(short * n / min(h, w) / multiple)) * multiple)

    return (short, side(w)) if h <= w else (side(h), short)


def as_image_list(images: Any, name: str = "images") -> list[torch.Tensor]:
    """Validate and normalise images to a list of ``(3, H, W)`` CPU tensors: float32 in
    [0, 1], or a uint8 view of a uint8 image (made float after the resize to the model's
    input, `_model_input`, so a huge image is never copied whole as float).

    Accepts one image or a list of images: uint8 ``(H, W, 3)`` (numpy or torch), a PIL
    image (any mode: converted to RGB like `diffseg_core.io.read_image`), an image file's
    path (read with `diffseg_core.io.read_image`), float ``(3, H, W)`` in [0, 1], or a float
    batch ``(B, 3, H, W)`` in [0, 1]; also a uint8 batch ``(B, H, W, 3)`` numpy array.

    Raises:
        InputError: wrong shape, dtype, NaN/inf, values outside [0, 1], empty input.
    """
    items: list[Any]
    if isinstance(images, (np.ndarray, torch.Tensor)):
        if images.ndim == 4:
            items = list(images)
        else:
            items = [images]
    elif isinstance(images, (list, tuple)):
        items = list(images)
    elif _is_pil(images) or isinstance(images, (str, os.PathLike)):
        items = [images]
    else:
        raise InputError(f"`{name}` must be an array, a tensor, a PIL image, a path or a list of them; got {type(images).__name__}")
    if not items:
        raise InputError(f"`{name}` is empty; expected at least one image")
    return [_as_chw(x, f"{name}[{i}]") for i, x in enumerate(items)]


def _is_pil(x: Any) -> bool:
    """A PIL image (checked without importing PIL)."""
    return type(x).__module__.startswith("PIL.") and hasattr(x, "convert")


def _as_chw(x: Any, name: str) -> torch.Tensor:
    if isinstance(x, (str, os.PathLike)):
        from .io import read_image

        x = read_image(x)
    if _is_pil(x):  # any mode
        from .io import to_rgb_uint8

        x = to_rgb_uint8(np.asarray(x if x.mode in ("RGB", "L", "I;16", "I", "F") else x.convert("RGB")), name)
    if isinstance(x, np.ndarray):
        t = torch.from_numpy(np.require(x, requirements=("C", "W")))
    elif isinstance(x, torch.Tensor):
        t = x.detach().cpu()
    else:
        raise InputError(f"`{name}` must be a numpy array or torch tensor; got {type(x).__name__}")
    expect = "(H, W, 3) uint8 or (3, H, W) float in [0, 1]"
    if t.dtype == torch.uint8:
        if t.ndim != 3 or t.shape[2] != 3:
            raise InputError(f"`{name}` must be {expect}; got shape {tuple(t.shape)} dtype uint8")
        if t.shape[0] < 1 or t.shape[1] < 1:
            raise InputError(f"`{name}` is empty; got shape {tuple(t.shape)}")
        return t.permute(2, 0, 1)  # uint8 view: made float after the resize (`_model_input`)
    elif t.is_floating_point():
        if t.ndim != 3 or t.shape[0] != 3:
            raise InputError(f"`{name}` must be {expect}; got shape {tuple(t.shape)} dtype {t.dtype}")
        t = t.float()
        if not bool(torch.isfinite(t).all()):
            raise InputError(f"`{name}` holds NaN or infinite values")
        lo, hi = float(t.min()), float(t.max())
        if lo < -1e-3 or hi > 1 + 1e-3:
            raise InputError(f"`{name}` float values must be in [0, 1]; got range [{lo:.3g}, {hi:.3g}]")
        t = t.clamp(0, 1)
    else:
        raise InputError(f"`{name}` must be {expect}; got shape {tuple(t.shape)} dtype {t.dtype}")
    if t.shape[1] < 1 or t.shape[2] < 1:
        raise InputError(f"`{name}` is empty; got shape {tuple(t.shape)}")
    return t.contiguous()


#: a uint8 image more than this many times the model input on both sides is first shrunk
#: by area averaging on uint8 (a 16000 x 16000 RGB image in float32 would take 3 GiB)
PRESHRINK = 4


def _model_input(image: torch.Tensor, hw: tuple[int, int], device: Any) -> torch.Tensor:
    """float32 ``(3, *hw)`` in [0, 1]: ``image`` (uint8 ``(3, H, W)`` view or float) resized
    with antialiasing. Huge uint8 images are first shrunk to ``PRESHRINK`` x the input size
    on uint8 (OpenCV area averaging), so no float copy of the whole image is made."""
    if image.dtype == torch.uint8:
        H, W = int(image.shape[1]), int(image.shape[2])
        if H > PRESHRINK * hw[0] and W > PRESHRINK * hw[1]:
            import cv2

            small = cv2.resize(image.permute(1, 2, 0).numpy(), (PRESHRINK * hw[1], PRESHRINK * hw[0]),
                               interpolation=cv2.INTER_AREA)
            image = torch.from_numpy(small).permute(2, 0, 1)
        image = image.float().div_(255.0)
    return F.interpolate(image[None].to(device), size=hw, mode="bilinear", align_corners=False, antialias=True)[0]


@dataclass
class _Aggregated:
    index: int
    maps: torch.Tensor  # float32 (N, h, w) on the compute device
    image_hw: tuple[int, int]
    input_hw: tuple[int, int]
    latent_hw: tuple[int, int]  # finest attention grid (= the VAE latent for SD)
    timings: dict[str, float]
    word_maps: "np.ndarray | None" = None  # float32 (V, h, w) with a vocabulary


class DiffSegSegmenter:
    """DiffSeg on a Stable Diffusion UNet: RGB images in, `Segmentation`s out.

    Args:
        config: model, device, precision, input size, UNet pass and merge settings.
        model: an already loaded `LoadedModel` (default: `load_model` from ``config``, lazily,
            on first use, cached per (model, device, dtype)).

    Example:
        >>> seg = DiffSegSegmenter(SegmenterConfig(model="tiny-random"))
        >>> out = seg.segment_one(np.zeros((256, 384, 3), np.uint8))
        >>> out.labels.shape, out.labels.dtype
        ((256, 384), dtype('int32'))
    """

    def __init__(self, config: "SegmenterConfig | None" = None, *, model: "LoadedModel | None" = None) -> None:
        self.config = config or SegmenterConfig()
        self._model = model
        self._prompts: "tuple[tuple[str, ...], PromptPlan, torch.Tensor] | None" = None

    @classmethod
    def from_pipe(cls, pipe: Any, config: "SegmenterConfig | None" = None) -> "DiffSegSegmenter":
        """A segmenter on an already loaded diffusers Stable Diffusion pipeline (no second
        copy of the weights): ``DiffSegSegmenter.from_pipe(StableDiffusionPipeline.from_pretrained(...))``.
        ``config`` gives the segmenter settings (size, merge, names); its ``device`` and
        ``dtype`` apply only when they are not ``"auto"`` (else the pipeline's stay)."""
        from .models import model_from_pipe

        c = config or SegmenterConfig()
        model = model_from_pipe(pipe, None if c.device == "auto" else c.device, None if c.dtype == "auto" else c.dtype)
        return cls(dataclasses.replace(c, model=model.model_id), model=model)

    # ------------------------------------------------------------------ model
    @property
    def model(self) -> LoadedModel:
        """The loaded SD components (loaded on first access)."""
        if self._model is None:
            c = self.config
            self._model = load_model(c.model, c.device, c.dtype, allow_pickle=c.allow_unsafe_ckpt,
                                     revision=c.revision, variant=c.variant)
        return self._model

    @property
    def device(self) -> torch.device:
        return self.model.device

    def input_size(self, image_hw: tuple[int, int]) -> tuple[int, int]:
        """Model input ``(H', W')`` for an image of ``image_hw`` (see `model_input_size`)."""
        return model_input_size(image_hw, self.config.size, 8 * self.model.vae_scale_factor)

    # ------------------------------------------------------------------ public API
    def segment(self, images: Any, generator: "torch.Generator | None" = None,
                compact_labels: bool = False, vocabulary: Any = None) -> list[Segmentation]:
        """Segment images.

        Args:
            images: list of uint8 ``(H, W, 3)`` arrays, or float ``(B, 3, H, W)`` / ``(3, H, W)``
                tensors in [0, 1] (sizes may differ between list items).
            generator: randomness of the optional latent noise (``config.add_noise``).
            compact_labels: labels in the narrowest integer type that holds ``0..K`` (uint8
                for K <= 255) instead of int32: a quarter of the memory for huge images.
            vocabulary: words to name the segments with in this call (a list or
                ``"a,b,c"``), instead of ``config.naming.vocabulary``; ``()`` = no names.

        Returns:
            One `Segmentation` per image, in input order: int32 (or compact) labels ``(H, W)``
            at the image's own size (0..K-1), float32 proposals ``(K, h, w)`` on the latent grid,
            ``meta`` with model id, sizes and timings (seconds), and ``names``
            (`SegmentNames`) when there is a vocabulary.
        """
        vocab = None if vocabulary is None else (parse_vocabulary(vocabulary) if len(vocabulary) else ())
        return self._segment(as_image_list(images), generator, compact_labels, vocab)

    @torch.inference_mode()
    def _segment(self, chw: list[torch.Tensor], generator: "torch.Generator | None",
                 compact_labels: bool = False, vocab: "tuple[str, ...] | None" = None) -> list[Segmentation]:
        out: list[Segmentation | None] = [None] * len(chw)
        vocab = self.config.naming.vocabulary if vocab is None else vocab
        for item in self._aggregated(chw, generator, vocab):
            t0 = time.perf_counter()
            seg = segment_aggregated(item.maps, self.config.merge, out_size=item.image_hw,
                                     compact_labels=compact_labels)
            item.maps = None  # type: ignore[assignment]  # free (N, h, w) early
            seg = seg.numpy() if not isinstance(seg.labels, np.ndarray) else seg
            if item.word_maps is not None:
                seg.names = self._names(seg.labels, seg.num_segments, item.word_maps, vocab)
            timings = dict(item.timings, post_s=time.perf_counter() - t0)
            seg.meta.update(self._meta(item, timings))
            out[item.index] = seg
        return [s for s in out if s is not None]

    def segment_one(self, image: Any, generator: "torch.Generator | None" = None) -> Segmentation:
        """Segment a single uint8 ``(H, W, 3)`` or float ``(3, H, W)`` image (see `segment`)."""
        chw = as_image_list(image, "image")
        if len(chw) != 1:
            raise InputError(f"`image` must be one image; got a batch of {len(chw)} (use segment())")
        return self._segment(chw, generator)[0]

    @torch.inference_mode()
    def attention(self, images: Any, generator: "torch.Generator | None" = None) -> list[AttentionMaps]:
        """Aggregated self-attention per image: float32 ``(N, h, w)`` on the CPU, ``N = h*w``."""
        chw = as_image_list(images)
        out: list[AttentionMaps | None] = [None] * len(chw)
        for item in self._aggregated(chw, generator):
            out[item.index] = AttentionMaps(maps=item.maps.cpu().numpy(), latent_hw=tuple(item.maps.shape[1:]))
        return [a for a in out if a is not None]

    @torch.inference_mode()
    def word_maps(self, images: Any, vocabulary: Any = None,
                  generator: "torch.Generator | None" = None) -> list[np.ndarray]:
        """Cross-attention of every vocabulary word per image: float32 ``(V, h, w)`` on the
        finest attention grid (each pixel's values over the words' tokens come from one
        distribution over the prompt); `diffseg_core.naming.name_segments` names any label
        map with them.

        Args:
            vocabulary: words (a list, or ``"a,b,c"``); default ``config.naming.vocabulary``.
        """
        vocab = parse_vocabulary(vocabulary if vocabulary is not None else self.config.naming.vocabulary)
        chw = as_image_list(images)
        out: list[np.ndarray | None] = [None] * len(chw)
        for item in self._aggregated(chw, generator, vocab, segments=False):
            out[item.index] = item.word_maps
        return [a for a in out if a is not None]

    # ------------------------------------------------------------------ internals
    def _names(self, labels: np.ndarray, k: int, maps: np.ndarray, vocab: tuple[str, ...]) -> SegmentNames:
        nc = self.config.naming
        ids, sc, _ = word_scores(labels, maps, nc.voting)
        scores = np.zeros((k, len(vocab)), np.float32)
        scores[ids[ids < k]] = sc[ids < k]
        return SegmentNames(vocabulary=vocab, scores=scores,
                            names=[n for n, _ in pick_names(scores, vocab, nc.min_score)])

    def _prompt_embeddings(self, vocab: tuple[str, ...]) -> tuple[PromptPlan, torch.Tensor]:
        """The vocabulary's prompts and their embeddings ``(P, L, C)`` (kept for the next call)."""
        if self._prompts is None or self._prompts[0] != vocab:
            text = self.model.text()
            plan = plan_prompts(vocab, text.tokenize, bos=text.bos, eos=text.eos, pad=text.pad,
                                separator=text.separator, max_length=text.max_length)
            self._prompts = (vocab, plan, text.encode(plan.ids))
        return self._prompts[1], self._prompts[2]

    def _meta(self, item: _Aggregated, timings: dict[str, float]) -> dict[str, Any]:
        m = self.model
        return {
            "model": m.model_id, "random_weights": m.is_random, "device": str(m.device),
            "dtype": str(m.dtype).replace("torch.", ""), "input_hw": list(item.input_hw),
            "latent_hw": list(item.latent_hw),
            "timestep": self.config.timestep, "add_noise": self.config.add_noise,
            "timings": timings,
        }

    def _aggregated(self, images: list[torch.Tensor], generator: "torch.Generator | None",
                    vocabulary: "tuple[str, ...] | None" = None, segments: bool = True) -> Iterator[_Aggregated]:
        """Run the UNet in size groups and batches; yield each image's aggregated attention
        (and its word maps when there is a vocabulary: ``config.naming``'s by default)."""
        vocab = self.config.naming.vocabulary if vocabulary is None else vocabulary
        groups: dict[tuple[int, int], list[int]] = {}
        for i, im in enumerate(images):
            groups.setdefault(self.input_size((int(im.shape[1]), int(im.shape[2]))), []).append(i)
        factor = self.model.vae_scale_factor
        if self.device.type == "cpu":
            tune_cpu_allocator()  # big temporaries reused, not faulted in again each frame
        for hw, idx in groups.items():
            lh, lw = hw[0] // factor, hw[1] // factor
            if lh * lw > MAX_LATENT_TOKENS:
                shapes = sorted({tuple(images[i].shape[1:]) for i in idx})
                raise InputError(
                    f"image(s) of size {', '.join(f'{h}x{w}' for h, w in shapes)} would be resized to "
                    f"{hw[0]}x{hw[1]} (latent {lh}x{lw} = {lh * lw} tokens, above {MAX_LATENT_TOKENS}): the "
                    f"aspect ratio is too extreme for --size {self.config.size}; crop the image or use a smaller --size")
            bs = int(self.config.batch_size)
            for s in range(0, len(idx), bs):
                chunk = idx[s:s + bs]
                yield from self._run_batch(images, chunk, hw, generator, vocab, segments)

    def _run_batch(self, images: list[torch.Tensor], idx: Sequence[int], hw: tuple[int, int],
                   generator: "torch.Generator | None", vocab: tuple[str, ...] = (),
                   segments: bool = True) -> Iterator[_Aggregated]:
        m, c = self.model, self.config
        dev, dt = m.device, m.dtype
        t0 = time.perf_counter()
        x = torch.stack([_model_input(images[i], hw, dev) for i in idx])
        x = (x.clamp(0, 1) * 2.0 - 1.0).to(dt).contiguous(memory_format=torch.channels_last)  # as the weights
        latents = m.vae.encode(x).latent_dist.mean * m.scaling_factor
        _sync(dev)
        t_enc = time.perf_counter()
        timestep = torch.tensor([int(c.timestep)], device=dev, dtype=torch.long)
        if c.add_noise:
            gdev = generator.device if generator is not None else torch.device("cpu")
            noise = torch.randn(latents.shape, generator=generator, device=gdev, dtype=torch.float32)
            latents = m.scheduler.add_noise(latents.float(), noise.to(dev), timestep).to(dt)
        latent_hw = (int(latents.shape[2]), int(latents.shape[3]))
        n = len(idx)
        plan, pemb = self._prompt_embeddings(vocab) if vocab else (None, None)
        same = plan is not None and segments and c.naming.same_pass
        if same and plan.num_prompts > 1:
            raise InputError(f"the vocabulary needs {plan.num_prompts} prompts of {plan.ids.shape[1]} tokens; "
                             "same_pass takes one: shorten the vocabulary or name in a second pass")
        cross: "tuple[list, list] | None" = None
        agg, attn_hw = None, None
        if segments:
            emb = (pemb if same else m.empty_embedding).expand(n, -1, -1)
            with capture_attention(m.unet, latent_hw, c.capture, cross_attention=same) as store:
                m.unet(latents, timestep, encoder_hidden_states=emb)
            maps, shapes = store.maps()
            cross = store.cross_maps() if same else None
            store.reset()
            # The finest attention grid: the latent itself for SD; coarser for models without
            # attention at full latent resolution (the tiny test model).
            attn_hw = shapes[0]
        _sync(dev)
        t_unet = time.perf_counter()
        words = self._word_maps(latents, timestep, plan, pemb, cross, attn_hw) if plan is not None else None
        _sync(dev)
        t_names = time.perf_counter()
        if segments:
            agg = aggregate(maps, shapes, attn_hw, inplace=True)  # float32 (B, N, h, w), N = h*w of attn_hw
            del maps
        _sync(dev)
        t_agg = time.perf_counter()
        timings = {"encode_s": (t_enc - t0) / n, "unet_s": (t_unet - t_enc) / n, "aggregate_s": (t_agg - t_names) / n}
        if plan is not None:
            timings["names_s"] = (t_names - t_unet) / n
        for j, i in enumerate(idx):
            yield _Aggregated(index=i, maps=agg[j] if agg is not None else None,  # type: ignore[arg-type]
                              image_hw=(int(images[i].shape[1]), int(images[i].shape[2])),
                              input_hw=hw, latent_hw=attn_hw, timings=dict(timings),
                              word_maps=None if words is None else words[j])


    def _word_maps(self, latents: torch.Tensor, timestep: torch.Tensor, plan: PromptPlan, pemb: torch.Tensor,
                   cross: "tuple[list, list] | None", attn_hw: "tuple[int, int] | None") -> list[np.ndarray]:
        """Per image, float32 ``(V, h, w)`` word maps: from the cross-attention the segments'
        pass captured (``cross``, same pass), else from a prompted pass of all prompts x all
        images at once (self-attention keeps its fused kernels there)."""
        m, n = self.model, int(latents.shape[0])
        if cross is None:
            P = plan.num_prompts
            with capture_attention(m.unet, tuple(latents.shape[2:]), self.config.capture, self_attention=False,
                                   cross_attention=True) as store:
                m.unet(latents.repeat(P, 1, 1, 1), timestep, encoder_hidden_states=pemb.repeat_interleave(n, dim=0))
            cross = store.cross_maps()
            store.reset()
        tok = aggregate_cross(cross[0], cross[1], attn_hw or cross[1][0])  # (P*B, L, h, w), prompt-major
        tok = tok.reshape(-1, n, *tok.shape[1:]).transpose(0, 1).cpu().numpy()  # (B, P, L, h, w)
        return [word_maps(tok[j], plan) for j in range(n)]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
