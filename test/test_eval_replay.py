"""Offline replay evaluation: bags from `bag-from-dataset` through the node's pipeline, scored
with the real nuscenes-devkit (placeholder weights: accounting and agreement, not accuracy)."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from eval_helpers import dataset_with_bags, stack_devkit_sweeps
from nuscenes import NuScenes

from regnet_pillars_ros.eval import nuscenes_frames as frames
from regnet_pillars_ros.eval import nuscenes_metrics as metrics
from regnet_pillars_ros.eval import replay, scoring
from regnet_pillars_ros.eval import synthetic_nuscenes as synthetic
from regnet_pillars_ros.model import Detections
from regnet_pillars_ros.pipeline.frame import detect
from regnet_pillars_ros.sim.scene import NUSCENES_CLASSES
from regnet_pillars_ros.tools import evaluate as cli

PRESET = "nus-secfpn"
SEED, SCENES, KEY_FRAMES = 5, 2, 2


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> SimpleNamespace:
    """A 2-scene synthetic dataset (sparse LiDAR) and its bags from `bag-from-dataset`."""
    root = tmp_path_factory.mktemp("eval")
    data, bags = dataset_with_bags(root, seed=SEED, num_scenes=SCENES, num_key_frames=KEY_FRAMES)
    return SimpleNamespace(data=data, bags=bags, root=root,
                           nusc=NuScenes(data.version, str(data.dataroot), verbose=False))


def eval_args(dataset, out: Path, *extra: str) -> list[str]:
    return [str(dataset.bags), "--preset", PRESET, "--dataroot", str(dataset.data.dataroot),
            "-o", str(out), "--no-progress", *extra]


@pytest.fixture(scope="module")
def offline(dataset) -> Path:
    out = dataset.root / "offline"
    assert cli.main(eval_args(dataset, out)) == 0
    return out


def test_every_key_frame_is_scored_and_written(dataset, offline):
    record = json.loads((offline / "frames.json").read_text())
    tokens = metrics.split_sample_tokens(dataset.nusc, synthetic.VAL_SPLIT)
    assert record["seen"] == record["scored"] == len(tokens) == SCENES * KEY_FRAMES
    assert record["dropped"] == {} and record["not_in_split"] == []
    assert sorted(f["sample_token"] for f in record["frames"]) == sorted(tokens)
    assert all(f["status"] == "scored" and f["latency_ms"] > 0 for f in record["frames"])
    detections = scoring.read_detections(offline / "detections.npz")
    assert sorted(detections) == sorted(tokens)
    assert all(f["boxes"] == len(detections[f["sample_token"]]) for f in record["frames"])
    results = json.loads((offline / "results_nusc.json").read_text())["results"]
    assert set(results) == set(tokens)
    summary = json.loads((offline / "metrics_summary.json").read_text())
    assert 0.0 <= summary["mean_ap"] <= 1.0 and 0.0 <= summary["nd_score"] <= 1.0


def test_replay_stacks_sweeps_with_the_devkit_poses(dataset, offline):
    """A key frame's detections equal those of its sweeps stacked with the devkit's poses."""
    config = cli.replay_config(cli.build_parser().parse_args(eval_args(dataset, offline)))
    nusc = dataset.nusc
    scene = nusc.scene[1]
    sample = nusc.get("sample", nusc.get("sample", scene["first_sample_token"])["next"])
    key = nusc.get("sample_data", sample["data"]["LIDAR_TOP"])
    chain = [key]
    while chain[0]["prev"]:
        chain.insert(0, nusc.get("sample_data", chain[0]["prev"]))
    detector = config.detector()
    stacked = stack_devkit_sweeps(nusc, chain,
                                  config.sweeps.accumulator(detector.preset.sweeps_num))
    assert stacked.sweeps == 11 and not stacked.ego_motion_missing
    expected = detect(detector, stacked.points, config.output)
    written = scoring.read_detections(offline / "detections.npz")[sample["token"]]
    assert len(expected) == len(written) > 0
    assert written.class_names == expected.class_names
    np.testing.assert_array_equal(written.labels, expected.labels)
    np.testing.assert_allclose(written.boxes, expected.boxes, atol=1e-3)
    np.testing.assert_allclose(written.scores, expected.scores, atol=1e-5)


def key(token: str, stamp: int = 0) -> replay.KeyFrame:
    return replay.KeyFrame(token, stamp, "scene")


def test_accounting_names_every_outcome():
    dets = Detections.empty(NUSCENES_CLASSES, 9)
    results = [replay.FrameResult(key("a"), dets),
               replay.FrameResult(key("b"), reason="bad cloud: x"),
               replay.FrameResult(key("z"), dets)]
    acc = scoring.account(results, ["a", "b", "c"])
    assert acc.seen == 3 and acc.scored == ["a"] and acc.not_in_split == ["z"]
    assert acc.dropped == {"b": "bad cloud: x", "c": scoring.NOT_IN_BAG}
    records = scoring.frame_records(results, acc)
    assert [r["status"] for r in records] == ["scored", "dropped", scoring.NOT_IN_SPLIT]
    # Dropped key frames enter the metric with no boxes.
    filled = scoring.filled_detections(results, ["a", "b", "c"], NUSCENES_CLASSES, 9)
    assert list(filled) == ["a", "b", "c"] and all(len(d) == 0 for d in filled.values())


def test_ground_truth_as_detections_scores_map_1(dataset, tmp_path):
    """The scoring path of eval (accounting, dropped-frame filling, results) gives mAP 1 on GT;
    a dropped key frame enters with no boxes and lowers the recall."""
    nusc = dataset.nusc
    tokens = metrics.split_sample_tokens(nusc, synthetic.VAL_SPLIT)
    results = []
    for token in tokens:
        gt = frames.annotations_in_sensor_frame(nusc, token)
        keep = gt.num_points > 0
        boxes = np.nan_to_num(gt.boxes[keep]).astype(np.float32)
        labels = np.array([NUSCENES_CLASSES.index(n) for n, k in zip(gt.names, keep) if k])
        results.append(replay.FrameResult(key(token), Detections(
            boxes, np.ones(len(boxes), np.float32), labels.astype(np.int64), NUSCENES_CLASSES)))
    acc = scoring.account(results, tokens)
    assert len(acc.scored) == len(tokens)
    dets = scoring.filled_detections(results, tokens, NUSCENES_CLASSES, 9)
    path = metrics.write_results(nusc, dets, synthetic.VAL_SPLIT, tmp_path / "results.json")
    scores = metrics.evaluate(nusc, path, synthetic.VAL_SPLIT, tmp_path)
    assert scores.mean_ap == pytest.approx(1.0)
    results[0] = replay.FrameResult(results[0].key, reason="bad cloud: test")
    dets = scoring.filled_detections(results, tokens, NUSCENES_CLASSES, 9)
    path = metrics.write_results(nusc, dets, synthetic.VAL_SPLIT, tmp_path / "dropped.json")
    assert json.loads(path.read_text())["results"][tokens[0]] == []
    assert metrics.evaluate(nusc, path, synthetic.VAL_SPLIT, tmp_path).mean_ap < 0.99


def test_errors_are_one_line(dataset, tmp_path, capsys):
    assert cli.main([str(tmp_path), "--preset", PRESET, "-o", str(tmp_path / "r")]) == 1
    assert "no rosbag2" in capsys.readouterr().err


def test_report_page_is_self_contained(offline):
    page = (offline / "index.html").read_text()
    md = (offline / "index.md").read_text()
    for text in ("mAP", "NDS", "ATE (m)", "pedestrian", "seen in the bags", "p90 (ms)"):
        assert text in md and text in page
    images = ["pr_curves.png", "latency.png"] + [f"bev_{i}.png" for i in range(4)]
    for name in images:
        assert (offline / name).stat().st_size > 1000 and f'src="{name}"' in page
    assert "http" not in page.replace('charset="utf-8"', "")  # no external assets


def test_without_dataroot_every_key_frame_is_replayed_but_not_scored(dataset, tmp_path, capsys):
    one_scene = replay.scene_bags(dataset.bags)[0]
    assert cli.main([str(one_scene), "--preset", PRESET, "-o", str(tmp_path), "--no-progress",
                     "--bev-frames", "1"]) == 0
    record = json.loads((tmp_path / "frames.json").read_text())
    assert record["seen"] == record["scored"] == KEY_FRAMES
    assert not (tmp_path / "results_nusc.json").exists()
    assert "Not scored" in (tmp_path / "index.md").read_text()
    assert (tmp_path / "bev_0.png").is_file() and not (tmp_path / "bev_1.png").exists()
