"""`diffseg run`: many images, videos and volumes on one or many processes with Lightning.

The job is a list of `diffseg.jobs.WorkItem` descriptors (an image, a volume, or a
chunk of a video). A `LightningDataModule` gives each rank its share (an explicit,
deterministic rank slice: never frames, the tracker state is sequential), a
`LightningModule` runs one item end to end in ``predict_step``, and a
`BasePredictionWriter` writes each result and its manifest record as soon as it is done
(``trainer.predict(..., return_predictions=False)``). A chunk of a long video is only
segmented; after every rank finished, each video is linked in one pass over its chunks'
segmentations (videos are shared out among the ranks), so a chunked run gets the ids of one
pass, and rank 0 merges the manifest.

Launch: ``strategy="ddp"`` re-runs the same command once per extra local rank (Lightning's
subprocess launcher), ``torchrun`` and SLURM are detected by Lightning, ``ddp_spawn``
starts workers with multiprocessing ``spawn``. CPU uses gloo, CUDA nccl.

The module imports torch/Lightning lazily so ``diffseg --help`` stays fast; the
Lightning classes are built by `_lightning_classes`.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import logging
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

import numpy as np

from diffseg_core.cli_args import CommandResult
from diffseg_core.config import SegmenterConfig, cli, config_hash
from diffseg_core.errors import DiffSegError, InputError, OutputError, look_up_option

from .jobs import (WORK_DIR, InputPlan, InputSpec, ItemRecord, JobManifest, WorkItem, classify_inputs, plan_items,
                   shard_items, source_signature)

log = logging.getLogger("diffseg.run")

STRATEGIES = ("auto", "ddp", "ddp_spawn")
ACCELERATORS = ("auto", "cpu", "cuda", "gpu")
FOLDER_MODES = ("auto", "images", "frames")


# ----------------------------------------------------------------------------- configs
@dataclass(frozen=True)
class RunConfig:
    """Settings of a `run_job`.

    Attributes:
        segmenter: the DiffSeg settings (model, size, thresholds...). Its ``device`` is
            replaced by the rank's device.
        devices: processes (CPU) or GPUs per node.
        num_nodes: machines.
        strategy: ``auto`` (one device: in process; several: ``ddp``), ``ddp`` (Lightning
            launches the extra ranks by re-running the command or script; also for
            torchrun/SLURM) or ``ddp_spawn`` (workers started by multiprocessing ``spawn`` run
            only the items; linking the videos then runs in the calling process).
        accelerator: ``auto``, ``cpu``, ``cuda``/``gpu``.
        chunk_frames: a video longer than this is split into chunks of this many frames.
        chunk_overlap: frames shared by consecutive chunks (segmented twice, the earlier
            chunk's kept; 0 by default: chunks are linked in one pass, they need no overlap).
        folder_mode: how pictures directly inside a folder are read: ``auto`` (numbered
            like ``00000.jpg`` → one video), ``images`` or ``frames``.
        overlay: write overlays (images: JPEG, videos: one JPEG per frame).
        max_side: videos: frames are shrunk so the longer side is at most this (0 = as is).
        tracker: `temporal.config.TrackerConfig` options for videos (dict, JSON-able).
        volume: options of the volume pipeline (dict, JSON-able; passed to its config).
        segmenter_factory: ``"module:callable"`` building the segmenter from a
            `SegmenterConfig` instead of `DiffSegSegmenter` (tests, custom models). Must be
            importable in every rank.
        timeout_s: how long ranks wait for each other after their items (the slowest rank
            may take hours on a long video).
        retry_failed: rerun items that failed in an earlier run of the job.
    """

    segmenter: SegmenterConfig = field(default_factory=SegmenterConfig, metadata=cli(False))  # add_segmenter_args
    devices: int = 1
    num_nodes: int = 1
    strategy: Literal["auto", "ddp", "ddp_spawn"] = "auto"
    accelerator: Literal["auto", "cpu", "cuda", "gpu"] = "auto"
    chunk_frames: int = 300
    chunk_overlap: int = 0
    folder_mode: Literal["auto", "images", "frames"] = "auto"
    overlay: bool = True
    max_side: int = 0
    tracker: dict = field(default_factory=dict, metadata=cli(False))  # the `video.*` settings (docs/scale.md)
    volume: dict = field(default_factory=dict, metadata=cli(False))  # the `volume.*` settings
    segmenter_factory: "str | None" = field(default=None, metadata=cli(metavar="MODULE:CALLABLE"))
    timeout_s: float = 7 * 24 * 3600.0
    retry_failed: bool = True

    def __post_init__(self) -> None:
        look_up_option(self.strategy, STRATEGIES, "strategy")
        look_up_option(self.accelerator, ACCELERATORS, "accelerator")
        look_up_option(self.folder_mode, FOLDER_MODES, "folder mode")
        if isinstance(self.segmenter, dict):
            object.__setattr__(self, "segmenter", SegmenterConfig.from_dict(self.segmenter))
        if int(self.devices) < 1:
            raise InputError(f"devices must be >= 1; got {self.devices}")
        if int(self.num_nodes) < 1:
            raise InputError(f"num_nodes must be >= 1; got {self.num_nodes}")
        if int(self.chunk_frames) < 2:
            raise InputError(f"chunk_frames must be >= 2; got {self.chunk_frames}")
        if not 0 <= int(self.chunk_overlap) < int(self.chunk_frames):
            raise InputError(
                f"chunk_overlap must be in [0, chunk_frames); got {self.chunk_overlap} with chunk_frames={self.chunk_frames}"
            )
        if int(self.max_side) < 0 or 0 < int(self.max_side) < 16:
            raise InputError(f"max_side must be 0 (off) or >= 16; got {self.max_side}")
        if self.segmenter_factory is not None and ":" not in self.segmenter_factory:
            raise InputError(f"segmenter_factory must look like 'module:callable'; got {self.segmenter_factory!r}")
        if not float(self.timeout_s) > 0:
            raise InputError(f"timeout_s must be > 0; got {self.timeout_s}")
        if dict(self.tracker).get("keyframe_every") == "auto":
            raise InputError("tracker keyframe_every='auto' is not available in `run`: its chunks are segmented "
                             "before they are linked, so keyframes cannot follow the flow; give an integer k")

    @property
    def world_size(self) -> int:
        return int(self.devices) * int(self.num_nodes)

    def hash_for(self, item_kind: str) -> dict[str, Any]:
        """The settings an item kind's outputs depend on (device and launch excluded)."""
        seg = self.segmenter.to_dict()
        for k in ("device", "batch_size"):
            seg.pop(k, None)
        common = {"segmenter": seg, "factory": self.segmenter_factory, "overlay": self.overlay}
        if item_kind in ("video_chunk", "video"):
            common.update(tracker=self.tracker, max_side=self.max_side, chunk_frames=self.chunk_frames,
                          chunk_overlap=self.chunk_overlap)
        if item_kind == "volume":
            common.update(volume=self.volume)
        return common


@dataclass
class ItemResult:
    """What ``predict_step`` returns for one item (the writer turns it into files + a record).

    Attributes:
        item: the work item.
        status: ``done`` or ``failed``.
        error: one-line error when failed.
        labels: images only: int32 ``(H, W)`` labels still to be written by the writer.
        image: images only: uint8 ``(H, W, 3)`` for the overlay.
        names: images only: the segments' names (`SegmentNames`) for the overlay's legend.
        outputs: outputs already written (relative to the job folder).
        frames: frames / slices / images processed.
        seconds: wall time of the item.
    """

    item: WorkItem
    status: Literal["done", "failed"]
    error: "str | None" = None
    labels: "np.ndarray | None" = None
    image: "np.ndarray | None" = None
    names: Any = None
    outputs: list[str] = field(default_factory=list)
    frames: int = 0
    seconds: float = 0.0


@dataclass
class JobSummary:
    """Outcome of a job.

    Attributes:
        out_dir: the job folder.
        total: items of the job (images, volumes, videos; chunks not counted).
        done: items finished in this run.
        skipped: items already finished by an earlier run (same settings, outputs present).
        failed: items that failed (this run, or rejected while reading the inputs).
        failures: ``(key, error)`` of every failed item.
        frames: frames / slices / images processed in this run.
        seconds: wall time of the run.
        world_size: processes that ran the job.
        is_rank_zero: False in the other ranks (whose summary is partial: don't print it).
    """

    out_dir: Path
    total: int = 0
    done: int = 0
    skipped: int = 0
    failed: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)
    frames: int = 0
    seconds: float = 0.0
    world_size: int = 1
    is_rank_zero: bool = True

    @property
    def ok(self) -> bool:
        return self.failed == 0

    @property
    def exit_code(self) -> int:
        """0 when every item succeeded, 2 otherwise."""
        return 0 if self.ok else 2

    @property
    def frames_per_s(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def format(self) -> str:
        """One summary line (plus one line per failure)."""
        lines = [f"diffseg run: {self.done} done, {self.skipped} skipped, {self.failed} failed "
                 f"of {self.total} items in {self.seconds:.1f} s ({self.frames} frames, "
                 f"{self.frames_per_s:.2f} frames/s, {self.world_size} process"
                 f"{'es' if self.world_size > 1 else ''}) -> {self.out_dir}"]
        lines += [f"  failed {k}: {e}" for k, e in self.failures]
        return "\n".join(lines)


# ----------------------------------------------------------------------------- outputs
def video_dir(name: str) -> str:
    return f"videos/{name}"


def chunk_dir(item: WorkItem) -> str:
    return f"{WORK_DIR}/chunks/{item.name}/c{item.chunk_index:04d}"


def volume_output(spec_source: str, name: str) -> str:
    """``volumes/<name>.<ext>`` in the input's own format, as `diffseg volume` writes it (a
    DICOM series: a DICOM-SEG that references it)."""
    from volume.io import OUTPUT_NAMES, file_format

    fmt = file_format(spec_source)
    return f"volumes/{name}{OUTPUT_NAMES['dicom-seg' if fmt == 'dicom' else fmt].removeprefix('labels')}"


# ----------------------------------------------------------------------------- segmenter
def make_segmenter(cfg: RunConfig, device: str) -> Any:
    """Build the segmenter of one rank on ``device``.

    Args:
        cfg: the run settings (``segmenter_factory`` or `DiffSegSegmenter`).
        device: torch device string of this rank (``"cpu"``, ``"cuda:1"``).
    """
    seg_cfg = dataclasses.replace(cfg.segmenter, device=device)
    if cfg.segmenter_factory:
        mod, _, fn = cfg.segmenter_factory.partition(":")
        try:
            factory: Callable[[SegmenterConfig], Any] = getattr(importlib.import_module(mod), fn)
        except (ImportError, AttributeError) as exc:
            raise InputError(f"segmenter factory {cfg.segmenter_factory!r} cannot be imported: {exc}") from exc
        return factory(seg_cfg)
    from diffseg_core.segmenter import DiffSegSegmenter

    return DiffSegSegmenter(seg_cfg)


# ----------------------------------------------------------------------------- item runners
def _error_line(exc: BaseException, item: WorkItem) -> str:
    msg = " ".join(str(exc).split()) or type(exc).__name__
    if item.source not in msg and Path(item.source).name not in msg:
        msg = f"{item.source}: {msg}"
    if not isinstance(exc, (DiffSegError, OSError, ValueError)):
        msg = f"{msg} ({type(exc).__name__})"
    return msg


def run_item(item: WorkItem, segmenter: Any, cfg: RunConfig, out_dir: Path) -> ItemResult:
    """Process one work item end to end; never raises for a per-item problem.

    Images are segmented and returned (the writer saves them); volumes and video chunks
    are written here by their packages' APIs (they stream slices/frames to disk).
    """
    t0 = time.perf_counter()
    try:
        if item.kind == "image":
            from diffseg_core.io import read_image

            rgb = read_image(item.source)
            seg = segmenter.segment([rgb])[0]
            labels = np.asarray(seg.numpy().labels if hasattr(seg, "numpy") else seg.labels, dtype=np.int32)
            if labels.shape != rgb.shape[:2]:
                raise ValueError(f"segmenter returned labels {labels.shape} for an image of {rgb.shape[:2]}")
            return ItemResult(item, "done", labels=labels, image=rgb, frames=1, names=getattr(seg, "names", None),
                              seconds=time.perf_counter() - t0)
        if item.kind == "volume":
            return _run_volume(item, segmenter, cfg, out_dir, t0)
        if item.kind == "video_chunk":
            return _run_video_chunk(item, segmenter, cfg, out_dir, t0)
        raise ValueError(f"unknown work item kind {item.kind!r}")
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as exc:  # one bad item must not stop the job: record it
        log.debug("item %s failed", item.key, exc_info=True)
        return ItemResult(item, "failed", error=_error_line(exc, item), seconds=time.perf_counter() - t0)


def _run_volume(item: WorkItem, segmenter: Any, cfg: RunConfig, out_dir: Path, t0: float) -> ItemResult:
    from volume import api as volume_api

    rel = volume_output(item.source, item.name)
    res = volume_api.segment_volume(item.source, out_dir / rel, segmenter, _volume_config(cfg))
    outputs = []
    for p in (res.labels_path, res.json_path, res.montage_path):
        if p is not None:
            p = Path(p)
            outputs.append(str(p.relative_to(out_dir)) if p.is_relative_to(out_dir) else str(p))
    shape = tuple(getattr(res, "shape", ()) or ())
    slices = int(shape[int(getattr(res, "axis", 0))]) if shape else 0
    return ItemResult(item, "done", outputs=outputs, frames=slices, seconds=time.perf_counter() - t0)


def _volume_config(cfg: RunConfig) -> Any:
    from volume.types import VolumeConfig

    return VolumeConfig.from_dict(dict(cfg.volume))


def _tracker_config(cfg: RunConfig) -> Any:
    from temporal.config import TrackerConfig

    return TrackerConfig.from_dict(dict(cfg.tracker))


def _run_video_chunk(item: WorkItem, segmenter: Any, cfg: RunConfig, out_dir: Path, t0: float) -> ItemResult:
    from temporal import api as temporal_api

    rel = chunk_dir(item)
    cdir = out_dir / rel
    if cdir.exists():  # leftovers of a killed attempt: start the chunk clean
        shutil.rmtree(cdir, ignore_errors=True)
    n = temporal_api.segment_frames(item.source, cdir / "segs", segmenter, start=item.start, end=item.end,
                                    max_side=cfg.max_side or None,
                                    keyframe_every=_tracker_config(cfg).keyframe_every)
    if n != item.end - item.start:
        raise InputError(
            f"{item.source}: chunk {item.chunk_index} (frames {item.start}..{item.end - 1}) gave {n} frames, "
            f"expected {item.end - item.start}"
        )
    return ItemResult(item, "done", outputs=[rel + "/segs"], frames=n, seconds=time.perf_counter() - t0)


# ----------------------------------------------------------------------------- writing
def write_result(res: ItemResult, cfg: RunConfig, out_dir: Path, manifest: JobManifest, rank: int,
                 chash: str) -> ItemRecord:
    """Write an item's remaining outputs, then its manifest record (in that order)."""
    from diffseg_core import software_version

    from .cli_image import write_image_outputs

    outputs = list(res.outputs)
    status, error = res.status, res.error
    if status == "done" and res.item.kind == "image" and res.labels is not None:
        try:  # as `diffseg image` writes them: labels 1..K, sidecar with names, overlay
            (out_dir / "images").mkdir(parents=True, exist_ok=True)
            seg = {"config": cfg.segmenter.to_dict(), "factory": cfg.segmenter_factory,
                   "random_weights": cfg.segmenter_factory is None and cfg.segmenter.model == "tiny-random"}
            outputs += [f"images/{n}" for n in write_image_outputs(
                out_dir / "images", res.item.name, res.image, res.labels, npy=False, with_overlay=cfg.overlay,
                meta={"software": f"diffseg-vv {software_version()}", "source": res.item.source, "segmenter": seg},
                names=res.names)]
        except (OSError, ValueError) as exc:
            status, error = "failed", _error_line(exc, res.item)
    rec = ItemRecord(key=res.item.key, kind=res.item.kind, source=res.item.source, status=status,
                     config_hash=chash, outputs=outputs if status == "done" else [], error=error,
                     frames=res.frames, seconds=round(res.seconds, 3), rank=rank)
    manifest.put(rec)
    return rec


# ----------------------------------------------------------------------------- linking
def finalize_video(spec: InputSpec, chunks: Sequence[WorkItem], cfg: RunConfig, out_dir: Path) -> tuple[list[str], int]:
    """Link a video's chunk segmentations in one pass; write labels/, tracks.json, overlay.

    The chunks only segmented their frames (`temporal.api.segment_frames`); here the
    linking engine runs once over the whole video, so a chunked run gets exactly the ids of
    one pass (linking is cheap next to segmenting: it needs the frames again for the flow,
    not the model). Frames shared by two chunks are taken from the earlier chunk. Outputs
    are written by `temporal.writer.VideoOutputWriter`, so they have the layout of
    ``diffseg video``.

    Returns:
        (outputs relative to ``out_dir``, frames written).
    """
    from temporal.api import FRAMES_LIST, link_segmentations

    chunks = sorted(chunks, key=lambda c: c.chunk_index)
    vrel = video_dir(spec.name)
    vdir = out_dir / vrel
    # A previous attempt (maybe other settings) must never leave frames mixed in.
    shutil.rmtree(vdir / "labels", ignore_errors=True)
    for stale in ("tracks.json", "overlay.mp4"):
        (vdir / stale).unlink(missing_ok=True)
    segs: list["Path | None"] = []  # the segmentation file of every frame (None between keyframes)
    for c in chunks:
        sdir = out_dir / chunk_dir(c) / "segs"
        listing = sdir / FRAMES_LIST
        if not listing.is_file():
            raise InputError(f"{sdir}: chunk {c.chunk_index} is incomplete (no {FRAMES_LIST})")
        stems = listing.read_text().split()
        if len(stems) != c.end - c.start:
            raise InputError(f"{sdir}: chunk has {len(stems)} frames, expected {c.end - c.start}")
        for stem in stems[max(0, len(segs) - c.start):]:  # frames an earlier chunk had are skipped
            path = sdir / f"{stem}.npz"
            segs.append(path if path.is_file() else None)
    if len(segs) != spec.num_frames:
        raise InputError(f"{spec.path}: chunks cover {len(segs)} frames, expected {spec.num_frames}")
    try:
        res = link_segmentations(spec.path, segs, vdir, _tracker_config(cfg),
                                 max_side=cfg.max_side or None, write_overlay=cfg.overlay,
                                 meta={"job": "run", "chunks": [[c.start, c.end] for c in chunks]})
        if not res.complete or res.n_frames != spec.num_frames:
            raise InputError(f"{spec.path}: linked {res.n_frames} frames, expected {spec.num_frames}"
                             + (f" ({res.error})" if res.error else ""))
    except BaseException:
        (vdir / "overlay.mp4").unlink(missing_ok=True)  # the labels stay, flagged by tracks.json
        raise
    outputs = [f"{vrel}/labels", f"{vrel}/tracks.json"]
    if res.overlay is not None:
        outputs.append(f"{vrel}/overlay.mp4")
    return outputs, res.n_frames


# ----------------------------------------------------------------------------- lightning
def _lightning_classes() -> tuple[type, type, type]:
    """Build the Lightning classes (imported lazily: Lightning is slow to import)."""
    if "DiffSegModule" in globals():
        return globals()["WorkItemDataModule"], globals()["DiffSegModule"], globals()["ManifestWriter"]
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import BasePredictionWriter
    from torch.utils.data import DataLoader

    _quiet_lightning()

    class _Items:
        """A map-style dataset of work items (descriptors only)."""

        def __init__(self, items: Sequence[WorkItem]) -> None:
            self.items = list(items)

        def __len__(self) -> int:
            return len(self.items)

        def __getitem__(self, i: int) -> WorkItem:
            return self.items[i]

    def _first(batch: list[WorkItem]) -> WorkItem:
        return batch[0]

    class WorkItemDataModule(pl.LightningDataModule):
        """Shards the job's items across ranks: each rank gets a fixed, disjoint slice."""

        def __init__(self, items: Sequence[WorkItem], pending: set[str]) -> None:
            super().__init__()
            self.items = list(items)
            self.pending = set(pending)

        def rank_items(self, rank: int, world_size: int) -> list[WorkItem]:
            # Shard all items (not only pending ones) so every rank gets the same partition
            # whatever it read from the manifest; then drop what is already done.
            return [it for it in shard_items(self.items, rank, world_size) if it.key in self.pending]

        def predict_dataloader(self) -> Any:
            tr = self.trainer
            rank, world = (tr.global_rank, tr.world_size) if tr is not None else (0, 1)
            mine = self.rank_items(rank, world)
            log.debug("rank %d/%d: %d items", rank, world, len(mine))
            return DataLoader(_Items(mine), batch_size=1, shuffle=False, num_workers=0, collate_fn=_first)

    class DiffSegModule(pl.LightningModule):
        """Runs one work item per ``predict_step``; the segmenter is built per rank."""

        def __init__(self, cfg: RunConfig, out_dir: str) -> None:
            super().__init__()
            self.cfg = cfg
            self.out_dir = Path(out_dir)
            self._segmenter: Any = None

        def on_predict_start(self) -> None:
            dev = self.trainer.strategy.root_device
            device = f"cuda:{dev.index or 0}" if dev.type == "cuda" else "cpu"
            local_world = int(getattr(self.trainer.strategy, "num_processes", 1) or 1)
            if device == "cpu" and local_world > 1 and "OMP_NUM_THREADS" not in os.environ:
                import torch

                # CPU ranks on one machine share its cores: no oversubscription.
                torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))
            # Kept off the module's attributes-as-submodules: Lightning must not move or
            # wrap the UNet; the segmenter manages its own device and dtype.
            self._segmenter = make_segmenter(self.cfg, device)

        def transfer_batch_to_device(self, batch: Any, device: Any, dataloader_idx: int) -> Any:
            return batch  # a descriptor, not tensors: nothing to move

        def predict_step(self, batch: WorkItem, batch_idx: int, dataloader_idx: int = 0) -> ItemResult:
            return run_item(batch, self._segmenter, self.cfg, self.out_dir)

    class ManifestWriter(BasePredictionWriter):
        """Writes each item's outputs and manifest record as soon as it is done."""

        def __init__(self, cfg: RunConfig, out_dir: str, hashes: dict[str, str], total: int) -> None:
            super().__init__(write_interval="batch")
            self.cfg = cfg
            self.out_dir = Path(out_dir)
            self.hashes = hashes
            self.manifest = JobManifest(out_dir)
            self.total = total
            self.bar: Any = None

        def on_predict_start(self, trainer: Any, pl_module: Any) -> None:
            from diffseg_core.progress import progress

            n = sum(len(dl) for dl in trainer.predict_dataloaders) if isinstance(
                trainer.predict_dataloaders, list) else len(trainer.predict_dataloaders)
            self.bar = progress(total=n, desc=f"rank {trainer.global_rank} items", unit="item",
                                enabled=None if trainer.global_rank == 0 else False)

        def write_on_batch_end(self, trainer: Any, pl_module: Any, prediction: ItemResult,
                               batch_indices: Any, batch: Any, batch_idx: int, dataloader_idx: int) -> None:
            rec = write_result(prediction, self.cfg, self.out_dir, self.manifest, trainer.global_rank,
                               self.hashes[prediction.item.key])
            if rec.status == "failed":
                log.warning("failed %s: %s", rec.key, rec.error)
            if self.bar is not None:
                self.bar.update(1)

        def on_predict_end(self, trainer: Any, pl_module: Any) -> None:
            if self.bar is not None:
                self.bar.close()

    classes = (_Items, WorkItemDataModule, DiffSegModule, ManifestWriter)
    for cls in classes:
        # Make the classes picklable by name (ddp_spawn pickles the module, data module and
        # writer): they live as module attributes, rebuilt on demand by `__getattr__`.
        cls.__module__ = __name__
        cls.__qualname__ = cls.__name__
        globals()[cls.__name__] = cls
    _first.__module__, _first.__qualname__ = __name__, "_first"
    globals()["_first"] = _first
    return WorkItemDataModule, DiffSegModule, ManifestWriter


