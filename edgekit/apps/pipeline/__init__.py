"""Heterogeneous per-frame pipelines: stages placed on compute units, run concurrently."""
