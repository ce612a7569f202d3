"""``python3 -m kvmtrace.record`` / ``python3 kvmtrace-record.pyz``: the recorder, standard library only."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (default: the command line) and record; returns the exit code."""
    from kvmtrace.record.options import parse
    from kvmtrace.record.recorder import record

    return record(parse(list(sys.argv[1:] if argv is None else argv)))


if __name__ == "__main__":
    sys.exit(main())
