"""The trace.dat reader: the file's layout (reader), the ring-buffer pages (pages), typed fields from the
capture's own format files (fields), the merge into global order (decode), and the C kernels' wrappers
(native, kernels.c). Entry point: ``read_tracedat``."""

from kvmtrace.ingest.tracedat.reader import read_tracedat

__all__ = ["read_tracedat"]
