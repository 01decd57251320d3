"""Dataset processing: sources, decoding, mask generators, stages, metrics, writers, the Ray job, the CLI."""
