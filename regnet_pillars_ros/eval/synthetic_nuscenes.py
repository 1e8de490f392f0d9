"""A small synthetic dataset in the nuScenes devkit layout, from the project's simulator.

``write_dataset(root)`` writes ``<root>/<version>/*.json`` (the tables ``nuscenes.NuScenes``
loads), ``samples/LIDAR_TOP/*.pcd.bin`` for the key frames (2 Hz), ``sweeps/LIDAR_TOP/*.pcd.bin``
for the sweeps between them (20 Hz) and a one-pixel map mask (the devkit opens every map record's
file; the detection evaluation never reads it). Every key frame has its 10 previous sweeps: the
scene's sweeps start 10 sweeps before its first key frame, and a sweep belongs to (``sample_token``)
the next key frame.

Splits: the devkit's named splits (``mini_val``, ``val``...) are fixed lists of real scene names.
Instead of borrowing those names, the scenes are listed in ``<version>/splits.json``, the custom
split file that nuscenes-devkit 1.2.0 (pinned) reads when ``DetectionEval`` gets a split name it
does not know: `VAL_SPLIT` and `TRAIN_SPLIT` here. The data stay honest about being synthetic,
and any number of scenes fits either split.

Global frame = the simulator's world frame shifted by `GLOBAL_OFFSET` (map-sized coordinates).
Every annotated object of a scene is annotated in every key frame (so the devkit's finite-difference
velocities exist for all of them); the evaluation drops boxes without points or out of range.
Attributes follow the true motion with the same 0.2 m/s rule as the default attributes of
predictions; visibility (camera-based in nuScenes) is a LiDAR proxy: level 4 with key-frame points,
1 without.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..pipeline.transforms import Transform
from ..sim.lidar import LidarConfig
from ..sim.scene import ClassSpec, Scene, generate_scene
from ..sim.sweeps import SimSweep, make_sample, mount_transform, simulate_sweep
from .nuscenes_frames import to_global
from .nuscenes_metrics import default_attribute

VAL_SPLIT = "synthetic_val"
TRAIN_SPLIT = "synthetic_train"
CHANNEL = "LIDAR_TOP"
GLOBAL_OFFSET = (400.0, 1100.0, 0.0)
FIRST_TIMESTAMP_US = 1_533_151_600_000_000
SCENE_GAP_US = 3_600_000_000  # an hour between scene starts
SWEEPS_PER_KEY_FRAME = 10

# Detection class -> the nuScenes category written for it (one of those the devkit maps back).
CATEGORIES = {
    "car": "vehicle.car", "truck": "vehicle.truck", "trailer": "vehicle.trailer",
    "bus": "vehicle.bus.rigid", "construction_vehicle": "vehicle.construction",
    "bicycle": "vehicle.bicycle", "motorcycle": "vehicle.motorcycle",
    "pedestrian": "human.pedestrian.adult", "traffic_cone": "movable_object.trafficcone",
    "barrier": "movable_object.barrier",
}
ATTRIBUTES = ("vehicle.moving", "vehicle.parked", "vehicle.stopped", "cycle.with_rider",
              "cycle.without_rider", "pedestrian.moving", "pedestrian.standing",
              "pedestrian.sitting_lying_down")
VISIBILITY = (("1", "v0-40"), ("2", "v40-60"), ("3", "v60-80"), ("4", "v80-100"))

@dataclass(frozen=True)
class SyntheticDataset:
    """What `write_dataset` wrote: the dataroot, version and scene names per split."""

    dataroot: Path
    version: str
    splits: dict[str, list[str]]


def token(*parts: object) -> str:
    """A 32-hex-digit token, the same for the same parts."""
    return hashlib.md5("/".join(map(str, parts)).encode()).hexdigest()


def write_dataset(root: str | Path, seed: int = 0, num_scenes: int = 2, num_key_frames: int = 20,
                  num_train_scenes: int = 0, version: str = "v1.0-mini",
                  lidar: LidarConfig = LidarConfig(),
                  specs: dict[str, ClassSpec] | None = None) -> SyntheticDataset:
    """Write ``num_scenes`` scenes (scene i from ``generate_scene(seed + i, specs=specs)``) of
    ``num_key_frames`` key frames each under ``root``; the first ``num_train_scenes`` go to
    `TRAIN_SPLIT`, the others to `VAL_SPLIT`. Deterministic in the arguments."""
    root = Path(root)
    tables = _Tables(seed)
    for index in range(num_scenes):
        scene = dataset_scene(seed, index, num_key_frames, specs)
        _add_scene(tables, root, index, scene, num_key_frames, lidar, seed + index)
    names = [s["name"] for s in tables.rows["scene"]]
    splits = {TRAIN_SPLIT: names[:num_train_scenes], VAL_SPLIT: names[num_train_scenes:]}
    map_file = Path("maps") / f"{tables.map_token}.png"
    tables.rows["map"] = [{"token": tables.map_token, "category": "semantic_prior",
                           "filename": str(map_file),
                           "log_tokens": [log["token"] for log in tables.rows["log"]]}]
    (root / "maps").mkdir(parents=True, exist_ok=True)
    _write_png_pixel(root / map_file)
    table_dir = root / version
    table_dir.mkdir(parents=True, exist_ok=True)
    for name, rows in tables.rows.items():
        (table_dir / f"{name}.json").write_text(json.dumps(rows, indent=0))
    (table_dir / "splits.json").write_text(json.dumps(splits, indent=1))
    return SyntheticDataset(root, version, splits)


def dataset_scene(seed: int, index: int, num_key_frames: int,
                  specs: dict[str, ClassSpec] | None = None) -> Scene:
    """Scene ``index`` of the dataset `write_dataset` writes for ``seed`` (its sweeps use the
    simulator seed ``seed + index``)."""
    return generate_scene(seed + index, duration=num_key_frames / 2 + 1.0, specs=specs)


class _Tables:
    """The rows of every table, and the records shared by all scenes."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.map_token = token(seed, "map")
        self.sensor_token = token(seed, "sensor", CHANNEL)
        self.rows: dict[str, list[dict]] = {name: [] for name in (
            "category", "attribute", "visibility", "instance", "sensor", "calibrated_sensor",
            "ego_pose", "log", "scene", "sample", "sample_data", "sample_annotation", "map")}
        self.rows["sensor"] = [{"token": self.sensor_token, "channel": CHANNEL,
                                "modality": "lidar"}]
        self.rows["category"] = [{"token": token(seed, "category", c), "name": c, "description": ""}
                                 for c in CATEGORIES.values()]
        self.rows["attribute"] = [{"token": token(seed, "attribute", a), "name": a,
                                   "description": ""} for a in ATTRIBUTES]
        self.rows["visibility"] = [{"token": t, "level": level, "description": ""}
                                   for t, level in VISIBILITY]


