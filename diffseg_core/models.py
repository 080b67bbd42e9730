"""Load the Stable Diffusion parts DiffSeg needs: VAE, UNet, scheduler, empty-prompt embedding.

Sources (`load_model`):

* a hub id, e.g. ``CompVis/stable-diffusion-v1-4`` (default, the paper's model),
  ``stable-diffusion-v1-5/stable-diffusion-v1-5``, ``stabilityai/stable-diffusion-2-1-base``;
  the Hugging Face cache is used first, the network only when the model is not cached;
* a local diffusers folder (``model_index.json`` with ``unet/``, ``vae/``, ``text_encoder/``,
  ``tokenizer/``, ``scheduler/`` subfolders);
* a single ``.safetensors`` file (or ``.ckpt`` with ``allow_pickle=True``: a ``.ckpt`` is a
  Python pickle, which can run arbitrary code when loaded, so it is refused by default);
* ``"tiny-random"``: a tiny UNet/VAE/text encoder built from configs in code with seeded
  random weights (self-attention queries and keys a scaled identity: `TINY_QK_SCALE`). It
  runs the whole pipeline offline in tests and CI in well under a second, but **its
  segments are meaningless**.

The empty-prompt text embedding is computed once at load time; the tokenizer and text
encoder are then dropped to save memory, and loaded again (once) only when segments are to
be named from a vocabulary (`LoadedModel.text`). Loaded models are cached per (model, device,
dtype) in-process. A model that cannot be found raises `ModelNotFoundError` with a message
saying how to get it; there is never a silent fallback to random weights.
"""
from __future__ import annotations

import logging
import os
import pickle
import socket
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlparse

import torch

from .config import DEFAULT_MODEL
from .errors import InputError, ModelNotFoundError, look_up_option, short_message

log = logging.getLogger(__name__)

__all__ = ["LoadedModel", "TextEncoder", "load_model", "model_from_pipe", "resolve_device", "resolve_dtype", "clear_model_cache",
           "tiny_random_model", "TINY_RANDOM", "KNOWN_MODELS"]

TINY_RANDOM = "tiny-random"
#: Hub ids the project documents and tests against (any SD 1.x/2.x diffusers repo works).
KNOWN_MODELS = (
    "CompVis/stable-diffusion-v1-4",
    "stable-diffusion-v1-5/stable-diffusion-v1-5",
    "stabilityai/stable-diffusion-2-1-base",
)
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass
class LoadedModel:
    """The Stable Diffusion components DiffSeg uses, ready on ``device``.

    Attributes:
        unet: ``UNet2DConditionModel`` in eval mode, ``dtype`` on ``device``.
        vae: ``AutoencoderKL`` in eval mode, ``dtype`` on ``device``.
        scheduler: the model's noise scheduler (only used when noise is added).
        empty_embedding: ``(1, L, C)`` text-encoder output of the empty prompt, ``dtype`` on
            ``device`` (``L`` = tokenizer max length, 77 for SD; ``C`` = cross-attention dim).
        model_id: what was asked for (hub id, path or ``"tiny-random"``).
        device: compute device.
        dtype: UNet/VAE dtype.
        vae_scale_factor: image pixels per latent pixel (8 for SD).
        scaling_factor: VAE latent scaling (0.18215 for SD 1.x/2.x).
        is_random: True for ``tiny-random`` (meaningless segments).
        text_loader: builds the `TextEncoder` when first needed (`text`).
    """

    unet: Any
    vae: Any
    scheduler: Any
    empty_embedding: torch.Tensor
    model_id: str
    device: torch.device
    dtype: torch.dtype
    vae_scale_factor: int
    scaling_factor: float
    is_random: bool = False
    text_loader: "Callable[[], TextEncoder] | None" = field(default=None, repr=False)
    _text: "TextEncoder | None" = field(default=None, repr=False)

    def text(self) -> "TextEncoder":
        """The model's tokenizer and text encoder (loaded on first use, then kept)."""
        if self._text is None:
            if self.text_loader is None:
                raise ModelNotFoundError(f"{self.model_id}: no text encoder is available to encode a vocabulary")
            with _LOCK:
                if self._text is None:
                    self._text = self.text_loader()
        return self._text


