"""The node's parameters: one table (name, default, description, range, choices, read-only)
and the validators behind its parameter callback. ROS-free and torch-free, so tests, docs and
launch files reach it cheaply.

Some defaults follow the preset (its sweeps, its output cap, velocity arrows where it predicts
velocity): the node declares `preset` first, then every other parameter with `defaults(preset)`.
Parameter files only override.
"""
from __future__ import annotations

import json
import re
import textwrap
from dataclasses import dataclass
from typing import Any, Callable

from ..model.presets import PRESET_NAMES, Preset, get_preset
from ..pipeline.sweeps import MISSING_POLICIES
from ..runtime.choices import BACKENDS, PRECISIONS

DEFAULT_PRESET = "nus-regnetx-400mf-fpn"
EGO_MOTION_SOURCES = ("tf", "odometry", "none")
CLASS_ID_FORMATS = ("name", "index")


@dataclass(frozen=True)
class Param:
    name: str
    default: Any | Callable[[Preset], Any]  # a value, or the value for a preset
    description: str
    read_only: bool = False
    range: tuple[float, float] | None = None  # inclusive; ints get step 1
    choices: tuple[str, ...] = ()

    @property
    def full_description(self) -> str:
        """The description with its choices, as `ros2 param describe` and the YAML files say."""
        return self.description + (f" (one of: {', '.join(self.choices)})" if self.choices else "")


PARAMS: tuple[Param, ...] = (
    # Model: `preset` and `checkpoint` are the runtime swap interface, the rest is fixed.
    Param("preset", DEFAULT_PRESET, "Model preset; setting it swaps the model at runtime",
          choices=PRESET_NAMES),
    Param("checkpoint", "", "Checkpoint path; empty = the project's default model for the "
          "preset; setting it swaps the model at runtime"),
    Param("box_convention", "auto", "Box convention of the checkpoint", True,
          choices=("auto", "v0", "v1")),
    Param("device", "auto", "Inference device (auto: CUDA when available)", True,
          choices=("auto", "cpu", "cuda")),
    Param("backend", "torch", "Inference backend", True, choices=BACKENDS),
    Param("precision", "fp32", "Inference precision (torch backend: tf32 and fp16 on CUDA, bf16 "
          "on CUDA or CPU)", True, choices=PRECISIONS),
    Param("cuda_graph", False, "Replay range filter, voxelization, network and top-k decoding "
          "as one CUDA graph (torch backend on CUDA)", True),
    Param("torch_threads", 0, "CPU threads torch may use; 0 = torch's default (one per core). "
          "Fewer leave cores to DDS and other nodes (torch slows down sharply when "
          "oversubscribed)", True, range=(0, 256)),
    Param("keep_freed_memory", False, "Let glibc keep freed frame buffers in its heap: faster CPU "
          "frames, but the node then holds its peak frame memory and more (off by "
          "default for predictable memory; the regnet-pillars CLI turns it on)", True),
    # Output filtering: live.
    Param("score_threshold", 0.3, "Minimum score of a published box", range=(0.0, 1.0)),
    Param("class_score_thresholds", [], "Per-class minimum scores, entries 'class=score' "
          "(e.g. 'pedestrian=0.2'); others use score_threshold. A model swap drops entries for "
          "classes the new model lacks. Clear with \"[]\" or \"['']\""),
    Param("max_detections", lambda preset: preset.test_cfg.max_num, "Maximum boxes per frame "
          "(default: the preset's test-time cap)", range=(1, 5000)),
    Param("class_id_format", "name", "results[0].hypothesis.class_id: class name or index "
          "into LabelInfo", choices=CLASS_ID_FORMATS),
    # Multi-sweep input and frames: fixed.
    Param("num_sweeps", lambda preset: preset.sweeps_num, "Past sweeps stacked with the "
          "current cloud (default: the preset's); -1 = the preset's", True, range=(-1, 10)),
    Param("sweep_frame", "odom", "Fixed frame in which past sweeps are kept", True),
    Param("ego_motion_source", "tf", "Where the ego motion between sweeps comes from: /tf, "
          "~/input/odometry (nav_msgs/Odometry) or none", True, choices=EGO_MOTION_SOURCES),
    Param("missing_ego_motion", "single", "Without ego motion: use the current sweep only "
          "or stack past sweeps unmoved", True, choices=MISSING_POLICIES),
    Param("sweep_max_age_s", 2.5, "Time span of the stacked sweeps: past sweeps with a larger "
          "time lag are left out (0.55 keeps a 10 Hz LiDAR within the 0.5 s the nuScenes "
          "models saw)", True, range=(0.0, 60.0)),
    Param("tf_tolerance_s", 0.1, "How far a transform lookup may reach beyond buffered "
          "transforms", True, range=(0.0, 5.0)),
    Param("tf_wait_s", 0.2, "How long a cloud waits for /tf (or odometry) to reach its stamp",
          True, range=(0.0, 5.0)),
    Param("target_frame", "", "Frame of the published boxes; empty = the cloud's frame", True),
    # Diagnostics and markers: live.
    Param("processing_budget_ms", 0.0, "Total processing time above which diagnostics warn; "
          "0 = no fixed budget. Either way they warn when the node falls behind its sensor "
          "(clouds dropped)", range=(0.0, 10000.0)),
    Param("markers.show_labels", True, "Text 'class score' above each box"),
    Param("markers.show_heading", True, "Heading arrow per box"),
    Param("markers.show_velocity", lambda preset: preset.has_velocity, "Velocity arrow per box "
          "(default: on where the preset predicts velocity)"),
    Param("markers.line_width", 0.1, "Box edge width in metres", range=(0.01, 1.0)),
    Param("markers.class_colors", [], "Per-class colours, entries 'class=#rrggbb'; cleared "
          "like class_score_thresholds"),
)
PARAMS_BY_NAME = {p.name: p for p in PARAMS}


