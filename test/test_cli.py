"""The `regnet-pillars` command line, run in-process through `main([...])` (and once as a
module)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch

from regnet_pillars_ros.cli import main
from regnet_pillars_ros.model import PRESET_NAMES, get_preset
from regnet_pillars_ros.model.checkpoint import check_against, read_checkpoint
from regnet_pillars_ros.model.network import PointPillarsNet
from regnet_pillars_ros.runtime.bench import synthetic_scene
from regnet_pillars_ros.runtime.factory import build_detector

REPO = Path(__file__).resolve().parents[1]
SPEC_KEYS = REPO.parent / "shared" / "spec" / "checkpoint_keys"
CHEAP_PRESET = "nus-secfpn"  # the smallest network: keeps the forward passes here short


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_module_help_in_a_subprocess():
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "regnet_pillars_ros.cli", "--help"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    for command in ("keys", "detect", "make-checkpoint", "convert-regnet", "bench", "demo"):
        assert command in proc.stdout


@pytest.mark.parametrize("command", ["keys", "detect", "make-checkpoint", "convert-regnet", "bench",
                                     "synthetic-dataset"])
def test_every_command_explains_itself_with_an_example(capsys, command):
    code, out, _ = run(capsys, command, "--help")
    assert code == 0
    assert "example" in out and f"regnet-pillars {command}" in out


@pytest.mark.skipif(not SPEC_KEYS.is_dir(), reason=f"spec key lists not found at {SPEC_KEYS}")
@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_keys_equal_the_spec_list(capsys, preset):
    code, out, _ = run(capsys, "keys", "--preset", preset)
    assert code == 0
    assert json.loads(out) == json.loads((SPEC_KEYS / f"{preset}.json").read_text())


def test_make_checkpoint_is_official_format_and_records_convention(capsys, tmp_path):
    code, out, _ = run(capsys, "make-checkpoint", "--preset", CHEAP_PRESET, "--seed", "7",
                       "--convention", "v0", "-o", tmp_path / "a.pth")
    assert code == 0 and "box convention v0" in out
    ckpt = read_checkpoint(tmp_path / "a.pth")
    assert ckpt.meta["box_convention"] == "v0" and ckpt.meta["seed"] == 7
    preset = get_preset(CHEAP_PRESET)
    assert ckpt.meta["CLASSES"] == list(preset.class_names)
    check_against(PointPillarsNet(preset), ckpt, preset)  # raises unless keys, shapes, classes fit

    assert run(capsys, "make-checkpoint", "--preset", CHEAP_PRESET, "--seed", "7",
               "-o", tmp_path / "b.pth")[0] == 0
    assert run(capsys, "make-checkpoint", "--preset", CHEAP_PRESET, "--seed", "8",
               "-o", tmp_path / "c.pth")[0] == 0
    same, other = (read_checkpoint(tmp_path / "b.pth").state_dict,
                   read_checkpoint(tmp_path / "c.pth").state_dict)
    assert all(torch.equal(ckpt.state_dict[k], same[k]) for k in same)
    assert not torch.equal(ckpt.state_dict["pts_bbox_head.conv_reg.weight"],
                           other["pts_bbox_head.conv_reg.weight"])


def test_detect_writes_the_detector_output(capsys, tmp_path):
    ckpt = tmp_path / "w.pth"
    assert run(capsys, "make-checkpoint", "--preset", CHEAP_PRESET, "--seed", "1",
               "--convention", "v0", "-o", ckpt)[0] == 0
    points = synthetic_scene(seed=0)[::100]
    np.save(tmp_path / "cloud.npy", points)

    code, out, err = run(capsys, "detect", "--preset", CHEAP_PRESET, "--checkpoint", ckpt,
                         "--points", tmp_path / "cloud.npy", "--output", tmp_path / "pred.npz",
                         "--show", "3")
    assert code == 0, err
    expected = build_detector(CHEAP_PRESET, ckpt)(points)
    with np.load(tmp_path / "pred.npz") as pred:
        assert pred["boxes"].dtype == np.float32 and pred["boxes"].shape == (len(expected), 9)
        assert pred["scores"].dtype == np.float32 and pred["labels"].dtype == np.int64
        np.testing.assert_array_equal(pred["boxes"], expected.boxes)
        np.testing.assert_array_equal(pred["scores"], expected.scores)
        np.testing.assert_array_equal(pred["labels"], expected.labels)
        assert tuple(pred["class_names"]) == get_preset(CHEAP_PRESET).class_names
        assert str(pred["box_convention"]) == "v0"
    assert len(expected) > 0
    assert "box convention of the weights: v0 (from the checkpoint)" in out
    assert expected.names()[0] in out and "vx" in out


def pycls_keys(depths: tuple[int, ...]) -> list[str]:
    """Keys of a pycls AnyNet with X blocks, written out from pycls's module layout."""
    bn = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    keys = ["stem.conv.weight", *(f"stem.bn.{t}" for t in bn)]
    for s, depth in enumerate(depths, start=1):
        for b in range(1, depth + 1):
            if b == 1:
                keys += [f"s{s}.b1.proj.weight", *(f"s{s}.b1.bn.{t}" for t in bn)]
            for m in ("a", "b", "c"):
                keys += [f"s{s}.b{b}.f.{m}.weight", *(f"s{s}.b{b}.f.{m}_bn.{t}" for t in bn)]
    return keys + ["head.fc.weight", "head.fc.bias"]