_LIGHTNING_NAMES = ("_Items", "_first", "WorkItemDataModule", "DiffSegModule", "ManifestWriter")


def __getattr__(name: str) -> Any:
    # Lightning is imported only when its classes are first needed (keeps `diffseg --help` fast).
    if name in _LIGHTNING_NAMES:
        _lightning_classes()
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _quiet_lightning() -> None:
    """Lightning sets its loggers to INFO on import: keep them quiet unless --verbose."""
    import warnings

    if logging.getLogger("diffseg").getEffectiveLevel() <= logging.DEBUG:
        return
    for name in ("pytorch_lightning", "lightning_fabric", "lightning", "lightning.pytorch"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=r".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=r".*litlogger.*")
    warnings.filterwarnings("ignore", message=r".*overridden `transfer_batch_to_device`.*")


def _make_trainer(cfg: RunConfig, callbacks: list[Any]) -> Any:
    import datetime

    import pytorch_lightning as pl

    accelerator = "cuda" if cfg.accelerator == "gpu" else cfg.accelerator
    if accelerator == "auto":
        import torch

        accelerator = "cuda" if torch.cuda.is_available() else "cpu"
    strategy: Any = cfg.strategy
    if cfg.strategy in ("ddp", "ddp_spawn") or (cfg.strategy == "auto" and cfg.world_size > 1):
        from pytorch_lightning.strategies import DDPStrategy

        strategy = DDPStrategy(
            process_group_backend="nccl" if accelerator == "cuda" else "gloo",
            timeout=datetime.timedelta(seconds=float(cfg.timeout_s)),
            start_method="spawn" if cfg.strategy == "ddp_spawn" else "popen",
        )
    return pl.Trainer(
        accelerator=accelerator, devices=int(cfg.devices), num_nodes=int(cfg.num_nodes), strategy=strategy,
        logger=False, enable_checkpointing=False, enable_model_summary=False, enable_progress_bar=False,
        use_distributed_sampler=False, callbacks=callbacks, inference_mode=True,
    )


def _dist_info() -> tuple[int, int]:
    """(rank, world size) of the initialised process group, or (0, 1)."""
    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
    except ImportError:  # pragma: no cover
        pass
    return 0, 1


def _env_rank() -> int:
    """Global rank announced by the launcher (torchrun, SLURM, Lightning), 0 if none."""
    for var in ("RANK", "SLURM_PROCID", "NODE_RANK", "LOCAL_RANK"):
        try:
            r = int(os.environ.get(var, "0") or 0)
        except ValueError:
            continue
        if r > 0:
            return r
    return 0


def _barrier() -> None:
    rank, world = _dist_info()
    if world > 1:
        import torch.distributed as dist

        dist.barrier()


# ----------------------------------------------------------------------------- job
def run_job(inputs: Sequence["str | os.PathLike"], out_dir: "str | os.PathLike",
            config: "RunConfig | None" = None) -> JobSummary:
    """Segment every input (images, videos, frame folders, volumes) into ``out_dir``.

    Rerunning the same job skips items finished with the same settings whose outputs still
    exist; failed items are retried (``config.retry_failed``). Per-item errors are recorded
    in ``out_dir/manifest.json`` and the summary, the rest of the job goes on.

    With ``strategy="ddp"`` and several devices, Lightning re-runs the *calling script*
    once per extra rank; with ``"ddp_spawn"`` it imports it in each worker. Either way call
    this under ``if __name__ == "__main__":`` (or use the CLI).

    Args:
        inputs: files and folders.
        out_dir: the job folder (created).
        config: run settings; defaults to `RunConfig()`.

    Returns:
        The summary (complete on rank 0; partial on other ranks).

    Raises:
        InputError: an input path does not exist, or no input is usable.
        OutputError: ``out_dir`` cannot be created or written.
    """
    cfg = config or RunConfig()
    t0 = time.perf_counter()
    out = Path(out_dir).expanduser().resolve()
    plan: InputPlan = classify_inputs(inputs, cfg.folder_mode)
    items = plan_items(plan.specs, cfg.chunk_frames, cfg.chunk_overlap)
    specs = {s.name: s for s in plan.specs}
    hashes = {it.key: config_hash(cfg.hash_for(it.kind), source_signature(it.source), it.start, it.end)
              for it in items}
    video_hash = {s.name: config_hash(cfg.hash_for("video"), source_signature(s.path), s.num_frames)
                  for s in plan.specs if s.kind in ("video", "frames")}
    _check_writable(out)
    if _env_rank() > 0:  # a rank started by the launcher: rank 0 holds the folder's lock
        return _run_job_locked(inputs, out, cfg, plan, items, specs, hashes, video_hash, t0)
    from diffseg_core.io import output_lock, protect_inputs, remove_stale_temporaries

    with output_lock(out, "diffseg run"), protect_inputs(inputs):
        removed = remove_stale_temporaries(out)
        if removed:
            log.info("removed %d temporary file(s) left by an interrupted run", removed)
        return _run_job_locked(inputs, out, cfg, plan, items, specs, hashes, video_hash, t0)


def _run_job_locked(inputs: Sequence["str | os.PathLike"], out: Path, cfg: RunConfig, plan: InputPlan,
                    items: list[WorkItem], specs: dict[str, InputSpec], hashes: dict[str, str],
                    video_hash: dict[str, str], t0: float) -> JobSummary:
    manifest = JobManifest(out).load()
    final_done = {n for n, h in video_hash.items() if manifest.is_done(f"video:{n}", h)}
    pending = {it.key for it in items
               if not (it.kind == "video_chunk" and it.name in final_done)
               and not manifest.is_done(it.key, hashes[it.key])
               and (cfg.retry_failed or manifest.records.get(it.key) is None
                    or manifest.records[it.key].status != "failed")}

    if pending:
        DataModule, Module, Writer = _lightning_classes()
        writer = Writer(cfg, str(out), hashes, len(items))
        trainer = _make_trainer(cfg, [writer])
        try:
            trainer.predict(Module(cfg, str(out)), datamodule=DataModule(items, pending), return_predictions=False)
        except SystemExit:
            # Lightning turns Ctrl-C into sys.exit(1) after its own clean-up: report it as
            # what it is (the CLI prints "interrupted" and exits 130; finished items are kept)
            if getattr(trainer, "interrupted", False):
                import signal

                signal.signal(signal.SIGINT, signal.default_int_handler)
                raise KeyboardInterrupt from None
            raise
    rank, world = _dist_info()
    if world == 1 and _env_rank() > 0:
        # A torchrun/SLURM rank with nothing left to run: rank 0 links and merges alone.
        return JobSummary(out_dir=out, world_size=1, is_rank_zero=False, seconds=time.perf_counter() - t0)
    log.debug("rank %d of %d: %d items pending, linking videos", rank, world, len(pending))
    is_zero = rank == 0
    # Stitch videos: every video whose chunks are all done, shared out among the ranks.
    _barrier()
    manifest.load()
    videos = sorted(n for n in video_hash if n not in final_done)
    for vi, name in enumerate(videos):
        if vi % world != rank:
            continue
        chunks = [it for it in items if it.kind == "video_chunk" and it.name == name]
        if not all(manifest.is_done(c.key, hashes[c.key]) for c in chunks):
            continue  # a chunk failed: its record says why
        tv = time.perf_counter()
        try:
            outputs, n = finalize_video(specs[name], chunks, cfg, out)
            ran = sum(manifest.records[c.key].frames for c in chunks if c.key in pending)
            rec = ItemRecord(key=f"video:{name}", kind="video", source=specs[name].path, status="done",
                             config_hash=video_hash[name], outputs=outputs, frames=ran,
                             seconds=round(time.perf_counter() - tv, 3), rank=rank)
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:
            log.debug("linking %s failed", name, exc_info=True)
            err = str(exc) if specs[name].path in str(exc) else f"{specs[name].path}: {exc}"
            rec = ItemRecord(key=f"video:{name}", kind="video", source=specs[name].path, status="failed",
                             config_hash=video_hash[name], error=err, rank=rank)
        manifest.put(rec)
        if rec.status == "done":
            for c in chunks:  # chunk files are no longer needed once the video is linked
                manifest.forget(c.key)
            shutil.rmtree(out / WORK_DIR / "chunks" / name, ignore_errors=True)
    _barrier()
    # After ddp_spawn the workers are gone (world 1 here) but they did the work.
    summary = JobSummary(out_dir=out, world_size=world if world > 1 else (cfg.world_size if pending else 1),
                         is_rank_zero=is_zero)
    if is_zero:
        manifest.load()
        rejected_now = {f"input:{r.path}" for r in plan.rejected}
        for key in [k for k in manifest.records if k.startswith("input:") and k not in rejected_now]:
            manifest.forget(key)  # fixed or removed since an earlier run
        for r in plan.rejected:
            manifest.put(ItemRecord(key=f"input:{r.path}", kind="input", source=r.path, status="failed",
                                    config_hash="", error=r.error))
        _summarise(summary, manifest, items, specs, pending, plan, final_done)
        manifest.save(job={"inputs": [str(p) for p in inputs], "config": _jsonable(cfg),
                           "summary": {"done": summary.done, "skipped": summary.skipped,
                                       "failed": summary.failed, "total": summary.total}})
    summary.seconds = time.perf_counter() - t0
    return summary


def _summarise(summary: JobSummary, manifest: JobManifest, items: list[WorkItem], specs: dict[str, InputSpec],
               pending: set[str], plan: InputPlan, final_done: set[str]) -> None:
    recs = manifest.records
    for s in plan.specs:
        summary.total += 1
        if s.kind in ("video", "frames"):
            key = f"video:{s.name}"
            chunks = [it for it in items if it.kind == "video_chunk" and it.name == s.name]
            bad = [recs[c.key] for c in chunks if c.key in recs and recs[c.key].status == "failed"]
            if s.name in final_done:
                summary.skipped += 1
            elif key in recs and recs[key].status == "done":
                summary.done += 1
                summary.frames += recs[key].frames
            else:
                summary.failed += 1
                err = bad[0].error if bad else (recs[key].error if key in recs else "not finished")
                summary.failures.append((key, str(err)))
        else:
            key = f"{'volume' if s.kind == 'volume' else 'image'}:{s.name}"
            rec = recs.get(key)
            if key not in pending and rec is not None and rec.status == "done":
                summary.skipped += 1
            elif rec is not None and rec.status == "done":
                summary.done += 1
                summary.frames += rec.frames
            else:
                summary.failed += 1
                summary.failures.append((key, str(rec.error if rec else "not finished")))
    for r in plan.rejected:
        summary.total += 1
        summary.failed += 1
        summary.failures.append((f"input:{r.path}", r.error))


def _jsonable(cfg: RunConfig) -> dict[str, Any]:
    d = dataclasses.asdict(cfg)
    return json.loads(json.dumps(d, default=str))


def _check_writable(out: Path) -> None:
    """Create ``out`` and prove it is writable, or raise `OutputError` naming it."""
    from diffseg_core.io import atomic_write_text

    if out.exists() and not out.is_dir():
        raise OutputError(f"{out}: output exists and is not a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        from diffseg_core.io import output_error

        raise output_error(out, exc) from exc
    probe = out / WORK_DIR / ".write-test"
    atomic_write_text(probe, "ok")
    try:
        probe.unlink()
    except OSError:
        pass


# ----------------------------------------------------------------------------- CLI
RUN_EPILOG = """examples:
  diffseg run photos/ -o out/ --model tiny-random --size 64
  diffseg run videos/ scans/ -o out/ --devices 2 --strategy ddp
  diffseg run long.mp4 -o out/ --devices 4 --accelerator cuda --chunk-frames 300
  torchrun --nproc-per-node 4 -m diffseg run videos/ -o out/ --devices 4
  srun diffseg run cohort/ -o out/ --devices 4 --num-nodes 2      # in an sbatch script

Rerun the same command to resume: finished items (same settings, outputs present) are
skipped; failed ones are retried. OUTDIR/manifest.json lists every item's status.
Exit code 0 when everything succeeded, 2 otherwise.
"""


def register(sub: Any, parent: argparse.ArgumentParser) -> None:
    """Add the ``run`` subcommand."""
    from diffseg_core.cli_args import add_options, add_segmenter_args

    p = sub.add_parser(
        "run", parents=[parent], help="segment many images/videos/volumes, multi-process, resumable",
        description="Segment images, videos (files or frame folders) and volumes (NIfTI, DICOM "
        "folders, TIFF stacks, .npy) on one or many processes/GPUs/nodes with pytorch-lightning. "
        "Long videos are split into chunks segmented on different ranks, then linked in one pass "
        "(the ids one pass gets).",
        epilog=RUN_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="files or folders")
    p.add_argument("-o", "--output", required=True, metavar="OUTDIR", help="job folder (created; resumable)")
    add_options(p, RunConfig(), "run (distribution, videos, job)", "run")
    add_segmenter_args(p)
    p.set_defaults(func=_cmd_run, settings_sections=("video", "volume"))  # --set video.memory=10


def register_evaluate(sub: Any, parent: argparse.ArgumentParser) -> None:
    """`run` has no evaluate subcommand (kept for the CLI framework's symmetry)."""


def _section_configs(args: argparse.Namespace) -> dict[str, dict]:
    """``tracker`` / ``volume`` of the run from the ``video.*`` / ``volume.*`` settings (the
    options of `diffseg video` / `diffseg volume`); absent when none was given."""
    from temporal.cli import tracker_config_from_args
    from volume.cli import volume_config_from_args

    found = getattr(args, "section_settings", None) or {}
    out: dict[str, dict] = {}
    for prefix, key, build in (("video", "tracker", tracker_config_from_args),
                               ("volume", "volume", volume_config_from_args)):
        if prefix not in found:
            continue
        if getattr(found[prefix], "join", None) is not None:
            raise InputError(f"{prefix}.join is not available in `run`: run `diffseg join` on its outputs "
                             f"(docs/temporal.md, docs/volume.md)")
        try:
            out[key] = build(found[prefix]).to_dict()
        except InputError as exc:  # named as it was given: `video.memory must be ...`
            from .settings import name_flags

            parser = (getattr(args, "section_parsers", None) or {}).get(prefix)
            msg = name_flags(str(exc), parser) if parser is not None else str(exc)
            raise InputError(re.sub(r"--([a-z][a-z0-9-]*)", rf"{prefix}.\1", msg, count=1)) from exc
    return out


def run_config_from_args(args: argparse.Namespace) -> RunConfig:
    """Build a validated `RunConfig` from parsed ``run`` options."""
    from diffseg_core.cli_args import options_config, segmenter_config_from_args

    cfg = options_config(args, RunConfig(), "run")
    try:
        return dataclasses.replace(cfg, segmenter=segmenter_config_from_args(args), **_section_configs(args))
    except (TypeError, ValueError) as exc:
        raise InputError(str(exc)) from exc


def _cmd_run(args: argparse.Namespace) -> "CommandResult | int":
    cfg = run_config_from_args(args)
    summary = run_job(args.inputs, args.output, cfg)
    if not summary.is_rank_zero:  # the other ranks' summaries are partial: rank 0 reports
        return summary.exit_code
    for _, e in summary.failures:
        print(f"diffseg run: error: {e}", file=sys.stderr)
    doc = {"done": summary.done, "skipped": summary.skipped, "failed": summary.failed, "total": summary.total,
           "frames": summary.frames, "seconds": round(summary.seconds, 2), "output": str(summary.out_dir)}
    return CommandResult(summary.format().splitlines()[0], doc, summary.exit_code)
