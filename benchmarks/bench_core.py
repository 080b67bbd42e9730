#!/usr/bin/env python3
"""Speed of the DiffSeg core: post-UNet math, merge vs its matrix products, capture overhead,
and (with CUDA) end-to-end images/s. Prints one line per figure.

    python benchmarks/bench_core.py [--reference ../shared/reference/gen_attention.py] [--quick]

(a) post-UNet time (aggregate + merge + NMS to 512x512) for one 64x64 attention set on CPU
    (target <= 0.8 s). Attention comes from the reference generator when ``--reference``
    points at ``gen_attention.py`` (or its folder), else from a blocky in-script generator.
(b) merge time vs the time of the matrix products it needs: the two KL products of the
    anchor merge, (M, D) @ (D, N), and the mean product, (M, N) @ (N, D) (target <= 1.5x).
(c) UNet forward with attention capture vs without (diffusers' default processor), on the
    tiny test model and on full-size SD 1.5 and SD 2.1-base UNets built from their configs
    with random weights, 512 px (64x64 latent) (target <= 1.25x). ``--quick``: tiny only.
(d) with CUDA: images/s of `DiffSegSegmenter` at 512x512 float16, batch 1 and 8, on the
    SD 1.5 architecture with random weights (the speed does not depend on the weights).
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from diffseg_core.aggregate import aggregate  # noqa: E402
from diffseg_core.capture import capture_self_attention  # noqa: E402
from diffseg_core.config import MergeConfig  # noqa: E402
from diffseg_core.pipeline import segment_aggregated  # noqa: E402

RES = (64, 32, 16, 8)


# ----------------------------------------------------------------------------- helpers
def timed(fn: Callable[[], Any], reps: int, warmup: int = 1) -> tuple[float, Any]:
    """Median wall seconds of ``reps`` calls after ``warmup`` calls; also the last result."""
    wall, _, out = timed2(fn, reps, warmup)
    return wall, out


def timed2(fn: Callable[[], Any], reps: int, warmup: int = 1) -> tuple[float, float, Any]:
    """Median wall and process-CPU seconds of ``reps`` calls (CPU time is robust to other
    processes sharing the machine), and the last result."""
    out = None
    for _ in range(warmup):
        out = fn()
    wall, cpu = [], []
    for _ in range(reps):
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return statistics.median(wall), statistics.median(cpu), out


def blocky_attention(seed: int = 0, k: int = 6, heads: int = 2, noise: float = 0.4) -> dict[int, np.ndarray]:
    """Synthetic self-attention like the original's input: per resolution r, float32
    ``(heads, r*r, r*r)`` rows summing to 1, concentrated on the query's own block region
    with a Gaussian falloff, some leakage, a floor and per-head log-normal noise."""
    rng = np.random.default_rng(seed)
    cuts_y = np.sort(rng.choice(np.arange(12, 52), 1, replace=False))
    cuts_x = np.sort(rng.choice(np.arange(10, 54), k // 2 - 1, replace=False))
    gy = np.searchsorted(cuts_y, np.arange(64), side="right")
    gx = np.searchsorted(cuts_x, np.arange(64), side="right")
    lab = gy[:, None] * (len(cuts_x) + 1) + gx[None, :]
    n_lab = int(lab.max()) + 1
    out = {}
    for r in RES:
        c = 64 // r
        onehot = np.eye(n_lab, dtype=np.float32)[lab]
        frac = onehot.reshape(r, c, r, c, n_lab).mean((1, 3)).reshape(r * r, n_lab)
        same = frac @ frac.T
        p = (np.arange(r, dtype=np.float32) + 0.5) / r
        py, px = np.meshgrid(p, p, indexing="ij")
        pos = np.stack([py.ravel(), px.ravel()], 1)
        d2 = ((pos[:, None] - pos[None]) ** 2).sum(-1)
        base = 0.9 * same * np.exp(-d2 / (2 * 0.3 ** 2)) + 0.1 * (1 - same) * np.exp(-d2 / (2 * 0.2 ** 2))
        base = base / base.sum(1, keepdims=True) * 0.998 + 0.002 / (r * r)
        w = np.empty((heads, r * r, r * r), np.float32)
        for h in range(heads):
            a = base * np.exp(noise * rng.standard_normal(base.shape) - noise ** 2 / 2)
            w[h] = (a / a.sum(1, keepdims=True)).astype(np.float32)
        out[r] = w
    return out


def reference_attention(path: str) -> dict[int, np.ndarray]:
    """A case from the reference generator (the hardest parity case's arguments, c3)."""
    p = Path(path)
    if p.is_dir():
        p = p / "gen_attention.py"
    spec = importlib.util.spec_from_file_location("gen_attention", p)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    case = mod.generate(seed=33, K=6, noise=0.6, heads=2, leak=0.1, shape="blobs")
    return {r: case["frames"][0][r] for r in RES}


# ----------------------------------------------------------------------------- (a), (b)
def bench_post_unet(weights: dict[int, np.ndarray], reps: int) -> None:
    cfg = MergeConfig()
    per_res = [torch.from_numpy(weights[r]).mean(0, keepdim=True) for r in RES]  # (1, N, N)
    shapes = [(r, r) for r in RES]

    def run():
        t0 = time.perf_counter()
        agg = aggregate(per_res, shapes, (64, 64))[0]
        t1 = time.perf_counter()
        seg = segment_aggregated(agg, cfg, out_size=(512, 512))
        return t1 - t0, seg

    total, cpu, (agg_s, seg) = timed2(run, reps)
    print(f"(a) post-UNet (aggregate + merge + NMS), 64x64 attention -> 512x512 labels, CPU "
          f"{torch.get_num_threads()} threads: {total:.3f} s wall (process CPU {cpu:.3f} s) median of {reps} "
          f"[aggregate {agg_s:.3f} s, merge {seg.meta['merge_s']:.3f} s, nms {seg.meta['nms_s']:.3f} s, "
          f"K={seg.num_segments}] target <= 0.8 s: {'OK' if total <= 0.8 else 'MISSED'}")


def bench_merge_vs_matmul(weights: dict[int, np.ndarray], reps: int) -> None:
    from diffseg_core.merge import anchor_grid, iterative_merge

    per_res = [torch.from_numpy(weights[r]).mean(0, keepdim=True) for r in RES]
    agg = aggregate(per_res, [(r, r) for r in RES], (64, 64))[0]
    x = agg.reshape(agg.shape[0], -1).float()  # (N, D)
    anchors = anchor_grid((64, 64), 16)
    a = x[anchors]  # (M, D)
    member = (torch.rand(a.shape[0], x.shape[0], generator=torch.Generator().manual_seed(0)) < 0.05).float()

    def products():
        # The matrix products the anchor merge cannot avoid: a.log(x)^T, log(a).x^T, member.x
        lx = torch.log(x)
        _ = a @ lx.T
        _ = torch.log(a) @ x.T
        return member @ x

    def products_only():
        _ = a @ x.T
        _ = a @ x.T
        return member @ x

    t_mm, c_mm, _ = timed2(products_only, reps)
    t_mm_log, c_mm_log, _ = timed2(products, reps)
    t_merge, c_merge, props = timed2(lambda: iterative_merge(agg, (64, 64)), reps)
    ratio = t_merge / t_mm
    print(f"(b) merge (3 iterations, fp16-faithful) {t_merge:.3f} s vs its 3 matrix products "
          f"{t_mm:.3f} s (with the log of the maps {t_mm_log:.3f} s): {ratio:.2f}x wall "
          f"({t_merge / t_mm_log:.2f}x incl. log); process CPU {c_merge:.3f} s vs {c_mm:.3f} s: "
          f"{c_merge / c_mm:.2f}x ({c_merge / c_mm_log:.2f}x incl. log) "
          f"target <= 1.5x: {'OK' if ratio <= 1.5 else 'MISSED'}")


# ----------------------------------------------------------------------------- (c)
def sd15_unet_config() -> dict[str, Any]:
    """Stable Diffusion 1.5 UNet (same architecture as 1.4)."""
    return dict(
        sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
        block_out_channels=(320, 640, 1280, 1280),
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        cross_attention_dim=768, attention_head_dim=8, norm_num_groups=32,
    )


def sd21_base_unet_config() -> dict[str, Any]:
    """Stable Diffusion 2.1-base UNet: per-level head dims, linear projections, 1024-d text."""
    return dict(
        sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
        block_out_channels=(320, 640, 1280, 1280),
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        cross_attention_dim=1024, attention_head_dim=(5, 10, 20, 20), use_linear_projection=True,
        norm_num_groups=32,
    )


def bench_capture(name: str, unet: Any, latent_hw: tuple[int, int], text: tuple[int, int], reps: int,
                  device: torch.device, dtype: torch.dtype) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 4, *latent_hw, generator=g).to(device, dtype)
    e = torch.randn(1, *text, generator=g).to(device, dtype)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)

    def plain():
        unet(x, 300, encoder_hidden_states=e)
        sync()

    def captured():
        with capture_self_attention(unet, latent_hw) as store:
            unet(x, 300, encoder_hidden_states=e)
        store.maps()
        sync()

    with torch.inference_mode():
        plain()  # warm-up (allocator, kernels)
        if device.type == "cuda":
            captured()
        # Alternate the two so that drifting load from other processes hits both alike.
        wp, cp, wc, cc = [], [], [], []
        for _ in range(reps):
            w, c, _ = timed2(plain, 1, warmup=0)
            wp.append(w)
            cp.append(c)
            w, c, _ = timed2(captured, 1, warmup=0)
            wc.append(w)
            cc.append(c)
        med = statistics.median
        t_plain, c_plain, t_cap, c_cap = med(wp), med(cp), med(wc), med(cc)
    ratio = t_cap / t_plain
    extra = ""
    if device.type == "cpu":
        extra = f"; process CPU time {c_plain:.2f} s vs {c_cap:.2f} s: {c_cap / c_plain:.2f}x"
        ratio = c_cap / c_plain if c_plain > 0 else ratio  # decided on CPU time: robust to other load
    print(f"(c) UNet forward {name}, latent {latent_hw[0]}x{latent_hw[1]}, {device.type} {str(dtype)[6:]}: "
          f"default processor {t_plain:.3f} s, with capture {t_cap:.3f} s (median of {reps}): "
          f"{t_cap / t_plain:.2f}x wall{extra} target <= 1.25x: {'OK' if ratio <= 1.25 else 'MISSED'}")


