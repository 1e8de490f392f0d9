"""The training loop: batches, optimizer, schedule, DistributedDataParallel, checkpoints, loss plot.

Settings of the configs (`schedules/schedule-2x.py`, shared by all nine presets): AdamW, lr 0.001
(for 8 GPUs x 4 samples; `auto_scale_lr` off), weight decay 0.01, gradient clipping at L2 norm 35,
a linear warm-up from lr / 1000 over the first 1000 of about 21k iterations (24 epochs), then x0.1
at epochs 20 and 23. Here the same shape is scaled to `--iters`: warm-up over the first 1000/21096
of the run (at least one iteration, at most 1000), decays at 20/24 and 23/24 of it. With a time
limit the run's progress is the larger of the iteration and time fractions, so the same schedule
fits a wall-clock budget (warm-up over the first 1000/21096 of it; the clock starts after the first
step, which pays for data-loader and cuDNN start-up). Head init as
mmdet3d's Anchor3DHead: conv weights N(0, 0.01), class bias -log((1 - 0.01) / 0.01).
Batches hold per-sample pillars (train-time `max_voxels`: nuScenes 30000, Lyft 60000) encoded
together, canvases stacked. Under torchrun every rank reads its own sample stream; gradients are
averaged by DDP (gloo on CPU, nccl on CUDA); BatchNorm statistics stay per process (mmdet3d used
naiveSyncBN). Rank 0 writes every file. Checkpoints record the box convention trained in: v1
from scratch, that of the `--init` weights when fine-tuning.
"""
from __future__ import annotations

import csv
import dataclasses
import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..model.checkpoint import box_convention_of, load_into, read_checkpoint, write_checkpoint
from ..model.network import PointPillarsNet
from ..model.presets import Preset, get_preset
from ..model.voxelize import voxelize
from .data import SyntheticConfig, SyntheticData, TrainSample
from .encoder import encode_batch
from .losses import LossConfig, detection_loss
from .targets import AnchorCache, AssignerConfig, anchor_targets, to_convention

TRAIN_MAX_VOXELS = {"nuscenes": 30000, "lyft": 60000}
REFERENCE_ITERS, REFERENCE_WARMUP = 21096, 1000  # 24 epochs of 28130 nuScenes samples at batch 32
NOTE = "trained on synthetic scans"
LOSS_KEYS = ("loss", "cls", "bbox", "dir")


@dataclass
class TrainOptions:
    preset: str
    run_dir: Path
    iters: int = 1000
    batch_size: int = 2
    lr: float = 0.001
    weight_decay: float = 0.01
    grad_clip: float = 35.0
    device: str = "cpu"
    seed: int = 0
    init: str | None = None
    resume: bool = False  # continue at the iteration recorded in `init` (optimizer moments restart)
    workers: int = 0
    save_every: int = 500
    time_limit: float | None = None  # seconds; the run ends (and saves) when they are spent
    fp16_storage: bool = False  # checkpoints store float16 (loading restores float32)
    crop: float | None = None
    data: SyntheticConfig = field(default_factory=SyntheticConfig)


class TrainModel(nn.Module):
    """The network plus training-mode pillar encoding: a batch of `TrainSample` -> raw head maps."""

    def __init__(self, preset: Preset):
        super().__init__()
        self.preset = preset
        self.net = PointPillarsNet(preset)

    def forward(self, samples: list[TrainSample]) -> list[torch.Tensor]:
        p = self.preset
        device = next(self.parameters()).device
        pillars = [
            voxelize(s.points.to(device), p.point_cloud_range, p.voxel_size, p.max_num_points,
                     TRAIN_MAX_VOXELS[p.dataset])
            for s in samples
        ]
        return self.net.forward_canvas(encode_batch(self.net, pillars))


