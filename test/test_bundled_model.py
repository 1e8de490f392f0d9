"""The default model shipped in the package: loads as the official format does, detects on
held-out scans."""
from __future__ import annotations

import numpy as np
import torch

from regnet_pillars_ros.model.bundled import BUNDLED, PLACEHOLDER, bundled_checkpoint
from regnet_pillars_ros.model.checkpoint import read_checkpoint
from regnet_pillars_ros.runtime.factory import build_detector
from regnet_pillars_ros.sim.scene import generate_scene
from regnet_pillars_ros.sim.sweeps import simulate_sample
from regnet_pillars_ros.train.data import VAL_SEED_BASE

PRESET = "nus-regnetx-400mf-fpn"


def test_the_default_preset_ships_a_small_checkpoint_that_says_what_it_is():
    path = bundled_checkpoint(PRESET)
    assert list(BUNDLED) == [PRESET] and path is not None
    assert path.stat().st_size <= 30 * 2**20
    meta = read_checkpoint(path).meta
    assert (meta["preset"] == PRESET and meta["note"] == "trained on synthetic scans"
            and "not nuScenes" in meta["data"])
    detector = build_detector(PRESET)
    assert "bundled default model" in detector.source and "synthetic" in detector.source
    assert all(p.dtype == torch.float32 for p in detector.net.parameters())


def test_other_presets_and_the_placeholder_choice_use_random_weights():
    assert bundled_checkpoint("nus-secfpn") is None
    assert "placeholder" in build_detector("nus-secfpn").source
    assert "placeholder" in build_detector(PRESET, PLACEHOLDER).source


def test_finds_the_well_seen_cars_and_pedestrians_of_a_held_out_scan():
    scene = generate_scene(VAL_SEED_BASE + 770)  # the training streams never reach these seeds
    sample = simulate_sample(scene, 20, seed=VAL_SEED_BASE + 770)
    result = build_detector(PRESET)(sample.points)
    strong = result.scores > 0.2  # a short training run leaves distant objects at modest scores
    for name in ("car", "pedestrian"):
        gt = sample.gt_boxes[(np.array(scene.class_names)[sample.gt_labels] == name)
                             & (sample.gt_num_points >= 20)]
        gt = gt[np.hypot(gt[:, 0], gt[:, 1]) < 40]
        found = result.boxes[strong & (np.array(result.class_names)[result.labels] == name)]
        assert len(gt) >= 2, f"the test scene should hold well-seen {name}s"
        distance = np.hypot(gt[:, None, 0] - found[None, :, 0], gt[:, None, 1] - found[None, :, 1])
        recall = (distance.min(axis=1) < 1.0).mean() if len(found) else 0.0
        assert recall >= 0.7, f"{name}: {recall:.2f} of {len(gt)} found within 1 m"
