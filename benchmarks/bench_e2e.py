#!/usr/bin/env python3
"""Where the time of one frame goes, end to end, beside the passes it cannot avoid.

    python benchmarks/bench_e2e.py [--arch sd15,sd21-base] [--dtype float32,bfloat16]
                                   [--frames 6] [--keyframe-every 4] [--reps 2] [--rounds 4] [--batch 1,8]
                                   [--no-video]
                                   [--reference ../shared/reference]

For each architecture (Stable Diffusion 1.5 and 2.1-base UNets and the SD VAE, built from
their configs with random weights: the speed does not depend on the weights) and dtype, on a
synthetic 512x512 clip (the example scene, H.264 through PyAV):

* per-stage seconds of one frame: decode, VAE encode, UNet with attention capture,
  aggregation, merge, NMS (from `DiffSegSegmenter`'s own timings), linking (the engine's
  `VideoSegmenter.step` on the segmentations just made) and writing (label PNG, overlay,
  overlay MP4 frame); and the segmenter's wall time per frame, all stages together;
* the post-UNet path on a realistic attention set (random weights give one flat segment);
* the baselines measured in the same run: **diffusers' default passes** (the VAE encode and a
  plain UNet forward, default memory format and attention processors: what a user's own
  diffusers code would spend), timed in alternation with the segmenter (``--rounds``; the
  ratio is the median of the per-round ratios, so a load that changes during the run moves
  both sides) and **the two KL matrix products** of the first merge
  (``(M, D) @ (D, N)`` twice, M = 256 anchors, D = N = the finest grid's tokens);
* names for segments (issue 18): the segmenter's wall time per frame with a 10-word
  vocabulary, named in a second prompted pass and in the same pass (the vocabulary's text
  embedding is made once per vocabulary and not timed: random embeddings of the model's
  width stand in for the text encoder);
* frames/s of `segment_video` (what `diffseg video` runs) in every-frame mode, with
  ``--keyframe-every`` k and with ``auto`` keyframes, on ``--frames`` frames (linking,
  writing and the overlay included);
* with CUDA: the same in float16, and the segmenter's images/s at batch 1 and 8 (``--batch``).

Targets (issue 19): the whole segmenter <= 1.0x diffusers' default passes in every dtype;
post-UNet (aggregate + merge + NMS) <= 3.0x the two KL products. CPU figures depend on the
machine: compare only figures of one run.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_core import sd15_unet_config, sd21_base_unet_config  # noqa: E402

ARCHS: dict[str, tuple[Callable[[], dict], int]] = {
    "sd15": (sd15_unet_config, 768),
    "sd21-base": (sd21_base_unet_config, 1024),
}
SIDE = 512


def sd_vae_config() -> dict[str, Any]:
    """The VAE of Stable Diffusion 1.x / 2.x (``AutoencoderKL``, 4 latent channels)."""
    return dict(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2,
                block_out_channels=(128, 256, 512, 512), norm_num_groups=32, sample_size=512,
                down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)


def build_model(arch: str, device: torch.device, dtype: torch.dtype) -> Any:
    """A `LoadedModel` of ``arch`` with random weights, prepared as `load_model` prepares a
    real one (dtype, device, channels-last, eval)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from diffseg_core.models import TextEncoder, _finish, _sd_scheduler

    unet_cfg, text_dim = ARCHS[arch]
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**unet_cfg())
    vae = AutoencoderKL(**sd_vae_config())
    emb = torch.randn(1, 77, text_dim)
    model = _finish(unet, vae, _sd_scheduler(), emb, f"{arch}-random-arch", device, dtype, is_random=True)
    model._text = TextEncoder(lambda w: [100 + len(w)], lambda ids: (torch.randn(ids.shape[0], ids.shape[1], text_dim),),
                              bos=0, eos=2, pad=1, separator=[3], max_length=77, device=device, dtype=dtype)
    return model


#: the vocabulary of the names' timings (10 words, one prompt)
VOCABULARY = ("person", "dog", "car", "tree", "sky", "road", "grass", "building", "water", "sun")


