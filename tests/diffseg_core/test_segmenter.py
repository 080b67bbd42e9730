"""DiffSegSegmenter on the tiny random model: shapes, sizes, batching, validation."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from diffseg_core.config import SegmenterConfig
from diffseg_core.errors import InputError
from diffseg_core.segmenter import DiffSegSegmenter, as_image_list, model_input_size
from diffseg_core.types import AttentionMaps, Segmentation


@pytest.fixture(scope="module")
def seg() -> DiffSegSegmenter:
    return DiffSegSegmenter(SegmenterConfig(model="tiny-random", device="cpu", size=128, batch_size=2))


def _image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """Two flat halves with a gradient and mild noise (uint8 RGB)."""
    rng = np.random.default_rng(seed)
    img = np.zeros((h, w, 3), np.float64)
    img[:, : w // 2] = (200, 40, 40)
    img[:, w // 2:] = (30, 60, 210)
    img += np.linspace(0, 30, h)[:, None, None] + rng.normal(0, 8, (h, w, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("hw,size,expected", [
    ((512, 512), 512, (512, 512)),
    ((480, 854), 512, (512, 896)),   # 16:9 keeps its aspect, no centre crop
    ((854, 480), 512, (896, 512)),
    ((100, 100), 100, (128, 128)),   # size rounds to a multiple of 64
    ((30, 1000), 64, (64, 2112)),
])
def test_model_input_size(hw, size, expected):
    assert model_input_size(hw, size) == expected


def test_segment_one_shapes_and_ranges(seg):
    img = _image(120, 200)
    out = seg.segment_one(img)
    assert isinstance(out, Segmentation)
    assert out.labels.dtype == np.int32 and out.labels.shape == (120, 200)  # the input's own size
    k = out.num_segments
    assert k >= 1 and sorted(np.unique(out.labels).tolist()) == list(range(k))
    # 120x200 -> 128x192 model input -> 16x24 latent; the tiny model's finest self-attention
    # is at half the latent (8x12): proposals live on that grid
    assert out.proposals.dtype == np.float32 and out.proposals.shape == (k, 8, 12)
    np.testing.assert_allclose(out.proposals.sum(axis=(1, 2)), 1.0, atol=1e-4)
    assert out.meta["model"] == "tiny-random" and out.meta["random_weights"] is True
    assert out.meta["input_hw"] == [128, 192] and out.meta["latent_hw"] == [8, 12]
    assert set(out.meta["timings"]) >= {"encode_s", "unet_s", "aggregate_s", "post_s"}


def test_uint8_and_float_inputs_agree(seg):
    img = _image(64, 96, seed=1)
    a = seg.segment([img])[0]
    t = torch.from_numpy(img).permute(2, 0, 1).float()[None] / 255.0
    b = seg.segment(t)[0]
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_allclose(a.proposals, b.proposals, atol=1e-6)


def test_batches_of_mixed_sizes_match_single_runs_in_order(seg):
    imgs = [_image(120, 200, 1), _image(64, 64, 2), _image(120, 200, 3), _image(130, 190, 4), _image(64, 64, 5)]
    batched = seg.segment(imgs)
    assert [s.labels.shape for s in batched] == [im.shape[:2] for im in imgs]
    for im, b in zip(imgs, batched):
        single = seg.segment_one(im)
        np.testing.assert_array_equal(single.labels, b.labels)
        np.testing.assert_allclose(single.proposals, b.proposals, atol=1e-5)


def test_attention_maps_are_distributions(seg):
    (att,) = seg.attention([_image(64, 128)])
    # 64x128 -> 128x256 model input (shorter side = size 128) -> 16x32 latent -> 8x16 attention
    assert isinstance(att, AttentionMaps) and att.latent_hw == (8, 16)
    assert att.maps.dtype == np.float32 and att.maps.shape == (128, 8, 16)
    np.testing.assert_allclose(att.maps.sum(axis=(1, 2)), 1.0, atol=1e-4)
    assert att.maps.min() >= 0


def test_noise_is_optional_and_seeded():
    base = DiffSegSegmenter(SegmenterConfig(model="tiny-random", device="cpu", size=64))
    noisy = DiffSegSegmenter(SegmenterConfig(model="tiny-random", device="cpu", size=64, add_noise=True))
    img = _image(64, 64, 7)
    clean = base.attention([img])[0].maps
    a = noisy.attention([img], generator=torch.Generator().manual_seed(0))[0].maps
    b = noisy.attention([img], generator=torch.Generator().manual_seed(0))[0].maps
    c = noisy.attention([img], generator=torch.Generator().manual_seed(1))[0].maps
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c, atol=1e-6) and not np.allclose(a, clean, atol=1e-6)
    np.testing.assert_array_equal(clean, base.attention([img])[0].maps)  # no noise: deterministic


@pytest.mark.parametrize("bad,match", [
    (np.zeros((32, 32), np.uint8), "shape"),
    (np.zeros((32, 32, 4), np.uint8), "shape"),
    (np.zeros((32, 32, 3), np.int16), "dtype"),
    (torch.full((3, 32, 32), float("nan")), "NaN"),
    (torch.full((3, 32, 32), 2.0), r"\[0, 1\]"),
    (torch.zeros(32, 32, 3), "shape"),
    ([], "empty"),
    ("image.png", "image.png: no such file"),  # a path: read like an image file
    (3.5, "list"),
])
def test_bad_inputs_are_clear_errors(seg, bad, match):
    with pytest.raises(InputError, match=match):
        seg.segment(bad)


def test_extreme_aspect_ratio_is_refused(seg):
    with pytest.raises(InputError, match="aspect ratio"):
        DiffSegSegmenter(SegmenterConfig(model="tiny-random", size=512)).segment([np.zeros((8, 4000, 3), np.uint8)])


def test_as_image_list_batch_and_single():
    batch = np.zeros((3, 10, 12, 3), np.uint8)
    out = as_image_list(batch)
    # uint8 images stay uint8 views (made float after the resize: no float copy of a huge image)
    assert len(out) == 3 and tuple(out[0].shape) == (3, 10, 12) and out[0].dtype == torch.uint8
    assert out[0].data_ptr() == torch.from_numpy(batch[0]).data_ptr()
    assert as_image_list(torch.zeros(2, 3, 10, 12))[0].dtype == torch.float32
    assert len(as_image_list(np.zeros((10, 12, 3), np.uint8))) == 1
    with pytest.raises(InputError, match="one image"):
        DiffSegSegmenter(SegmenterConfig(model="tiny-random")).segment_one(batch)


def test_pil_images_are_accepted_like_arrays():
    from PIL import Image

    rgb = (np.random.default_rng(0).random((40, 52, 3)) * 255).astype(np.uint8)
    seg = DiffSegSegmenter(SegmenterConfig(model="tiny-random", device="cpu", size=64))
    ref = seg.segment_one(rgb)
    for img in (Image.fromarray(rgb), Image.fromarray(rgb).convert("RGBA"), Image.fromarray(rgb).convert("P")):
        out = seg.segment_one(img)
        assert out.labels.shape == (40, 52)
        if img.mode != "P":  # (a palette quantises the colours)
            np.testing.assert_array_equal(out.labels, ref.labels)
    assert len(seg.segment([Image.fromarray(rgb), rgb])) == 2
    gray = Image.fromarray(rgb[:, :, 0])
    assert as_image_list(gray)[0].shape == (3, 40, 52)


def test_refine_and_thresholds_reach_the_merge():
    from diffseg_core.config import MergeConfig

    s = DiffSegSegmenter(SegmenterConfig(model="tiny-random", device="cpu", size=64,
                                         merge=MergeConfig(kl_threshold=(0.01,) * 3, refine=True)))
    out = s.segment_one(_image(64, 64, 9))
    assert out.meta["kl_threshold"] == [0.01, 0.01, 0.01] and out.meta["refine"] is True
    assert sorted(np.unique(out.labels).tolist()) == list(range(out.num_segments))


def test_merge_settings_change_the_segmentation():
    """A threshold that every pair passes merges everything into one segment, the paper's
    1.1 keeps a few of the tiny model's (its attention follows feature similarity), 1e-5
    keeps many, and a 4x4 anchor grid caps them at 16."""
    from diffseg_core.config import MergeConfig

    img = _image(128, 128, 3)

    def count(**merge) -> int:
        cfg = SegmenterConfig(model="tiny-random", device="cpu", size=128, merge=MergeConfig(**merge))
        return DiffSegSegmenter(cfg).segment_one(img).num_segments

    default, fine, coarse_grid = count(), count(kl_threshold=1e-5), count(kl_threshold=1e-5, grid=4)
    assert count(kl_threshold=1e6) == 1 < default < fine
    assert 1 < coarse_grid <= 16 < fine


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_channels_last_keeps_latents_and_maps_within_dtype_rounding(dtype):
    # the loaded model runs channels-last (faster kernels); the same weights in the default
    # memory format give the same latents and captured maps up to the dtype's rounding
    from diffseg_core.models import tiny_random_model

    model = tiny_random_model(dtype=dtype)
    assert model.vae.encoder.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    assert model.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    seg = DiffSegSegmenter(SegmenterConfig(model="tiny-random", size=128), model=model)
    img = np.random.default_rng(0).integers(0, 255, (128, 160, 3), dtype=np.uint8)
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 127.5 - 1
    with torch.inference_mode():
        fast_lat = model.vae.encode(x.to(dtype).contiguous(memory_format=torch.channels_last)).latent_dist.mean
        fast = seg.attention([img])[0].maps
        model.vae.to(memory_format=torch.contiguous_format)
        model.unet.to(memory_format=torch.contiguous_format)
        assert not model.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
        plain_lat = model.vae.encode(x.to(dtype)).latent_dist.mean
        plain = seg.attention([img])[0].maps
    tol = 1e-5 if dtype == torch.float32 else 3e-2
    torch.testing.assert_close(fast_lat.float(), plain_lat.float(), atol=tol, rtol=tol)
    # the maps are probabilities (<= 1): in bfloat16 one rounding of the largest is up to
    # 2 ** -8; CPUs round differently along the two kernels (0.0024 seen on an AMD EPYC
    # with native bfloat16, under 2e-4 elsewhere), a wrong layout is off by far more
    np.testing.assert_allclose(fast, plain, atol=1e-6 if dtype == torch.float32 else 2.0 ** -8, rtol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_cuda_half_precision_matches_cpu_shapes(dtype):
    s = DiffSegSegmenter(SegmenterConfig(model="tiny-random", device="cuda", dtype=dtype, size=128))
    out = s.segment_one(_image(120, 200))
    assert out.labels.shape == (120, 200) and isinstance(out.labels, np.ndarray)
    assert out.proposals.dtype == np.float32
    np.testing.assert_allclose(out.proposals.sum(axis=(1, 2)), 1.0, atol=1e-3)


@pytest.mark.slow
def test_real_sd14_weights_if_available():
    from diffseg_core.errors import ModelNotFoundError

    try:
        s = DiffSegSegmenter(SegmenterConfig(device="auto"))
        _ = s.model
    except ModelNotFoundError as exc:
        pytest.skip(f"SD 1.4 weights not available: {exc}")
    img = _image(256, 384)
    out = s.segment_one(img)
    assert out.labels.shape == (256, 384)
    assert out.meta["latent_hw"] == [64, 96]  # 512x768 input: SD's finest attention is the latent
    assert 2 <= out.num_segments <= 60  # two coloured halves: real weights find structure


def test_image_paths_are_accepted_like_arrays(tmp_path):
    from PIL import Image

    rgb = (np.random.default_rng(1).random((40, 52, 3)) * 255).astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    seg = DiffSegSegmenter(SegmenterConfig(model="tiny-random", device="cpu", size=64))
    ref = seg.segment_one(rgb)
    np.testing.assert_array_equal(seg.segment_one(tmp_path / "a.png").labels, ref.labels)
    np.testing.assert_array_equal(seg.segment([str(tmp_path / "a.png"), rgb])[0].labels, ref.labels)
    with pytest.raises(InputError, match="missing.png"):
        seg.segment_one(tmp_path / "missing.png")


def _tiny_pipeline(folder=None):
    """A StableDiffusionPipeline of the tiny model's parts with a real (tiny) CLIP tokenizer."""
    import json

    from diffusers import StableDiffusionPipeline
    from transformers import CLIPTokenizer

    from diffseg_core.models import tiny_random_model

    m = tiny_random_model()
    words = ["a</w>", "dog</w>", "cat</w>", "sky</w>", "d", "o", "g</w>", "c", "t</w>", "s", "k", "y</w>"]
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1, "!": 2, ",</w>": 3, **{w: 4 + i for i, w in enumerate(words)}}
    d = folder or Path(__import__("tempfile").mkdtemp())
    (d / "vocab.json").write_text(json.dumps(vocab))
    (d / "merges.txt").write_text("#version: 0.2\n")
    tok = CLIPTokenizer(str(d / "vocab.json"), str(d / "merges.txt"), pad_token="!", model_max_length=77)
    return StableDiffusionPipeline(vae=m.vae, unet=m.unet, text_encoder=m.text().encoder, tokenizer=tok,
                                   scheduler=m.scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)


