"""ROS side of the parameter table: how set requests for list parameters are read."""
from __future__ import annotations

from rclpy.parameter import Parameter

from . import params as P

LIST_PARAMS = frozenset(p.name for p in P.PARAMS if p.default == [])


def cleared_lists(params: list[Parameter]) -> list[Parameter]:
    """Pre-set callback: a list parameter set to an empty array of any type, or to '', becomes
    an empty string array. `ros2 param set NODE class_score_thresholds "[]"` sends an empty
    *bool* array (the command line cannot tell the element type of []), which the string-array
    parameter would otherwise refuse."""
    return [Parameter(p.name, Parameter.Type.STRING_ARRAY, [])
            if p.name in LIST_PARAMS and p.type_ != Parameter.Type.STRING_ARRAY
            and p.value is not None and len(p.value) == 0 else p
            for p in params]
