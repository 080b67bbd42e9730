"""Capture head-averaged self-attention probabilities from a diffusers UNet.

`SelfAttentionCapture` is a diffusers attention processor that replaces the processor of
every self-attention (``attn1``) layer for the duration of a `capture_self_attention`
context. It computes the layer's output itself from explicit probabilities (scaled dot
product attention hides them), so capturing costs about one attention per layer, not two:

    q, k, v projections -> per query chunk: softmax(q k^T * scale) -> probs @ v
                                            -> probs averaged over heads (float32) -> store

The probabilities of all heads of all layers that share a spatial grid are averaged, giving
one float32 ``(B, N_r, N_r)`` map per resolution ``r`` (rows sum to 1), which is what
`diffseg_core.aggregate.aggregate` takes. Each layer's grid ``(h_r, w_r)`` is derived from
its sequence length and the latent's shape (no hard-coded 64/4096): SD halves the latent
``(h, w)`` with stride-2 convolutions, so ``h_r = ceil(h / 2**k)``.

With ``cross_attention=True`` (`capture_attention`) the ``attn2`` layers are captured too:
their probabilities ``(B, N_r, L)`` over the ``L`` prompt tokens are small, so they are
computed whole, head-averaged and summed per grid like the self-attention
(`AttentionStore.cross_maps`; `diffseg_core.aggregate.aggregate_cross` brings them to one
grid). The names of segments come from them (`diffseg_core.naming`).

On exit the original processors (the very same objects) are put back, also when the forward
pass raises.
"""
from __future__ import annotations

import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch

from .aggregate import layer_grid
from .config import CaptureConfig

__all__ = ["AttentionStore", "SelfAttentionCapture", "capture_self_attention", "capture_attention",
           "self_attention_layer_names", "expected_layer_count", "release_workspace"]


#: Largest CPU scratch buffer kept between captures (bigger ones are freed with the store).
CPU_POOL_MAX_BYTES = 512 * 2**20
_LOCAL = threading.local()


def _cpu_pool() -> dict:
    pool = getattr(_LOCAL, "pool", None)
    if pool is None:
        pool = _LOCAL.pool = {}
    return pool


def release_workspace() -> None:
    """Free this thread's CPU scratch buffers kept between captures."""
    _cpu_pool().clear()