class TextEncoder:
    """A tokenizer and text encoder as the naming of segments needs them.

    Args:
        tokenize: a word -> its token ids (no special tokens).
        encoder: token ids ``(P, L)`` (int64 tensor) -> ``(P, L, C)`` embeddings.
        bos, eos, pad: special token ids; separator: ids put between words (a comma).
        max_length: tokens per prompt (77 for SD).
        device, dtype: where and in which precision `encode` returns the embeddings.
    """

    def __init__(self, tokenize: Callable[[str], list], encoder: Any, *, bos: int, eos: int, pad: int,
                 separator: list, max_length: int, device: torch.device, dtype: torch.dtype) -> None:
        self.tokenize, self.encoder = tokenize, encoder
        self.bos, self.eos, self.pad, self.separator = int(bos), int(eos), int(pad), list(separator)
        self.max_length, self.device, self.dtype = int(max_length), device, dtype

    @torch.inference_mode()
    def encode(self, ids: Any) -> torch.Tensor:
        """Embeddings ``(P, L, C)`` of token ids ``(P, L)``, ``dtype`` on ``device``."""
        t = torch.as_tensor(ids, dtype=torch.long, device=self.device)
        return self.encoder(t)[0].to(self.dtype)


def _clip_text(tokenizer: Any, text_encoder: Any, device: torch.device, dtype: torch.dtype) -> TextEncoder:
    enc = text_encoder.to(device).eval()

    def tokenize(word: str) -> list:
        return list(tokenizer(word, add_special_tokens=False).input_ids)

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return TextEncoder(tokenize, enc, bos=tokenizer.bos_token_id, eos=tokenizer.eos_token_id, pad=pad,
                       separator=tokenize(","), max_length=tokenizer.model_max_length, device=device, dtype=dtype)


# ----------------------------------------------------------------------------- device / dtype
def resolve_device(device: "str | torch.device" = "auto") -> torch.device:
    """``"auto"`` -> CUDA if available else CPU; validates ``cuda:N`` against what exists.

    Raises:
        InputError: unknown device string, or CUDA asked for but not available.
    """
    if isinstance(device, torch.device):
        return device
    text = str(device).strip().lower()
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(text)
    except (RuntimeError, ValueError) as exc:
        raise InputError(f"unknown device {device!r}; expected auto, cpu, cuda or cuda:N") from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"device {device!r} asked for, but CUDA is not available here; use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise InputError(f"device {device!r} does not exist; {torch.cuda.device_count()} CUDA device(s) found")
    elif dev.type not in ("cpu", "mps"):
        raise InputError(f"unsupported device {device!r}; expected auto, cpu, cuda or cuda:N")
    return dev


def resolve_dtype(dtype: "str | torch.dtype", device: torch.device) -> torch.dtype:
    """``"auto"`` -> float16 on CUDA, float32 elsewhere. float16 on CPU warns and becomes
    float32 (CPU half-precision kernels are slow or missing); bfloat16 is kept."""
    if isinstance(dtype, torch.dtype):
        dt = dtype
    else:
        look_up_option(str(dtype), ("auto",) + tuple(_DTYPES), "dtype")
        if dtype == "auto":
            return torch.float16 if device.type == "cuda" else torch.float32
        dt = _DTYPES[str(dtype)]
    if dt == torch.float16 and device.type == "cpu":
        warnings.warn("float16 on CPU is slow and poorly supported; using float32 instead", stacklevel=2)
        return torch.float32
    return dt


# ----------------------------------------------------------------------------- cache
_CACHE: dict[tuple[str, str, str], LoadedModel] = {}
_LOCK = threading.Lock()


def clear_model_cache() -> None:
    """Drop every cached model (frees their memory once no segmenter holds them)."""
    with _LOCK:
        _CACHE.clear()


def load_model(model: str = DEFAULT_MODEL, device: "str | torch.device" = "auto",
               dtype: "str | torch.dtype" = "auto", *, allow_pickle: bool = False,
               local_files_only: "bool | None" = None, revision: "str | None" = None,
               variant: "str | None" = None) -> LoadedModel:
    """Load (or fetch from the in-process cache) the SD components for DiffSeg.

    Args:
        model: hub id, local diffusers folder, single ``.safetensors``/``.ckpt`` file, or
            ``"tiny-random"`` (random test model: meaningless segments).
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or a ``torch.device``.
        dtype: ``"auto"`` (float16 on CUDA, float32 on CPU), ``"float32"``, ``"float16"``,
            ``"bfloat16"`` or a ``torch.dtype``.
        allow_pickle: allow loading a ``.ckpt`` (pickle) file. Only for files you trust: a
            pickle can execute arbitrary code.
        local_files_only: only use the Hugging Face cache (None: cache first, then the hub
            when reachable).
        revision: the hub revision (branch, tag or commit) of a hub id.
        variant: the weights' variant (``"fp16"``: ``diffusion_pytorch_model.fp16.safetensors``),
            for a hub id or a folder.

    Returns:
        A `LoadedModel`; the same object for the same (model, device, dtype).

    Raises:
        ModelNotFoundError: the model is not available (offline, wrong id, wrong path); the
            message says how to fix it.
        InputError: a ``.ckpt`` without ``allow_pickle``, an unknown device or dtype.
    """
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    key = (str(model), str(dev), str(dt), revision, variant)
    with _LOCK:
        hit = _CACHE.get(key)
        if hit is not None:
            return hit
        if model == TINY_RANDOM:
            loaded = tiny_random_model(dev, dt)
        else:
            loaded = _load_sd(str(model), dev, dt, allow_pickle=allow_pickle,
                              local_files_only=local_files_only, revision=revision, variant=variant)
        _CACHE[key] = loaded
        return loaded


