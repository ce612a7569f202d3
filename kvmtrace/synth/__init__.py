"""Synthetic KVM captures with ground truth (``kvmtrace synth``); see docs/synth.md."""

from kvmtrace.synth.run import Result, simulate
from kvmtrace.synth.scenario import PRESETS, apply_override, preset

__all__ = ["PRESETS", "Result", "apply_override", "preset", "simulate"]
