"""Checkpoints in the official mmdet3d file format: safe loading, strict checks, writing.

Files are `{'meta': dict, 'state_dict': OrderedDict}` read with `torch.load(weights_only=True)`,
so a pickle that carries code is refused. A checkpoint either matches the preset exactly (keys,
shapes, classes) or is refused with a report; nothing is ever half-loaded.
"""
from __future__ import annotations

import hashlib
import pickle
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .presets import Preset

CONVENTIONS = ("v0", "v1")
SHA_SUFFIX = re.compile(r"-([0-9a-f]{8})\.pth$")


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used for the requested preset; the message says why."""


@dataclass
class Checkpoint:
    path: str
    state_dict: "OrderedDict[str, torch.Tensor]"
    meta: dict[str, Any] = field(default_factory=dict)


def require_file(path: str | Path, what: str = "checkpoint") -> Path:
    """``path`` as a Path; CheckpointError naming it when there is no such file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what} {path}: no such file")
    return path


def safe_load(path: str | Path, what: str = "checkpoint") -> Any:
    """`torch.load(weights_only=True)` with errors that name the file and say why
    (CheckpointError)."""
    path = require_file(path, what)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"{what} {path}: refused, it holds objects other than tensors and plain containers "
            "(a pickle that can run code); only weights_only files are loaded. "
            f"Detail: {str(exc).splitlines()[0]}"
        ) from exc
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise CheckpointError(f"{what} {path}: unreadable or truncated ({exc})") from exc


def read_checkpoint(path: str | Path, verify_sha256: bool = True) -> Checkpoint:
    """Read a checkpoint file safely; raises CheckpointError naming the file and the reason."""
    path = Path(path)
    if verify_sha256 and path.is_file():
        verify_name_hash(path)
    obj = safe_load(path)
    if isinstance(obj, dict) and "state_dict" in obj:
        state, meta = obj["state_dict"], obj.get("meta") or {}
    elif isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        state, meta = obj, {}
    else:
        raise CheckpointError(f"checkpoint {path}: expected a dict with 'state_dict' "
                              f"(mmdet3d format), got {type(obj).__name__}")
    if not isinstance(meta, dict):
        raise CheckpointError(
            f"checkpoint {path}: 'meta' must be a dict, got {type(meta).__name__}")
    return Checkpoint(str(path), OrderedDict(state), meta)


def verify_name_hash(path: Path) -> None:
    """Official files end in '-<first 8 hex digits of sha256>.pth'; check it when the name has
    that form."""
    match = SHA_SUFFIX.search(path.name)
    if not match:
        return
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    if not digest.hexdigest().startswith(match.group(1)):
        raise CheckpointError(
            f"checkpoint {path}: sha256 starts with {digest.hexdigest()[:8]}, "
            f"the file name says {match.group(1)}; "
            "the file is corrupt or renamed "
            "(skip this check with verify_sha256=False / --no-verify-sha256)"
        )


def checkpoint_classes(meta: dict[str, Any]) -> tuple[str, ...] | None:
    """Class names recorded in the meta (v0.x 'CLASSES' or mmengine 'dataset_meta.classes')."""
    classes = meta.get("CLASSES")
    if classes is None and isinstance(meta.get("dataset_meta"), dict):
        classes = meta["dataset_meta"].get("classes")
    return tuple(classes) if classes is not None else None


def _version_at_least_1(version: Any) -> bool:
    match = re.match(r"\s*(\d+)", str(version)) if version is not None else None
    return bool(match) and int(match.group(1)) >= 1


def box_convention_of(meta: dict[str, Any]) -> str:
    """'v1' or 'v0' from a checkpoint's meta: an explicit 'box_convention' record wins,
    then mmdet3d_version >= 1.0 means v1; older or absent (the official v0.1.0 files) means v0."""
    recorded = meta.get("box_convention")
    if recorded in CONVENTIONS:
        return recorded
    return "v1" if _version_at_least_1(meta.get("mmdet3d_version")) else "v0"


