"""Key-frame results of a replay -> accounting, per-frame records and the devkit's scores.

Every key frame is accounted for: *scored* (detections of the node's pipeline), *dropped* (with
the reason; it enters the metric with no boxes, as a deployed node that missed it would) or, for
key frames of the bag outside the evaluated split, *not in split* (kept out of the metric).
Key frames of the split missing from the bag are dropped too ("not in the bag").
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..model import Detections
from .replay import FrameResult

NOT_IN_BAG = "key frame of the split, not in the bag"
NOT_IN_SPLIT = "not in split"


@dataclass
class Accounting:
    """Key frames by outcome: scored tokens, dropped token -> reason, tokens not in the split."""

    seen: int = 0
    scored: list[str] = field(default_factory=list)
    dropped: dict[str, str] = field(default_factory=dict)
    not_in_split: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (f"{self.seen} key frames in the bag: {len(self.scored)} scored, "
                f"{len(self.dropped)} dropped, {len(self.not_in_split)} not in the split")


def merge(shards: list[list[FrameResult]]) -> list[FrameResult]:
    """One list from the shards' results, sorted by sample token (independent of sharding)."""
    return sorted((f for shard in shards for f in shard), key=lambda f: f.key.sample_token)


def account(frames: list[FrameResult], split_tokens: list[str] | None) -> Accounting:
    """Sort every key frame into scored / dropped / not in split (``None``: no split known,
    every key frame of the bag counts)."""
    acc = Accounting(seen=len(frames))
    in_split = None if split_tokens is None else set(split_tokens)
    for f in frames:
        token = f.key.sample_token
        if in_split is not None and token not in in_split:
            acc.not_in_split.append(token)
        elif f.detections is None:
            acc.dropped[token] = f.reason
        else:
            acc.scored.append(token)
    seen = {f.key.sample_token for f in frames}
    for token in split_tokens or ():
        if token not in seen:
            acc.dropped[token] = NOT_IN_BAG
    return acc


def frame_records(frames: list[FrameResult], acc: Accounting) -> list[dict]:
    """Per key frame: token, stamp, scene, status, reason, latency and the number of boxes."""
    status = {**dict.fromkeys(acc.scored, "scored"), **dict.fromkeys(acc.dropped, "dropped"),
              **dict.fromkeys(acc.not_in_split, NOT_IN_SPLIT)}
    return [{"sample_token": f.key.sample_token, "stamp_ns": f.key.stamp_ns, "scene": f.key.scene,
             "status": status[f.key.sample_token], "reason": f.reason,
             "latency_ms": f.latency_ms,
             "boxes": None if f.detections is None else len(f.detections)}
            for f in frames]


def write_detections(path: Path, frames: list[FrameResult]) -> Path:
    """detections.npz: the boxes (x, y, z_bottom, l, w, h, yaw[, vx, vy], LiDAR frame), scores
    and labels of every key frame with detections, concatenated; frame i owns rows
    offsets[i]:offsets[i + 1] of sample_tokens[i]."""
    found = [f for f in frames if f.detections is not None]
    names = found[0].detections.class_names if found else ()
    dim = found[0].detections.boxes.shape[1] if found else 7
    np.savez_compressed(
        path, sample_tokens=np.array([f.key.sample_token for f in found], dtype=str),
        offsets=np.cumsum([0] + [len(f.detections) for f in found]),
        boxes=np.concatenate([f.detections.boxes for f in found] or [np.zeros((0, dim))]),
        scores=np.concatenate([f.detections.scores for f in found] or [np.zeros(0)]),
        labels=np.concatenate([f.detections.labels for f in found] or [np.zeros(0, np.int64)]),
        class_names=np.array(names, dtype=str))
    return path


def read_detections(path: Path) -> dict[str, Detections]:
    """The detections of `write_detections`, by sample token."""
    with np.load(path) as z:
        names, o = tuple(z["class_names"].tolist()), z["offsets"]
        return {t: Detections(z["boxes"][o[i]:o[i + 1]], z["scores"][o[i]:o[i + 1]],
                              z["labels"][o[i]:o[i + 1]], names)
                for i, t in enumerate(z["sample_tokens"].tolist())}


def write_frames(path: Path, records: list[dict], acc: Accounting) -> Path:
    """frames.json: the accounting and every key frame's record."""
    path.write_text(json.dumps({"seen": acc.seen, "scored": len(acc.scored),
                                "dropped": acc.dropped, "not_in_split": acc.not_in_split,
                                "frames": records}, indent=1))
    return path


def filled_detections(frames: list[FrameResult], split_tokens: list[str],
                      class_names: tuple[str, ...], box_dim: int) -> dict[str, Detections]:
    """Detections of every key frame of the split; dropped ones empty."""
    found = {f.key.sample_token: f.detections for f in frames if f.detections is not None}
    empty = Detections.empty(class_names, box_dim)
    return {t: found.get(t, empty) for t in split_tokens}