def crop_preset(preset: Preset, half_extent: float) -> Preset:
    """The preset on a smaller square BEV window, +-half_extent m (canvas and anchor grid shrink
    together, anchor pitch unchanged). Weights do not depend on the canvas size, so a model trained
    on crops runs on the full range; it trains several times faster where CPU time is short."""
    full = preset.point_cloud_range[3]
    cells = round(2 * half_extent / preset.voxel_size[0])
    if cells % 16 or half_extent > full:
        raise ValueError(f"crop +-{half_extent} m: need at most +-{full} m and a multiple of "
                         f"{8 * preset.voxel_size[0]} m")
    f = half_extent / full
    lo, hi = preset.point_cloud_range[:3], preset.point_cloud_range[3:]
    ranges = tuple((r[0] * f, r[1] * f, r[2], r[3] * f, r[4] * f, r[5])
                   for r in preset.anchors.ranges)
    return dataclasses.replace(
        preset,
        point_cloud_range=(-half_extent, -half_extent, lo[2], half_extent, half_extent, hi[2]),
        grid_size=(cells, cells, preset.grid_size[2]),
        anchors=dataclasses.replace(preset.anchors, ranges=ranges),
    )


def init_head(net: PointPillarsNet, prior: float = 0.01) -> None:
    """Anchor3DHead's init: normal(0, 0.01) weights, focal-loss prior on the class bias."""
    head = net.pts_bbox_head
    for conv in (head.conv_cls, head.conv_reg, head.conv_dir_cls):
        nn.init.normal_(conv.weight, std=0.01)
        nn.init.zeros_(conv.bias)
    nn.init.constant_(head.conv_cls.bias, -math.log((1 - prior) / prior))


def warmup_fraction(iters: int, time_limit: float | None = None) -> float:
    """The part of the run spent warming up: the config's 1000 of 21096 iterations, scaled."""
    if time_limit:
        return REFERENCE_WARMUP / REFERENCE_ITERS
    return min(REFERENCE_WARMUP, max(1, round(iters * REFERENCE_WARMUP / REFERENCE_ITERS))) / iters


def lr_factor(progress: float, warmup: float) -> float:
    """The config's linear warm-up and step decays at `progress` (0..1) of the run."""
    factor = 1.0 if progress >= warmup else 1e-3 + (1 - 1e-3) * progress / warmup
    return factor * 0.1 ** sum(progress >= m / 24 for m in (20, 23))


def batch_loss(model: nn.Module, preset: Preset, anchors: AnchorCache, samples: list[TrainSample]
               ) -> dict[str, torch.Tensor]:
    """Forward a batch and compute the configs' losses against its anchor targets."""
    maps = model(samples)
    device = maps[0].device
    all_anchors = anchors([tuple(m.shape[-2:]) for m in maps[0::3]], device)
    dir_offset = preset.dir_offset(anchors.convention)
    targets = [
        anchor_targets(all_anchors, to_convention(s.gt_boxes.to(device), anchors.convention),
                       s.gt_labels.to(device), preset.num_classes, dir_offset, AssignerConfig())
        for s in samples
    ]
    return detection_loss(maps, targets, preset.num_classes, LossConfig())


def _distributed(device: str) -> tuple[int, int, torch.device]:
    """Join the torchrun group when there is one: (rank, world size, this process's device)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    rank = dist.get_rank() if world > 1 else 0
    if cuda:
        torch.cuda.set_device(local)
        # The canvas shape is fixed: tune the convolutions once.
        torch.backends.cudnn.benchmark = True
        return rank, world, torch.device("cuda", local)
    return rank, world, torch.device("cpu")


def _batches(opts: TrainOptions, preset: Preset, rank: int, world: int
             ) -> Iterator[list[TrainSample]]:
    data = SyntheticData(preset, opts.seed, opts.data, rank, world)
    return iter(DataLoader(data, batch_size=opts.batch_size, num_workers=opts.workers,
                           collate_fn=list))


def save_run(model: TrainModel, opts: TrainOptions, preset: Preset, convention: str,
             rows: list[dict[str, float]]) -> None:
    """latest.pth (official format), losses.csv and loss.png of the run so far."""
    run_dir = Path(opts.run_dir)
    state = type(model.net.state_dict())((k, v.detach().cpu().clone())
                                         for k, v in model.net.state_dict().items())
    write_checkpoint(run_dir / "latest.pth", state, preset, convention, opts.fp16_storage,
                     iteration=int(rows[-1]["iteration"]), note=NOTE)
    write_log(rows, run_dir / "losses.csv")
    plot_losses(rows, run_dir / "loss.png")


def run_progress(iteration: int, opts: TrainOptions, elapsed: float, device: torch.device,
                 world: int) -> float:
    """The fraction of the run done before `iteration`: by iterations, or by time when that is
    further along. Under torchrun rank 0's clock decides, so every rank stops at the same step."""
    progress = (iteration - 1) / opts.iters
    if opts.time_limit is None:
        return progress
    progress = max(progress, elapsed / opts.time_limit)
    if world > 1:
        shared = torch.tensor([progress], dtype=torch.float64, device=device)
        dist.broadcast(shared, 0)
        progress = float(shared)
    return progress


