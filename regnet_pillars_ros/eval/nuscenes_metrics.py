"""Detections -> nuScenes results JSON -> the official devkit's `DetectionEval` scores.

Detections are boxes (x, y, z_bottom, l, w, h, yaw[, vx, vy]) in the key LiDAR frame of a
sample, with scores and labels (indices into ``class_names``), like `model.Detections`. The results
follow mmdet3d's nuScenes conversion (spec k.1): boxes farther than their class range from the ego
(BEV, ego frame) are dropped, at most 500 per sample are kept (highest scores), boxes go sensor ->
ego -> global, and each gets the default attribute of its class and speed.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from nuscenes import NuScenes
from nuscenes.eval.common.config import config_factory
from nuscenes.eval.common.loaders import get_samples_of_scenes
from nuscenes.eval.detection.evaluate import DetectionEval
from nuscenes.utils.splits import get_scenes_of_split

from .nuscenes_frames import key_lidar_poses, to_global

if TYPE_CHECKING:
    from ..model.detections import Detections

CONFIG = "detection_cvpr_2019"
MOVING_SPEED = 0.2  # m/s
_VEHICLES = ("car", "truck", "trailer", "bus", "construction_vehicle")
_CYCLES = ("bicycle", "motorcycle")
MOVING_ATTRIBUTE = {**dict.fromkeys(_VEHICLES, "vehicle.moving"),
                    **dict.fromkeys(_CYCLES, "cycle.with_rider"), "pedestrian": "pedestrian.moving"}
STILL_ATTRIBUTE = {**dict.fromkeys(_VEHICLES, "vehicle.parked"), "bus": "vehicle.stopped",
                   **dict.fromkeys(_CYCLES, "cycle.without_rider"),
                   "pedestrian": "pedestrian.standing"}
RESULTS_META = {"use_camera": False, "use_lidar": True, "use_radar": False, "use_map": False,
                "use_external": False}


def default_attribute(name: str, speed: float) -> str:
    """mmdet3d's attribute for a box of detection class ``name`` at ``speed`` m/s ('' for barrier
    and traffic_cone); a NaN speed counts as still."""
    table = MOVING_ATTRIBUTE if speed > MOVING_SPEED else STILL_ATTRIBUTE
    return table.get(name, "")


def split_sample_tokens(nusc: NuScenes, split: str) -> list[str]:
    """Key frames of a devkit split (named, or custom from ``<version>/splits.json``)."""
    return get_samples_of_scenes(get_scenes_of_split(split, nusc), nusc)


def frame_results(nusc: NuScenes, sample_token: str, detections: "Detections") -> list[dict]:
    """One key frame's detections as devkit result boxes in the global frame."""
    ranges = config_factory(CONFIG).class_range
    global_ego, ego_sensor = key_lidar_poses(nusc, sample_token)
    boxes = np.asarray(detections.boxes, np.float64)
    names = np.array([detections.class_names[i] for i in detections.labels], dtype=object)
    centres = boxes[:, :3].copy()
    centres[:, 2] += boxes[:, 5] / 2
    radius = np.linalg.norm(ego_sensor.apply(centres)[:, :2], axis=1)
    keep = np.flatnonzero(radius <= np.array([ranges[n] for n in names], np.float64))
    keep = keep[np.argsort(-np.asarray(detections.scores)[keep], kind="stable")][:500]
    glob = to_global(boxes[keep], global_ego @ ego_sensor)
    speeds = np.linalg.norm(glob.velocity, axis=1)
    return [{"sample_token": sample_token, "translation": glob.translation[i].tolist(),
             "size": glob.size[i].tolist(), "rotation": glob.rotation[i].tolist(),
             "velocity": glob.velocity[i].tolist(), "detection_name": str(names[k]),
             "detection_score": float(detections.scores[k]),
             "attribute_name": default_attribute(str(names[k]), float(speeds[i]))}
            for i, k in enumerate(keep)]


def write_results(nusc: NuScenes, detections: Mapping[str, "Detections"], split: str,
                  path: str | Path) -> Path:
    """Write the results JSON of every key frame of ``split``; a missing or foreign sample token is
    an error (the devkit would otherwise fail on, or silently score, a different set of frames)."""
    expected = split_sample_tokens(nusc, split)
    missing = sorted(set(expected) - set(detections))
    foreign = sorted(set(detections) - set(expected))
    if missing or foreign:
        raise ValueError(f"detections for split {split!r}: {len(missing)} key frames missing "
                         f"{missing[:3]}, {len(foreign)} not in the split {foreign[:3]}")
    results = {token: frame_results(nusc, token, detections[token]) for token in expected}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"meta": RESULTS_META, "results": results}))
    return path


@dataclass(frozen=True)
class NuScenesScores:
    """mAP, NDS, per-class AP (mean over distances, and per distance threshold in m) and TP
    errors (mean over classes, and per class; NaN where the devkit leaves a metric undefined)."""

    mean_ap: float
    nds: float
    class_ap: dict[str, float]
    class_ap_at: dict[str, dict[float, float]]
    tp_errors: dict[str, float]
    class_tp_errors: dict[str, dict[str, float]]


def evaluate(nusc: NuScenes, result_path: str | Path, split: str, output_dir: str | Path,
             verbose: bool = False) -> NuScenesScores:
    """Score a results JSON with `DetectionEval` (``detection_cvpr_2019``); the devkit prints its
    summary and writes ``metrics_summary.json`` and ``metrics_details.json`` to ``output_dir``."""
    evaluation = DetectionEval(nusc, config_factory(CONFIG), str(result_path), split,
                               str(output_dir), verbose=verbose)
    summary = evaluation.main(render_curves=False)
    return NuScenesScores(
        mean_ap=summary["mean_ap"], nds=summary["nd_score"], class_ap=summary["mean_dist_aps"],
        class_ap_at={c: {float(d): ap for d, ap in aps.items()}
                     for c, aps in summary["label_aps"].items()},
        tp_errors=summary["tp_errors"],
        class_tp_errors={c: dict(errors) for c, errors in summary["label_tp_errors"].items()})