def save_pycls(path: Path, keys: list[str]) -> OrderedDict:
    state = OrderedDict((k, torch.full((2,), float(i))) for i, k in enumerate(keys))
    torch.save({"epoch": 100, "model_state": state}, path)
    return state


def test_convert_regnet_gives_the_mmdet_backbone_names(capsys, tmp_path):
    backbone = PointPillarsNet(get_preset("nus-regnetx-1.6gf-fpn")).pts_backbone
    depths = tuple(len(getattr(backbone, name)) for name in backbone.layer_names)
    state = save_pycls(tmp_path / "regnet.pyth", pycls_keys(depths))

    code, out, err = run(capsys, "convert-regnet", tmp_path / "regnet.pyth",
                         "-o", tmp_path / "mmdet.pth")
    assert code == 0, err
    converted = torch.load(tmp_path / "mmdet.pth", weights_only=True)["state_dict"]
    # Every layer key of the project's (mmdet-named) RegNet, plus the stem and classifier it lacks.
    expected = set(backbone.state_dict()) | {"conv1.weight", "fc.weight", "fc.bias"} | {
        f"bn1.{t}"
        for t in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")}
    assert set(converted) == expected and len(converted) == len(state)
    assert torch.equal(converted["layer3.0.downsample.0.weight"], state["s3.b1.proj.weight"])
    assert torch.equal(converted["layer2.1.bn2.running_var"], state["s2.b2.f.b_bn.running_var"])
    assert torch.equal(converted["layer4.0.conv3.weight"], state["s4.b1.f.c.weight"])


@pytest.mark.parametrize("bad_key", ["s1.b1.f.se.f.weight", "s1.b2.proj.weight", "s1.b1.f.a.bias",
                                     "fc.weight"])
def test_convert_regnet_refuses_unknown_keys(capsys, tmp_path, bad_key):
    save_pycls(tmp_path / "regnet.pyth", pycls_keys((1, 1, 1, 1)) + [bad_key])
    code, _, err = run(capsys, "convert-regnet", tmp_path / "regnet.pyth",
                       "-o", tmp_path / "out.pth")
    assert code == 1 and repr(bad_key) in err and "Traceback" not in err
    assert not (tmp_path / "out.pth").exists()


class CarriesCode:
    """Any class instance makes a pickle that weights_only loading must refuse."""


@pytest.mark.parametrize(
    "payload, message",
    [({"model_state": {"w": CarriesCode()}}, "refused"),
     ({"state_dict": {}}, "expected a dict with 'model_state'")],
)
def test_convert_regnet_refuses_bad_files(capsys, tmp_path, payload, message):
    torch.save(payload, tmp_path / "bad.pyth")
    code, _, err = run(capsys, "convert-regnet", tmp_path / "bad.pyth", "-o", tmp_path / "out.pth")
    assert code == 1 and message in err and "Traceback" not in err


@pytest.fixture(scope="module")
def cheap_checkpoint(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "cheap.pth"
    assert main(["make-checkpoint", "--preset", CHEAP_PRESET, "-o", str(path)]) == 0
    return path


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["detect", "--preset", CHEAP_PRESET, "--points", "{tmp}/absent.npy", "-o", "{tmp}/p.npz"],
         1, "absent.npy: no such file"),
        (["detect", "--preset", CHEAP_PRESET, "--points", "{tmp}/cloud.bin", "-o", "{tmp}/p.npz"],
         1, "needs the number"),
        (["detect", "--preset", CHEAP_PRESET, "--points", "{tmp}/cloud.bin", "--dims", "4",
          "--checkpoint", "{tmp}/missing.pth", "-o", "{tmp}/p.npz"],
         1, "missing.pth: no such file"),
        (["detect", "--preset", "lyft-secfpn", "--points", "{tmp}/cloud.bin", "--dims", "4",
          "--checkpoint", "{ckpt}", "-o", "{tmp}/p.npz"],
         1, "does not fit preset 'lyft-secfpn'"),
        (["detect", "--preset", "nus-nonexistent", "--points", "{tmp}/cloud.bin",
          "-o", "{tmp}/p.npz"], 2, "invalid choice"),
        (["detect", "--preset", CHEAP_PRESET, "--points", "{tmp}/cloud.bin", "-o", "{tmp}/p.npz",
          "--bogus"], 2, "unrecognized"),
        (["bench", "--preset", CHEAP_PRESET, "--device", "cuda", "--points", "1000"],
         1, "no CUDA GPU"),
        (["bench", "--preset", CHEAP_PRESET, "--points", "0"], 1, "must be positive"),
        (["keys"], 2, "--preset"),
    ],
)
def test_bad_input_gives_a_message_and_an_exit_code(capsys, tmp_path, cheap_checkpoint, args, code,
                                                    message):
    if torch.cuda.is_available() and "cuda" in args:
        pytest.skip("this machine has a GPU")
    np.zeros((10, 4), np.float32).tofile(tmp_path / "cloud.bin")
    argv = [a.format(tmp=tmp_path, ckpt=cheap_checkpoint) for a in args]
    got, out, err = run(capsys, *argv)
    assert got == code
    assert message in err and "Traceback" not in err


