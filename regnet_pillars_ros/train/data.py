"""Training samples from the LiDAR simulator, prepared as mmdet3d's nuScenes/Lyft train pipelines
do.

Per sample (configs' `train_pipeline`): key frame + `sweeps_num` past sweeps with features
(x, y, z, dt); boxes without key-frame points dropped (nuScenes `use_valid_flag`); optional
`GlobalRotScaleTrans` (rotation U(-0.3925, 0.3925) rad, scale U(0.95, 1.05), no translation) and
`RandomFlip3D` (BEV horizontal flip, y -> -y, probability 0.5), boxes and velocities moved with
the points; `PointsRangeFilter` (strict), `ObjectRangeFilter` (BEV centre strictly inside),
class filter, `PointShuffle`.

Scenes come from seeds: training streams take seeds below `VAL_SEED_BASE`, each (rank, worker)
stream a disjoint arithmetic progression; validation takes `VAL_SEED_BASE + i`. Key frames are
taken every `key_stride` sweeps along each scene's sequence (nuScenes: 2 Hz keys, 20 Hz sweeps).
"""
from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from ..model.presets import Preset
from ..sim.lidar import LidarConfig
from ..sim.scene import generate_scene
from ..sim.sweeps import Sample, sweep_sequence

VAL_SEED_BASE = 1_000_000
# The simulator's nuScenes classes that Lyft names differently; others match by name or are dropped.
LYFT_ALIASES = {"trailer": "other_vehicle", "construction_vehicle": "other_vehicle"}
ROT_RANGE = 0.3925
SCALE_RANGE = (0.95, 1.05)


@dataclass
class TrainSample:
    points: torch.Tensor  # float32 [N, 4]: x, y, z, dt
    gt_boxes: torch.Tensor  # float32 [M, code_size]: 1.x boxes (+ vx, vy on nuScenes)
    gt_labels: torch.Tensor  # int64 [M]: preset class indices


@dataclass(frozen=True)
class SyntheticConfig:
    keys_per_scene: int = 4
    key_stride: int = 10
    num_objects: int = 80
    radius: float = 50.0  # objects are placed within this distance of the ego path
    lidar: LidarConfig = field(default_factory=LidarConfig)


def label_map(scene_classes: tuple[str, ...], preset: Preset) -> np.ndarray:
    """Scene label -> preset label, -1 where the preset has no such class."""
    aliases = LYFT_ALIASES if preset.dataset == "lyft" else {}
    names = [aliases.get(n, n) for n in scene_classes]
    return np.array([preset.class_names.index(n) if n in preset.class_names else -1 for n in names])


def augment(points: np.ndarray, boxes: np.ndarray, rng: np.random.Generator
            ) -> tuple[np.ndarray, np.ndarray]:
    """Global rotation, scale and BEV flip of points [N, >= 3] and boxes [M, 9] together."""
    points, boxes = points.copy(), boxes.copy()
    angle = rng.uniform(-ROT_RANGE, ROT_RANGE)
    c, s = np.cos(angle), np.sin(angle)
    rot = np.array([[c, -s], [s, c]], np.float32)
    points[:, :2] = points[:, :2] @ rot.T
    boxes[:, :2] = boxes[:, :2] @ rot.T
    boxes[:, 7:9] = boxes[:, 7:9] @ rot.T
    boxes[:, 6] += angle
    scale = rng.uniform(*SCALE_RANGE)
    points[:, :3] *= scale
    boxes[:, :6] *= scale
    boxes[:, 7:9] *= scale
    if rng.random() < 0.5:
        points[:, 1] *= -1
        boxes[:, [1, 8]] *= -1
        boxes[:, 6] *= -1
    return points, boxes


def prepare(sample: Sample, labels: np.ndarray, preset: Preset,
            rng: np.random.Generator | None) -> TrainSample:
    """A simulator sample -> model features and targets; augmented and shuffled when `rng` is given.

    labels: the sample's boxes' preset labels (-1 = not a preset class).
    """
    points = sample.points[:, [0, 1, 2, 4]]
    keep = sample.has_points & (labels >= 0)
    boxes, labels = sample.gt_boxes[keep], labels[keep]
    if rng is not None:
        points, boxes = augment(points, boxes, rng)
    lo, hi = np.array(preset.point_cloud_range[:3]), np.array(preset.point_cloud_range[3:])
    points = points[np.all((points[:, :3] > lo) & (points[:, :3] < hi), axis=1)]
    inside = np.all((boxes[:, :2] > lo[:2]) & (boxes[:, :2] < hi[:2]), axis=1)
    boxes, labels = boxes[inside], labels[inside]
    if rng is not None:
        points = points[rng.permutation(len(points))]
    return TrainSample(
        torch.from_numpy(np.ascontiguousarray(points, np.float32)),
        torch.from_numpy(np.ascontiguousarray(boxes[:, :preset.box_code_size], np.float32)),
        torch.from_numpy(labels.astype(np.int64)),
    )


def scene_samples(preset: Preset, scene_seed: int, cfg: SyntheticConfig,
                  rng: np.random.Generator | None) -> Iterator[TrainSample]:
    """The key frames of one scene; `rng` None = no augmentation (validation)."""
    scene = generate_scene(scene_seed, num_objects=cfg.num_objects, radius=cfg.radius)
    labels = label_map(scene.class_names, preset)[scene.labels]
    stop = cfg.keys_per_scene * cfg.key_stride
    sequence = sweep_sequence(scene, 0, stop, cfg.lidar, preset.sweeps_num, seed=scene_seed)
    for sample in itertools.islice(sequence, 0, stop, cfg.key_stride):
        yield prepare(sample, labels, preset, rng)


def validation_samples(preset: Preset, num_scenes: int, cfg: SyntheticConfig = SyntheticConfig()
                       ) -> Iterator[TrainSample]:
    """Held-out key frames (scene seeds from `VAL_SEED_BASE`), never augmented."""
    for i in range(num_scenes):
        yield from scene_samples(preset, VAL_SEED_BASE + i, cfg, None)


class SyntheticData(IterableDataset):
    """An endless stream of augmented training samples, disjoint between ranks and workers."""

    def __init__(self, preset: Preset, seed: int, cfg: SyntheticConfig = SyntheticConfig(),
                 rank: int = 0, world_size: int = 1):
        super().__init__()
        self.preset, self.seed, self.cfg = preset, seed, cfg
        self.rank, self.world_size = rank, world_size

    def __iter__(self) -> Iterator[TrainSample]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        stream, streams = self.rank * workers + worker, self.world_size * workers
        rng = np.random.default_rng([self.seed, stream])
        for k in itertools.count():
            scene_seed = self.seed + stream + k * streams
            if scene_seed >= VAL_SEED_BASE:
                raise RuntimeError("training scene seeds reached the validation range; "
                                   "use a smaller --seed")
            yield from scene_samples(self.preset, scene_seed, self.cfg, rng)
