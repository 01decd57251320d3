"""Prefect flows that shard a dataset across Ray workers (see DESIGN.md; built in the flows issue)."""
