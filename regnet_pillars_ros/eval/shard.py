"""Sharding the replay by scene: local worker processes and/or torchrun ranks.

Under ``torchrun`` (WORLD_SIZE > 1) rank r takes scenes r::world, the ranks' key-frame results
are gathered to rank 0 with torch.distributed (gloo on the CPU, nccl on CUDA) and merged sorted
by sample token. Within a process, ``workers`` > 1 replays its scenes in that many spawned
processes (one detector each, the CPU threads shared out). Scenes are independent (fresh sweep
and transform state), so the merged results do not depend on how they were split.
"""
from __future__ import annotations

import dataclasses
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch
import torch.distributed as dist
from tqdm import tqdm

from ..model import Detector
from .replay import FrameResult, ReplayConfig, replay_scene, replay_scenes
from .scoring import merge

_detector: Detector | None = None  # one per worker process


def _init_worker(config: ReplayConfig, threads: int) -> None:
    global _detector
    torch.set_num_threads(threads)
    _detector = config.detector()


def _replay_one(bag: Path, config: ReplayConfig) -> list[FrameResult]:
    return replay_scene(bag, _detector, config)


def replay_local(bags: list[Path], config: ReplayConfig, workers: int,
                 progress: bool) -> list[FrameResult]:
    """Replay ``bags`` in this process (workers <= 1) or in ``workers`` spawned processes."""
    if workers <= 1 or len(bags) <= 1:
        return replay_scenes(bags, config, progress)
    threads = max(1, torch.get_num_threads() // workers)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(min(workers, len(bags)), context, initializer=_init_worker,
                             initargs=(config, threads)) as pool:
        results = pool.map(_replay_one, bags, [config] * len(bags))
        return [f for scene in tqdm(results, total=len(bags), unit="scene", desc="replay",
                                    disable=not progress) for f in scene]


def world() -> tuple[int, int]:
    """(rank, world size) from torchrun's environment; (0, 1) outside torchrun."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def replay_sharded(bags: list[Path], config: ReplayConfig, workers: int = 1,
                   progress: bool = True) -> list[FrameResult] | None:
    """Every scene replayed once over ranks and workers; the merged results on rank 0, None on
    the other ranks."""
    rank, size = world()
    if size == 1:
        return merge([replay_local(bags, config, workers, progress)])
    cuda = config.device != "cpu" and torch.cuda.is_available()
    if cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        config = dataclasses.replace(config, device=f"cuda:{local}")
    dist.init_process_group("nccl" if cuda else "gloo")
    try:
        mine = replay_local(bags[rank::size], config, workers, progress and rank == 0)
        gathered: list | None = [None] * size if rank == 0 else None
        dist.gather_object(mine, gathered, dst=0)
    finally:
        dist.destroy_process_group()
    return merge(gathered) if rank == 0 else None
