"""`eval` on Lyft bags: synthetic tables in the Lyft layout (read by lyft-dataset-sdk), converted
by `bag-from-dataset --lyft`, scored with the SDK's mAP over 3D IoU 0.5:0.95."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from eval_helpers import SPARSE, rename_to_lyft_classes, write_bags

from regnet_pillars_ros.eval import bag_from_dataset, replay
from regnet_pillars_ros.eval import synthetic_nuscenes as synthetic
from regnet_pillars_ros.model import Detections, get_preset
from regnet_pillars_ros.tools import evaluate as cli

pytest.importorskip("lyft_dataset_sdk", reason="lyft-dataset-sdk not installed")

PRESET = "lyft-secfpn"
CLASSES = get_preset(PRESET).class_names

@pytest.fixture(scope="module")
def lyft(tmp_path_factory) -> SimpleNamespace:
    """One scene, 2 key frames, in the Lyft layout (category names are Lyft's classes)."""
    root = tmp_path_factory.mktemp("lyft")
    data = synthetic.write_dataset(root / "data", seed=5, num_scenes=1, num_key_frames=2,
                                   version="v1.01-train", lidar=SPARSE)
    rename_to_lyft_classes(data)
    write_bags(data, root / "bags", "--lyft")
    args = [str(root / "bags"), "--preset", PRESET, "--dataroot", str(data.dataroot),
            "--no-progress", "--bev-frames", "1"]
    return SimpleNamespace(root=root, data=data, args=args)


def test_lyft_bags_are_scored_with_the_sdk(lyft):
    out = lyft.root / "report"
    assert cli.main([*lyft.args, "-o", str(out)]) == 0
    record = json.loads((out / "frames.json").read_text())
    assert record["seen"] == record["scored"] == 2 and record["dropped"] == {}
    scores = json.loads((out / "metrics_lyft.json").read_text())
    assert 0.0 <= scores["mean_ap"] <= 1.0 and len(scores["map_at"]) == 10
    page = (out / "index.md").read_text()
    assert "lyft-dataset-sdk" in page and "pedestrian" in page and (out / "bev_0.png").is_file()


def test_ground_truth_through_the_lyft_scoring_path_scores_map_1(lyft, tmp_path):
    args = cli.build_parser().parse_args([*lyft.args, "-o", str(tmp_path)])
    dataset = bag_from_dataset.open_dataset(lyft.data.dataroot, lyft.data.version, lyft=True)
    frames = []
    for sample in dataset.db.sample:
        boxes, names, _ = bag_from_dataset.ground_truth(dataset, sample["token"])
        frames.append(replay.FrameResult(
            replay.KeyFrame(sample["token"], 0, dataset.db.scene[0]["name"]),
            Detections(boxes[:, :7].astype(np.float32), np.ones(len(boxes), np.float32),
                       np.array([CLASSES.index(n) for n in names], np.int64), CLASSES)))
    acc, _, _, _ = cli.score_lyft(frames, args, dataset.db, Path(tmp_path))
    assert len(acc.scored) == 2
    scores = json.loads((tmp_path / "metrics_lyft.json").read_text())
    assert scores["mean_ap"] == pytest.approx(1.0)
