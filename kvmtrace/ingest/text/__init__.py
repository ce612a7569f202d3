"""The text reader: ``trace-cmd report`` in its forms and the kernel's own trace text (reader), line
framing (lines), prefixes (fast, modal), payloads (fields, printfmt, raw, typed), and the C kernels'
wrappers (native, kernels.c). Entry point: ``read_text``."""

from kvmtrace.ingest.text.reader import read_text

__all__ = ["read_text"]