def make_clip(path: Path, n: int) -> None:
    """``n`` frames of the example scene at 512x512 (H.264 through PyAV)."""
    import cv2

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
    from make_example_clip import Scene

    from temporal.writer import OverlayVideoWriter

    scene = Scene(0)
    w = OverlayVideoWriter(path, 12.0)
    for i in range(n):
        w.write(cv2.resize(scene.frame(i, n), (SIDE, SIDE), interpolation=cv2.INTER_CUBIC))
    w.close()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_time(fn: Callable[[], Any], reps: int, device: torch.device) -> float:
    fn()  # warm-up
    sync(device)
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        sync(device)
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


@contextmanager
def default_format(model: Any) -> Iterator[None]:
    """The model as diffusers' default passes run it (default memory format, default
    attention processors); the segmenter's set-up is restored on exit."""
    from diffusers.models.attention_processor import AttnProcessor2_0

    vae, unet = model.vae, model.unet
    saved = dict(unet.attn_processors)
    vae.to(memory_format=torch.contiguous_format)
    unet.to(memory_format=torch.contiguous_format)
    unet.set_attn_processor(AttnProcessor2_0())
    try:
        yield
    finally:
        unet.set_attn_processor(saved)
        vae.to(memory_format=torch.channels_last)
        unet.to(memory_format=torch.channels_last)


def default_passes(model: Any, frame: np.ndarray) -> tuple[float, float]:
    """Seconds of diffusers' VAE encode and plain UNet forward on ``frame``'s model input
    (the segmenter's own preprocessing), once each; call inside `default_format`."""
    from diffseg_core.segmenter import _model_input, as_image_list

    dev, dt = model.device, model.dtype
    x = (_model_input(as_image_list(frame)[0], (SIDE, SIDE), dev)[None] * 2 - 1).to(dt)
    with torch.inference_mode():
        sync(dev)
        t0 = time.perf_counter()
        lat = model.vae.encode(x).latent_dist.mean * model.scaling_factor
        sync(dev)
        t1 = time.perf_counter()
        model.unet(lat, torch.tensor([300], device=dev), encoder_hidden_states=model.empty_embedding.expand(1, -1, -1))
        sync(dev)
        t2 = time.perf_counter()
    return t1 - t0, t2 - t1


def paired_rounds(model: Any, frames: list, rounds: int) -> dict[str, Any]:
    """The segmenter and diffusers' default passes timed in alternation on the same frames:
    round r segments frame r, then runs the default passes on it. A load that changes during
    the run (other processes, thermal state) shifts both figures of a round alike, so the
    median of the per-round ratios is the figure to trust (whole frame, VAE encode, UNet with
    capture against the plain UNet); medians of the times beside it."""
    from diffseg_core.config import SegmenterConfig
    from diffseg_core.segmenter import DiffSegSegmenter

    seg = DiffSegSegmenter(SegmenterConfig(model=model.model_id, size=SIDE), model=model)
    seg.segment_one(frames[0])  # warm-ups
    with default_format(model):
        default_passes(model, frames[0])
    walls, vaes, unets, vae_share, unet_share = [], [], [], [], []
    for r in range(rounds):
        f = frames[r % len(frames)]
        sync(model.device)
        t0 = time.perf_counter()
        timings = seg.segment_one(f).meta["timings"]
        sync(model.device)
        walls.append(time.perf_counter() - t0)
        with default_format(model):
            v, u = default_passes(model, f)
        vaes.append(v)
        unets.append(u)
        vae_share.append(timings["encode_s"] / v)
        unet_share.append(timings["unet_s"] / u)
    med = statistics.median
    ratios = [w / (v + u) for w, v, u in zip(walls, vaes, unets)]
    return {"segmenter": med(walls), "vae": med(vaes), "unet": med(unets), "ratio": med(ratios), "ratios": ratios,
            "vae_ratio": med(vae_share), "unet_ratio": med(unet_share)}


def batch_throughput(model: Any, frames: list, batch: int, reps: int) -> float:
    """Images/s of `DiffSegSegmenter.segment` on ``batch`` frames per call (``batch_size``
    = ``batch``: one UNet forward for all of them), median of ``reps`` calls after a warm-up."""
    from diffseg_core.config import SegmenterConfig
    from diffseg_core.segmenter import DiffSegSegmenter

    seg = DiffSegSegmenter(SegmenterConfig(model=model.model_id, size=SIDE, batch_size=batch), model=model)
    images = [frames[i % len(frames)] for i in range(batch)]
    return batch / median_time(lambda: seg.segment(images), reps, model.device)


