"""Model layer: the nine RegNetX / PointPillars presets in plain PyTorch and NumPy
(never imports rclpy).

The presets load without torch; `Detector` and `Detections` are imported on first use, so that
the launch files and the node's parameter table, which read presets only, stay light.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from .presets import PRESET_NAMES, Preset, get_preset, load_presets

if TYPE_CHECKING:
    from .detections import Detections
    from .detector import Detector

_LAZY = {"Detections": ".detections", "Detector": ".detector"}

__all__ = ["Detections", "Detector", "PRESET_NAMES", "Preset", "get_preset", "load_presets"]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