@dataclass
class AttentionStore:
    """Running sums of head-averaged self-attention per spatial grid.

    Attributes:
        latent_hw: ``(h, w)`` of the UNet input latent (for `layer_grid`).
        sums: grid ``(h_r, w_r)`` -> float32 ``(B, N_r, N_r)`` sum over captured layers of the
            head-mean attention probabilities.
        counts: grid -> number of layer calls summed into ``sums[grid]``.
        layers: names of the layers captured, in call order (one entry per call).
        layer_grids: layer name -> its grid.
        cross_sums: grid -> float32 ``(B, N_r, L)`` sum of head-mean cross-attention
            probabilities over the ``L`` prompt tokens (`capture_attention` with
            ``cross_attention=True``).
        cross_counts: grid -> number of cross-attention layer calls summed.
    """

    latent_hw: tuple[int, int]
    sums: dict[tuple[int, int], torch.Tensor] = field(default_factory=dict)
    counts: dict[tuple[int, int], int] = field(default_factory=dict)
    layers: list[str] = field(default_factory=list)
    layer_grids: dict[str, tuple[int, int]] = field(default_factory=dict)
    cross_sums: dict[tuple[int, int], torch.Tensor] = field(default_factory=dict)
    cross_counts: dict[tuple[int, int], int] = field(default_factory=dict)
    _work: dict[tuple, torch.Tensor] = field(default_factory=dict, repr=False)

    def reset(self, latent_hw: "tuple[int, int] | None" = None) -> None:
        """Forget everything captured (before the next UNet forward)."""
        if latent_hw is not None:
            self.latent_hw = (int(latent_hw[0]), int(latent_hw[1]))
        self.sums.clear()
        self.counts.clear()
        self.layers.clear()
        self.layer_grids.clear()
        self.cross_sums.clear()
        self.cross_counts.clear()
        self._work.clear()

    def workspace(self, key: str, numel: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """A flat scratch tensor of at least ``numel`` elements, reused across layers and calls.

        On the CPU the buffers also outlive the store (per thread, see `release_workspace`):
        fresh large tensors cost page faults on first touch, about as much as the arithmetic.
        On CUDA the caching allocator already reuses memory, so they live with the store only.
        """
        k = (key, dtype, str(device))
        pool = self._work if torch.device(device).type != "cpu" else _cpu_pool()
        buf = pool.get(k)
        if buf is None or buf.numel() < numel:
            pool.pop(k, None)
            buf = torch.empty(numel, dtype=dtype, device=device)
            if numel * buf.element_size() <= CPU_POOL_MAX_BYTES or pool is self._work:
                pool[k] = buf
        return buf

    def begin(self, name: str, seq_len: int, batch: int, device: torch.device) -> torch.Tensor:
        """Register one layer call; return the float32 ``(B, N, N)`` accumulator to add to."""
        grid = layer_grid(seq_len, self.latent_hw)
        self.layers.append(name)
        self.layer_grids[name] = grid
        acc = self.sums.get(grid)
        if acc is None or acc.shape[0] != batch:
            acc = torch.zeros((batch, seq_len, seq_len), dtype=torch.float32, device=device)
            self.sums[grid] = acc
            self.counts[grid] = 0
        self.counts[grid] += 1
        return acc

    def begin_cross(self, name: str, seq_len: int, n_tokens: int, batch: int, device: torch.device) -> torch.Tensor:
        """Register one cross-attention layer call; return its float32 ``(B, N, L)`` accumulator."""
        grid = layer_grid(seq_len, self.latent_hw)
        self.layers.append(name)
        self.layer_grids[name] = grid
        acc = self.cross_sums.get(grid)
        if acc is None or acc.shape[0] != batch or acc.shape[2] != n_tokens:
            acc = torch.zeros((batch, seq_len, n_tokens), dtype=torch.float32, device=device)
            self.cross_sums[grid] = acc
            self.cross_counts[grid] = 0
        self.cross_counts[grid] += 1
        return acc

    def cross_maps(self) -> tuple[list[torch.Tensor], list[tuple[int, int]]]:
        """Mean cross-attention per grid, finest first: float32 ``(B, N_i, L)`` (each query's
        row is a distribution over the ``L`` tokens) and the grids ``(h_i, w_i)``."""
        grids = sorted(self.cross_sums, key=lambda g: -(g[0] * g[1]))
        return [self.cross_sums[g] / float(self.cross_counts[g]) for g in grids], grids

    @property
    def grids(self) -> list[tuple[int, int]]:
        """Captured grids, finest first."""
        return sorted(self.sums, key=lambda g: -(g[0] * g[1]))

    def maps(self) -> tuple[list[torch.Tensor], list[tuple[int, int]]]:
        """Mean attention per grid.

        Returns:
            ``(maps, shapes)``: ``maps[i]`` float32 ``(B, N_i, N_i)`` (rows sum to 1: the mean
            over all heads of all layers on grid ``shapes[i] = (h_i, w_i)``), finest first.
        """
        grids = self.grids
        return [self.sums[g] / float(self.counts[g]) for g in grids], grids


def self_attention_layer_names(unet: Any, layers: str = "attn1") -> list[str]:
    """Processor names (keys of ``unet.attn_processors``) of the self-attention layers."""
    return [n for n in unet.attn_processors if n.endswith(f"{layers}.processor")]


class SelfAttentionCapture:
    """Attention processor for one ``attn1`` layer: exact output plus captured probabilities.

    Reproduces diffusers' ``AttnProcessor`` (spatial norm, 4-D inputs, attention mask,
    group norm, q/k norms, residual connection, output rescale) while computing the
    probabilities explicitly, ``query_chunk`` queries at a time, in the model's dtype (upcast
    to float32 where the layer asks for it), and adding their head mean to ``store`` in
    float32.
    """

    def __init__(self, name: str, store: AttentionStore, query_chunk: int = CaptureConfig.query_chunk,
                 cross: bool = False) -> None:
        self.name = name
        self.store = store
        self.query_chunk = int(query_chunk)
        self.cross = bool(cross)  # an attn2 layer: capture its probabilities over the prompt tokens

    def __call__(self, attn: Any, hidden_states: torch.Tensor,
                 encoder_hidden_states: "torch.Tensor | None" = None,
                 attention_mask: "torch.Tensor | None" = None, temb: "torch.Tensor | None" = None,
                 *args: Any, **kwargs: Any) -> torch.Tensor:
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch_size, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch_size, channel, height * width).transpose(1, 2)
        batch_size, sequence_length, _ = (
            hidden_states.shape if encoder_hidden_states is None else encoder_hidden_states.shape
        )
        attention_mask = attn.prepare_attention_mask(attention_mask, sequence_length, batch_size)
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)

        query = attn.to_q(hidden_states)
        if encoder_hidden_states is None:
            encoder_hidden_states = hidden_states
        elif attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        key = attn.to_k(encoder_hidden_states)
        value = attn.to_v(encoder_hidden_states)

        heads = attn.heads
        norm_q, norm_k = getattr(attn, "norm_q", None), getattr(attn, "norm_k", None)
        if norm_q is not None or norm_k is not None:
            # q/k norms act per head on (B, heads, L, d), as in AttnProcessor2_0.
            query = attn.head_to_batch_dim(query, out_dim=4)
            key = attn.head_to_batch_dim(key, out_dim=4)
            if norm_q is not None:
                query = norm_q(query)
            if norm_k is not None:
                key = norm_k(key)
            query = query.reshape(-1, query.shape[2], query.shape[3])
            key = key.reshape(-1, key.shape[2], key.shape[3])
        else:
            query = attn.head_to_batch_dim(query)  # (B*heads, Lq, d)
            key = attn.head_to_batch_dim(key)  # (B*heads, Lk, d)
        value = attn.head_to_batch_dim(value)

        out = self._attend(attn, query, key, value, attention_mask, batch_size, heads)
        hidden_states = attn.batch_to_head_dim(out)
        hidden_states = attn.to_out[0](hidden_states)
        hidden_states = attn.to_out[1](hidden_states)
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch_size, channel, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor

    def _attend(self, attn: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                mask: "torch.Tensor | None", batch: int, heads: int) -> torch.Tensor:
        """Chunked attention: returns ``(B*heads, Lq, d)`` and accumulates the head mean.

        Args:
            query: ``(B*heads, Lq, d)`` in the model dtype.
            key: ``(B*heads, Lk, d)``; self-attention, so ``Lk == Lq``.
            value: ``(B*heads, Lk, d_v)``.
            mask: additive ``(B*heads, 1 | Lq, Lk)`` or None.
        """
        dtype = query.dtype
        n_q, n_k = query.shape[1], key.shape[1]
        if n_q != n_k or self.cross:  # cross-attention: (B*heads, Nq, L) is small, computed whole
            probs = attn.get_attention_scores(query, key, mask)
            if self.cross:
                acc = self.store.begin_cross(self.name, n_q, n_k, batch, query.device)
                acc.add_(probs.view(batch, heads, n_q, n_k).sum(1, dtype=torch.float32), alpha=1.0 / heads)
            return torch.bmm(probs, value)
        acc = self.store.begin(self.name, n_q, batch, query.device)
        if attn.upcast_attention:
            query, key = query.float(), key.float()
        # Softmax in the scores' dtype, except where the layer asks for float32 (upcast).
        sdtype = torch.float32 if attn.upcast_softmax else query.dtype
        key_t = key.transpose(1, 2).contiguous()
        out = torch.empty(query.shape[0], n_q, value.shape[2], dtype=dtype, device=query.device)
        chunk = min(max(1, self.query_chunk), n_q)
        bh = query.shape[0]
        # Reused work buffers: fresh (B*heads, chunk, N) tensors per chunk cost as much as the
        # arithmetic on the CPU (page faults on first touch).
        scores_buf = self.store.workspace("scores", bh * chunk * n_k, query.dtype, query.device)
        probs_buf = (scores_buf if sdtype == query.dtype
                     else self.store.workspace("probs", bh * chunk * n_k, sdtype, query.device))
        for q0 in range(0, n_q, chunk):
            q1 = min(n_q, q0 + chunk)
            c = q1 - q0
            scores = scores_buf[: bh * c * n_k].view(bh, c, n_k)
            if mask is None:
                # beta=0: the buffer's old content is ignored (NaN-safe), scale fused in.
                torch.baddbmm(scores, query[:, q0:q1], key_t, beta=0, alpha=attn.scale, out=scores)
            else:
                scores.copy_((mask if mask.shape[1] == 1 else mask[:, q0:q1]).expand(bh, c, n_k))
                torch.baddbmm(scores, query[:, q0:q1], key_t, beta=1, alpha=attn.scale, out=scores)
            probs = probs_buf[: bh * c * n_k].view(bh, c, n_k)
            torch.softmax(scores, dim=-1, dtype=sdtype if sdtype != scores.dtype else None, out=probs)
            p = probs if probs.dtype == dtype else probs.to(dtype)
            out[:, q0:q1] = torch.bmm(p, value)
            # Head mean as we go, float32 accumulation: only (B, chunk, N) more is needed. The
            # heads are summed in float32, except bf16/fp16 on the CPU, summed in their own dtype
            # (float accumulation, one rounding of the result: as exact as the probabilities):
            # there a float32 sum of them is a slow path (132 ms on a 64x64 SD layer, head by head
            # into the float32 sum 56 ms, in their dtype 32 ms; micro-benchmarks on 2 cores)
            hdt = probs.dtype if probs.device.type == "cpu" else torch.float32
            hsum = self.store.workspace(f"head_sum_{hdt}", batch * chunk * n_k, hdt,
                                        query.device)[: batch * c * n_k].view(batch, c, n_k)
            torch.sum(probs.view(batch, heads, c, n_k), dim=1, dtype=hdt, out=hsum)
            acc[:, q0:q1].add_(hsum, alpha=1.0 / heads)
        return out


