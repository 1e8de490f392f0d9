"""Sharded replay by scene: 1 process (this one), 2 gloo ranks under torchrun and 2 local workers
give the same results file and the same metrics (one CPU thread per process, so bit-identical)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from eval_helpers import dataset_with_bags, placeholder_checkpoint

from regnet_pillars_ros.eval.scoring import read_detections
from regnet_pillars_ros.tools import evaluate as cli

REPO = Path(__file__).resolve().parents[1]
PRESET = "nus-secfpn"


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> tuple[Path, Path, Path]:
    """Two scenes (a shard each), one key frame each; the placeholder weights as a checkpoint,
    calibrated once rather than in every process."""
    root = tmp_path_factory.mktemp("shards")
    dataset, bags = dataset_with_bags(root, seed=7, num_scenes=2, num_key_frames=1)
    return bags, dataset.dataroot, placeholder_checkpoint(root / "placeholder.pth", PRESET)


def eval_args(data: tuple[Path, Path, Path], out: Path) -> list[str]:
    bags, dataroot, checkpoint = data
    return [str(bags), "--preset", PRESET, "--checkpoint", str(checkpoint), "--dataroot",
            str(dataroot), "-o", str(out), "--no-progress", "--bev-frames", "0"]


def run_eval(launcher: list[str], data: tuple[Path, Path, Path], out: Path) -> None:
    result = subprocess.run(
        [*launcher, "-m", "regnet_pillars_ros.tools.evaluate", *eval_args(data, out)],
        cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
        # A bound against a hang: two ranks under torchrun take minutes on a loaded 2-core machine.
        timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]


def outcome(out: Path) -> tuple:
    summary = json.loads((out / "metrics_summary.json").read_text())
    frames = json.loads((out / "frames.json").read_text())
    for frame in frames["frames"]:
        frame.pop("latency_ms")
    summary.pop("eval_time")
    detections = {token: (d.boxes.tobytes(), d.scores.tobytes(), d.labels.tobytes())
                  for token, d in read_detections(out / "detections.npz").items()}
    return (out / "results_nusc.json").read_text(), summary, frames, detections


def test_one_process_equals_two_gloo_ranks_and_two_workers(data, tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each rank and worker
    try:
        assert cli.main(eval_args(data, tmp_path / "one")) == 0
    finally:
        torch.set_num_threads(threads)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
                "2"]
    run_eval(torchrun, data, tmp_path / "ranks")
    single = outcome(tmp_path / "one")
    assert single[2]["scored"] == 2
    assert outcome(tmp_path / "ranks") == single
    assert (tmp_path / "ranks" / "index.html").is_file()  # rank 0 wrote the report
    assert cli.main([*eval_args(data, tmp_path / "workers"), "--workers", "2"]) == 0
    assert outcome(tmp_path / "workers") == single
