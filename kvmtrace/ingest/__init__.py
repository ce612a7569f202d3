"""Ingest: turn trace.dat files and text captures into typed polars tables (see ``tables``)."""