def build_unet(cfg: dict[str, Any], device: torch.device, dtype: torch.dtype) -> Any:
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    return UNet2DConditionModel(**cfg).to(device=device, dtype=dtype).eval()


# ----------------------------------------------------------------------------- (d)
def bench_cuda_images_per_s(reps: int) -> None:
    from diffseg_core.config import SegmenterConfig
    from diffseg_core.models import LoadedModel, _sd_scheduler
    from diffseg_core.segmenter import DiffSegSegmenter
    from diffusers import AutoencoderKL

    dev, dt = torch.device("cuda"), torch.float16
    torch.manual_seed(0)
    unet = build_unet(sd15_unet_config(), dev, dt)
    vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), latent_channels=4, layers_per_block=2,
                        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                        sample_size=512).to(dev, dt).eval()
    model = LoadedModel(unet=unet, vae=vae, scheduler=_sd_scheduler(),
                        empty_embedding=torch.randn(1, 77, 768, device=dev, dtype=dt), model_id="sd15-random-arch",
                        device=dev, dtype=dt, vae_scale_factor=8, scaling_factor=0.18215)
    rng = np.random.default_rng(0)
    for bs in (1, 8):
        seg = DiffSegSegmenter(SegmenterConfig(model="sd15-random-arch", device="cuda", batch_size=bs), model=model)
        imgs = [rng.integers(0, 255, (512, 512, 3), dtype=np.uint8) for _ in range(bs * 2)]
        seg.segment(imgs[:bs])  # warm-up
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(reps):
            seg.segment(imgs)
        torch.cuda.synchronize()
        dt_s = (time.perf_counter() - t0) / reps
        s0 = seg.segment(imgs[:1])[0]
        tm = s0.meta["timings"]
        print(f"(d) CUDA {torch.cuda.get_device_name()}: 512x512 fp16 batch {bs}: {len(imgs) / dt_s:.2f} images/s "
              f"[per image: encode {tm['encode_s']:.3f} s, unet+capture {tm['unet_s']:.3f} s, "
              f"aggregate {tm['aggregate_s']:.3f} s, merge+nms {tm['post_s']:.3f} s]")