def kl_products(n: int, reps: int, device: torch.device) -> float:
    """Seconds of the first merge's two KL products, (256, n) @ (n, n) twice, float32."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, n, generator=g).to(device)
    a = x[:256].clone()
    lx, la = x.log(), a.log()
    return median_time(lambda: (a @ lx.T, la @ x.T), max(reps, 5), device)


def post_unet_realistic(reference: "str | None", reps: int) -> tuple[float, int]:
    """Seconds of the segmenter's post-UNet path (aggregate in place, merge, NMS to 512x512)
    on a realistic 64x64 attention set (random weights give one flat segment): the reference
    generator's hardest case with ``--reference``, else bench_core's blocky generator."""
    from bench_core import RES, blocky_attention, reference_attention

    from diffseg_core.aggregate import aggregate
    from diffseg_core.config import MergeConfig
    from diffseg_core.pipeline import segment_aggregated

    w = reference_attention(reference) if reference else blocky_attention()
    per_res = [torch.from_numpy(w[r]).mean(0, keepdim=True) for r in RES]

    def run() -> Any:
        maps = [m.clone() for m in per_res]  # what the capture hands over (owned)
        t0 = time.perf_counter()
        agg = aggregate(maps, [(r, r) for r in RES], (64, 64), inplace=True)[0]
        seg = segment_aggregated(agg, MergeConfig(), out_size=(SIDE, SIDE))
        return time.perf_counter() - t0, seg.num_segments

    run()
    runs = [run() for _ in range(max(reps, 5))]
    return statistics.median(r[0] for r in runs), runs[0][1]


def decode_clip(clip: Path) -> tuple[list, float]:
    """The clip's RGB frames and the seconds its decoding took per frame."""
    from temporal.io import FrameSource

    t0 = time.perf_counter()
    frames = [f.rgb for f in FrameSource(clip)]
    return frames, (time.perf_counter() - t0) / len(frames)


def frame_stages(model: Any, frames: list, out: Path) -> dict[str, float]:
    """Per-stage seconds of one frame (medians over ``frames``), decoding excepted."""
    from diffseg_core.config import NamingConfig, SegmenterConfig
    from diffseg_core.io import overlay, save_labels_png, segment_ids
    from diffseg_core.segmenter import DiffSegSegmenter
    from temporal.config import TrackerConfig
    from temporal.tracker import VideoSegmenter
    from temporal.writer import OverlayVideoWriter

    seg = DiffSegSegmenter(SegmenterConfig(model=model.model_id, size=SIDE), model=model)
    seg.segment_one(frames[0])  # warm-up (allocator, kernels, workspaces)
    sync(model.device)
    walls, segs, timings = [], [], []
    for f in frames:
        t = time.perf_counter()
        s = seg.segment_one(f)
        walls.append(time.perf_counter() - t)
        segs.append(s)
        timings.append({**s.meta["timings"], "merge_s": s.meta["merge_s"], "nms_s": s.meta["nms_s"]})
    names = {}
    for mode, same in (("second", False), ("same", True)):
        named = DiffSegSegmenter(SegmenterConfig(model=model.model_id, size=SIDE, naming=NamingConfig(
            vocabulary=VOCABULARY, same_pass=same)), model=model)
        named.segment_one(frames[0])
        sync(model.device)
        w = []
        for f in frames:
            t = time.perf_counter()
            named.segment_one(f)
            w.append(time.perf_counter() - t)
        names[mode] = statistics.median(w)
    vs = VideoSegmenter(None, TrackerConfig())
    st = vs.init_state(0)
    link = []
    for f, s in zip(frames, segs):
        t = time.perf_counter()
        vs.step(st, f, s)
        link.append(time.perf_counter() - t)
    write = []
    w = OverlayVideoWriter(out / "overlay.mp4", 12.0)
    for i, (f, s) in enumerate(zip(frames, segs)):
        t = time.perf_counter()
        ids = segment_ids(s.labels)
        save_labels_png(out / f"{i:05d}.png", ids)
        w.write(overlay(f, ids))
        write.append(time.perf_counter() - t)
    w.close()
    med = statistics.median
    return {"encode": med(t["encode_s"] for t in timings),
            "unet": med(t["unet_s"] for t in timings), "aggregate": med(t["aggregate_s"] for t in timings),
            "merge": med(t["merge_s"] for t in timings), "nms": med(t["nms_s"] for t in timings),
            "post": med(t["aggregate_s"] + t["post_s"] for t in timings),
            "link": med(link[1:] or link), "write": med(write), "segmenter": med(walls),
            "segments": med(s.num_segments for s in segs), "latent": segs[0].meta["latent_hw"],
            "names_second": names["second"], "names_same": names["same"]}


