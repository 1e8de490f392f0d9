"""ROS side of the parameter table: declaring it on the node, and how set requests for list
parameters are read."""
from __future__ import annotations

from typing import Any

import torch
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.node import Node
from rclpy.parameter import Parameter

from ..runtime.heap import keep_freed_memory
from . import params as P

LIST_PARAMS = frozenset(p.name for p in P.PARAMS if p.default == [])


def descriptor(spec: P.Param, default: Any) -> ParameterDescriptor:
    d = ParameterDescriptor(description=spec.full_description, read_only=spec.read_only)
    if spec.range is not None and isinstance(default, int):
        d.integer_range = [IntegerRange(from_value=int(spec.range[0]),
                                        to_value=int(spec.range[1]), step=1)]
    elif spec.range is not None:
        d.floating_point_range = [FloatingPointRange(from_value=float(spec.range[0]),
                                                     to_value=float(spec.range[1]))]
    return d


def declare_all(node: Node) -> None:
    """Declare the table on ``node``: the preset first, then every other parameter with the
    default that follows the preset (YAML and -p values override them). YAML values bypass
    the set callback: every value is validated here once (ValueError with the reason)."""
    defaults = P.defaults(_declare(node, P.PARAMS_BY_NAME["preset"], P.DEFAULT_PRESET))
    for spec in P.PARAMS:
        if spec.name != "preset":
            _declare(node, spec, defaults[spec.name])
    for spec in P.PARAMS:
        P.validate(spec.name, node.get_parameter(spec.name).value)


def apply_process_settings(node: Node) -> None:
    """torch_threads and keep_freed_memory: settings of the whole process, made once."""
    threads = node.get_parameter("torch_threads").value
    if threads:
        torch.set_num_threads(threads)
    if node.get_parameter("keep_freed_memory").value and not keep_freed_memory():
        node.get_logger().warning("keep_freed_memory: this C library has no glibc mallopt; "
                                  "left as is")


def _declare(node: Node, spec: P.Param, default: Any) -> Any:
    """Declare ``spec`` typed by ``default``; returns its value (an override's if given).
    An empty list has no element type: string array is declared, then [] set if unset."""
    if default != []:
        return node.declare_parameter(spec.name, default, descriptor(spec, default)).value
    declared = node.declare_parameter(spec.name, Parameter.Type.STRING_ARRAY,
                                      descriptor(spec, default))
    if declared.type_ == Parameter.Type.NOT_SET:
        node.set_parameters([Parameter(spec.name, Parameter.Type.STRING_ARRAY, [])])
    return node.get_parameter(spec.name).value


def cleared_lists(params: list[Parameter]) -> list[Parameter]:
    """Pre-set callback: a list parameter set to an empty array of any type, or to '', becomes
    an empty string array. `ros2 param set NODE class_score_thresholds "[]"` sends an empty
    *bool* array (the command line cannot tell the element type of []), which the string-array
    parameter would otherwise refuse."""
    return [Parameter(p.name, Parameter.Type.STRING_ARRAY, [])
            if p.name in LIST_PARAMS and p.type_ != Parameter.Type.STRING_ARRAY
            and p.value is not None and len(p.value) == 0 else p
            for p in params]
