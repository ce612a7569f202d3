"""Analyses: questions answered from the models (latency of guest interrupts, ...)."""
