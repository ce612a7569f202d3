"""Recording side of kvmtrace: capture helpers and the trace.dat writer."""
