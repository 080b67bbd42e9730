"""An optional image captioner (BLIP through transformers) whose nouns become a vocabulary.

Loaded like the SD model: a hub id (the Hugging Face cache first, the hub only when the
model is not cached and the hub is reachable) or a local folder; a missing model raises
`ModelNotFoundError` saying how to get it. There is no fallback: without a captioner, give
the words with ``--vocab``.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import ModelNotFoundError, short_message
from .naming import nouns_of_caption

__all__ = ["Captioner"]

log = logging.getLogger(__name__)


class Captioner:
    """BLIP image captioning (``BlipForConditionalGeneration``).

    Args:
        model: hub id (default ``Salesforce/blip-image-captioning-base``) or a folder with
            the model and its processor.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``...
        max_new_tokens: longest caption, in tokens.

    Example:
        >>> cap = Captioner()                       # doctest: +SKIP
        >>> cap.nouns(image)                         # doctest: +SKIP
        ('man', 'horse', 'beach')
    """

    def __init__(self, model: "str | None" = None, device: str = "auto", max_new_tokens: int = 30) -> None:
        from .cli_args import DEFAULT_CAPTIONER
        from .models import resolve_device

        self.model_id = str(model or DEFAULT_CAPTIONER)
        self.device = resolve_device(device)
        self.max_new_tokens = int(max_new_tokens)
        self._model: Any = None
        self._processor: Any = None

    def _load(self) -> None:
        if self._model is not None:
            return
        from transformers import BlipForConditionalGeneration, BlipProcessor
        from transformers.utils import logging as hf_logging

        from .models import _hub_reachable

        local = Path(self.model_id).expanduser()
        source = str(local) if local.exists() else self.model_id
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # backend notes and weight-loading bars are not ours to show
        hf_logging.disable_progress_bar()
        try:
            try:
                proc = BlipProcessor.from_pretrained(source, local_files_only=True)
                model = BlipForConditionalGeneration.from_pretrained(source, local_files_only=True)
            except (OSError, ValueError) as exc:
                if local.exists() or not _hub_reachable():
                    raise ModelNotFoundError(self._missing(short_message(exc))) from exc
                proc = BlipProcessor.from_pretrained(source)
                model = BlipForConditionalGeneration.from_pretrained(source)
        except (OSError, ValueError) as exc:
            raise ModelNotFoundError(self._missing(short_message(exc))) from exc
        finally:
            hf_logging.set_verbosity(verbosity)
            hf_logging.enable_progress_bar()
        self._processor, self._model = proc, model.to(self.device).eval()

    def _missing(self, why: str) -> str:
        return (f"captioner {self.model_id!r} is not available ({why}). Download it once with "
                f"`hf download {self.model_id}` (or pass --captioner FOLDER with a BLIP model and its processor), "
                f"or give the words yourself with --vocab instead of --caption")

    @torch.inference_mode()
    def caption(self, image: np.ndarray) -> str:
        """The caption of a uint8 RGB ``(H, W, 3)`` image."""
        self._load()
        inputs = self._processor(images=np.asarray(image), return_tensors="pt").to(self.device)
        out = self._model.generate(**inputs, max_new_tokens=self.max_new_tokens)
        return str(self._processor.decode(out[0], skip_special_tokens=True)).strip()

    def nouns(self, image: np.ndarray) -> tuple[str, ...]:
        """The object words of the image's caption (`diffseg_core.naming.nouns_of_caption`)."""
        text = self.caption(image)
        words = nouns_of_caption(text)
        log.info("caption %r -> vocabulary %s", text, list(words))
        return words
