"""Attention capture: tiny random UNet from config, exact outputs, shapes, restoration."""
from __future__ import annotations

import pytest
import torch

from diffseg_core.capture import (AttentionStore, SelfAttentionCapture, capture_attention, capture_self_attention,
                                  self_attention_layer_names)
from diffseg_core.config import CaptureConfig

diffusers = pytest.importorskip("diffusers")
from diffusers import UNet2DConditionModel  # noqa: E402
from diffusers.models.attention_processor import Attention, AttnProcessor  # noqa: E402


def tiny_unet(seed: int = 0) -> UNet2DConditionModel:
    torch.manual_seed(seed)
    return UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(8, 16), norm_num_groups=4, cross_attention_dim=8, attention_head_dim=2,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    ).eval()


class RecordingProcessor(AttnProcessor):
    """diffusers' AttnProcessor that also records the head-mean probabilities per layer:
    self-attention (keys: the hidden states) or, with ``cross``, cross-attention (keys: the
    prompt's encoder states)."""

    def __init__(self, name: str, log: dict, cross: bool = False) -> None:
        self.name, self.log, self.cross = name, log, cross

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kw):
        if (encoder_hidden_states is not None) == self.cross:
            keys = encoder_hidden_states if self.cross else hidden_states
            q = attn.head_to_batch_dim(attn.to_q(hidden_states))
            k = attn.head_to_batch_dim(attn.to_k(keys))
            p = attn.get_attention_scores(q, k, None)
            self.log[self.name] = p.reshape(hidden_states.shape[0], attn.heads, *p.shape[1:]).float().mean(1)
        return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, temb)


@pytest.fixture(scope="module")
def unet() -> UNet2DConditionModel:
    return tiny_unet()


def _inputs(b: int = 2, hw: tuple[int, int] = (16, 24), seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, 4, *hw, generator=g), torch.randn(b, 7, 8, generator=g)


def test_layer_names_only_attn1(unet):
    names = self_attention_layer_names(unet)
    # down: 1+1, mid: 1, up: 2+2 transformer blocks, each with one attn1
    assert len(names) == 7
    assert all(n.endswith("attn1.processor") for n in names)


def test_capture_shapes_rows_and_output_unchanged(unet):
    x, e = _inputs()
    with torch.inference_mode():
        ref = unet(x, 300, encoder_hidden_states=e).sample
        with capture_self_attention(unet, (16, 24)) as store:
            out = unet(x, 300, encoder_hidden_states=e).sample
    torch.testing.assert_close(out, ref, atol=2e-5, rtol=1e-4)
    assert len(store.layers) == 7
    maps, shapes = store.maps()
    assert shapes == [(16, 24), (8, 12)]  # finest first, derived from the latent aspect
    assert store.counts == {(16, 24): 3, (8, 12): 4}
    for m, (h, w) in zip(maps, shapes):
        assert m.dtype == torch.float32 and tuple(m.shape) == (2, h * w, h * w)
        assert bool((m >= 0).all())
        torch.testing.assert_close(m.sum(-1), torch.ones(2, h * w), atol=1e-5, rtol=0)


def test_captured_maps_equal_head_and_layer_mean_of_reference_probs(unet):
    x, e = _inputs(b=1, hw=(8, 8), seed=3)
    log: dict = {}
    originals = dict(unet.attn_processors)
    rec = {n: (RecordingProcessor(n, log) if n.endswith("attn1.processor") else p) for n, p in originals.items()}
    with torch.inference_mode():
        unet.set_attn_processor(rec)
        try:
            unet(x, 300, encoder_hidden_states=e)
        finally:
            unet.set_attn_processor(originals)
        with capture_self_attention(unet, (8, 8), CaptureConfig(query_chunk=5)) as store:
            unet(x, 300, encoder_hidden_states=e)
    maps, shapes = store.maps()
    for m, (h, w) in zip(maps, shapes):
        layers = [log[n] for n, g in store.layer_grids.items() if g == (h, w)]
        expected = torch.stack(layers).mean(0)
        torch.testing.assert_close(m, expected, atol=1e-6, rtol=1e-5)