@contextmanager
def capture_self_attention(unet: Any, latent_hw: tuple[int, int],
                           config: "CaptureConfig | None" = None) -> Iterator[AttentionStore]:
    """`capture_attention` of the self-attention layers only (what segmenting needs)."""
    with capture_attention(unet, latent_hw, config) as store:
        yield store


@contextmanager
def capture_attention(unet: Any, latent_hw: tuple[int, int], config: "CaptureConfig | None" = None, *,
                      self_attention: bool = True, cross_attention: bool = False) -> Iterator[AttentionStore]:
    """Install `SelfAttentionCapture` on every ``attn1`` layer of ``unet`` (and on every
    ``attn2`` layer with ``cross_attention``); restore on exit.

    Layers not captured keep their processors (fused attention). The original processor
    objects are put back on exit, also after an error.

    Args:
        unet: a diffusers ``UNet2DConditionModel`` (anything with ``attn_processors`` and
            ``set_attn_processor``).
        latent_hw: ``(h, w)`` of the latent the next forward pass gets (layer grids follow).
        config: capture settings (``query_chunk``).
        self_attention: capture the ``attn1`` layers (`AttentionStore.maps`).
        cross_attention: capture the ``attn2`` layers (`AttentionStore.cross_maps`).

    Yields:
        The `AttentionStore` filled by the forward passes run inside the context; call
        ``store.maps()`` for float32 ``(B, N_r, N_r)`` maps per grid, finest first.

    Example:
        >>> with capture_self_attention(unet, (64, 64)) as store:
        ...     unet(latents, 300, encoder_hidden_states=emb)
        >>> maps, shapes = store.maps()
    """
    config = config or CaptureConfig()
    originals = dict(unet.attn_processors)
    names = self_attention_layer_names(unet, config.layers) if self_attention else []
    if self_attention and not names:
        raise ValueError("the UNet has no self-attention ('attn1') layers to capture")
    cross = self_attention_layer_names(unet, "attn2") if cross_attention else []
    if cross_attention and not cross:
        raise ValueError("the UNet has no cross-attention ('attn2') layers to capture")
    store = AttentionStore(latent_hw=(int(latent_hw[0]), int(latent_hw[1])))
    new = dict(originals)
    for n in names:
        new[n] = SelfAttentionCapture(n, store, config.query_chunk)
    for n in cross:
        new[n] = SelfAttentionCapture(n, store, config.query_chunk, cross=True)
    unet.set_attn_processor(new)  # (diffusers pops entries from the dict it is given)
    try:
        yield store
    finally:
        unet.set_attn_processor(dict(originals))


def expected_layer_count(unet: Any) -> int:
    """Number of ``attn1`` layers of ``unet`` (what one forward pass captures)."""
    return len(self_attention_layer_names(unet))

