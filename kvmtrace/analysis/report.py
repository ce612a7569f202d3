"""The one report shape every analysis command returns and every renderer takes.

A report has a ``kind`` (the command: ``analyze``, ``exits``, ``faults``, ``vcpus``), ``to_json()``
(the ``--json`` document, docs/json-output.md) and ``rows()`` (the per-row table ``--out`` writes: one
row per interrupt, exit, fault or vCPU state interval). The terminal, CSV/Markdown, JSON and
file renderers (``kvmtrace.render.emit``) take any report; the export and HTML report renderers
take the latency analysis behind an ``analyze`` report.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import polars as pl


@runtime_checkable
class Report(Protocol):
    """What an analysis command returns."""

    kind: str

    def to_json(self) -> dict[str, Any]:
        """The JSON document (``--json``)."""
        ...

    def rows(self) -> pl.DataFrame:
        """The per-row table (``--out``); a CaptureError when there is nothing to write."""
        ...