def video_fps(model: Any, clip: Path, keyframe_every: "int | str", out: Path) -> tuple[float, int, int]:
    """frames/s of `segment_video` (decode, segment, link, write, overlay), the frames and
    the frames segmented."""
    from diffseg_core.config import SegmenterConfig
    from diffseg_core.segmenter import DiffSegSegmenter
    from temporal.api import segment_video
    from temporal.config import TrackerConfig

    seg = DiffSegSegmenter(SegmenterConfig(model=model.model_id, size=SIDE), model=model)
    t = time.perf_counter()
    res = segment_video(clip, out, seg, TrackerConfig(keyframe_every=keyframe_every), resume=False)
    return res.n_frames / (time.perf_counter() - t), res.n_frames, res.keyframes


def run(arch: str, dtype: torch.dtype, device: torch.device, clip: Path, a: argparse.Namespace) -> None:
    name = f"[{arch} {str(dtype)[6:]} {device.type}]"
    model = build_model(arch, device, dtype)
    with tempfile.TemporaryDirectory() as d:
        frames, decode = decode_clip(clip)  # once, for every measurement below
        st = frame_stages(model, frames, Path(d))
    pr = paired_rounds(model, frames, max(3, a.rounds))
    t_vae, t_unet = pr["vae"], pr["unet"]
    lh, lw = st["latent"]
    t_kl = kl_products(lh * lw, a.reps, device)
    base = t_vae + t_unet
    print(f"{name} one {SIDE}x{SIDE} frame, median s: decode {decode:.3f} | VAE encode {st['encode']:.3f} | "
          f"UNet+capture {st['unet']:.3f} | aggregate {st['aggregate']:.3f} | merge {st['merge']:.3f} | "
          f"NMS {st['nms']:.3f} | link {st['link']:.3f} | write {st['write']:.3f} || segmenter {st['segmenter']:.3f} "
          f"(K = {st['segments']:.0f} segments)", flush=True)
    print(f"{name}   diffusers' default passes, alternated with the segmenter over {len(pr['ratios'])} rounds "
          f"(medians): VAE encode {t_vae:.3f} + UNet {t_unet:.3f} = {base:.3f} s, segmenter {pr['segmenter']:.3f} s "
          f"-> segmenter / default passes {pr['ratio']:.3f}x (rounds: "
          f"{', '.join(f'{r:.2f}' for r in pr['ratios'])}; target <= 1.00x: {'OK' if pr['ratio'] <= 1.0 else 'MISSED'}); "
          f"VAE {pr['vae_ratio']:.2f}x, UNet+capture {pr['unet_ratio']:.2f}x (medians of the rounds)", flush=True)
    print(f"{name}   post-UNet (aggregate + merge + NMS) {st['post']:.3f} s vs the two KL products "
          f"{t_kl:.3f} s ({lh * lw} tokens): {st['post'] / t_kl:.2f}x (target <= 3.0x: "
          f"{'OK' if st['post'] <= 3 * t_kl else 'MISSED'})", flush=True)
    print(f"{name}   names ({len(VOCABULARY)} words): segmenter with a second prompted pass {st['names_second']:.3f} s "
          f"({st['names_second'] / st['segmenter']:.2f}x the segmenter alone), in the same pass {st['names_same']:.3f} s "
          f"({st['names_same'] / st['segmenter']:.2f}x)", flush=True)
    batches = [int(b) for b in (a.batch if a.batch is not None else ("1,8" if device.type == "cuda" else "")).split(",") if b]
    for b in batches:
        ips = batch_throughput(model, frames, b, a.reps)
        print(f"{name}   segmenter, batch {b}: {ips:.2f} images/s", flush=True)
    if (lh, lw) == (64, 64):
        t_real, k = post_unet_realistic(a.reference, a.reps)
        src = "reference generator" if a.reference else "blocky generator"
        print(f"{name}   post-UNet on a realistic attention set ({src}, K = {k}) {t_real:.3f} s: "
              f"{t_real / t_kl:.2f}x the KL products (target <= 3.0x: "
              f"{'OK' if t_real <= 3 * t_kl else 'MISSED'})", flush=True)
    if not a.no_video:
        for k in (1, a.keyframe_every, "auto"):
            with tempfile.TemporaryDirectory() as d:
                fps, n, keys = video_fps(model, clip, k, Path(d))
            mode = "every frame" if k == 1 else f"keyframe-every {k}"
            print(f"{name}   segment_video ({n} frames, {mode}): {fps:.3f} frames/s ({keys} segmented)", flush=True)
    del model


