"""The frame benchmark: a tiny real run through the CLI, and its cloud generator (never asserts
speed)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from regnet_pillars_ros.cli import main
from regnet_pillars_ros.runtime.bench import (
    COMPOSITE_CLOUD,
    STAGES,
    make_cloud,
    network_gflop,
    percentiles,
    time_preset,
)
from regnet_pillars_ros.runtime.factory import build_detector

PRESET = "nus-secfpn"


def test_tiny_bench_reports_every_field(tmp_path, capsys):
    json_path = tmp_path / "out" / "bench.json"
    threads = torch.get_num_threads()
    code = main(["bench", "--preset", PRESET, "--device", "cpu", "--points", "3000",
                 "--repeats", "2", "--warmup", "0", "--threads", "1", "--json", str(json_path)])
    out = capsys.readouterr().out
    assert code == 0
    report = json.loads(json_path.read_text())
    env = report["environment"]
    assert env["torch_threads"] == 1 and env["cpu"] and env["device"] == "cpu"
    assert torch.get_num_threads() == threads  # the process's setting is restored afterwards
    assert {"torch", "numpy", "python", "cpu_count"} <= set(env)
    assert report["cloud"]["points"] == 3000 and "placeholder weights" in report["weights_note"]
    (result,) = report["results"]
    assert result["preset"] == PRESET
    assert result["backend"] == "torch" and result["precision"] == "fp32"
    for key, _ in STAGES:
        if key in ("network", "graph"):  # one stage on onnxruntime, in a CUDA graph
            assert key not in result["stages_ms"]
            continue
        stage = result["stages_ms"][key]
        assert isinstance(stage["median"], float) and stage["median"] > 0
        assert stage["p90"] >= stage["median"]
        assert len(result["samples_ms"][key]) == 2
    assert result["fps"] == pytest.approx(1000 / result["stages_ms"]["total"]["median"])
    assert 0 < result["voxelize_share"] < 1 and 0 < result["nms_share"] < 1
    assert result["frame"]["points_in"] == 3000 and result["frame"]["pillars"] > 0
    assert result["memory_mib"]["cpu_peak_rss"] > 0
    assert set(result["gflop"]) == {"encoder", "backbone", "neck", "head"}
    assert f"| {sum(result['gflop'].values()):.1f} (" in out
    assert result["voxelize_ms"] > 0  # the voxelization alone, reported next to the frame's stages
    assert f"| {result['voxelize_ms']:.2f} | {result['frame']['detections']} |" in out
    # The printed table is the written one.
    assert (tmp_path / "out" / "bench.md").read_text() in out
    assert (f"| {PRESET} | torch fp32 | {result['frame']['points_in_range']} "
            f"| {result['frame']['pillars']} |") in out


def test_bench_covers_every_backend(tmp_path, monkeypatch):
    monkeypatch.setenv("REGNET_PILLARS_CACHE", str(tmp_path / "cache"))
    json_path = tmp_path / "bench.json"
    assert main(["bench", "--preset", PRESET, "--backend", "all", "--points", "3000",
                 "--repeats", "1", "--warmup", "0", "--json", str(json_path)]) == 0
    torch_run, ort_run = json.loads(json_path.read_text())["results"]
    assert (torch_run["backend"], ort_run["backend"]) == ("torch", "onnxruntime")
    assert ort_run["stages_ms"]["network"]["median"] > 0 and "backbone" not in ort_run["stages_ms"]
    assert ort_run["frame"] == torch_run["frame"]  # same cloud, same pillars, same detections count


def test_gflop_count_follows_the_layers_and_the_pillars():
    detector = build_detector(PRESET, "placeholder")
    small, large = (make_cloud(n, source=None)[0] for n in (2000, 20000))
    few, many = network_gflop(detector, small), network_gflop(detector, large)
    # The canvas has a fixed size: backbone, neck and head cost the same on any cloud.
    assert all(few[k] == many[k] > 0 for k in ("backbone", "neck", "head"))
    assert 0 < few["encoder"] < many["encoder"]
    # The head is three 1x1 convolutions per level: 2 * in * out multiply-adds per cell.
    head = detector.net.pts_bbox_head
    out_channels = sum(c.out_channels for c in (head.conv_cls, head.conv_reg, head.conv_dir_cls))
    pillars, _ = detector.preprocess(large)
    with torch.inference_mode():
        levels = detector.net.forward_canvas(detector.net.encode(*pillars.network_inputs()))[::3]
    cells = sum(m.shape[-2] * m.shape[-1] for m in levels)
    assert few["head"] == pytest.approx(2 * head.conv_cls.in_channels * out_channels * cells / 1e9)


@pytest.mark.parametrize("source", [COMPOSITE_CLOUD, None], ids=["real-composite", "synthetic"])
def test_generated_cloud_is_deterministic_and_sized(source):
    if source is not None and not source.is_file():
        pytest.skip(f"{source} not found")
    cloud, origin = make_cloud(100_000, seed=0, source=source)
    again, _ = make_cloud(100_000, seed=0, source=source)
    assert cloud.shape == (100_000, 5) and cloud.dtype == np.float32
    np.testing.assert_array_equal(cloud, again)
    assert np.isfinite(cloud).all()
    assert 0 <= cloud[:, 4].min() and cloud[:, 4].max() >= 0.4  # several sweeps' time lags
    assert ("synthetic" in origin) == (source is None) and "100000" in origin
    # Tiled copies are jittered, not repeated.
    assert len(np.unique(cloud[:, :2], axis=0)) > 0.99 * len(cloud)


def test_a_cloud_outside_the_range_is_refused():
    detector = build_detector(PRESET)
    far = np.full((100, 5), 500.0, np.float32)
    with pytest.raises(ValueError, match="no points inside"):
        time_preset(detector, far, repeats=1, warmup=0)


def test_percentiles_of_known_samples():
    assert percentiles([float(v) for v in range(1, 11)]) == {"median": 5.5,
                                                             "p90": pytest.approx(9.1)}
    assert percentiles([12.5]) == {"median": 12.5, "p90": 12.5}