DELEGATED = [("demo", "regnet_pillars_ros.tools.demo"),
             ("bench-node", "regnet_pillars_ros.tools.bench_node"),
             ("train", "regnet_pillars_ros.train.cli")]


@pytest.mark.parametrize("command, module", DELEGATED)
def test_delegated_tools_that_cannot_import_say_so(capsys, monkeypatch, command, module):
    monkeypatch.setitem(sys.modules, module, None)  # import now raises ImportError
    code, _, err = run(capsys, command)
    assert code == 2 and "not available" in err and module in err


@pytest.mark.parametrize("command, module", DELEGATED)
def test_delegated_tools_get_their_arguments(capsys, monkeypatch, command, module):
    seen = []
    fake = types.ModuleType(module)
    fake.main = lambda argv: seen.append(argv) or 3
    monkeypatch.setitem(sys.modules, module, fake)
    assert run(capsys, command, "--rate", "2", "--help")[0] == 3
    assert seen == [["--rate", "2", "--help"]]


def test_export_writes_a_checked_onnx_file_that_detect_runs(capsys, tmp_path):
    """Placeholder weights (no --checkpoint) are deterministic, so torch and the export must
    agree."""
    onnx_path = tmp_path / "model.onnx"
    code, out, err = run(capsys, "export", "--preset", CHEAP_PRESET, "-o", onnx_path)
    assert code == 0, err
    assert "opset 18" in out and "max |difference|" in out
    np.save(tmp_path / "cloud.npy", synthetic_scene(seed=0)[::3])
    via_onnx, via_torch = tmp_path / "onnx.npz", tmp_path / "torch.npz"
    code, out, err = run(capsys, "detect", "--preset", CHEAP_PRESET, "--checkpoint", onnx_path,
                         "--backend", "onnxruntime", "--points", tmp_path / "cloud.npy",
                         "-o", via_onnx)
    assert code == 0 and "onnxruntime backend" in out, err
    assert run(capsys, "detect", "--preset", CHEAP_PRESET, "--points", tmp_path / "cloud.npy",
               "-o", via_torch)[0] == 0
    with np.load(via_onnx) as a, np.load(via_torch) as b:
        assert len(b["labels"]) > 0
        np.testing.assert_array_equal(np.sort(a["labels"]), np.sort(b["labels"]))
        np.testing.assert_allclose(np.sort(a["scores"]), np.sort(b["scores"]), atol=1e-3)


def test_synthetic_dataset_writes_devkit_tables_and_says_what_next(capsys, tmp_path):
    from nuscenes import NuScenes

    assert main(["synthetic-dataset", "-o", str(tmp_path), "--scenes", "2", "--key-frames", "2",
                 "--train-scenes", "1", "--seed", "1000005"]) == 0
    out = capsys.readouterr().out
    assert ("synthetic_train: 1 scenes" in out and "synthetic_val: 1 scenes" in out
            and "bag-from-dataset" in out)
    nusc = NuScenes("v1.0-mini", str(tmp_path), verbose=False)
    assert len(nusc.scene) == 2 and len(nusc.sample) == 4
    assert all(nusc.get("sample_data", s["data"]["LIDAR_TOP"])["is_key_frame"] for s in nusc.sample)
