"""Preset loading: backbone and neck entries become typed specs, and a slip in an entry (a
misspelt key, an unknown type, an FPN option the network does not implement) fails at load."""
import copy
import json

import pytest

from regnet_pillars_ros.model.presets import (
    PRESETS_FILE,
    FPNNeck,
    RegNetBackbone,
    SecondBackbone,
    SecondFPNNeck,
    _preset_from_entry,
    load_presets,
)

ENTRIES = json.loads(PRESETS_FILE.read_text())


def test_every_preset_has_typed_backbone_and_neck_matching_its_name():
    for name, preset in load_presets().items():
        backbone = RegNetBackbone if "regnetx" in name else SecondBackbone
        neck = SecondFPNNeck if name.endswith("secfpn") else FPNNeck
        assert type(preset.backbone) is backbone and type(preset.neck) is neck, name
        assert preset.neck.in_channels == preset.backbone.out_channels, name


def entry_with(name: str, part: str, change) -> dict:
    entry = copy.deepcopy(ENTRIES[name])
    change(entry[part])
    return entry


@pytest.mark.parametrize("name, part, change, reason", [
    ("nus-secfpn", "backbone", lambda e: e.update(layer_num=e.pop("layer_nums")),
     "SecondBackbone: 'layer_nums' missing"),
    ("nus-regnetx-400mf-fpn", "backbone", lambda e: e["arch"].pop("group_w"),
     "RegNetArch: 'group_w' missing"),
    ("nus-fpn", "backbone", lambda e: e.update(type="SECOND2"), "unknown backbone type 'SECOND2'"),
    ("lyft-fpn", "neck", lambda e: e.update(type="FPN"), "unknown neck type 'FPN'"),
    ("lyft-fpn", "neck", lambda e: e.update(num_outs=5), "num_outs 5, .* is not implemented"),
])
def test_a_slip_in_a_preset_entry_fails_at_load(name, part, change, reason):
    with pytest.raises(ValueError, match=reason):
        _preset_from_entry(name, entry_with(name, part, change))