def allocator_effect(a: argparse.Namespace) -> None:
    """The realistic post-UNet path with glibc's default allocator settings, then with
    `diffseg_core.runtime.tune_cpu_allocator` (what `DiffSegSegmenter` applies on the CPU;
    irreversible, so measured first, before any segmenter runs), each beside the KL
    products measured at the same time."""
    from diffseg_core.runtime import tune_cpu_allocator

    cpu = torch.device("cpu")
    src = "reference generator" if a.reference else "blocky generator"
    for label in ("glibc defaults", "tuned allocator"):
        if label == "tuned allocator" and not tune_cpu_allocator():
            print("[allocator] tune_cpu_allocator does not apply here (not glibc, or DIFFSEG_MALLOC=default)")
            return
        t_kl = kl_products(64 * 64, a.reps, cpu)
        t_real, k = post_unet_realistic(a.reference, a.reps)
        print(f"[allocator: {label}] post-UNet on a realistic attention set ({src}, K = {k}) {t_real:.3f} s, "
              f"KL products {t_kl:.3f} s: {t_real / t_kl:.2f}x", flush=True)


def main(argv: "list[str] | None" = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="sd15,sd21-base", help="comma list of " + ", ".join(ARCHS))
    ap.add_argument("--dtype", default="float32,bfloat16",
                    help="comma list of CPU dtypes ('' = no CPU rows, e.g. on a GPU machine); CUDA adds float16")
    ap.add_argument("--batch", default=None, help="comma list of batch sizes for the images/s line "
                                                   "[1,8 on CUDA, none on the CPU]")
    ap.add_argument("--frames", type=int, default=6, help="frames of the synthetic clip [6]")
    ap.add_argument("--keyframe-every", type=int, default=4, help="keyframe mode's k [4]")
    ap.add_argument("--reps", type=int, default=2, help="repetitions of the timed passes [2]")
    ap.add_argument("--rounds", type=int, default=4, help="alternated rounds of the segmenter and the default "
                                                         "passes (at least 3) [4]")
    ap.add_argument("--no-video", action="store_true", help="skip the segment_video frames/s")
    ap.add_argument("--reference", help="../shared/reference (gen_attention.py): the realistic attention set "
                                        "of the post-UNet line [bench_core's blocky generator]")
    a = ap.parse_args(argv)
    from diffseg_core.progress import set_progress_enabled

    set_progress_enabled(False)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"bench_e2e: torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
          f"load average {load:.1f}", flush=True)
    allocator_effect(a)
    with tempfile.TemporaryDirectory() as d:
        clip = Path(d) / "clip.mp4"
        make_clip(clip, a.frames)
        for arch in a.arch.split(","):
            for dt in filter(None, a.dtype.split(",")):
                run(arch, getattr(torch, dt), torch.device("cpu"), clip, a)
            if torch.cuda.is_available():
                run(arch, torch.float16, torch.device("cuda"), clip, a)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