def _add_scene(tables: _Tables, root: Path, index: int, scene: Scene, num_key_frames: int,
               lidar: LidarConfig, seed: int) -> None:
    name = f"synthetic-{tables.seed:04d}-{index:04d}"
    scene_token, log_token = token(tables.seed, "scene", index), token(tables.seed, "log", index)
    calib_token = token(tables.seed, "calibrated_sensor", index)
    mount = mount_transform(lidar)
    global_from_world = Transform.from_xyz_yaw(GLOBAL_OFFSET, 0.0)
    start_us = FIRST_TIMESTAMP_US + index * SCENE_GAP_US
    tables.rows["log"].append({"token": log_token, "logfile": name, "vehicle": "simulator",
                               "date_captured": "2018-08-01", "location": "synthetic"})
    tables.rows["calibrated_sensor"].append({
        "token": calib_token, "sensor_token": tables.sensor_token,
        "translation": mount.translation.tolist(), "rotation": _wxyz(mount),
        "camera_intrinsic": []})
    key_indices = [k * SWEEPS_PER_KEY_FRAME for k in range(num_key_frames)]
    sample_tokens = [token(tables.seed, "sample", index, k) for k in key_indices]
    for k, (key_index, sample_token) in enumerate(zip(key_indices, sample_tokens)):
        tables.rows["sample"].append({
            "token": sample_token, "scene_token": scene_token,
            "timestamp": start_us + _offset_us(key_index, lidar),
            "prev": sample_tokens[k - 1] if k > 0 else "",
            "next": sample_tokens[k + 1] if k + 1 < num_key_frames else ""})
    sweep_indices = list(range(-SWEEPS_PER_KEY_FRAME, key_indices[-1] + 1))
    sd_tokens = [token(tables.seed, "sample_data", index, i) for i in sweep_indices]
    annotations: list[list[dict]] = []
    for n, sweep_index in enumerate(sweep_indices):
        sweep = simulate_sweep(scene, sweep_index, lidar, seed)
        is_key = sweep_index >= 0 and sweep_index % SWEEPS_PER_KEY_FRAME == 0
        sample_token = sample_tokens[max(0, -(-sweep_index // SWEEPS_PER_KEY_FRAME))]  # next key
        timestamp = start_us + _offset_us(sweep_index, lidar)
        folder = "samples" if is_key else "sweeps"
        filename = f"{folder}/{CHANNEL}/{name}__{CHANNEL}__{timestamp}.pcd.bin"
        (root / folder / CHANNEL).mkdir(parents=True, exist_ok=True)
        sweep.points.astype(np.float32).tofile(root / filename)
        ego = global_from_world @ sweep.ego_pose
        ego_token = token(tables.seed, "ego_pose", index, sweep_index)
        tables.rows["ego_pose"].append({"token": ego_token, "timestamp": timestamp,
                                        "translation": ego.translation.tolist(),
                                        "rotation": _wxyz(ego)})
        tables.rows["sample_data"].append({
            "token": sd_tokens[n], "sample_token": sample_token, "ego_pose_token": ego_token,
            "calibrated_sensor_token": calib_token, "timestamp": timestamp, "fileformat": "pcd",
            "is_key_frame": is_key, "height": 0, "width": 0, "filename": filename,
            "prev": sd_tokens[n - 1] if n > 0 else "",
            "next": sd_tokens[n + 1] if n + 1 < len(sd_tokens) else ""})
        if is_key:
            annotations.append(_key_frame_annotations(tables, scene, sweep, sample_token,
                                                      global_from_world))
    _link_instances(tables, index, scene, annotations)
    tables.rows["scene"].append({
        "token": scene_token, "log_token": log_token, "nbr_samples": num_key_frames,
        "first_sample_token": sample_tokens[0], "last_sample_token": sample_tokens[-1],
        "name": name, "description": f"dataset_scene({tables.seed}, {index}, {num_key_frames})"})


def _key_frame_annotations(tables: _Tables, scene: Scene, key: SimSweep, sample_token: str,
                           global_from_world: Transform) -> list[dict]:
    """One annotation per scene object at the key sweep (instance links filled in later)."""
    world = np.hstack([scene.boxes_at(key.time), scene.velocities])
    boxes = to_global(world, global_from_world)
    num_points = make_sample(scene, key, ()).gt_num_points
    attribute_tokens = {row["name"]: row["token"] for row in tables.rows["attribute"]}
    rows = []
    for i, label in enumerate(scene.labels):
        name = scene.class_names[label]
        attribute = default_attribute(name, float(np.hypot(*scene.velocities[i])))
        rows.append({
            "token": token(tables.seed, "sample_annotation", sample_token, i),
            "sample_token": sample_token, "translation": boxes.translation[i].tolist(),
            "size": boxes.size[i].tolist(), "rotation": boxes.rotation[i].tolist(),
            "attribute_tokens": [attribute_tokens[attribute]] if attribute else [],
            "visibility_token": "4" if num_points[i] > 0 else "1",
            "num_lidar_pts": int(num_points[i]), "num_radar_pts": 0})
    return rows


def _link_instances(tables: _Tables, index: int, scene: Scene,
                    annotations: list[list[dict]]) -> None:
    """Instances (one per scene object) and the prev/next chains of their annotations."""
    category_tokens = {row["name"]: row["token"] for row in tables.rows["category"]}
    for i, label in enumerate(scene.labels):
        chain = [frame[i] for frame in annotations]
        instance_token = token(tables.seed, "instance", index, i)
        for k, row in enumerate(chain):
            row["instance_token"] = instance_token
            row["prev"] = chain[k - 1]["token"] if k > 0 else ""
            row["next"] = chain[k + 1]["token"] if k + 1 < len(chain) else ""
        tables.rows["instance"].append({
            "token": instance_token,
            "category_token": category_tokens[CATEGORIES[scene.class_names[label]]],
            "nbr_annotations": len(chain), "first_annotation_token": chain[0]["token"],
            "last_annotation_token": chain[-1]["token"]})
    tables.rows["sample_annotation"].extend(row for frame in annotations for row in frame)


def _offset_us(sweep_index: int, lidar: LidarConfig) -> int:
    return round(sweep_index / lidar.rate_hz * 1e6)


def _wxyz(pose: Transform) -> list[float]:
    x, y, z, w = pose.rotation
    return [float(w), float(x), float(y), float(z)]


def _write_png_pixel(path: Path) -> None:
    """A 1 x 1 grayscale PNG (the devkit checks that each map file exists)."""
    from PIL import Image  # matplotlib's dependency; only needed here

    Image.fromarray(np.zeros((1, 1), np.uint8)).save(path)
