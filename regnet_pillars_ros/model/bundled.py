"""Weights shipped inside the package: the default when no checkpoint is given.

Only `nus-regnetx-400mf-fpn` has one: trained by this project on its simulator's synthetic LiDAR
scans (not on nuScenes; see the checkpoint's meta for the run and its held-out scores). Every other
preset falls back to seeded random placeholder weights. `PLACEHOLDER` as the checkpoint asks for
the placeholder explicitly (benchmarks, tests).
"""
from __future__ import annotations

from pathlib import Path

WEIGHTS_DIR = Path(__file__).with_name("weights")
BUNDLED = {"nus-regnetx-400mf-fpn": "nus-regnetx-400mf-fpn_synthetic.pth"}
PLACEHOLDER = "placeholder"
BUNDLED_NOTE = "trained on synthetic scans, not nuScenes"


def bundled_checkpoint(preset: str) -> Path | None:
    """The shipped checkpoint of `preset`, or None where the package has none."""
    name = BUNDLED.get(preset)
    path = WEIGHTS_DIR / name if name else None
    return path if path is not None and path.is_file() else None
