"""Render results: rich terminal views, JSON documents, Parquet files."""
