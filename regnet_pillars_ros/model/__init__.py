"""Model layer: the nine RegNetX / PointPillars presets in plain PyTorch and NumPy (never imports rclpy)."""
from .detections import Detections
from .detector import Detector
from .presets import PRESET_NAMES, Preset, get_preset, load_presets

__all__ = ["Detections", "Detector", "PRESET_NAMES", "Preset", "get_preset", "load_presets"]
