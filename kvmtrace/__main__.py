"""``python -m kvmtrace``: the same as the ``kvmtrace`` command."""

from kvmtrace.cli import main

main()