# ----------------------------------------------------------------------------- real models
def _missing_message(model: str, why: str) -> str:
    # Suggest downloading the id the user asked for; for a bad path, the paper's model.
    example = model if _looks_like_hub_id(model) and not Path(model).exists() else DEFAULT_MODEL
    return (
        f"model {model!r} not found ({why}). To fix: download it once with "
        f"`hf download {example} --local-dir models/{example.split('/')[-1]}` (huggingface_hub >= 0.34; "
        f"older: `huggingface-cli download`) and pass "
        f"`--model models/{example.split('/')[-1]}` (a local diffusers folder), or pass a single "
        f"`.safetensors` file; or run once with internet access so it lands in the Hugging Face "
        f"cache (set HF_HOME to choose where). `--model tiny-random` runs offline but gives "
        f"meaningless segments."
    )


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Quick DNS + TCP probe of the hub endpoint, so offline runs fail in ms, not after retries."""
    from huggingface_hub import constants

    if getattr(constants, "HF_HUB_OFFLINE", False):
        return False
    url = urlparse(os.environ.get("HF_ENDPOINT", constants.ENDPOINT))
    host, port = url.hostname or "huggingface.co", url.port or (443 if url.scheme != "http" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _looks_like_hub_id(model: str) -> bool:
    parts = model.split("/")
    return len(parts) == 2 and all(parts) and not model.startswith((".", "/", "~"))


def _load_sd(model: str, device: torch.device, dtype: torch.dtype, *, allow_pickle: bool,
             local_files_only: "bool | None", revision: "str | None" = None,
             variant: "str | None" = None) -> LoadedModel:
    path = Path(model).expanduser()
    if path.is_file() or path.suffix.lower() in (".safetensors", ".ckpt", ".pt", ".pth", ".bin"):
        return _load_single_file(path, model, device, dtype, allow_pickle=allow_pickle,
                                 local_files_only=local_files_only)
    if path.is_dir():
        if not (path / "unet").is_dir() or not (path / "vae").is_dir():
            raise ModelNotFoundError(_missing_message(
                model, f"folder {path} is not a diffusers Stable Diffusion folder (no unet/ and vae/ subfolders)"))
        return _load_folder(str(path), model, device, dtype, local_files_only=True, variant=variant)
    if not _looks_like_hub_id(model):
        raise ModelNotFoundError(_missing_message(model, "no such file or folder, and not a hub id like org/name"))
    return _load_folder(model, model, device, dtype, local_files_only=local_files_only, revision=revision,
                        variant=variant)


def _from_pretrained(cls: Any, source: str, subfolder: str, local_only: bool, **kw: Any) -> Any:
    """``cls.from_pretrained`` preferring safetensors; falls back to the non-pickle-executing
    ``torch.load(weights_only=True)`` path of diffusers only when no safetensors file exists."""
    try:
        return cls.from_pretrained(source, subfolder=subfolder, local_files_only=local_only,
                                   use_safetensors=True, **kw)
    except (OSError, ValueError, EnvironmentError) as exc:
        if "safetensors" not in str(exc).lower():
            raise
        log.info("no safetensors weights for %s/%s; loading .bin weights", source, subfolder)
        return cls.from_pretrained(source, subfolder=subfolder, local_files_only=local_only, **kw)


def _load_folder(source: str, model: str, device: torch.device, dtype: torch.dtype, *,
                 local_files_only: "bool | None", revision: "str | None" = None,
                 variant: "str | None" = None) -> LoadedModel:
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    rev = {} if revision is None else {"revision": revision}
    var = {} if variant is None else {"variant": variant}

    def attempt(local_only: bool) -> LoadedModel:
        tokenizer = CLIPTokenizer.from_pretrained(source, subfolder="tokenizer", local_files_only=local_only, **rev)
        text_encoder = _from_pretrained(CLIPTextModel, source, "text_encoder", local_only, dtype=dtype, **rev, **var)
        emb = _empty_embedding(tokenizer, text_encoder.to(device))
        del tokenizer, text_encoder  # only the embedding is needed from now on
        unet = _from_pretrained(UNet2DConditionModel, source, "unet", local_only, torch_dtype=dtype, **rev, **var)
        vae = _from_pretrained(AutoencoderKL, source, "vae", local_only, torch_dtype=dtype, **rev, **var)
        try:
            scheduler = DDPMScheduler.from_pretrained(source, subfolder="scheduler", local_files_only=local_only, **rev)
        except (OSError, ValueError):
            scheduler = _sd_scheduler()
        loaded = _finish(unet, vae, scheduler, emb, model, device, dtype)

        def text() -> TextEncoder:  # the vocabulary's embeddings: loaded again only when names are asked for
            tok = CLIPTokenizer.from_pretrained(source, subfolder="tokenizer", local_files_only=local_only, **rev)
            return _clip_text(tok, _from_pretrained(CLIPTextModel, source, "text_encoder", local_only, **rev, **var),
                              device, dtype)

        loaded.text_loader = text
        return loaded

    try:
        if local_files_only is not False:
            try:
                return attempt(True)
            except (OSError, ValueError) as exc:
                if local_files_only or Path(source).is_dir():
                    raise
                log.debug("not in the cache (%s); trying the hub", exc)
        if not _hub_reachable():
            raise ModelNotFoundError(_missing_message(model, "not in the local Hugging Face cache and the hub is unreachable (offline?)"))
        return attempt(False)
    except ModelNotFoundError:
        raise
    except pickle.UnpicklingError as exc:
        # torch.load(weights_only=True) refused a pickle holding more than tensors: never run it
        raise ModelNotFoundError(
            f"{model}: its .bin (pickle) weights hold more than plain tensors and are not loaded, since "
            f"unpickling them could run code ({short_message(exc)}); use the model's .safetensors files "
            "(e.g. `hf download <repo> --include '*.safetensors' '*.json' '*.txt'`) or convert the weights") from exc
    except (OSError, ValueError, EOFError) as exc:
        raise ModelNotFoundError(_missing_message(model, short_message(exc))) from exc


def _load_single_file(path: Path, model: str, device: torch.device, dtype: torch.dtype, *,
                      allow_pickle: bool, local_files_only: "bool | None") -> LoadedModel:
    suffix = path.suffix.lower()
    if not path.exists():
        raise ModelNotFoundError(_missing_message(model, f"no such file {path}"))
    if suffix != ".safetensors":
        if not allow_pickle:
            raise InputError(
                f"{path}: refusing to load a {suffix or 'non-safetensors'} checkpoint: it is a Python pickle, "
                f"which can run arbitrary code when loaded. Convert it to .safetensors, or, if you trust the "
                f"file, pass --allow-unsafe-ckpt (Python: allow_pickle=True)."
            )
        warnings.warn(f"loading pickle checkpoint {path} (allow_pickle=True): only do this for trusted files",
                      stacklevel=3)
    from diffusers import StableDiffusionPipeline

    kw: dict[str, Any] = dict(torch_dtype=dtype, safety_checker=None, requires_safety_checker=False)
    try:
        try:
            pipe = StableDiffusionPipeline.from_single_file(str(path), local_files_only=True, **kw)
        except (OSError, ValueError):
            if local_files_only or not _hub_reachable():
                raise
            pipe = StableDiffusionPipeline.from_single_file(str(path), **kw)
    except (OSError, ValueError) as exc:
        raise ModelNotFoundError(
            f"cannot load single-file checkpoint {path} ({short_message(exc)}). diffusers needs the matching model "
            f"config the first time (it is fetched from the hub and then cached): run once online, or "
            f"convert the file to a diffusers folder and pass --model FOLDER."
        ) from exc
    emb = _empty_embedding(pipe.tokenizer, pipe.text_encoder.to(device))
    unet, vae = pipe.unet, pipe.vae
    scheduler = _ddpm_from(pipe.scheduler)
    text = _clip_text(pipe.tokenizer, pipe.text_encoder, device, dtype)  # kept: a single file is not re-read
    del pipe
    loaded = _finish(unet, vae, scheduler, emb, model, device, dtype)
    loaded._text = text
    return loaded


def model_from_pipe(pipe: Any, device: "str | torch.device | None" = None,
                    dtype: "str | torch.dtype | None" = None, model_id: "str | None" = None) -> LoadedModel:
    """A `LoadedModel` from an already loaded diffusers Stable Diffusion pipeline (its UNet,
    VAE, scheduler, tokenizer and text encoder are reused, not copied, on the pipeline's
    device and dtype unless others are given). The modules are put in eval mode and their
    convolutions in channels-last memory format, which the pipeline keeps."""
    for part in ("unet", "vae", "tokenizer", "text_encoder"):
        if getattr(pipe, part, None) is None:
            raise InputError(f"the pipeline has no {part}: DiffSeg needs a Stable Diffusion pipeline "
                             "(UNet, VAE, tokenizer and text encoder)")
    dev = resolve_device(device) if device is not None else torch.device(pipe.unet.device)
    dt = resolve_dtype(dtype, dev) if dtype is not None else pipe.unet.dtype
    emb = _empty_embedding(pipe.tokenizer, pipe.text_encoder.to(dev))
    name = model_id or getattr(getattr(pipe, "config", None), "_name_or_path", None) or type(pipe).__name__
    loaded = _finish(pipe.unet, pipe.vae, _ddpm_from(pipe.scheduler), emb, str(name), dev, dt)
    loaded._text = _clip_text(pipe.tokenizer, pipe.text_encoder, dev, dt)
    return loaded


def _ddpm_from(scheduler: Any) -> Any:
    """A DDPM scheduler with ``scheduler``'s noise schedule (only ``add_noise`` is used)."""
    from diffusers import DDPMScheduler

    try:
        return DDPMScheduler.from_config(scheduler.config)
    except Exception:  # pragma: no cover - exotic scheduler configs
        return _sd_scheduler()



