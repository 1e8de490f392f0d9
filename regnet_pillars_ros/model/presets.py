"""The nine RegNetX / PointPillars presets of mmdetection3d's configs/regnet, as frozen dataclasses.

All numbers come from one data file shipped with the package (`presets.json`, the project spec's
machine-readable table); nothing here is inherited or registered.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

PRESETS_FILE = Path(__file__).with_name("presets.json")


@dataclass(frozen=True)
class AnchorConfig:
    """AlignedAnchor3DRangeGenerator arguments; one (range, size) pair per anchor size."""

    ranges: tuple[tuple[float, ...], ...]
    sizes_v1: tuple[tuple[float, ...], ...]  # (l, w, h): mmdet3d >= 1.0
    sizes_v0: tuple[tuple[float, ...], ...]  # (w, l, h): the pre-refactor checkpoints
    scales: tuple[float, ...]  # one per feature level
    rotations: tuple[float, ...]
    custom_values: tuple[float, ...]

    def sizes(self, convention: str) -> tuple[tuple[float, ...], ...]:
        return self.sizes_v0 if convention == "v0" else self.sizes_v1

    @property
    def num_per_location(self) -> int:
        return len(self.sizes_v1) * len(self.rotations)


@dataclass(frozen=True)
class TestConfig:
    nms_pre: int
    nms_thr: float
    score_thr: float
    max_num: int


@dataclass(frozen=True)
class Preset:
    """Everything needed to build, load and run one preset."""

    name: str
    dataset: str  # 'nuscenes' | 'lyft'
    class_names: tuple[str, ...]
    sweeps_num: int
    point_cloud_range: tuple[float, ...]  # x_min, y_min, z_min, x_max, y_max, z_max
    voxel_size: tuple[float, ...]
    max_num_points: int
    max_voxels: int  # the test-time value
    grid_size: tuple[int, int, int]  # x, y, z cells
    vfe_channels: tuple[int, ...]
    backbone: dict[str, Any]  # raw spec entry: type SECOND or NoStemRegNet
    neck: dict[str, Any]  # raw spec entry: type SECONDFPN or mmdet.FPN
    head_channels: int
    box_code_size: int
    anchors: AnchorConfig
    dir_offset_v1: float
    dir_offset_v0: float
    dir_limit_offset: float
    test_cfg: TestConfig
    reported: dict[str, Any]
    checkpoint_filename: str
    checkpoint_url: str
    n_keys: int
    n_parameters: int

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def has_velocity(self) -> bool:
        return self.box_code_size == 9

    def dir_offset(self, convention: str) -> float:
        return self.dir_offset_v0 if convention == "v0" else self.dir_offset_v1


def _tuples(rows: list[list[float]]) -> tuple[tuple[float, ...], ...]:
    return tuple(tuple(float(v) for v in row) for row in rows)


def _preset_from_entry(name: str, e: dict[str, Any]) -> Preset:
    vox, head, anchors = e["voxelization"], e["head"], e["head"]["anchor_generator"]
    return Preset(
        name=name,
        dataset=e["dataset"],
        class_names=tuple(e["class_names"]),
        sweeps_num=int(e["points"]["sweeps_num"]),
        point_cloud_range=tuple(float(v) for v in vox["point_cloud_range"]),
        voxel_size=tuple(float(v) for v in vox["voxel_size"]),
        max_num_points=int(vox["max_num_points"]),
        max_voxels=int(vox["max_voxels_test"]),
        grid_size=tuple(int(v) for v in vox["grid_size_xyz"]),
        vfe_channels=tuple(e["voxel_encoder"]["feat_channels"]),
        backbone=e["backbone"],
        neck=e["neck"],
        head_channels=int(head["in_channels"]),
        box_code_size=int(head["bbox_coder"]["code_size"]),
        anchors=AnchorConfig(
            ranges=_tuples(anchors["ranges"]),
            sizes_v1=_tuples(anchors["sizes_v1_xyz_lwh"]),
            sizes_v0=_tuples(anchors["sizes_v0_wlh"]),
            scales=tuple(float(s) for s in anchors["scales"]),
            rotations=tuple(float(r) for r in anchors["rotations"]),
            custom_values=tuple(float(v) for v in anchors.get("custom_values", [])),
        ),
        dir_offset_v1=float(head["dir_offset_v1"]),
        dir_offset_v0=float(head["dir_offset_v0"]),
        dir_limit_offset=float(head["dir_limit_offset"]),
        test_cfg=TestConfig(
            nms_pre=int(e["test_cfg"]["nms_pre"]),
            nms_thr=float(e["test_cfg"]["nms_thr"]),
            score_thr=float(e["test_cfg"]["score_thr"]),
            max_num=int(e["test_cfg"]["max_num"]),
        ),
        reported=dict(e["reported"]),
        checkpoint_filename=e["checkpoint"]["filename"],
        checkpoint_url=e["checkpoint"]["url"],
        n_keys=int(e["state_dict"]["n_keys"]),
        n_parameters=int(e["state_dict"]["n_parameters"]),
    )


@lru_cache(maxsize=None)
def load_presets() -> dict[str, Preset]:
    """All presets, in the order of the mmdet3d README table."""
    with open(PRESETS_FILE, encoding="utf-8") as f:
        entries = json.load(f)
    return {name: _preset_from_entry(name, entry) for name, entry in entries.items()}


PRESET_NAMES: tuple[str, ...] = tuple(load_presets())


def get_preset(name: str) -> Preset:
    """Look a preset up by name; the error lists the valid names."""
    presets = load_presets()
    if name not in presets:
        raise ValueError(f"unknown preset {name!r}; choose one of: {', '.join(presets)}")
    return presets[name]
