"""Training runs on tiny crops: finite losses, loadable checkpoints, overfitting, torchrun with
gloo."""
import csv
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from sim_helpers import fixed_scene

from regnet_pillars_ros.model.checkpoint import read_checkpoint, write_checkpoint
from regnet_pillars_ros.model.head import level_anchors
from regnet_pillars_ros.model.presets import get_preset
from regnet_pillars_ros.runtime.factory import build_detector
from regnet_pillars_ros.sim.lidar import LidarConfig
from regnet_pillars_ros.sim.sweeps import simulate_sample
from regnet_pillars_ros.train import cli
from regnet_pillars_ros.train.data import label_map, prepare
from regnet_pillars_ros.train.loop import (
    TrainModel,
    batch_loss,
    crop_preset,
    init_head,
    lr_factor,
    warmup_fraction,
)
from regnet_pillars_ros.train.targets import AnchorCache

REPO = Path(__file__).resolve().parents[1]
TINY = ["--preset", "nus-secfpn", "--batch-size", "1", "--crop", "8", "--keys-per-scene", "1",
        "--scene-objects", "20", "--scene-radius", "10", "--azimuth-steps", "180"]


def test_schedule_warms_up_then_steps_down():
    iters = 2400
    warmup = warmup_fraction(iters)
    assert warmup * iters == 114
    assert lr_factor(0, warmup) == pytest.approx(1e-3)
    assert lr_factor(50 / iters, warmup) < lr_factor(100 / iters, warmup) <= 1.0
    assert lr_factor(1000 / iters, warmup) == 1.0
    assert lr_factor(2000 / iters, warmup) == pytest.approx(0.1)
    assert lr_factor(2300 / iters, warmup) == pytest.approx(0.01)
    assert warmup_fraction(iters, time_limit=60) == pytest.approx(1000 / 21096)


def test_time_limit_ends_the_run_and_saves(tmp_path):
    assert cli.main([*TINY, "--iters", "1000", "--time-limit", "1", "--save-every", "1000",
                     "--fp16-storage", "-o", str(tmp_path)]) == 0
    rows = list(csv.DictReader(open(tmp_path / "losses.csv")))
    assert 1 <= len(rows) < 1000
    ckpt = read_checkpoint(tmp_path / "latest.pth")
    assert ckpt.meta["iteration"] == len(rows)
    assert ckpt.state_dict["pts_bbox_head.conv_cls.weight"].dtype == torch.float16
    net = build_detector("nus-secfpn", tmp_path / "latest.pth").net
    assert net.pts_bbox_head.conv_cls.weight.dtype == torch.float32
    torch.testing.assert_close(net.pts_bbox_head.conv_cls.weight.detach(),
                               ckpt.state_dict["pts_bbox_head.conv_cls.weight"].float())
    with pytest.raises(ValueError, match="time-limit"):
        cli.main([*TINY, "--time-limit", "1", "--resume", "--init", str(tmp_path / "latest.pth"),
                  "-o", str(tmp_path / "r")])


def test_crop_keeps_the_anchor_pitch():
    full, crop = get_preset("nus-secfpn"), crop_preset(get_preset("nus-secfpn"), 8)
    assert crop.grid_size[:2] == (64, 64)
    a_full = level_anchors(full.anchors, 0, (200, 200), "v1")
    a_crop = level_anchors(crop.anchors, 0, (32, 32), "v1")
    # Row 14 (A = 14 anchors per location) is the next x cell, same size and rotation.
    assert (float(a_crop[14, 0] - a_crop[0, 0])
            == pytest.approx(float(a_full[14, 0] - a_full[0, 0]), rel=1e-4))
    with pytest.raises(ValueError):
        crop_preset(full, 7)


def test_tiny_run_writes_a_checkpoint_the_detector_loads(tmp_path):
    assert cli.main([*TINY, "--iters", "3", "-o", str(tmp_path)]) == 0
    rows = list(csv.DictReader(open(tmp_path / "losses.csv")))
    assert len(rows) == 3 and all(math.isfinite(float(r["loss"])) for r in rows)
    assert (tmp_path / "loss.png").stat().st_size > 0
    meta = read_checkpoint(tmp_path / "latest.pth").meta
    assert (meta["iteration"] == 3 and meta["note"] == "trained on synthetic scans"
            and meta["box_convention"] == "v1")
    detector = build_detector("nus-secfpn", tmp_path / "latest.pth")
    assert detector.box_convention == "v1"
    detections = detector(np.random.default_rng(0).uniform(-20, 20, (2000, 4)).astype(np.float32))
    assert detections.boxes.shape[1] == 9
    # Resuming continues the schedule where the checkpoint stopped.
    resumed = tmp_path / "resumed"
    assert cli.main([*TINY, "--iters", "4", "--init", str(tmp_path / "latest.pth"), "--resume",
                     "-o", str(resumed)]) == 0
    rows = list(csv.DictReader(open(resumed / "losses.csv")))
    assert [r["iteration"] for r in rows] == ["4"] and float(rows[0]["lr"]) == pytest.approx(1e-3)
    assert read_checkpoint(resumed / "latest.pth").meta["iteration"] == 4


def test_fine_tuning_keeps_the_box_convention_of_the_initial_weights(tmp_path):
    preset = get_preset("nus-secfpn")
    start = write_checkpoint(tmp_path / "official.pth", TrainModel(preset).net.state_dict(),
                             preset, "v0")
    assert cli.main([*TINY, "--iters", "1", "--init", str(start), "-o", str(tmp_path / "run")]) == 0
    assert read_checkpoint(tmp_path / "run" / "latest.pth").meta["box_convention"] == "v0"


def test_loss_falls_when_overfitting_one_sample():
    preset = crop_preset(get_preset("nus-secfpn"), 8)
    scene = fixed_scene([[5.0, 3.0, 0.0, 4.5, 1.9, 1.7, 0.3],
                         [-4.0, -5.0, 0.0, 0.7, 0.7, 1.75, 1.0]],
                        names=["car", "pedestrian"])
    sample = simulate_sample(scene, 0, LidarConfig(azimuth_steps=360), num_sweeps=1)
    data = prepare(sample, label_map(scene.class_names, preset)[scene.labels], preset, None)
    assert len(data.gt_boxes) == 2
    torch.manual_seed(0)
    model = TrainModel(preset)
    init_head(model.net)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.01)
    anchors = AnchorCache(preset)
    history = []
    for _ in range(8):
        loss = batch_loss(model, preset, anchors, [data])["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    assert np.mean(history[-2:]) < 0.6 * np.mean(history[:2])


def test_torchrun_two_gloo_workers(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
                "2"]
    result = subprocess.run(
        [*torchrun, "-m", "regnet_pillars_ros.train.cli", *TINY, "--iters", "2", "-o",
         str(tmp_path)],
        cwd=REPO, env=env, capture_output=True, text=True,
        timeout=900,  # a bound against a hang: two workers take minutes on a loaded 2-core machine
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = list(csv.DictReader(open(tmp_path / "losses.csv")))
    assert len(rows) == 2 and all(math.isfinite(float(r["loss"])) for r in rows)
    build_detector("nus-secfpn", tmp_path / "latest.pth")
