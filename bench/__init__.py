"""The backfill benchmark: generated legacy trees, two baselines, and the runner."""
