"""Models built from event tables: phases, vCPU state timelines, interrupts, exits, faults."""
