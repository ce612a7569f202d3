"""kvmtrace: explain where a KVM guest's latency comes from, from ftrace captures."""

__version__ = "0.1.0"
