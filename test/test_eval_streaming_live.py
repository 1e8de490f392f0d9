"""`eval --live --streaming`: detector_node's own outputs, as it published them, against the
simulation that the offline streaming evaluation runs.

The live and the simulated runs at the measured frame time differ in which clouds ran (the node's
frame times scatter around the offline median, more so on a shared CPU), so they are compared
where that choice is fixed: fed the node's own choice of clouds and publication times, the
simulation's boxes reach the devkit within the message round trip of the node's (1e-3 m, as the
paced live test), and every key frame the same way. The report shows both runs side by side.
"""
from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
from eval_helpers import dataset_with_bags, placeholder_checkpoint
from nuscenes import NuScenes

from regnet_pillars_ros.eval import bag_topics as topics
from regnet_pillars_ros.eval import nuscenes_metrics as metrics
from regnet_pillars_ros.eval import replay, scoring
from regnet_pillars_ros.eval import synthetic_nuscenes as synthetic
from regnet_pillars_ros.eval.streaming import NO_OUTPUT_YET, Output
from regnet_pillars_ros.eval.streaming_replay import read_timeline, stream_scene
from regnet_pillars_ros.model import get_preset
from regnet_pillars_ros.tools import evaluate as cli

PRESET = "nus-secfpn"
CLOUDS = 31  # 3 key frames
RATE = "0.2"  # 1.5 s of bag in 7.5 s: the node answers clouds before each key frame, loaded too


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("live_streaming")
    dataset, bags = dataset_with_bags(root, seed=5, num_scenes=1, num_key_frames=3)
    checkpoint = placeholder_checkpoint(root / "placeholder.pth", PRESET)
    return SimpleNamespace(root=root, bags=bags, dataset=dataset, checkpoint=checkpoint)


def boxes_by_token(path) -> dict[str, list[tuple]]:
    results = json.loads(path.read_text())["results"]
    return {token: sorted((b["detection_name"], *b["translation"], *b["size"], *b["rotation"])
                          for b in boxes) for token, boxes in results.items()}


def test_live_streaming_is_the_simulation_at_the_node_s_own_timing(data):
    out = data.root / "report"
    args = [str(data.bags), "--preset", PRESET, "--checkpoint", str(data.checkpoint),
            "--dataroot", str(data.dataset.dataroot), "-o", str(out), "--no-progress",
            "--bev-frames", "0", "--forecast", "none"]
    assert cli.main([*args, "--streaming", "--live", "--rate", RATE, "--timeout", "120"]) == 0
    summary = json.loads((out / "streaming.json").read_text())
    live, simulated = ([r for r in summary["runs"] if (r["frame_ms"] is None) == is_live]
                       for is_live in (True, False))
    assert len(live) == len(simulated) == 1 and simulated[0]["frame_ms"] > 0
    assert live[0]["processed"] + live[0]["skipped"] == CLOUDS
    assert "streaming, live node, forecast none" in (out / "index.md").read_text()

    frames = json.loads((out / "streaming" / "live-none" / "frames.json").read_text())["frames"]
    chosen = {}  # input stamp -> publication (bag clock)
    for frame in frames:
        if frame["source_stamp_ns"] is None:
            assert frame["reason"] == NO_OUTPUT_YET
            continue
        assert frame["age_ms"] >= frame["latency_ms"] > 0  # published by the key frame's stamp
        chosen[frame["source_stamp_ns"]] = (frame["source_stamp_ns"]
                                            + round(frame["latency_ms"] * 1e6))

    config = cli.replay_config(cli.build_parser().parse_args(args))
    bag = replay.scene_bags(data.bags)[0]
    ran = replay.replay_scene(bag, config.detector(), config, run_at=set(chosen))
    outputs = [Output(r.key.stamp_ns, topics.LIDAR_FRAME, chosen[r.key.stamp_ns], r.detections)
               for r in ran]
    streamed = stream_scene(read_timeline(bag, config.sweeps), outputs, "none")
    assert [f.source_stamp_ns for f in streamed] == [f["source_stamp_ns"] for f in frames]
    tokens = [f.result.key.sample_token for f in streamed]
    detections = scoring.filled_detections([f.result for f in streamed], tokens,
                                           get_preset(PRESET).class_names, 9)
    db = NuScenes(data.dataset.version, str(data.dataset.dataroot), verbose=False)
    path = metrics.write_results(db, detections, synthetic.VAL_SPLIT, data.root / "sim.json")
    expected = boxes_by_token(path)
    live_boxes = boxes_by_token(out / "streaming" / "live-none" / "results_nusc.json")
    assert expected.keys() == live_boxes.keys()
    for token, boxes in expected.items():
        assert len(live_boxes[token]) == len(boxes)
        if boxes:
            names = [b[0] for b in boxes]
            assert [b[0] for b in live_boxes[token]] == names
            diff = np.array([b[1:] for b in live_boxes[token]]) - np.array([b[1:] for b in boxes])
            # Quaternions q and -q are one rotation; positions and sizes within the message's.
            assert np.abs(diff[:, :6]).max() < 1e-3, token
