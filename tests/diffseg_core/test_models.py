"""Model loading: tiny-random, local diffusers folder, missing models, unsafe checkpoints."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch

from diffseg_core import models
from diffseg_core.errors import InputError, ModelNotFoundError
from diffseg_core.models import (LoadedModel, load_model, resolve_device, resolve_dtype,
                                 tiny_random_model)


def test_tiny_random_components_and_cache():
    m = load_model("tiny-random", "cpu")
    assert isinstance(m, LoadedModel)
    assert m.is_random and m.model_id == "tiny-random"
    assert m.vae_scale_factor == 8  # image side = 8 * latent side, like SD
    assert tuple(m.empty_embedding.shape) == (1, 77, m.unet.config.cross_attention_dim)
    assert m.dtype == torch.float32 and m.device.type == "cpu"
    assert load_model("tiny-random", "cpu", "float32") is m  # cached per (model, device, dtype)
    bf = load_model("tiny-random", "cpu", "bfloat16")
    assert bf is not m and next(bf.unet.parameters()).dtype == torch.bfloat16
    # the VAE maps 64 px to 8 latent px
    with torch.inference_mode():
        z = m.vae.encode(torch.zeros(1, 3, 64, 128)).latent_dist.mean
    assert tuple(z.shape) == (1, 4, 8, 16)


def test_tiny_random_is_seeded_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    a = tiny_random_model()
    assert torch.equal(torch.rand(1), expected_next)
    b = tiny_random_model()
    for pa, pb in zip(a.unet.parameters(), b.unet.parameters()):
        assert torch.equal(pa, pb)
    assert torch.equal(a.empty_embedding, b.empty_embedding)


def test_resolve_dtype_and_device():
    cpu = torch.device("cpu")
    assert resolve_dtype("auto", cpu) == torch.float32
    assert resolve_dtype("bfloat16", cpu) == torch.bfloat16
    with pytest.warns(UserWarning, match="float16 on CPU"):
        assert resolve_dtype("float16", cpu) == torch.float32
    with pytest.raises(InputError, match="did you mean"):
        resolve_dtype("float61", cpu)
    assert resolve_device("cpu") == cpu
    with pytest.raises(InputError, match="device"):
        resolve_device("banana")
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="CUDA is not available"):
            resolve_device("cuda")
        assert resolve_device("auto") == cpu


def test_missing_path_says_how_to_fix(tmp_path):
    with pytest.raises(ModelNotFoundError) as ei:
        load_model(str(tmp_path / "no-such-model"), "cpu")
    msg = str(ei.value)
    assert "hf download" in msg and "--model" in msg


def test_folder_without_unet_is_not_a_model(tmp_path):
    (tmp_path / "vae").mkdir()
    with pytest.raises(ModelNotFoundError, match="not a diffusers Stable Diffusion folder"):
        load_model(str(tmp_path), "cpu")


def test_uncached_hub_id_offline_is_model_not_found(monkeypatch, tmp_path):
    monkeypatch.setattr(models, "_hub_reachable", lambda timeout=3.0: False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(ModelNotFoundError) as ei:
        load_model("no-such-org/no-such-model-diffseg", "cpu", local_files_only=None)
    assert "hf download no-such-org/no-such-model-diffseg" in str(ei.value)


def test_ckpt_is_refused_without_opt_in(tmp_path):
    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(b"\x80\x04not really a pickle")
    with pytest.raises(InputError, match="pickle") as ei:
        load_model(str(ckpt), "cpu")
    assert "--allow-unsafe-ckpt" in str(ei.value)


def test_corrupt_safetensors_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(models, "_hub_reachable", lambda timeout=3.0: False)
    f = tmp_path / "broken.safetensors"
    f.write_bytes(b"garbage")
    with pytest.raises(ModelNotFoundError, match="broken.safetensors"):
        load_model(str(f), "cpu")


def _write_clip_tokenizer(folder: Path) -> None:
    # A minimal CLIP BPE vocabulary: enough to tokenise the empty prompt.
    folder.mkdir(parents=True)
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1, "a</w>": 2, "a": 3}
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    (folder / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 77}))


@pytest.fixture(scope="module")
def diffusers_folder(tmp_path_factory) -> Path:
    """A complete local diffusers SD folder holding the tiny random weights (safetensors)."""
    from transformers import CLIPTextConfig, CLIPTextModel

    root = tmp_path_factory.mktemp("tiny-sd")
    m = tiny_random_model()
    m.unet.save_pretrained(root / "unet", safe_serialization=True)
    m.vae.save_pretrained(root / "vae", safe_serialization=True)
    m.scheduler.save_pretrained(root / "scheduler")
    torch.manual_seed(0)
    te = CLIPTextModel(CLIPTextConfig(vocab_size=4, hidden_size=32, intermediate_size=37, num_hidden_layers=1,
                                      num_attention_heads=4, max_position_embeddings=77,
                                      bos_token_id=0, eos_token_id=1, pad_token_id=1))
    te.save_pretrained(root / "text_encoder", safe_serialization=True)
    _write_clip_tokenizer(root / "tokenizer")
    (root / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    return root


def test_local_diffusers_folder_loads_real_weights(diffusers_folder):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = load_model(str(diffusers_folder), "cpu")
    assert not m.is_random and m.model_id == str(diffusers_folder)
    assert m.vae_scale_factor == 8
    assert tuple(m.empty_embedding.shape) == (1, 77, 32)
    ref = tiny_random_model()
    for (na, pa), (nb, pb) in zip(m.unet.named_parameters(), ref.unet.named_parameters()):
        assert na == nb and torch.equal(pa, pb)
    assert load_model(str(diffusers_folder), "cpu") is m


@pytest.mark.parametrize("part, weights, bin_name", [
    ("unet", "diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin"),
    ("text_encoder", "model.safetensors", "pytorch_model.bin"),
])
def test_pickle_weights_that_are_not_plain_tensors_give_one_clear_error(diffusers_folder, tmp_path, part, weights,
                                                                        bin_name):
    """A folder whose weights are a pickle holding more than tensors is refused by the safe
    loader (never executed); the user gets one error, not an UnpicklingError traceback."""
    import pickle
    import shutil

    from diffseg_core.errors import ModelNotFoundError

    folder = tmp_path / "sd"
    shutil.copytree(diffusers_folder, folder)
    (folder / part / weights).unlink()
    with open(folder / part / bin_name, "wb") as f:
        pickle.dump({"weight": shutil.copytree}, f)  # a global reference: not a plain tensor dict
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ModelNotFoundError) as ei:
            load_model(str(folder), "cpu")
    msg = str(ei.value)
    assert str(folder) in msg and "safetensors" in msg