def check_against(model: nn.Module, ckpt: Checkpoint, preset: Preset) -> None:
    """Raise CheckpointError with a readable report unless keys, shapes and classes match
    exactly."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in ckpt.state_dict]
    unexpected = [k for k in ckpt.state_dict if k not in expected]
    misshaped = [
        f"{k}: file {tuple(ckpt.state_dict[k].shape)}, model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in ckpt.state_dict and tuple(ckpt.state_dict[k].shape) != tuple(v.shape)
    ]
    problems = []
    for title, items in (("missing keys", missing), ("unexpected keys", unexpected),
                         ("mis-shaped keys", misshaped)):
        if items:
            shown = "\n    ".join(items[:10]) + (
                f"\n    ... and {len(items) - 10} more" if len(items) > 10 else "")
            problems.append(f"  {len(items)} {title}:\n    {shown}")
    classes = checkpoint_classes(ckpt.meta)
    if classes is not None and classes != preset.class_names:
        problems.append(
            f"  classes in meta {list(classes)} differ from preset {list(preset.class_names)}")
    if problems:
        raise CheckpointError(
            f"checkpoint {ckpt.path} does not fit preset {preset.name!r}:\n" + "\n".join(problems)
            + "\n  (is it a checkpoint of another preset? "
            "`regnet-pillars keys --preset NAME` lists the expected keys)"
        )


def load_into(model: nn.Module, ckpt: Checkpoint, preset: Preset) -> None:
    """Strict check, then copy the weights (float32) into the model."""
    check_against(model, ckpt, preset)
    state = OrderedDict((k, v.float() if v.is_floating_point() else v)
                        for k, v in ckpt.state_dict.items())
    model.load_state_dict(state, strict=True)


def random_state_dict(model: nn.Module, seed: int,
                      cls_bias: float = 0.0) -> "OrderedDict[str, torch.Tensor]":
    """Seeded random weights with non-trivial BatchNorm statistics, deterministic per seed.

    `cls_bias` is added to the classification biases (negative values keep random weights from
    scoring every anchor above the threshold).
    """
    gen = torch.Generator().manual_seed(seed)
    values: dict[str, torch.Tensor] = {}
    for name, module in model.named_modules():
        prefix = f"{name}." if name else ""
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            c = module.num_features
            values[prefix + "weight"] = 1.0 + 0.1 * torch.randn(c, generator=gen)
            values[prefix + "bias"] = 0.1 * torch.randn(c, generator=gen)
            values[prefix + "running_mean"] = 0.1 * torch.randn(c, generator=gen)
            values[prefix + "running_var"] = 0.5 + torch.rand(c, generator=gen)
            values[prefix + "num_batches_tracked"] = torch.tensor(1000, dtype=torch.int64)
        elif isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            weight = module.weight
            fan_in = (weight[0].numel() if not isinstance(module, nn.ConvTranspose2d)
                      else weight.shape[0] * weight[0, 0].numel())
            values[prefix + "weight"] = (torch.randn(weight.shape, generator=gen)
                                         * (2.0 / fan_in) ** 0.5)
            if module.bias is not None:
                values[prefix + "bias"] = 0.01 * torch.randn(module.bias.shape, generator=gen)
                if name.endswith("conv_cls"):
                    values[prefix + "bias"] += cls_bias
    return OrderedDict((key, values[key]) for key in model.state_dict())


def write_checkpoint(path: str | Path, state_dict: "OrderedDict[str, torch.Tensor]", preset: Preset,
                     convention: str, fp16_storage: bool = False, **meta: Any) -> Path:
    """Write `{'meta', 'state_dict'}` in the official layout; meta records classes and box
    convention.

    fp16_storage stores floating tensors as float16 (half the file); loading casts them back to
    the model's float32.
    """
    if convention not in CONVENTIONS:
        raise ValueError(f"box convention must be one of {CONVENTIONS}, got {convention!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    full_meta = {
        "preset": preset.name,
        "CLASSES": list(preset.class_names),
        "box_convention": convention,
        "written_by": "regnet_pillars_ros",
        **meta,
    }
    if fp16_storage:
        state_dict = OrderedDict((k, v.half() if v.is_floating_point() else v)
                                 for k, v in state_dict.items())
    torch.save({"meta": full_meta, "state_dict": state_dict}, path)
    return path
