"""The one path of data: the legacy layout, normalisation, the per-job store, the pipeline."""
