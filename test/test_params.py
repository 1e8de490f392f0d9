"""Parameter table and validators (the reasons `ros2 param set` shows on rejection)."""
import threading

import pytest

from regnet_pillars_ros.model.presets import PRESET_NAMES, get_preset
from regnet_pillars_ros.ros.latest import LatestSlot
from regnet_pillars_ros.ros.params import (
    DEFAULT_PRESET,
    PARAMS,
    defaults,
    parse_class_colors,
    parse_class_thresholds,
    validate,
)

# The types a ROS parameter can take from a default (a list is a string array).
ROS_TYPES = (bool, int, float, str, list)


def test_every_parameter_has_a_description_and_a_valid_typed_default_for_every_preset():
    types = {}
    for preset in PRESET_NAMES:
        values = defaults(preset)
        assert list(values) == [spec.name for spec in PARAMS]
        for spec in PARAMS:
            assert spec.description, spec.name
            value = values[spec.name]
            assert type(value) in ROS_TYPES, f"{spec.name}: {value!r} has no ROS type"
            if isinstance(value, list):
                assert all(isinstance(v, str) for v in value), spec.name
            # Declared once with the first preset's type; a swap must not need another type.
            assert types.setdefault(spec.name, type(value)) is type(value), spec.name
            validate(spec.name, value)


@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_defaults_follow_the_preset(preset):
    model, values = get_preset(preset), defaults(preset)
    assert values["preset"] == preset
    assert values["num_sweeps"] == model.sweeps_num
    assert values["max_detections"] == model.test_cfg.max_num
    assert values["markers.show_velocity"] is (model.dataset == "nuscenes")  # Lyft: no velocity
    shared = {k: v for k, v in values.items()
              if k not in ("preset", "num_sweeps", "max_detections", "markers.show_velocity")}
    assert shared == {k: v for k, v in defaults(DEFAULT_PRESET).items() if k in shared}


def test_defaults_of_an_unknown_preset_name_the_choices():
    with pytest.raises(ValueError, match="choose one of: nus-secfpn"):
        defaults("nus-regnetx-9000gf")


@pytest.mark.parametrize("name, value, reason", [
    ("score_threshold", 1.5, r"score_threshold must be in \[0.0, 1.0\]; got 1.5"),
    ("preset", "nus-huge", "preset must be one of nus-secfpn"),
    ("class_id_format", "uuid", "class_id_format must be one of name, index"),
    ("class_score_thresholds", ["car=abc"], "'abc' for 'car' is not a number"),
    ("class_score_thresholds", ["car=2"], "2.0 for 'car' is outside"),
    ("class_score_thresholds", ["car"], "'car' is not 'class=value'"),
    ("markers.class_colors", ["car=red"], "'red' for 'car' is not #rrggbb"),
    ("no_such_param", 1, "unknown parameter"),
])
def test_bad_values_are_rejected_with_the_reason(name, value, reason):
    with pytest.raises(ValueError, match=reason):
        validate(name, value)


def test_parsers_skip_blank_entries_from_yaml_placeholders():
    assert parse_class_thresholds(["", "pedestrian = 0.25"]) == {"pedestrian": 0.25}
    assert parse_class_colors(["car=#ff0080", ""]) == {"car": (1.0, 0.0, 128 / 255)}


def test_latest_slot_keeps_only_the_newest_and_counts_replacements():
    slot = LatestSlot()
    assert slot.put(1) is False
    assert slot.put(2) is True  # 1 was never taken: dropped
    assert slot.take(timeout=0) == 2
    assert slot.take(timeout=0.01) is None
    got = []
    consumer = threading.Thread(target=lambda: got.append(slot.take(timeout=5)))
    consumer.start()
    slot.put(3)
    consumer.join()
    assert got == [3]
    slot.close()
    assert slot.take() is None
