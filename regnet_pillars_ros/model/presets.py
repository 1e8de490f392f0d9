"""The nine RegNetX / PointPillars presets of mmdetection3d's configs/regnet, as frozen dataclasses.

All numbers come from one data file shipped with the package (`presets.json`, the project spec's
machine-readable table); nothing here is inherited or registered.
"""
from __future__ import annotations

import dataclasses
import json
import typing
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
class SecondBackbone:
    """mmdet3d's SECOND: stages of strided 3x3 convolution blocks."""

    in_channels: int
    out_channels: tuple[int, ...]
    layer_nums: tuple[int, ...]
    layer_strides: tuple[int, ...]


@dataclass(frozen=True)
class RegNetArch:
    """RegNet design-space parameters ("Designing Network Design Spaces", 2020)."""

    w0: int
    wa: float
    wm: float
    depth: int
    group_w: int
    bot_mul: float


@dataclass(frozen=True)
class RegNetBackbone:
    """mmdet3d's NoStemRegNet: RegNetX stages straight on the pillar canvas. The stage table
    is the spec's; the width generator reproduces it from `arch` (test_model_components)."""

    arch_name: str
    arch: RegNetArch
    stem_channels: int  # channels of the canvas entering the first stage
    strides: tuple[int, ...]
    out_indices: tuple[int, ...]
    out_channels: tuple[int, ...]
    stage_widths: tuple[int, ...]
    stage_blocks: tuple[int, ...]
    groups: tuple[int, ...]


@dataclass(frozen=True)
class SecondFPNNeck:
    """mmdet3d's SECONDFPN: each level upsampled by a transposed convolution, concatenated."""

    in_channels: tuple[int, ...]
    out_channels: tuple[int, ...]
    upsample_strides: tuple[int, ...]


@dataclass(frozen=True)
class FPNNeck:
    """mmdet's FPN as the presets configure it: one output per input level, no extra levels."""

    in_channels: tuple[int, ...]
    out_channels: int
    start_level: int
    num_outs: int
    add_extra_convs: bool

    def __post_init__(self) -> None:
        implemented = (0, len(self.in_channels), False)
        if (self.start_level, self.num_outs, self.add_extra_convs) != implemented:
            raise ValueError(f"FPN with start_level {self.start_level}, num_outs {self.num_outs}, "
                             f"add_extra_convs {self.add_extra_convs} is not implemented "
                             "(0, one per input level, false)")


BackboneSpec = SecondBackbone | RegNetBackbone
NeckSpec = SecondFPNNeck | FPNNeck
BACKBONE_TYPES = {"SECOND": SecondBackbone, "NoStemRegNet": RegNetBackbone}
NECK_TYPES = {"SECONDFPN": SecondFPNNeck, "mmdet.FPN": FPNNeck}


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
    backbone: BackboneSpec
    neck: NeckSpec
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


def _typed(cls: type, entry: dict[str, Any]) -> Any:
    """Dataclass ``cls`` from the entry's keys of its field names (lists become tuples, nested
    dataclasses are built too); other keys of the spec's table are documentation."""
    hints = typing.get_type_hints(cls)
    values = {}
    for field in dataclasses.fields(cls):
        if field.name not in entry:
            raise ValueError(f"{cls.__name__}: '{field.name}' missing from {sorted(entry)}")
        value = entry[field.name]
        if dataclasses.is_dataclass(hints[field.name]):
            value = _typed(hints[field.name], value)
        values[field.name] = tuple(value) if isinstance(value, list) else value
    return cls(**values)


def _spec(types: dict[str, type], entry: dict[str, Any], what: str) -> Any:
    """The typed spec of a `backbone` or `neck` entry, by its `type`."""
    if entry.get("type") not in types:
        raise ValueError(f"unknown {what} type {entry.get('type')!r}; known: {', '.join(types)}")
    return _typed(types[entry["type"]], entry)


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
        backbone=_spec(BACKBONE_TYPES, e["backbone"], "backbone"),
        neck=_spec(NECK_TYPES, e["neck"], "neck"),
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
