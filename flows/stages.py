"""The pipeline's stages, in order (no Prefect import: the CLI checks names before any
flow starts)."""
STAGES = ("ingest", "simulate", "materialize", "mine", "attributes", "grade", "assemble", "train", "evaluate")