def plot_losses(rows: list[dict[str, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    steps = [r["iteration"] for r in rows]
    for key in LOSS_KEYS:
        ax.plot(steps, [r[key] for r in rows], label=key)
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.legend()
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_log(rows: list[dict[str, float]], path: Path) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def train(opts: TrainOptions) -> list[dict[str, float]]:
    """Run `opts.iters` iterations; rank 0 writes latest.pth, losses.csv and loss.png to run_dir.

    Returns the logged rows (iteration, losses averaged over ranks, lr, seconds).
    """
    if opts.time_limit is not None and opts.resume:
        raise ValueError("--resume continues an iteration-based schedule; "
                         "it cannot be combined with --time-limit")
    rank, world, device = _distributed(opts.device)
    torch.manual_seed(opts.seed)
    preset = get_preset(opts.preset)
    if opts.crop is not None:
        preset = crop_preset(preset, opts.crop)
    model = TrainModel(preset)
    init_head(model.net)
    convention, start = "v1", 0
    if opts.init:
        ckpt = read_checkpoint(opts.init)
        load_into(model.net, ckpt, preset)
        convention = box_convention_of(ckpt.meta)
        if opts.resume:
            if "iteration" not in ckpt.meta:
                raise ValueError(f"--resume: {opts.init} records no iteration "
                                 "(use it without --resume to fine-tune)")
            start = int(ckpt.meta["iteration"])
    model.to(device).train()
    wrapped: nn.Module = DistributedDataParallel(model) if world > 1 else model
    optimizer = torch.optim.AdamW(model.parameters(), lr=opts.lr, weight_decay=opts.weight_decay)
    warmup = warmup_fraction(opts.iters, opts.time_limit)
    anchors = AnchorCache(preset, convention)
    batches = _batches(opts, preset, rank, world)
    rows: list[dict[str, float]] = []
    bar = tqdm(total=opts.iters, initial=start, disable=rank != 0, desc=f"train {preset.name}",
               dynamic_ncols=True)
    # The time limit counts from the end of the first step (start-up excluded).
    began: float | None = None
    for iteration in range(start + 1, opts.iters + 1):
        progress = run_progress(iteration, opts, time.perf_counter() - began if began else 0.0,
                                device, world)
        if progress >= 1.0:
            break
        step_start = time.perf_counter()
        lr = opts.lr * lr_factor(progress, warmup)
        for group in optimizer.param_groups:
            group["lr"] = lr
        losses = batch_loss(wrapped, preset, anchors, next(batches))
        optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        nn.utils.clip_grad_norm_(model.parameters(), opts.grad_clip)
        optimizer.step()
        values = torch.stack([losses[k].detach() for k in LOSS_KEYS])
        if world > 1:
            dist.all_reduce(values)
            values /= world
        row = {"iteration": iteration, **dict(zip(LOSS_KEYS, values.tolist())), "lr": lr,
               "seconds": time.perf_counter() - step_start}
        rows.append(row)
        began = began or time.perf_counter()
        bar.set_postfix({k: f"{row[k]:.3f}" for k in LOSS_KEYS})
        bar.update()
        if rank == 0 and iteration % opts.save_every == 0:
            save_run(model, opts, preset, convention, rows)
    if rank == 0 and rows and rows[-1]["iteration"] % opts.save_every:
        save_run(model, opts, preset, convention, rows)
    bar.close()
    if world > 1:
        dist.barrier()
    return rows