def main(argv: "list[str] | None" = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reference", help="path to ../shared/reference/gen_attention.py (or its folder)")
    ap.add_argument("--quick", action="store_true", help="fewer repetitions; tiny model only in (c)")
    ap.add_argument("--reps", type=int, default=None, help="repetitions of (a), (b) [5, quick: 2]")
    ap.add_argument("--sd-reps", type=int, default=1, help="repetitions of the full-size UNet forwards [1]")
    ap.add_argument("--skip", default="", help="comma list of parts to skip: a,b,c,d")
    a = ap.parse_args(argv)
    skip = set(filter(None, a.skip.split(",")))
    reps = a.reps or (2 if a.quick else 5)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"bench_core: torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{os.cpu_count()} CPUs, load average {load:.1f}")
    if not {"a", "b"} <= skip:
        src = "reference generator (c3 arguments)" if a.reference else "in-script blocky generator"
        t0 = time.perf_counter()
        w = reference_attention(a.reference) if a.reference else blocky_attention()
        print(f"attention set: {src}, made in {time.perf_counter() - t0:.1f} s")
        if "a" not in skip:
            bench_post_unet(w, reps)
        if "b" not in skip:
            bench_merge_vs_matmul(w, reps)
    if "c" not in skip:
        from diffseg_core.models import tiny_random_model

        cpu = torch.device("cpu")
        tiny = tiny_random_model()
        bench_capture("tiny-random", tiny.unet, (64, 64), (77, 32), max(reps, 15), cpu, torch.float32)
        if not a.quick:
            for name, cfg, text in (("SD 1.5 (random weights)", sd15_unet_config(), (77, 768)),
                                    ("SD 2.1-base (random weights)", sd21_base_unet_config(), (77, 1024))):
                unet = build_unet(cfg, cpu, torch.float32)
                bench_capture(name, unet, (64, 64), text, a.sd_reps, cpu, torch.float32)
                del unet
        if torch.cuda.is_available():
            for name, cfg, text in (("SD 1.5 (random weights)", sd15_unet_config(), (77, 768)),
                                    ("SD 2.1-base (random weights)", sd21_base_unet_config(), (77, 1024))):
                unet = build_unet(cfg, torch.device("cuda"), torch.float16)
                bench_capture(name, unet, (64, 64), text, 5, torch.device("cuda"), torch.float16)
                del unet
    if "d" not in skip:
        if torch.cuda.is_available():
            bench_cuda_images_per_s(2 if a.quick else 5)
        else:
            print("(d) images/s at 512x512 fp16: skipped (no CUDA device here)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
