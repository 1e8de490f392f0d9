"""`eval --live`: detector_node started in another process, a scene bag played into it over DDS
with /clock and use_sim_time, its outputs recorded and scored like the offline replay."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from eval_helpers import dataset_with_bags, placeholder_checkpoint

from regnet_pillars_ros.eval.scoring import read_detections
from regnet_pillars_ros.tools import evaluate as cli
from regnet_pillars_ros.tools.live_eval import NOT_RECEIVED, OBJECTS_TOPIC

PRESET = "nus-secfpn"  # about 0.5 s a cloud here, the fastest preset on this sparse cloud
# Bound on each wait (node start, an output): generous for a loaded 2-core machine.
LIVE_TIMEOUT_S = "600"


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> tuple[Path, Path, Path]:
    """One scene, one key frame (11 sweeps), sparse LiDAR; the placeholder weights as a
    checkpoint, calibrated once rather than by every run and node."""
    root = tmp_path_factory.mktemp("live")
    dataset, bags = dataset_with_bags(root, seed=5, num_scenes=1, num_key_frames=1)
    return bags, dataset.dataroot, placeholder_checkpoint(root / "placeholder.pth", PRESET)


def evaluate(data: tuple[Path, Path, Path], out: Path, *extra: str) -> dict:
    bags, _, checkpoint = data
    assert cli.main([str(bags), "--preset", PRESET, "--checkpoint", str(checkpoint), "-o",
                     str(out), "--no-progress", "--bev-frames", "1", *extra]) == 0
    return json.loads((out / "frames.json").read_text())


def test_paced_live_replay_agrees_with_offline(data, tmp_path):
    scored = ("--dataroot", str(data[1]))
    evaluate(data, tmp_path / "offline", *scored)
    record = evaluate(data, tmp_path / "live", *scored, "--live", "--paced", "--timeout",
                      LIVE_TIMEOUT_S)
    offline = read_detections(tmp_path / "offline" / "detections.npz")
    live = read_detections(tmp_path / "live" / "detections.npz")
    assert record["seen"] == record["scored"] == len(offline) == len(live) == 1
    assert all(f["latency_ms"] > 0 for f in record["frames"])
    for token, frame in live.items():
        expected = offline[token]
        np.testing.assert_array_equal(frame.labels, expected.labels)
        assert len(frame) > 0
        diff = frame.boxes.astype(np.float64) - expected.boxes
        diff[:, 6] = np.angle(np.exp(1j * diff[:, 6]))  # yaw back from the quaternion
        assert np.abs(diff).max() < 1e-3
        np.testing.assert_allclose(frame.scores, expected.scores, atol=1e-4)
    summary = json.loads((tmp_path / "live" / "metrics_summary.json").read_text())
    assert summary["mean_ap"] == pytest.approx(
        json.loads((tmp_path / "offline" / "metrics_summary.json").read_text())["mean_ap"])
    recorded = tmp_path / "live" / "live_outputs" / "metadata.yaml"
    assert OBJECTS_TOPIC in recorded.read_text() and "message_count: 11" in recorded.read_text()
    assert "live: detector_node over DDS, paced" in (tmp_path / "live" / "index.md").read_text()


def test_real_time_replay_counts_the_key_frames_the_node_dropped(data, tmp_path):
    """At 20 Hz a node taking ~0.5 s a cloud drops most clouds: each key frame is either scored
    or dropped with the reason, none lost."""
    record = evaluate(data, tmp_path, "--live", "--rate", "1", "--timeout", LIVE_TIMEOUT_S)
    assert record["seen"] == 1 and record["scored"] + len(record["dropped"]) == 1
    assert set(record["dropped"].values()) <= {NOT_RECEIVED}
    assert all(f["status"] in ("scored", "dropped") for f in record["frames"])
