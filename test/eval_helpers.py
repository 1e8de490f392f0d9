"""Small synthetic datasets and their scene bags, shared by the evaluation tests."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from regnet_pillars_ros.eval import bag_from_dataset
from regnet_pillars_ros.eval import nuscenes_frames as frames
from regnet_pillars_ros.eval import synthetic_nuscenes as synthetic
from regnet_pillars_ros.model import get_preset
from regnet_pillars_ros.model.checkpoint import write_checkpoint
from regnet_pillars_ros.model.network import PointPillarsNet
from regnet_pillars_ros.model.placeholder import placeholder_weights
from regnet_pillars_ros.pipeline.sweeps import SweepAccumulator
from regnet_pillars_ros.sim.lidar import LidarConfig

# A third of the default firings: fast to simulate and detect.
SPARSE = LidarConfig(azimuth_steps=360)
# The synthetic dataset's nuScenes categories -> Lyft classes (the Lyft layout names its
# categories by class).
LYFT_NAMES = {"vehicle.car": "car", "vehicle.truck": "truck", "vehicle.bus.rigid": "bus",
              "vehicle.trailer": "other_vehicle", "vehicle.construction": "emergency_vehicle",
              "vehicle.bicycle": "bicycle", "vehicle.motorcycle": "motorcycle",
              "human.pedestrian.adult": "pedestrian", "movable_object.trafficcone": "animal",
              "movable_object.barrier": "animal"}


def rename_to_lyft_classes(dataset: synthetic.SyntheticDataset) -> None:
    """Rewrite the dataset's category table with Lyft class names (`LYFT_NAMES`)."""
    categories = dataset.dataroot / dataset.version / "category.json"
    rows = json.loads(categories.read_text())
    categories.write_text(json.dumps([{**r, "name": LYFT_NAMES[r["name"]]} for r in rows]))


def write_bags(dataset: synthetic.SyntheticDataset, bags: Path, *flags: str) -> Path:
    """`bag-from-dataset` of the whole dataset into ``bags`` (one bag per scene)."""
    assert bag_from_dataset.main(["--dataroot", str(dataset.dataroot), "--version", dataset.version,
                                  *flags, "-o", str(bags), "--no-progress"]) == 0
    return bags


def dataset_with_bags(root: Path, seed: int, num_scenes: int, num_key_frames: int
                      ) -> tuple[synthetic.SyntheticDataset, Path]:
    """A sparse synthetic nuScenes-layout dataset under ``root/data`` and its bags in
    ``root/bags``."""
    dataset = synthetic.write_dataset(root / "data", seed=seed, num_scenes=num_scenes,
                                      num_key_frames=num_key_frames, lidar=SPARSE)
    return dataset, write_bags(dataset, root / "bags")


def placeholder_checkpoint(path: Path, preset_name: str) -> Path:
    """The preset's placeholder weights (boxes above its test score threshold) as a checkpoint."""
    preset = get_preset(preset_name)
    net = PointPillarsNet(preset)
    placeholder_weights(net, preset, preset.test_cfg.score_thr)
    return write_checkpoint(path, net.state_dict(), preset, "v1")


def stack_devkit_sweeps(nusc, chain: list[dict], sweeps: SweepAccumulator):
    """``chain`` (sample_data records, oldest first) stacked from the devkit's own files and
    poses, independently of the bags: what the replay must have given the detector."""
    for record in chain:
        pose = (frames.devkit_transform(nusc.get("ego_pose", record["ego_pose_token"]))
                @ frames.devkit_transform(nusc.get("calibrated_sensor",
                                                   record["calibrated_sensor_token"])))
        points = np.fromfile(nusc.get_sample_data_path(record["token"]), np.float32)
        stacked = sweeps.add(points.reshape(-1, 5)[:, :3].copy(), record["timestamp"] * 1000, pose)
    return stacked