@torch.inference_mode()
def _empty_embedding(tokenizer: Any, text_encoder: Any) -> torch.Tensor:
    """``(1, L, C)`` encoder output of the empty prompt padded to the tokenizer's max length."""
    ids = tokenizer([""], padding="max_length", max_length=tokenizer.model_max_length,
                    truncation=True, return_tensors="pt").input_ids
    return text_encoder(ids.to(text_encoder.device))[0].detach()


def _sd_scheduler() -> Any:
    from diffusers import DDPMScheduler

    # Stable Diffusion 1.x/2.x training schedule.
    return DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                         beta_schedule="scaled_linear", clip_sample=False)


def _finish(unet: Any, vae: Any, scheduler: Any, emb: torch.Tensor, model: str,
            device: torch.device, dtype: torch.dtype, is_random: bool = False) -> LoadedModel:
    unet = _to(unet, device, dtype)
    vae = _to(vae, device, dtype)
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    return LoadedModel(unet=unet, vae=vae, scheduler=scheduler,
                       empty_embedding=emb.to(device=device, dtype=dtype), model_id=model,
                       device=device, dtype=dtype, vae_scale_factor=int(factor),
                       scaling_factor=float(getattr(vae.config, "scaling_factor", 0.18215)),
                       is_random=is_random)


