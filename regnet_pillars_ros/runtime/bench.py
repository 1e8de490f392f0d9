"""Frame benchmark: per-stage median / p90 times of whole detector frames, with the setting named.

Times what a user's frame costs (points in, boxes out) through `Detector` with `profile_stages`,
on a deterministic nuScenes-like 10-sweep cloud, and reports the hardware, library versions,
threads, memory and point / pillar counts next to the numbers. No rclpy.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import resource
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from ..model.bundled import PLACEHOLDER
from ..model.detector import Detector, as_model_points, resolve_device, usable_points
from ..model.network import PointPillarsNet
from ..model.voxelize import VoxelGrid, voxelize, voxelize_fixed
from ..pointfiles import read_points
from .factory import build_detector

REALDATA = Path(__file__).resolve().parents[2].parent / "shared" / "realdata"
COMPOSITE_CLOUD = REALDATA / "composite_10sweeps_lyft_val_poses.npy"
DEFAULT_POINTS = 250_000
# Horizontal jitter of the tiled copies: 0.2 m spreads them over neighbouring pillars the way
# real extra sweeps do (~33k pillars at 250k points for the nuScenes presets).
TILE_JITTER_M = 0.2
# (key in Detections.timings_ms, label in tables)
STAGES = (
    ("preprocess", "voxelize (preprocess)"),
    ("encoder", "encoder+scatter"),
    ("backbone", "backbone"),
    ("neck", "neck"),
    ("head", "head"),
    ("network", "network (onnxruntime)"),
    # With a CUDA graph, "preprocess" is the copy of the cloud to the GPU and the graph replays
    # the range filter, voxelization, network and top-k decoding; NMS stays in "postprocess".
    ("graph", "filter to decoded top-k (CUDA graph)"),
    ("postprocess", "decode+NMS (postprocess)"),
    ("total", "total"),
)


@dataclass
class BenchConfig:
    presets: list[str]
    device: str = "cpu"
    num_points: int = DEFAULT_POINTS
    repeats: int = 5
    warmup: int = 1
    cloud: Path | None = None  # a merged [N, 5] cloud to time instead of the generated one
    checkpoint: Path | None = None  # None: seeded random weights
    backends: list[str] = field(default_factory=lambda: ["torch"])
    precision: str = "fp32"
    cuda_graph: bool = False
    threads: int | None = None
    score_threshold: float | None = None  # None: the preset's test_cfg value
    seed: int = 0


@dataclass
class PresetResult:
    preset: str
    backend: str
    precision: str
    cuda_graph: bool
    stages_ms: dict[str, dict[str, float]]  # stage -> {"median", "p90"}
    fps: float
    voxelize_share: float  # preprocess median / total median
    nms_share: float  # postprocess median / total median
    # median of the voxelization alone (`voxelization_ms`), not part of the frame's stages
    voxelize_ms: float
    frame: dict[str, int]  # points in, in range, pillars, overflow, detections
    # cpu_peak_rss: process peak so far (grows over the presets of one run);
    # gpu_max_allocated: this preset
    memory_mib: dict[str, float]
    box_convention: str
    weights: str
    samples_ms: dict[str, list[float]] = field(repr=False)
    gflop: dict[str, float] = field(default_factory=dict)  # per network part, on this cloud


def synthetic_scene(seed: int, sweeps: int = 10) -> np.ndarray:
    """A ground-plus-objects scene seen from a moving ego over `sweeps` sweeps, [N, 5] float32."""
    gen = np.random.default_rng(seed)
    radii = 2.5 * 1.06 ** np.arange(60)  # ring spacing grows with range like a spinning LiDAR's
    azimuth = np.linspace(-np.pi, np.pi, 1080, endpoint=False)
    ring_r, ring_a = (a.ravel() for a in np.meshgrid(radii[radii < 55], azimuth))
    ground = np.stack([ring_r * np.cos(ring_a), ring_r * np.sin(ring_a),
                       np.full_like(ring_r, -1.8)], axis=1)
    centres = gen.uniform([-45, -45, -1.8], [45, 45, -1.8], size=(40, 3))
    sizes = gen.uniform([0.6, 0.6, 1.0], [6.0, 2.5, 3.0], size=(40, 3))
    objects = centres[:, None] + sizes[:, None] * gen.uniform([-0.5, -0.5, 0], [0.5, 0.5, 1],
                                                              size=(40, 300, 3))
    scene = np.concatenate([ground, objects.reshape(-1, 3)])
    parts = []
    for sweep in range(sweeps):
        xyz = scene[sweep::sweeps] + [-0.5 * sweep, 0.0, 0.0]  # ego moved 0.5 m per 0.05 s sweep
        xyz[:, 2] += gen.normal(0, 0.02, len(xyz))
        extra = np.stack([gen.uniform(0, 255, len(xyz)), np.full(len(xyz), 0.05 * sweep)], axis=1)
        parts.append(np.concatenate([xyz, extra], axis=1))
    return np.concatenate(parts).astype(np.float32)


def make_cloud(num_points: int, seed: int = 0,
               source: Path | None = COMPOSITE_CLOUD) -> tuple[np.ndarray, str]:
    """Deterministic [num_points, 5] cloud: `source` (or a synthetic scene) tiled with jitter; and
    its description."""
    if num_points <= 0:
        raise ValueError(f"number of points must be positive, got {num_points}")
    if source is not None and source.is_file():
        base, origin = read_points(source), f"{source.name}"
    else:
        base, origin = synthetic_scene(seed), "synthetic ground + objects scene (10 sweeps)"
    gen = np.random.default_rng(seed)
    copies = [base] + [
        base + np.pad(gen.normal(0, TILE_JITTER_M, (len(base), 2)),
                      ((0, 0), (0, 3))).astype(np.float32)
        for _ in range(math.ceil(num_points / len(base)) - 1)
    ]
    cloud = np.concatenate(copies)[:num_points]
    return cloud, (f"{origin} ({len(base)} points) tiled to {num_points} "
                   f"with {TILE_JITTER_M} m horizontal jitter")


def percentiles(samples: list[float]) -> dict[str, float]:
    return {"median": float(np.median(samples)), "p90": float(np.percentile(samples, 90))}


def cpu_peak_rss_mib() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def time_preset(detector: Detector, cloud: np.ndarray, repeats: int, warmup: int,
                score_threshold: float | None = None) -> PresetResult:
    """Warm up, then time `repeats` whole frames with per-stage timings (boxes scoring at least
    `score_threshold`; the preset's threshold where None)."""
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats must be >= 1 and warmup >= 0, got {repeats} and {warmup}")
    detector.profile_stages = True
    for _ in range(warmup):
        detector(cloud, score_threshold)
    cuda = detector.device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(detector.device)
    frames = [detector(cloud, score_threshold) for _ in range(repeats)]
    if frames[0].stats["pillars"] == 0:
        raise ValueError(f"the cloud has no points inside preset {detector.preset.name}'s range; "
                         "nothing to time")
    samples = {key: [f.timings_ms[key] for f in frames]
               for key, _ in STAGES if key in frames[0].timings_ms}
    stages = {key: percentiles(values) for key, values in samples.items()}
    total = stages["total"]["median"]
    memory = {"cpu_peak_rss": cpu_peak_rss_mib()}
    if cuda:
        memory["gpu_max_allocated"] = torch.cuda.max_memory_allocated(detector.device) / 2**20
    last = frames[-1]
    return PresetResult(
        preset=detector.preset.name,
        backend=detector.backend.name,
        precision=getattr(detector.backend, "precision", "fp32"),
        cuda_graph=detector.cuda_graph,
        stages_ms=stages,
        fps=1000.0 / total,
        voxelize_share=stages["preprocess"]["median"] / total,
        nms_share=stages["postprocess"]["median"] / total,
        frame={**last.stats, "detections": len(last)},
        memory_mib=memory,
        box_convention=detector.box_convention,
        weights=detector.source,
        samples_ms=samples,
        gflop=network_gflop(detector, cloud),
        voxelize_ms=voxelization_ms(detector, cloud, repeats),
    )


def voxelization_ms(detector: Detector, cloud: np.ndarray, repeats: int) -> float:
    """Median ms of the voxelization alone on the detector's device, of the cloud's points in range
    already there: `voxelize` (two host synchronisations), or with a CUDA graph `voxelize_fixed`,
    timed eagerly here (an upper bound of its share of the graph: its kernels launched one by
    one)."""
    p, device = detector.preset, detector.device
    points, _ = usable_points(as_model_points(cloud).to(device), p.point_cloud_range)
    if detector.cuda_graph:
        grid, usable = (VoxelGrid.of(p.point_cloud_range, p.voxel_size, device),
                        torch.ones(points.shape[0], dtype=torch.bool, device=device))
        run = partial(voxelize_fixed, points, usable, grid, p.max_num_points, p.max_voxels)
    else:
        run = partial(voxelize, points, p.point_cloud_range, p.voxel_size, p.max_num_points,
                      p.max_voxels)
    samples = []
    for _ in range(repeats + 1):  # the first run warms up
        detector.synchronize()
        start = time.perf_counter()
        run()
        detector.synchronize()
        samples.append((time.perf_counter() - start) * 1e3)
    return float(np.median(samples[1:]))


NETWORK_PARTS = ("encoder", "backbone", "neck", "head")


def network_gflop(detector: Detector, cloud: np.ndarray) -> dict[str, float]:
    """GFLOP of the pillar encoder, backbone, neck and head for one frame of `cloud`.

    Counted by torch's FlopCounterMode on an fp32 copy of the preset's network (the count is the
    same for any weights, precision or backend; a CUDA graph replay would hide it from the counter).
    """
    net = PointPillarsNet(detector.preset).to(detector.device).eval()
    pillars, _ = detector.preprocess(cloud)
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        net(*pillars.network_inputs())
    counts = counter.get_flop_counts()  # keyed by module path from the network
    attributes = ("pts_voxel_encoder", "pts_backbone", "pts_neck", "pts_bbox_head")
    return {part: sum(counts.get(f"{type(net).__name__}.{attr}", {}).values()) / 1e9
            for part, attr in zip(NETWORK_PARTS, attributes)}


def network_gflop_per_s(result: dict) -> float | None:
    """Achieved GFLOP/s (median times) of backbone + neck + head, or of the whole network where it
    runs in one stage (onnxruntime; a CUDA graph, whose stage also voxelizes and decodes); None
    when not measured."""
    stages = result["stages_ms"]
    one_stage = [k for k in ("network", "graph") if k in stages]
    parts = NETWORK_PARTS if one_stage else NETWORK_PARTS[1:]
    seconds = sum(stages[k]["median"] for k in (*one_stage, *NETWORK_PARTS[1:])
                  if k in stages) / 1e3
    gflop = sum(result.get("gflop", {}).get(k, 0.0) for k in parts)
    return gflop / seconds if gflop and seconds else None


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(device: torch.device) -> dict[str, Any]:
    """Hardware and library versions the numbers were measured with."""
    env: dict[str, Any] = {
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
        "device": str(device),
    }
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
        env["cuda"] = torch.version.cuda
    return env


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """torch's intra-op thread count set to `threads` (None: unchanged) for the block, then
    restored."""
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def run_bench(config: BenchConfig) -> dict[str, Any]:
    """Time every preset of `config` on one cloud; returns the JSON-ready report."""
    if config.checkpoint is not None and len(config.presets) != 1:
        raise ValueError(f"a checkpoint fits one preset; got {len(config.presets)} presets")
    device = resolve_device(config.device)
    if config.cloud is not None:
        cloud, origin = read_points(config.cloud), f"{config.cloud} (as given)"
    else:
        cloud, origin = make_cloud(config.num_points, config.seed)
    with torch_threads(config.threads):
        results = []
        for name in config.presets:
            for backend in config.backends:
                detector = build_detector(name, config.checkpoint or PLACEHOLDER,
                                          device=config.device, backend=backend,
                                          precision=config.precision, cuda_graph=config.cuda_graph)
                results.append(time_preset(detector, cloud, config.repeats, config.warmup,
                                           config.score_threshold))
        environment_now = environment(device)
    note = (
        "seeded random placeholder weights: the network stages take the same time with any "
        "weights, decode+NMS grows with the boxes above the score threshold "
        "(see detections per frame; real weights on a busy scene may pass more)"
        if config.checkpoint is None else f"weights from {config.checkpoint}"
    )
    return {
        "config": {**asdict(config), "cloud": str(config.cloud) if config.cloud else None,
                   "checkpoint": str(config.checkpoint) if config.checkpoint else None},
        "environment": environment_now,
        "cloud": {"source": origin, "points": int(cloud.shape[0])},
        "weights_note": note,
        "results": [asdict(r) for r in results],
    }


def variant(result: dict) -> str:
    """'torch fp16', 'torch fp16 + CUDA graph', 'onnxruntime fp32', ..."""
    return (f"{result['backend']} {result['precision']}"
            + (" + CUDA graph" if result.get("cuda_graph") else ""))


def markdown_table(report: dict[str, Any]) -> str:
    """One row per preset: median / p90 ms of every stage, fps, memory, counts and shares."""
    env = report["environment"]
    hardware = env.get("gpu") or f"{env['cpu']} ({env['cpu_count']} cores)"
    lines = [
        f"Hardware: {hardware}; device {env['device']}; "
        f"torch {env['torch']} ({env['torch_threads']} threads), "
        f"numpy {env['numpy']}, python {env['python']}",
        f"Cloud: {report['cloud']['source']}; {report['weights_note']}.",
        "Times in ms, median / p90.",
        "",
        "| preset | backend | points in range | pillars | "
        + " | ".join(label for _, label in STAGES)
        + " | fps | peak mem (MiB) | voxelize share | decode+NMS share | voxelization alone"
        " | detections"
        " | network GFLOP (GFLOP/s of backbone+neck+head, or of the network as one stage) |",
        "|---" * (len(STAGES) + 11) + "|",
    ]
    for r in report["results"]:
        times = " | ".join(
            f"{r['stages_ms'][k]['median']:.1f} / {r['stages_ms'][k]['p90']:.1f}"
            if k in r["stages_ms"] else "-" for k, _ in STAGES
        )
        memory = " / ".join(f"{v:.0f} ({k})" for k, v in r["memory_mib"].items())
        lines.append(
            f"| {r['preset']} | {variant(r)} | {r['frame']['points_in_range']} "
            f"| {r['frame']['pillars']} | {times} | {r['fps']:.2f} "
            f"| {memory} | {r['voxelize_share']:.1%} | {r['nms_share']:.1%} "
            f"| {voxelize_alone(r)} | {r['frame']['detections']} "
            f"| {flops(r)} |"
        )
    return "\n".join(lines) + "\n"


def voxelize_alone(result: dict) -> str:
    """Median ms of the voxelization alone; '-' in reports written before it was measured."""
    return f"{result['voxelize_ms']:.2f}" if "voxelize_ms" in result else "-"


def flops(result: dict) -> str:
    """'104.2 (118)': GFLOP of the network on the frame and its achieved GFLOP/s
    (`network_gflop_per_s`)."""
    if not result.get("gflop"):
        return "-"
    rate = network_gflop_per_s(result)
    return f"{sum(result['gflop'].values()):.1f}" + (f" ({rate:.0f})" if rate else "")


def bar_chart(report: dict[str, Any], path: Path) -> bool:
    """Stacked median stage times per preset as a PNG; False when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    results = report["results"]
    fig, ax = plt.subplots(figsize=(9, 1.2 + 0.6 * len(results)))
    left = np.zeros(len(results))
    for key, label in STAGES[:-1]:
        widths = np.array([r["stages_ms"].get(key, {"median": 0.0})["median"] for r in results])
        ax.barh([f"{r['preset']} ({variant(r)})" for r in results], widths, left=left, label=label)
        left += widths
    env = report["environment"]
    ax.set_xlabel("median ms per frame")
    ax.set_title(f"{report['cloud']['points']} points on {env.get('gpu') or env['cpu']} "
                 f"({env['device']})", fontsize=9)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return True


def write_report(report: dict[str, Any], json_path: Path) -> list[Path]:
    """JSON at `json_path`, markdown (and PNG when matplotlib is there) next to it; returns the
    paths."""
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(report, indent=2) + "\n")
    md_path = json_path.with_suffix(".md")
    md_path.write_text(markdown_table(report))
    written = [json_path, md_path]
    png_path = json_path.with_suffix(".png")
    if bar_chart(report, png_path):
        written.append(png_path)
    return written
