"""Checkpoint files: official layout, strict checks, refusals with reasons."""
from __future__ import annotations

import hashlib
import io
import pickle
import shutil
from collections import OrderedDict

import numpy as np
import pytest
import torch

from regnet_pillars_ros.model import get_preset
from regnet_pillars_ros.model.checkpoint import (
    CheckpointError,
    random_state_dict,
    read_checkpoint,
    write_checkpoint,
)
from regnet_pillars_ros.model.network import PointPillarsNet
from regnet_pillars_ros.runtime.factory import build_detector

PRESET = "lyft-fpn"  # the smallest head; keeps files small


@pytest.fixture(scope="module")
def state() -> "OrderedDict[str, torch.Tensor]":
    return random_state_dict(PointPillarsNet(get_preset(PRESET)), seed=7, cls_bias=-4.0)


def official_file(path, state, meta, legacy: bool = False):
    """Write a file the way mmcv + publish_model did: {'meta', 'state_dict'}, optionally legacy
    format."""
    torch.save({"meta": meta, "state_dict": state}, path, _use_new_zipfile_serialization=not legacy)
    return path


@pytest.mark.parametrize("legacy", [False, True])
def test_official_v0_file_loads_with_v0_convention(tmp_path, state, legacy):
    meta = {"mmdet_version": "0.1.0", "CLASSES": list(get_preset(PRESET).class_names),
            "config": "model = dict(...)", "epoch": 24, "iter": 100, "mmcv_version": "0.6.2",
            "time": "Mon May 17 20:48:07 2021", "PALETTE": None}
    path = official_file(tmp_path / "model.pth", state, meta, legacy)
    detector = build_detector(PRESET, path)
    assert detector.box_convention == "v0"
    for key, value in detector.net.state_dict().items():
        torch.testing.assert_close(value, state[key])


def test_written_checkpoint_records_convention_and_round_trips(tmp_path, state):
    path = write_checkpoint(tmp_path / "ours.pth", state, get_preset(PRESET), "v1", seed=7)
    ckpt = read_checkpoint(path)
    assert (ckpt.meta["box_convention"] == "v1"
            and ckpt.meta["CLASSES"] == list(get_preset(PRESET).class_names))
    assert list(ckpt.state_dict) == list(state)
    assert build_detector(PRESET, path).box_convention == "v1"
    assert build_detector(PRESET, path, box_convention="v0").box_convention == "v0"


def test_wrong_preset_is_refused_with_a_report(tmp_path):
    other = random_state_dict(PointPillarsNet(get_preset("nus-regnetx-400mf-fpn")), seed=1)
    path = official_file(tmp_path / "other.pth", other, {})
    with pytest.raises(CheckpointError) as err:
        build_detector(PRESET, path)
    message = str(err.value)
    assert "does not fit preset 'lyft-fpn'" in message
    assert ("unexpected keys" in message and "mis-shaped keys" in message
            and "pts_backbone.layer1" in message)


def test_missing_key_is_refused(tmp_path, state):
    partial = OrderedDict(list(state.items())[1:])
    with pytest.raises(CheckpointError, match="1 missing keys"):
        build_detector(PRESET, official_file(tmp_path / "partial.pth", partial, {}))


def test_class_list_mismatch_is_refused(tmp_path, state):
    path = official_file(tmp_path / "classes.pth", state, {"CLASSES": ["car"] * 9})
    with pytest.raises(CheckpointError, match="classes in meta"):
        build_detector(PRESET, path)


def test_truncated_file_is_refused(tmp_path, state):
    path = official_file(tmp_path / "full.pth", state, {})
    data = path.read_bytes()
    cut = tmp_path / "cut.pth"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cut.pth: unreadable or truncated"):
        read_checkpoint(cut)


def test_missing_file_says_which(tmp_path):
    with pytest.raises(CheckpointError, match="nope.pth: no such file"):
        build_detector(PRESET, tmp_path / "nope.pth")


class Payload:
    """An object whose unpickling would run code."""

    def __reduce__(self):
        return (shutil.rmtree, ("/nonexistent-regnet-pillars-test",))


def test_code_carrying_pickle_is_refused(tmp_path, state):
    path = tmp_path / "evil.pth"
    torch.save({"meta": {"hook": Payload()}, "state_dict": state}, path)
    with pytest.raises(CheckpointError, match="refused"):
        read_checkpoint(path)
    raw = tmp_path / "raw.pth"
    buffer = io.BytesIO()
    pickle.dump(Payload(), buffer)
    raw.write_bytes(buffer.getvalue())
    with pytest.raises(CheckpointError):
        read_checkpoint(raw)


def test_sha256_suffix_is_verified(tmp_path, state):
    path = official_file(tmp_path / "tmp.pth", state, {})
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    good = path.rename(
        tmp_path / f"hv_pointpillars_fpn_sbn-all_2x8_2x_lyft-3d_20210517_202818-{digest[:8]}.pth")
    read_checkpoint(good)
    bad = tmp_path / "hv_pointpillars_fpn_sbn-all_2x8_2x_lyft-3d_20210517_202818-deadbeef.pth"
    shutil.copy(good, bad)
    with pytest.raises(CheckpointError, match="sha256 starts with"):
        read_checkpoint(bad)
    read_checkpoint(bad, verify_sha256=False)


def test_random_weights_are_deterministic_per_seed():
    net = PointPillarsNet(get_preset(PRESET))
    a, b, c = random_state_dict(net, 3), random_state_dict(net, 3), random_state_dict(net, 4)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a if a[k].is_floating_point())
    assert all(v.dtype == torch.float32 for k, v in a.items()
               if not k.endswith("num_batches_tracked"))
    assert all(v.dtype == torch.int64 and v.dim() == 0 for k, v in a.items()
               if k.endswith("num_batches_tracked"))


def test_default_model_runs_end_to_end():
    detector = build_detector(PRESET)
    assert "random" in detector.source
    rng = np.random.default_rng(0)
    out = detector(np.concatenate([rng.uniform(-30, 30, (3000, 2)), rng.uniform(-2, 1, (3000, 1)),
                                   np.zeros((3000, 1))], axis=1).astype(np.float32))
    assert out.boxes.shape[1] == 7 and out.boxes.dtype == np.float32
    assert len(out) <= detector.max_detections
    assert (out.scores > detector.score_threshold).all()