def test_from_pipe_reuses_a_loaded_pipeline_and_names_segments(tmp_path):
    from diffseg_core.config import NamingConfig

    pipe = _tiny_pipeline(tmp_path)
    seg = DiffSegSegmenter.from_pipe(pipe, SegmenterConfig(size=64, naming=NamingConfig(vocabulary=("dog", "sky"))))
    assert seg.model.unet is pipe.unet and seg.model.vae is pipe.vae  # reused, not copied
    out = seg.segment_one(_image(64, 80, 3))
    assert out.labels.shape == (64, 80) and out.names is not None and out.names.scores.shape[1] == 2
    ref = DiffSegSegmenter.from_pipe(pipe, SegmenterConfig(size=64)).segment_one(_image(64, 80, 3))
    np.testing.assert_array_equal(out.labels, ref.labels)  # naming (a second pass) leaves the segments as they are
    assert ref.num_segments > 1
    with pytest.raises(InputError, match="no tokenizer"):
        DiffSegSegmenter.from_pipe(type("P", (), {"unet": pipe.unet, "vae": pipe.vae, "tokenizer": None,
                                                  "text_encoder": None})())


def test_variant_reaches_from_pretrained(tmp_path):
    from diffseg_core.errors import ModelNotFoundError
    from diffseg_core.models import clear_model_cache, load_model

    _tiny_pipeline(tmp_path).save_pretrained(tmp_path / "sd", variant="fp16", safe_serialization=True)
    assert list((tmp_path / "sd" / "unet").glob("*.fp16.safetensors"))
    clear_model_cache()
    m = load_model(str(tmp_path / "sd"), "cpu", "float32", variant="fp16")
    assert list(m.unet.config.block_out_channels) == [16, 32, 32]
    with pytest.raises(ModelNotFoundError):
        load_model(str(tmp_path / "sd"), "cpu", "float32")  # no plain files in the folder: the variant is needed
    clear_model_cache()