def test_processors_restored_and_attn2_untouched(unet):
    before = dict(unet.attn_processors)
    x, e = _inputs(b=1)
    with torch.inference_mode(), capture_self_attention(unet, (16, 24)):
        during = unet.attn_processors
        for n, p in during.items():
            if n.endswith("attn1.processor"):
                assert isinstance(p, SelfAttentionCapture)
            else:
                assert p is before[n]
        unet(x, 300, encoder_hidden_states=e)
    after = unet.attn_processors
    assert after.keys() == before.keys() and all(after[n] is before[n] for n in before)


def test_processors_restored_after_error(unet):
    before = dict(unet.attn_processors)
    with pytest.raises(RuntimeError, match="boom"):
        with capture_self_attention(unet, (16, 24)):
            raise RuntimeError("boom")
    assert all(unet.attn_processors[n] is before[n] for n in before)


def test_wrong_latent_shape_is_a_clear_error(unet):
    x, e = _inputs(b=1)
    with pytest.raises(ValueError, match="latent"):
        with torch.inference_mode(), capture_self_attention(unet, (10, 10)):
            unet(x, 300, encoder_hidden_states=e)


def test_two_forwards_accumulate_and_reset(unet):
    x, e = _inputs(b=1)
    with torch.inference_mode(), capture_self_attention(unet, (16, 24)) as store:
        unet(x, 300, encoder_hidden_states=e)
        first = [m.clone() for m in store.maps()[0]]
        unet(x, 300, encoder_hidden_states=e)
        assert store.counts[(16, 24)] == 6
        for a, b in zip(first, store.maps()[0]):  # same input twice: same mean
            torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
        store.reset()
        assert store.sums == {} and store.layers == []


@pytest.mark.parametrize("kwargs", [
    dict(residual_connection=True, norm_num_groups=4),
    dict(residual_connection=False, rescale_output_factor=2.0, upcast_softmax=True),
    dict(upcast_attention=True, heads=4, dim_head=4),
])
def test_processor_matches_attnprocessor_on_4d_input_paths(kwargs):
    torch.manual_seed(0)
    attn = Attention(query_dim=16, heads=kwargs.pop("heads", 2), dim_head=kwargs.pop("dim_head", 8), **kwargs).eval()
    x = torch.randn(2, 16, 6, 10)  # 4-D input (B, C, H, W)
    with torch.inference_mode():
        ref = AttnProcessor()(attn, x)
        store = AttentionStore(latent_hw=(6, 10))
        out = SelfAttentionCapture("layer", store, query_chunk=7)(attn, x)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-4)
    maps, shapes = store.maps()
    assert shapes == [(6, 10)] and tuple(maps[0].shape) == (2, 60, 60)
    torch.testing.assert_close(maps[0].sum(-1), torch.ones(2, 60), atol=1e-5, rtol=0)


def test_processor_matches_attnprocessor_with_attention_mask():
    torch.manual_seed(0)
    attn = Attention(query_dim=16, heads=2, dim_head=8).eval()
    x = torch.randn(2, 12, 16)
    mask = torch.zeros(2, 1, 12)
    mask[0, 0, :3] = -1e4  # batch 0 ignores its first 3 keys
    with torch.inference_mode():
        ref = AttnProcessor()(attn, x, attention_mask=mask)
        store = AttentionStore(latent_hw=(3, 4))
        out = SelfAttentionCapture("layer", store, query_chunk=5)(attn, x, attention_mask=mask)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-4)
    probs = store.maps()[0][0]
    assert float(probs[0, :, :3].max()) < 1e-6 and float(probs[1, :, :3].min()) > 0


