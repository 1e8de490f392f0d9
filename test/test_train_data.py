"""Synthetic training samples: augmentation keeps boxes on their points; filters; seed streams."""
import itertools

import numpy as np
import torch
from sim_helpers import fixed_scene

from regnet_pillars_ros.model.presets import get_preset
from regnet_pillars_ros.sim.lidar import LidarConfig
from regnet_pillars_ros.sim.scene import NUSCENES_CLASSES
from regnet_pillars_ros.sim.sweeps import simulate_sample
from regnet_pillars_ros.train.data import (
    VAL_SEED_BASE,
    SyntheticConfig,
    SyntheticData,
    augment,
    label_map,
    prepare,
    validation_samples,
)
from regnet_pillars_ros.train.loop import crop_preset

SMALL_LIDAR = LidarConfig(azimuth_steps=360)


def inside(points: np.ndarray, box: np.ndarray, margin: float = 0.05) -> np.ndarray:
    """Which points [N, 3] lie in the box (x, y, z_bottom, l, w, h, yaw), give or take `margin`."""
    rel = points[:, :2] - box[:2]
    c, s = np.cos(box[6]), np.sin(box[6])
    local = np.stack([c * rel[:, 0] + s * rel[:, 1], -s * rel[:, 0] + c * rel[:, 1]], axis=1)
    z = points[:, 2] - box[2]
    return ((np.abs(local) <= box[3:5] / 2 + margin).all(axis=1) & (z >= -margin)
            & (z <= box[5] + margin))


def test_augmentation_moves_boxes_points_and_velocities_together():
    scene = fixed_scene([[8.0, 3.0, 0.0, 4.5, 1.9, 1.7, 0.6]], velocities=[[3.0, 1.0]])
    sample = simulate_sample(scene, 0, SMALL_LIDAR, num_sweeps=0)
    box = sample.gt_boxes[0]
    on_box = inside(sample.key.points[:, :3], box)
    # Scaling moves a point's distance to the box faces, not the margin: skip points near it.
    clear = on_box == inside(sample.key.points[:, :3], box, 0.04)
    clear &= on_box == inside(sample.key.points[:, :3], box, 0.06)
    assert on_box[clear].sum() > 20
    for seed in range(6):  # covers flipped and unflipped draws
        points, boxes = augment(sample.key.points[:, :3], sample.gt_boxes,
                                np.random.default_rng(seed))
        assert np.array_equal(inside(points, boxes[0])[clear], on_box[clear])
        # The speed scales with the scene; the velocity keeps its angle to the heading.
        speed_ratio = np.linalg.norm(boxes[0, 7:9]) / np.linalg.norm(box[7:9])
        assert np.isclose(speed_ratio, boxes[0, 3] / box[3], rtol=1e-5)
        heading = np.array([np.cos(boxes[0, 6]), np.sin(boxes[0, 6])])
        before = np.array([np.cos(box[6]), np.sin(box[6])])
        assert np.isclose(heading @ boxes[0, 7:9] / np.linalg.norm(boxes[0, 7:9]),
                          before @ box[7:9] / np.linalg.norm(box[7:9]), atol=1e-5)


def test_prepare_filters_range_empty_boxes_and_foreign_classes():
    preset = crop_preset(get_preset("lyft-secfpn"), 16)
    scene = fixed_scene(
        [[8.0, 0.0, 0.0, 4.5, 1.9, 1.7, 0.0], [40.0, 0.0, 0.0, 4.5, 1.9, 1.7, 0.0],
         [0.0, 9.0, 0.0, 0.5, 2.5, 1.0, 0.0], [-9.0, 0.0, 0.0, 12.0, 2.9, 3.8, 0.0]],
        names=["car", "car", "barrier", "trailer"],
    )
    sample = simulate_sample(scene, 0, SMALL_LIDAR, num_sweeps=1)
    labels = label_map(scene.class_names, preset)[scene.labels]
    out = prepare(sample, labels, preset, None)
    assert out.points.shape[1] == 4 and out.gt_boxes.shape[1] == 7  # Lyft: no velocity
    assert (out.points[:, :2].abs() < 16).all()
    # The far car is outside the crop, barriers are not a Lyft class, the trailer is other_vehicle.
    names = [preset.class_names[i] for i in out.gt_labels]
    assert names == ["car", "other_vehicle"]


def test_label_map_by_name():
    nus = label_map(NUSCENES_CLASSES, get_preset("nus-secfpn"))
    assert nus.tolist() == list(range(10))
    lyft = label_map(NUSCENES_CLASSES, get_preset("lyft-fpn"))
    assert lyft[NUSCENES_CLASSES.index("traffic_cone")] == -1
    assert (lyft[NUSCENES_CLASSES.index("pedestrian")]
            == get_preset("lyft-fpn").class_names.index("pedestrian"))


def test_streams_are_disjoint_and_validation_is_held_out(monkeypatch):
    seen: list[int] = []

    def fake_scene_samples(preset, scene_seed, cfg, rng):
        seen.append(scene_seed)
        yield scene_seed

    monkeypatch.setattr("regnet_pillars_ros.train.data.scene_samples", fake_scene_samples)
    preset = get_preset("nus-secfpn")
    streams = [list(itertools.islice(SyntheticData(preset, 5, rank=r, world_size=2), 4))
               for r in range(2)]
    assert streams == [[5, 7, 9, 11], [6, 8, 10, 12]]
    seen.clear()
    list(validation_samples(preset, 2))
    assert seen == [VAL_SEED_BASE, VAL_SEED_BASE + 1]


def test_training_samples_are_augmented_and_shuffled():
    preset = crop_preset(get_preset("nus-secfpn"), 16)
    cfg = SyntheticConfig(keys_per_scene=2, num_objects=10, radius=12.0, lidar=SMALL_LIDAR)
    first, second = itertools.islice(SyntheticData(preset, 0, cfg), 2)
    assert first.points.dtype == torch.float32 and first.gt_boxes.shape[1] == 9
    assert len(first.gt_boxes) > 0
    # dt no longer sorted: shuffled
    assert not torch.all(first.points[:-1, 3] <= first.points[1:, 3])
    assert len(first.points) != len(second.points)