def defaults(preset: str) -> dict[str, Any]:
    """Every parameter's default for a node serving ``preset`` (ValueError naming the choices
    for an unknown preset)."""
    model = get_preset(preset)
    values = {p.name: p.default(model) if callable(p.default) else p.default for p in PARAMS}
    return {**values, "preset": preset}


def _entries(values: list[str], what: str) -> dict[str, str]:
    out = {}
    for entry in values:
        if not entry.strip():
            continue
        name, sep, value = entry.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"{what} entry '{entry}' is not 'class=value'")
        out[name.strip()] = value.strip()
    return out


def parse_class_thresholds(values: list[str]) -> dict[str, float]:
    """['car=0.4', ...] -> {'car': 0.4}; each score in [0, 1]."""
    out = {}
    for name, text in _entries(values, "class_score_thresholds").items():
        try:
            score = float(text)
        except ValueError:
            raise ValueError(f"class_score_thresholds: '{text}' for '{name}' is not a number")
        if not 0.0 <= score <= 1.0:
            raise ValueError(f"class_score_thresholds: {score} for '{name}' is outside [0, 1]")
        out[name] = score
    return out


def parse_class_colors(values: list[str]) -> dict[str, tuple[float, float, float]]:
    """['car=#ff8000', ...] -> {'car': (1.0, 0.5, 0.0)}."""
    out = {}
    for name, text in _entries(values, "markers.class_colors").items():
        if not re.fullmatch(r"#[0-9a-fA-F]{6}", text):
            raise ValueError(f"markers.class_colors: '{text}' for '{name}' is not #rrggbb")
        out[name] = tuple(int(text[i:i + 2], 16) / 255 for i in (1, 3, 5))
    return out


def validate(name: str, value: Any) -> None:
    """Raise ValueError with the reason when ``value`` is not acceptable for ``name``.
    (Ranges and read-only flags are also enforced by ROS from the descriptors.)"""
    spec = PARAMS_BY_NAME.get(name)
    if spec is None:
        raise ValueError(f"unknown parameter '{name}'")
    if spec.choices and value not in spec.choices:
        raise ValueError(f"{name} must be one of {', '.join(spec.choices)}; got '{value}'")
    if spec.range is not None and not spec.range[0] <= value <= spec.range[1]:
        raise ValueError(f"{name} must be in [{spec.range[0]}, {spec.range[1]}]; got {value}")
    if name == "class_score_thresholds":
        parse_class_thresholds(value)
    elif name == "markers.class_colors":
        parse_class_colors(value)


# -- parameter files ----------------------------------------------------------------------------

GENERATED_NOTE = ("# Generated from the table in regnet_pillars_ros/ros/params.py "
                  "(scripts/write_config.py).\n# The node derives these defaults itself; a "
                  "parameter file needs only what it changes.\n")


def _yaml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):  # YAML cannot type an empty list; blank entries are ignored
        return json.dumps(value or [""])
    return json.dumps(value) if isinstance(value, str) else repr(value)


def yaml_text(preset: str | None = None) -> str:
    """A ROS parameter file of defaults: those every preset shares (``preset`` None, written
    to config/common.yaml), or ``preset`` with the defaults that follow it (config/<preset>.yaml).
    The node derives all of them itself; the files document them and serve as templates."""
    model = get_preset(preset or DEFAULT_PRESET)
    if preset is None:
        head = "# Defaults shared by every preset; config/<preset>.yaml: those that follow it.\n"
        specs = [p for p in PARAMS if p.name != "preset" and not callable(p.default)]
    else:
        head = (f"# {preset}: {model.dataset}, {model.num_classes} classes, "
                f"{model.sweeps_num} past sweeps.\n")
        specs = [p for p in PARAMS if p.name == "preset" or callable(p.default)]
    values = defaults(model.name)
    lines = [(GENERATED_NOTE + head).rstrip("\n"), "/**:", "  ros__parameters:"]
    group = ""
    for spec in specs:
        prefix, _, key = spec.name.rpartition(".")
        if prefix != group:
            lines.append(f"    {prefix}:")
            group = prefix
        indent = "      " if prefix else "    "
        span = f" [{spec.range[0]}, {spec.range[1]}]" if spec.range else ""
        lines += textwrap.wrap(spec.full_description + span, 100, initial_indent=f"{indent}# ",
                               subsequent_indent=f"{indent}# ", break_on_hyphens=False,
                               break_long_words=False)
        lines.append(f"{indent}{key}: {_yaml_value(values[spec.name])}")
    return "\n".join(lines) + "\n"


def config_files() -> dict[str, str]:
    """config/ file name -> text of every generated parameter file."""
    return {"common.yaml": yaml_text(), **{f"{n}.yaml": yaml_text(n) for n in PRESET_NAMES}}
