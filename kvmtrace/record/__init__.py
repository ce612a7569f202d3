"""Recording side of kvmtrace (standard library only): tracefs, workloads, the recorder (writes via fileformats)."""