def _to(module: Any, device: torch.device, dtype: torch.dtype) -> Any:
    """``module`` on ``device`` in ``dtype``, eval mode, convolution weights channels-last.

    Channels-last (NHWC) picks the faster convolution kernels (oneDNN on CPU, cuDNN tensor
    cores on CUDA): SD 1.5's VAE encode at 512 px on 2 CPU cores, 4.25 -> 3.49 s in float32
    and 1.97 -> 0.73 s in bfloat16 (`benchmarks/bench_e2e.py`, default memory format vs
    this); the results stay within the dtype's rounding (tests/diffseg_core/test_segmenter.py)."""
    # Cast only when needed: diffusers warns on every dtype `.to()`, even a no-op one.
    if next(module.parameters()).dtype != dtype:
        module = module.to(dtype=dtype)
    return module.to(device).to(memory_format=torch.channels_last).eval().requires_grad_(False)


# ----------------------------------------------------------------------------- tiny-random
def tiny_unet_config() -> dict[str, Any]:
    """Config of the tiny test UNet: 3 levels; self-attention at 1/2 and 1/4 of the latent
    (plus the mid block at 1/4), none on the full latent grid, so that the default 512 px
    input (4096 latent tokens) stays CPU-fast: the finest attention grid is 1/2 the latent.
    (diffusers reads ``attention_head_dim`` here as the number of heads: 2 per layer.)"""
    return dict(
        sample_size=32, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(16, 32, 32),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32, attention_head_dim=2, norm_num_groups=8,
    )