def test_bfloat16_unet_output_and_float32_maps():
    unet = tiny_unet(seed=2).to(torch.bfloat16)
    x, e = _inputs(b=1)
    x, e = x.bfloat16(), e.bfloat16()
    with torch.inference_mode():
        procs = dict(unet.attn_processors)
        unet.set_attn_processor({n: AttnProcessor() for n in procs})
        ref = unet(x, 300, encoder_hidden_states=e).sample.float()
        unet.set_attn_processor(procs)
        with capture_self_attention(unet, (16, 24)) as store:
            out = unet(x, 300, encoder_hidden_states=e).sample.float()
    torch.testing.assert_close(out, ref, atol=5e-2, rtol=5e-2)
    for m in store.maps()[0]:
        assert m.dtype == torch.float32
        torch.testing.assert_close(m.sum(-1), torch.ones_like(m.sum(-1)), atol=2e-2, rtol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_float16_capture_matches_default():
    unet = tiny_unet().cuda().half()
    x, e = _inputs(b=2)
    x, e = x.cuda().half(), e.cuda().half()
    with torch.inference_mode():
        ref = unet(x, 300, encoder_hidden_states=e).sample.float()
        with capture_self_attention(unet, (16, 24)) as store:
            out = unet(x, 300, encoder_hidden_states=e).sample.float()
    torch.testing.assert_close(out, ref, atol=1e-2, rtol=1e-2)
    assert all(m.dtype == torch.float32 for m in store.maps()[0])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_captured_map_is_the_head_mean_in_every_dtype(dtype):
    # float32 sums the heads in float32, bf16/fp16 on the CPU in the model's dtype: both must
    # give the mean over heads of each head's own probabilities (not one head twice)
    torch.manual_seed(3)
    attn = Attention(query_dim=16, heads=4, dim_head=8).eval().to(dtype)
    x = torch.randn(1, 12, 16).to(dtype)
    with torch.inference_mode():
        store = AttentionStore(latent_hw=(3, 4))
        SelfAttentionCapture("layer", store, query_chunk=5)(attn, x)
        q = attn.head_to_batch_dim(attn.to_q(x))
        k = attn.head_to_batch_dim(attn.to_k(x))
        per_head = attn.get_attention_scores(q, k, None).float()  # (heads, 12, 12)
    got = store.maps()[0][0][0]
    assert not torch.allclose(per_head[0], per_head[1], atol=1e-2)  # the heads differ
    tol = 1e-6 if dtype == torch.float32 else 1e-2
    torch.testing.assert_close(got, per_head.mean(0), atol=tol, rtol=0)


def test_cross_attention_capture_equals_reference_probs_and_keeps_the_output(unet):
    x, e = _inputs(b=2, hw=(8, 8), seed=5)
    log: dict = {}
    originals = dict(unet.attn_processors)
    rec = {n: (RecordingProcessor(n, log, cross=True) if n.endswith("attn2.processor") else p)
           for n, p in originals.items()}
    with torch.inference_mode():
        ref = unet(x, 300, encoder_hidden_states=e).sample
        unet.set_attn_processor(rec)
        try:
            unet(x, 300, encoder_hidden_states=e)
        finally:
            unet.set_attn_processor(originals)
        with capture_attention(unet, (8, 8), self_attention=False, cross_attention=True) as store:
            out = unet(x, 300, encoder_hidden_states=e).sample
            during = dict(unet.attn_processors)
    torch.testing.assert_close(out, ref, atol=2e-5, rtol=1e-4)
    assert store.sums == {}  # self-attention not captured: those layers kept their processors
    assert all(during[n] is originals[n] for n in originals if n.endswith("attn1.processor"))
    maps, shapes = store.cross_maps()
    assert shapes == [(8, 8), (4, 4)]
    for m, (h, w) in zip(maps, shapes):
        assert tuple(m.shape) == (2, h * w, 7)  # 7 prompt tokens
        expected = torch.stack([log[n] for n, g in store.layer_grids.items() if g == (h, w)]).mean(0)
        torch.testing.assert_close(m, expected, atol=1e-6, rtol=1e-5)
    assert all(unet.attn_processors[n] is originals[n] for n in originals)


def test_self_and_cross_in_one_pass_equal_separate_captures(unet):
    x, e = _inputs(b=1, hw=(8, 8), seed=6)
    with torch.inference_mode():
        with capture_self_attention(unet, (8, 8)) as s1:
            unet(x, 300, encoder_hidden_states=e)
        with capture_attention(unet, (8, 8), self_attention=False, cross_attention=True) as s2:
            unet(x, 300, encoder_hidden_states=e)
        with capture_attention(unet, (8, 8), cross_attention=True) as both:
            unet(x, 300, encoder_hidden_states=e)
    for a, b in zip(both.maps()[0], s1.maps()[0]):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    for a, b in zip(both.cross_maps()[0], s2.cross_maps()[0]):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
