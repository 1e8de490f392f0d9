"""`eval --streaming` on a scene bag from `bag-from-dataset`, with the real detector (placeholder
weights, written once to a checkpoint file: the checks are about which boxes reach the devkit,
not about accuracy)."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from eval_helpers import dataset_with_bags, placeholder_checkpoint, stack_devkit_sweeps

from regnet_pillars_ros.eval import replay
from regnet_pillars_ros.pipeline.frame import detect
from regnet_pillars_ros.tools import evaluate as cli

PRESET = "nus-secfpn"  # the fastest preset on the sparse scan


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> SimpleNamespace:
    """One scene, 2 key frames (21 sweeps), sparse LiDAR."""
    root = tmp_path_factory.mktemp("streaming")
    dataset, bags = dataset_with_bags(root, seed=5, num_scenes=1, num_key_frames=2)
    checkpoint = placeholder_checkpoint(root / "placeholder.pth", PRESET)
    return SimpleNamespace(root=root, bags=bags, dataroot=dataset.dataroot,
                           nusc=dataset_nusc(dataset), checkpoint=checkpoint)


def dataset_nusc(dataset):
    from nuscenes import NuScenes

    return NuScenes(dataset.version, str(dataset.dataroot), verbose=False)


def streaming_eval(data, out: Path, *flags: str) -> Path:
    assert cli.main([str(data.bags), "--preset", PRESET, "--checkpoint", str(data.checkpoint),
                     "--dataroot", str(data.dataroot), "-o", str(out), "--no-progress",
                     "--bev-frames", "0", "--streaming", *flags]) == 0
    return out


@pytest.fixture(scope="module")
def report(data) -> Path:
    return streaming_eval(data, data.root / "report", "--latency-ms", "0,120")


def test_zero_latency_is_offline_exactly(report):
    """At 0 ms every cloud is its own key frame's newest output: the same boxes reach the devkit."""
    offline = (report / "results_nusc.json").read_bytes()
    for forecast in ("none", "velocity"):
        assert (report / "streaming" / f"0ms-{forecast}" / "results_nusc.json").read_bytes() \
            == offline
    record = json.loads((report / "streaming" / "0ms-none" / "frames.json").read_text())
    assert [f["age_ms"] for f in record["frames"]] == [0.0, 0.0]


def test_report_shows_offline_and_streaming_side_by_side(report):
    summary = json.loads((report / "streaming.json").read_text())
    runs = {(r["frame_ms"], r["forecast"]): r for r in summary["runs"]}
    assert set(runs) == {(0.0, "none"), (0.0, "velocity"), (120.0, "none"), (120.0, "velocity")}
    # 21 clouds at 20 Hz with 120 ms frames: clouds 0, 2, 4, 7, 9, 12, 14, 16, 19 and 20 run.
    assert runs[0.0, "none"]["skipped"] == 0
    late = runs[120.0, "none"]
    assert (late["processed"], late["skipped"]) == (10, 11)
    assert late["before_first_output"] == 0 and all(age >= 120 for age in late["ages_ms"])
    page = (report / "index.md").read_text()
    for text in ("Streaming", "streaming, 0 ms frames, forecast velocity", "clouds skipped",
                 "age p90 (ms)", "NDS against the detector's frame time", "streaming_latency.png"):
        assert text in page
    assert (report / "streaming_latency.png").stat().st_size > 1000


def test_simulated_runs_are_deterministic(data, report):
    """A second run (of one of the first run's frame times) gives the same files, the devkit's
    summary but for its own run time."""
    again = streaming_eval(data, data.root / "again", "--latency-ms", "120", "--forecast", "none")
    run = Path("streaming") / "120ms-none"
    names = sorted(p.relative_to(again) for p in (again / run).glob("*.json"))
    assert len(names) == 4  # results, frames, the devkit's metrics summary and details
    for name in names:
        first, second = (json.loads((root / name).read_text()) for root in (report, again))
        if name.name == "metrics_summary.json":
            del first["eval_time"], second["eval_time"]
        assert first == second, name


def test_a_cloud_run_alone_stacks_every_earlier_sweep(data, report):
    """The replay of one non-key cloud (what a 120 ms frame time runs) stacks it with its 10
    previous sweeps, none of them run: its boxes are those of the devkit sweeps stacked."""
    args = cli.build_parser().parse_args([str(data.bags), "--preset", PRESET, "--checkpoint",
                                          str(data.checkpoint), "-o", "unused"])
    config = cli.replay_config(args)
    nusc = data.nusc
    key = nusc.get("sample_data", nusc.get("sample", nusc.sample[-1]["token"])["data"]["LIDAR_TOP"])
    chain = [nusc.get("sample_data", key["prev"])]  # the sweep before the last key frame
    while chain[0]["prev"] and len(chain) < 11:
        chain.insert(0, nusc.get("sample_data", chain[0]["prev"]))
    detector = config.detector()
    [result] = replay.replay_scene(replay.scene_bags(data.bags)[0], detector, config,
                                   run_at={chain[-1]["timestamp"] * 1000})
    stacked = stack_devkit_sweeps(nusc, chain,
                                  config.sweeps.accumulator(detector.preset.sweeps_num))
    assert stacked.sweeps == 11
    expected = detect(detector, stacked.points, config.output)
    assert len(result.detections) == len(expected) > 0
    np.testing.assert_array_equal(result.detections.labels, expected.labels)
    np.testing.assert_allclose(result.detections.boxes, expected.boxes, atol=1e-3)