def tiny_vae_config() -> dict[str, Any]:
    """Config of the tiny test VAE: 4 levels, so one latent pixel = 8 image pixels like SD."""
    return dict(
        in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1,
        block_out_channels=(4, 8, 8, 8), norm_num_groups=4, sample_size=64,
        mid_block_add_attention=False,  # SD's VAE has one; it only costs time here
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
    )


def tiny_random_model(device: "str | torch.device" = "cpu", dtype: torch.dtype = torch.float32,
                      seed: int = 0) -> LoadedModel:
    """The ``"tiny-random"`` test model: tiny UNet, VAE and CLIP text encoder with seeded
    random weights, built from configs in code (no download).

    Its segments are meaningless: use it to test plumbing, never to judge results.
    """
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    dev = torch.device(device)
    gen_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(**tiny_unet_config())
        _similarity_attention(unet, TINY_QK_SCALE)
        vae = AutoencoderKL(**tiny_vae_config())
        text_encoder = CLIPTextModel(CLIPTextConfig(
            vocab_size=1000, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
            num_attention_heads=4, max_position_embeddings=77, bos_token_id=0, eos_token_id=2,
            pad_token_id=1)).eval()
    finally:
        torch.random.set_rng_state(gen_state)
    # The empty prompt tokenised: BOS, EOS, then padding to 77 (no vocabulary files needed).
    ids = torch.full((1, 77), 1, dtype=torch.long)
    ids[0, 0], ids[0, 1] = 0, 2
    with torch.inference_mode():
        emb = text_encoder(ids)[0]
    loaded = _finish(unet, vae, _sd_scheduler(), emb, TINY_RANDOM, dev, dtype, is_random=True)
    loaded._text = TextEncoder(_tiny_tokenize, text_encoder.to(dev), bos=0, eos=2, pad=1, separator=[3],
                               max_length=77, device=dev, dtype=dtype)
    return loaded


#: The tiny model's self-attention queries and keys are this multiple of the identity (see
#: `_similarity_attention`): 1.6 gives the example scene about ten segments at --size 128;
#: random projections give attention maps so flat that everything is one segment.
TINY_QK_SCALE = 1.6


def _similarity_attention(unet: Any, scale: float) -> None:
    """Set every self-attention's query and key projections to ``scale`` x identity, so that
    a position attends to the positions whose (layer-normalised) features are like its own:
    the tiny model's segments then follow the image a little (the demo shows the pipeline
    working) instead of being one flat segment. Still random weights: meaningless segments."""
    with torch.no_grad():
        for name, mod in unet.named_modules():
            if name.endswith("attn1") and mod.to_q.weight.shape[0] == mod.to_q.weight.shape[1]:
                eye = torch.eye(mod.to_q.weight.shape[0], dtype=mod.to_q.weight.dtype)
                mod.to_q.weight.copy_(eye * scale)
                mod.to_k.weight.copy_(eye * scale)


def _tiny_tokenize(word: str) -> list:
    """The tiny model's tokenizer (it has no vocabulary files): pieces of up to 4 characters
    (so that long words have several tokens, like real ones), each hashed to an id in
    4..999 (0-3: BOS, pad, EOS, separator)."""
    import zlib

    w = word.lower()
    return [4 + zlib.crc32(w[i:i + 4].encode("utf-8")) % 996 for i in range(0, len(w), 4)]


def segmenter_info(segmenter: Any) -> dict[str, Any]:
    """Provenance of a segmenter for the outputs: its class, its configuration (model id,
    revision, size, merge settings) when it has one, the dtype and device it ran in once
    loaded, and whether its weights are random (the ``tiny-random`` test model: a result
    that must not be mistaken for a real one)."""
    cfg = getattr(segmenter, "config", None)
    info: dict[str, Any] = {"class": type(segmenter).__name__}
    if cfg is not None and hasattr(cfg, "to_dict"):
        info["config"] = cfg.to_dict()
        info["random_weights"] = getattr(cfg, "model", None) == TINY_RANDOM
    loaded = getattr(segmenter, "_model", None)
    if isinstance(loaded, LoadedModel):  # what "auto" resolved to
        info["dtype"], info["device"] = str(loaded.dtype).replace("torch.", ""), str(loaded.device)
        info["random_weights"] = bool(loaded.is_random)
    return info
