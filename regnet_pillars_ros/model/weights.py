"""A preset's network with its weights: from a checkpoint file, the bundled default model, or
seeded random placeholder weights."""
from __future__ import annotations

import logging
from pathlib import Path

from .bundled import BUNDLED_NOTE, PLACEHOLDER, bundled_checkpoint
from .checkpoint import box_convention_of, load_into, read_checkpoint
from .network import PointPillarsNet
from .placeholder import placeholder_weights
from .presets import Preset

log = logging.getLogger(__name__)


def default_checkpoint(preset: str, checkpoint: str | Path | None) -> str | Path:
    """`checkpoint`, or where none is given the bundled model of `preset`, else `PLACEHOLDER`."""
    if checkpoint is not None and str(checkpoint) != "":
        return checkpoint
    return bundled_checkpoint(preset) or PLACEHOLDER


def load_network(preset: Preset, checkpoint: str | Path | None,
                 verify_sha256: bool = True) -> tuple[PointPillarsNet, str, str]:
    """(network, box convention of its weights, where they came from) for an official-format
    .pth `checkpoint`, None for `default_checkpoint`, or `PLACEHOLDER` (said in the log).
    Raises CheckpointError for a file that cannot be read or does not fit the preset."""
    checkpoint = default_checkpoint(preset.name, checkpoint)
    net = PointPillarsNet(preset)
    if str(checkpoint) == PLACEHOLDER:
        placeholder_weights(net, preset, preset.test_cfg.score_thr)
        source = "seeded random placeholder weights (detections are meaningless)"
        log.warning("preset %s: no trained weights given, using %s", preset.name, source)
        return net, "v1", source
    ckpt = read_checkpoint(checkpoint, verify_sha256=verify_sha256)
    load_into(net, ckpt, preset)
    source = str(checkpoint)
    if checkpoint == bundled_checkpoint(preset.name):
        source = f"the bundled default model ({BUNDLED_NOTE}): {checkpoint}"
    return net, box_convention_of(ckpt.meta), source
