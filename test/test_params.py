"""Parameter table and validators (the reasons `ros2 param set` shows on rejection)."""
import threading

import pytest

from regnet_pillars_ros.ros.latest import LatestSlot
from regnet_pillars_ros.ros.params import (PARAMS, parse_class_colors, parse_class_thresholds,
                                           validate)


def test_every_parameter_has_a_description_and_a_valid_default():
    for spec in PARAMS:
        assert spec.description, spec.name
        validate(spec.name, spec.default)


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
