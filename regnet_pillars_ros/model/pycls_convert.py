"""pycls RegNet checkpoints -> mmdet RegNet key names (spec j.1, mmdet's regnet2mmdet.py).

Unlike mmdet's script, which only prints keys it cannot convert, every key must map or the
conversion is refused, so a file of another architecture never converts silently.
"""
from __future__ import annotations

import re
from collections import OrderedDict
from pathlib import Path
from typing import Mapping

import torch

from .checkpoint import safe_load

CONV_TAILS = ("weight",)
BN_TAILS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
FC_TAILS = ("weight", "bias")
# pycls X-block modules inside `f` -> mmdet Bottleneck modules.
BLOCK_MODULES = {"a": "conv1", "a_bn": "bn1", "b": "conv2", "b_bn": "bn2", "c": "conv3",
                 "c_bn": "bn3"}

STEM = re.compile(r"stem\.(conv|bn)\.(\w+)")
HEAD = re.compile(r"head\.fc\.(\w+)")
SHORTCUT = re.compile(r"s([1-9]\d*)\.b1\.(proj|bn)\.(\w+)")
BLOCK = re.compile(r"s([1-9]\d*)\.b([1-9]\d*)\.f\.(a|a_bn|b|b_bn|c|c_bn)\.(\w+)")

EXPECTED_FORMS = (
    "stem.conv.weight, stem.bn.<bn>, s<S>.b1.proj.weight, s<S>.b1.bn.<bn>, "
    "s<S>.b<B>.f.{a,b,c}.weight, s<S>.b<B>.f.{a,b,c}_bn.<bn>, head.fc.{weight,bias} "
    f"(<bn> one of {', '.join(BN_TAILS)}; S, B >= 1)"
)


def _with_tail(key: str, module: str, tail: str, allowed: tuple[str, ...]) -> str:
    if tail not in allowed:
        raise ValueError(f"pycls key {key!r}: expected a parameter name in {allowed}, got {tail!r}")
    return f"{module}.{tail}"


def convert_key(key: str) -> str:
    """The mmdet name of one pycls key; ValueError for any key outside the RegNet layout."""
    if match := STEM.fullmatch(key):
        module, tail = match.groups()
        return _with_tail(key, "conv1" if module == "conv" else "bn1", tail,
                          CONV_TAILS if module == "conv" else BN_TAILS)
    if match := HEAD.fullmatch(key):
        return _with_tail(key, "fc", match.group(1), FC_TAILS)
    if match := SHORTCUT.fullmatch(key):
        stage, module, tail = match.groups()
        index, allowed = (0, CONV_TAILS) if module == "proj" else (1, BN_TAILS)
        return _with_tail(key, f"layer{stage}.0.downsample.{index}", tail, allowed)
    if match := BLOCK.fullmatch(key):
        stage, block, module, tail = match.groups()
        allowed = BN_TAILS if module.endswith("_bn") else CONV_TAILS
        return _with_tail(key, f"layer{stage}.{int(block) - 1}.{BLOCK_MODULES[module]}", tail,
                          allowed)
    raise ValueError(
        f"pycls key {key!r} has no mmdet name; expected one of the forms {EXPECTED_FORMS}")


def convert_state_dict(state: Mapping[str, torch.Tensor]) -> "OrderedDict[str, torch.Tensor]":
    """All keys renamed, order and tensors kept."""
    return OrderedDict((convert_key(key), value) for key, value in state.items())


def convert_file(src: str | Path, dst: str | Path) -> "OrderedDict[str, torch.Tensor]":
    """Read a pycls checkpoint (`{'model_state': ...}`) safely, write `{'state_dict': ...}` to
    `dst`."""
    src, dst = Path(src), Path(dst)
    obj = safe_load(src, what="pycls checkpoint")
    if not isinstance(obj, dict) or not isinstance(obj.get("model_state"), Mapping):
        found = sorted(obj)[:8] if isinstance(obj, dict) else type(obj).__name__
        raise ValueError(f"pycls checkpoint {src}: expected a dict with 'model_state' "
                         f"(pycls format), got {found}")
    try:
        state = convert_state_dict(obj["model_state"])
    except ValueError as exc:
        raise ValueError(f"pycls checkpoint {src}: {exc}") from exc
    dst.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": state}, dst)
    return state
